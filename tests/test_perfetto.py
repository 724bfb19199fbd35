"""The Perfetto trace: valid trace-event JSON whose flows follow the kicks."""

import json

from sim.cli import main


def _trace(tmp_path, scenario):
    path = tmp_path / "t.json"
    main(["run", scenario, "--trace", str(path)])
    return json.loads(path.read_text())["traceEvents"]


def _flows(events):
    starts = {e["id"]: e for e in events if e.get("ph") == "s"}
    ends = {e["id"]: e for e in events if e.get("ph") == "f"}
    assert starts.keys() == ends.keys()
    return starts, ends


def test_fixed_boot_every_kick_flows_to_the_dataplane(tmp_path):
    events = _trace(tmp_path, "dataplane-fixed")
    for e in events:
        assert e["ph"] in {"M", "X", "i", "s", "f", "C"}
        assert e.get("ts", 0) >= 0
    starts, ends = _flows(events)
    assert len(starts) >= 36
    assert all(ends[i]["ts"] >= starts[i]["ts"] for i in starts)
    assert not any("drop" in e.get("name", "").lower() for e in events)


def test_stall_trace_shows_a_dropped_kick(tmp_path):
    events = _trace(tmp_path, "dataplane-stall")
    assert any("drop" in e.get("name", "").lower() for e in events)


def test_every_register_access_shows_with_its_value(tmp_path):
    """--trace: one instant per access the device saw, named by register,
    direction and value; the kernel stage's MSI-X table accesses included."""
    events = _trace(tmp_path, "guest-6.1-real-grub")
    regs = [e for e in events if e.get("cat") == "register"]
    assert any(e["name"] == "GUEST_FEATURES W 0x30006e74" for e in regs)
    msix = [e["args"] for e in regs if e["args"]["region"] == "msix-table"]
    assert len(msix) == 18 and {"rw": "W", "offset": 0xC, "size": 4, "value": "0x0", "region": "msix-table"} in msix
