"""The wheel holds every package of the source tree (a subpackage left out
of it breaks an installed slofsim, not the tests run from a checkout)."""

import pathlib
import tomllib

from setuptools import find_packages

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_every_package_is_in_the_wheel():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = set(find_packages(str(ROOT), include=cfg["include"]))
    tree = {".".join(p.parent.relative_to(ROOT).parts) for top in ("sim", "firmware_model", "devices", "scenarios")
            for p in (ROOT / top).rglob("__init__.py")}
    assert tree and tree <= shipped
