"""Release tables as data: one row per behaviour change, with its commit.

A component's table (sim.qemu.releases, sim.kvm.releases) lists the
releases the model knows and the changes between them; a release's
behaviour is every field's value from the last row at or before it. Code
asks the table (`behaviour(version).field`) and never compares version
numbers itself.
"""

import re
from dataclasses import dataclass

_VERSION = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*))?")


@dataclass(frozen=True)
class Row:
    """From `release` on, `field` is `value`. `commit` is the change
    (hash and title); `source` says how the release was established."""
    release: tuple[int, int]
    field: str
    value: object
    commit: str
    source: str = ""


class UnknownRelease(ValueError):
    """A version the table does not model."""


class Table:
    def __init__(self, component: str, releases: tuple, rows: tuple):
        self.component = component
        self.releases = releases
        self.rows = tuple(sorted(rows, key=lambda r: r.release))
        self.fields = tuple(dict.fromkeys(r.field for r in self.rows))
        self._cache = {}

    def names(self) -> str:
        return ", ".join(f"{a}.{b}" for a, b in self.releases)

    def parse(self, text: str) -> tuple[int, int]:
        """"4.1" or "4.1.3" -> (4, 1), if the table models 4.1."""
        m = _VERSION.fullmatch(text.strip()) if isinstance(text, str) else None
        v = (int(m.group(1)), int(m.group(2))) if m else None
        if v not in self.releases:
            raise UnknownRelease(f"{self.component} {text!r} is not a modelled release; expected one of {self.names()}")
        return v

    def behaviour(self, version: tuple[int, int]):
        """Every field's value at this release."""
        if version not in self._cache:
            if version not in self.releases:
                raise UnknownRelease(f"{self.component} {version} is not a modelled release")
            values = {}
            for r in self.rows:
                if r.release <= version:
                    values[r.field] = r.value
            self._cache[version] = _Behaviour(version, values)
        return self._cache[version]

    def row_for(self, version: tuple[int, int], field: str) -> Row:
        """The row that gives `field` its value at `version`."""
        return [r for r in self.rows if r.field == field and r.release <= version][-1]

    def changes(self, field: str) -> list[Row]:
        return [r for r in self.rows if r.field == field]


class _Behaviour:
    def __init__(self, version, values):
        self.version = version
        self.__dict__.update(values)

    def key(self, fields) -> tuple:
        return tuple(getattr(self, f) for f in fields)

    def replaced(self, values: dict) -> "_Behaviour":
        """This release with some fields set otherwise (a counterfactual:
        slofsim matrix asks which changed row made an outcome change)."""
        return _Behaviour(self.version, {**self.__dict__, **values, "version": self.version})
