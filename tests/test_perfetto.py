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
