"""Faults as data: the scenario's [[faults]] tables and `--fault` options.

A fault acts where the real one would: in the block backend, as QEMU's
blkdebug driver does it (block/blkdebug.c: inject-error, break/suspend on
the read_aio/write_aio events), or in one layer of the notify path
(lost_kick). It never edits what the guest model expects.

    kind      io_error | hang | delay | lost_kick | short_read
    requests  block requests by number, from 1, in the order the device
              takes them: "all", "3", "2-", "1-5" (for lost_kick: the
              notifies that reach its layer, counted from 1)
    sectors   optional "0-2047" or "5": only requests touching them
    delay_ms  delay only: how long the backend takes, in simulated ms
    layer     lost_kick only: kvm | qemu | iothread

Parsing errors are one line naming the file or option, the field and what
was expected (sim.scenario.ScenarioError, raised by the caller's wrapper).
"""

import dataclasses

KINDS = ("io_error", "hang", "delay", "lost_kick", "short_read")
LAYERS = ("kvm", "qemu", "iothread")
KEYS = {"kind": str, "requests": str, "sectors": str, "delay_ms": int, "layer": str}
EIO = 5


class FaultError(ValueError):
    """A fault spec is wrong: the message names the field and what was expected."""


@dataclasses.dataclass(frozen=True)
class Fault:
    kind: str
    first: int = 1
    last: int | None = None           # None: open-ended ("all", "2-")
    sectors: tuple[int, int] | None = None
    delay_ms: int = 0
    layer: str | None = None

    def text(self) -> str:
        """The fault as one `--fault` argument would write it."""
        n = "all" if self.first == 1 and self.last is None else \
            f"{self.first}" if self.first == self.last else f"{self.first}-{'' if self.last is None else self.last}"
        extra = ([f"sectors={self.sectors[0]}-{self.sectors[1]}"] if self.sectors else []) + \
            ([f"delay_ms={self.delay_ms}"] if self.kind == "delay" else []) + \
            ([f"layer={self.layer}"] if self.layer else [])
        return ",".join([f"{self.kind}:{n}"] + extra)

    def selects(self, n: int, sector: int | None = None, count: int = 0) -> bool:
        """Request (or notify) number n, touching sectors [sector, sector+count)."""
        if n < self.first or self.last is not None and n > self.last:
            return False
        if self.sectors is None or sector is None:
            return True
        lo, hi = self.sectors
        return sector <= hi and sector + max(count, 1) - 1 >= lo


def _range(field: str, text: str, allow_all: bool) -> tuple[int, int | None]:
    want = ('"all", "N", "N-" or "N-M" (N from 1)' if allow_all else '"N" or "N-M"')
    t = text.strip()
    if allow_all and t == "all":
        return 1, None
    lo, dash, hi = t.partition("-")
    try:
        first = int(lo)
        last = (None if allow_all else -1) if dash and not hi else int(hi) if dash else first
    except ValueError:
        raise FaultError(f"{field}: expected {want}, got {text!r}") from None
    low = 1 if allow_all else 0
    if first < low or last is not None and (last < first) or last == -1:
        raise FaultError(f"{field}: expected {want}, got {text!r}")
    return first, last


def from_table(table: dict) -> Fault:
    """One [[faults]] table (types already TOML's)."""
    for key, v in table.items():
        want = KEYS.get(key)
        if want is None:
            raise FaultError(f"unknown key {key!r}; expected one of {', '.join(KEYS)}")
        if not isinstance(v, want) or isinstance(v, bool):
            raise FaultError(f"{key}: expected {'a string' if want is str else 'an integer'}, got {v!r}")
    kind = table.get("kind")
    if kind not in KINDS:
        raise FaultError(f"kind: expected one of {' | '.join(KINDS)}, got {kind!r}")
    first, last = _range("requests", table.get("requests", "all"), True)
    sectors = _range("sectors", table["sectors"], False) if "sectors" in table else None
    delay = table.get("delay_ms")
    if (delay is not None) != (kind == "delay"):
        raise FaultError("delay_ms: " + ("expected a positive integer for kind = \"delay\"" if delay is None
                                         else f"only applies to kind = \"delay\", not {kind!r}"))
    if delay is not None and delay <= 0:
        raise FaultError(f"delay_ms: expected a positive integer, got {delay}")
    layer = table.get("layer")
    if kind == "lost_kick" and layer not in LAYERS:
        raise FaultError(f"layer: expected one of {' | '.join(LAYERS)} for kind = \"lost_kick\", got {layer!r}")
    if kind != "lost_kick" and layer is not None:
        raise FaultError(f"layer: only applies to kind = \"lost_kick\", not {kind!r}")
    if kind == "lost_kick" and sectors is not None:
        raise FaultError("sectors: a lost kick has no sectors (it drops a notify); remove it")
    return Fault(kind, first, last, sectors, delay or 0, layer)


def from_option(text: str) -> Fault:
    """`--fault KIND[:REQUESTS][,key=value...]`, e.g. `hang:2-`,
    `delay:all,delay_ms=40`, `lost_kick:1,layer=iothread`."""
    head, *rest = text.split(",")
    kind, _, requests = head.partition(":")
    table: dict = {"kind": kind}
    if requests:
        table["requests"] = requests
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq:
            raise FaultError(f"{item!r}: expected key=value (sectors, delay_ms or layer)")
        if key == "delay_ms":
            try:
                table[key] = int(value)
            except ValueError:
                raise FaultError(f"delay_ms: expected an integer, got {value!r}") from None
        else:
            table[key] = value
    return from_table(table)


def numbers(ns) -> str:
    """Request numbers as runs: [2, 3, 4, 7] -> "#2-#4, #7"."""
    runs = []
    for n in ns:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"#{a}" if a == b else f"#{a}-#{b}" for a, b in runs) or "none"


class FaultPlan:
    """The faults of one run, and the counters that number what they select:
    block requests (the blkdebug layer's) and notifies per layer."""

    def __init__(self, faults, trace):
        self.faults = tuple(faults)
        self.trace = trace
        self.kicks = {layer: 0 for layer in LAYERS}

    def block(self) -> tuple:
        return tuple(f for f in self.faults if f.kind != "lost_kick")

    def drop_kick(self, layer: str, actor: str, func: str, where: str) -> bool:
        """Count one notify reaching `layer` (in the real stack's function
        func); True if a lost_kick drops it."""
        if not any(f.kind == "lost_kick" for f in self.faults):
            return False
        self.kicks[layer] += 1
        n = self.kicks[layer]
        fault = next((f for f in self.faults if f.kind == "lost_kick" and f.layer == layer and f.selects(n)), None)
        if fault is None:
            return False
        self.trace.emit(actor, "fault_lost_kick", fault=fault.text(), layer=layer, kick=n, func=func, where=where)
        return True
