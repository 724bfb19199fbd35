"""Every shipped scenario's trace, pinned by hash: speed work must not
change what a boot does, to the nanosecond.

The pins are tests/data/trace_pins.json. After a change that is MEANT to
change a trace (a model fix, a new event), regenerate them and say why in
the commit:

    PYTHONPATH=$PWD python -m tests.test_trace_pins --update
"""

import hashlib
import json
import lzma
import os
import sys

from sim import machine
from sim.scenario import load
from tests.conftest import REFERENCE_DISK, ROOT, SCENARIOS

PINS = os.path.join(ROOT, "tests", "data", "trace_pins.json")
REFERENCE = "dataplane-fixed@reference-disk"   # the measured disk, the hot path of the benchmarks


def _value(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(v).hex()}
    raise TypeError(f"trace field of type {type(v).__name__} has no stable serialisation")


def trace_hash(trace) -> str:
    """sha256 over one JSON line per event: [t_ns, actor, name, fields]."""
    h = hashlib.sha256()
    for e in trace.events:
        line = json.dumps([e.t_ns, e.actor, e.name, e.fields], sort_keys=True, default=_value,
                          separators=(",", ":"))
        h.update(line.encode() + b"\n")
    return h.hexdigest()


def _names() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(SCENARIOS) if f.endswith(".toml"))


def current(name: str) -> tuple[str, int]:
    """(hash, event count) of the named boot's trace."""
    if name == REFERENCE:
        from devices.block import BlockBackend
        backend = BlockBackend.from_bytes(lzma.open(REFERENCE_DISK).read(), "reference")
        r = machine.run(load(os.path.join(SCENARIOS, "dataplane-fixed.toml")), backend=backend)
    else:
        r = machine.run(load(os.path.join(SCENARIOS, name + ".toml")))
    return trace_hash(r.trace), len(r.trace.events)


def _pins() -> dict:
    with open(PINS) as f:
        return json.load(f)


def test_every_shipped_scenario_is_pinned():
    assert sorted(_pins()) == sorted(_names() + [REFERENCE])


def test_traces_match_their_pins():
    pins = _pins()
    changed = []
    for name in _names() + ([REFERENCE] if os.path.exists(REFERENCE_DISK) else []):
        h, n = current(name)
        if [h, n] != pins[name]:
            changed.append(f"{name}: {n} events (pinned {pins[name][1]})")
    assert not changed, "traces changed (see this file's docstring to re-pin): " + "; ".join(changed)


def test_the_hash_sees_one_field():
    from sim.trace import Event, Trace
    a, b = Trace(), Trace()
    a.events = [Event(1, "kvm", "exit", {"reason": "MMIO", "data": b"\x01"})]
    b.events = [Event(1, "kvm", "exit", {"reason": "MMIO", "data": b"\x02"})]
    assert trace_hash(a) != trace_hash(b)


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    pins = {name: list(current(name)) for name in _names() + [REFERENCE]}
    with open(PINS, "w") as f:
        json.dump(pins, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{PINS}: {len(pins)} traces pinned")


def test_a_tie_between_two_completions_is_broken_the_same_way_in_every_process():
    """fault-lost-kick-iothread has two block-layer completions on the same
    nanosecond. Unseeded, trio ordered them by chance (half the processes
    gave each order); sim.vtime.deterministic_scheduling fixes the order."""
    import subprocess
    code = ("import sys; sys.path.insert(0, '.'); from tests.test_trace_pins import current; "
            "print(current('fault-lost-kick-iothread')[0])")
    hashes = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=ROOT), check=True).stdout.strip()
              for _ in range(6)}
    assert hashes == {_pins()["fault-lost-kick-iothread"][0]}


def test_a_recorded_event_reads_as_the_emitted_one_and_pickles_with_its_fields():
    """Trace.record keeps raw values and builds the fields when read; a
    builder index means nothing in a worker process, so pickling builds them."""
    import pickle
    from sim import vtime
    from sim.trace import Event, Trace, fields_builder
    build = fields_builder(lambda addr, data: {"addr": addr, "data": data.hex()})
    vtime.use_clock(vtime.AutojumpClock())
    try:
        t = Trace()
        t.record("kvm", "io_bus_write", build, 0x1000, b"\x00\x01")
        t.emit("kvm", "io_bus_write", addr=0x1000, data="0001")
    finally:
        vtime.use_clock(None)
    rec, emitted = t.events
    assert rec.fields == emitted.fields == {"addr": 0x1000, "data": "0001"}
    assert rec == emitted and trace_hash(Trace()) != trace_hash(t)
    back = pickle.loads(pickle.dumps(rec))
    assert back.raw == {"addr": 0x1000, "data": "0001"} and back == rec
    assert rec != Event(0, "kvm", "io_bus_write", {"addr": 0x1000, "data": "0002"})
