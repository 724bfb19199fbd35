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


def test_stall_trace_shows_the_start_up_race(tmp_path):
    """The notifier created signalled flows to the dataplane start it caused,
    on the main loop's track, under the BQL, before SLOF's first kick."""
    events = _trace(tmp_path, "dataplane-stall")
    starts, ends = _flows(events)
    (fid,) = [i for i, s in starts.items() if s["name"] == "start-up signal"]
    start = next(e for e in events if e["name"] == "dataplane start (by start-up notifier)")
    assert ends[fid]["ts"] == start["ts"] and ends[fid]["tid"] == start["tid"] == 4     # QEMU main loop
    assert any(e["name"] == "BQL held" and e["tid"] == 4 and e["ts"] == start["ts"] for e in events)
    first_kick = min(s["ts"] for s in starts.values() if s["name"] == "QUEUE_NOTIFY")
    assert starts[fid]["ts"] < start["ts"] < first_kick


def test_slow_main_loop_trace_shows_the_kick_starting_the_dataplane(tmp_path):
    events = _trace(tmp_path, "startup-race-slow-main-loop")
    assert any(e["name"] == "dataplane start (by userspace)" for e in events)
