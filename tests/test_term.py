"""Terminal output: plain text unless stdout is a colour terminal; phases."""

import json
import sys

import pytest

from sim import machine, perfetto, report
from sim.cli import main
from sim.scenario import load
from tests.conftest import SCENARIOS


def _out(capsys, argv):
    code = main(argv)
    return code, capsys.readouterr().out


def _fake_tty(monkeypatch):
    """stdout claims to be a colour terminal. (Called in the test body: pytest
    swaps the captured sys.stdout between fixture set-up and the test.)"""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.mark.parametrize("argv", [["run", "dataplane-stall"], ["explain", "dataplane-stall"],
                                  ["compare", "dataplane-stall", "dataplane-fixed"]])
def test_no_color_on_a_terminal_is_byte_identical_to_piped(capsys, monkeypatch, argv):
    monkeypatch.delenv("NO_COLOR", raising=False)
    piped = _out(capsys, argv)
    assert "\x1b" not in piped[1]
    _fake_tty(monkeypatch)
    monkeypatch.setenv("NO_COLOR", "1")
    assert _out(capsys, argv) == piped


def test_check_with_no_color_is_plain(capsys, monkeypatch, tmp_path):
    (tmp_path / "one.toml").write_text(open(f"{SCENARIOS}/dataplane-fixed.toml").read())
    piped = _out(capsys, ["check", str(tmp_path)])
    _fake_tty(monkeypatch)
    monkeypatch.setenv("NO_COLOR", "1")
    assert _out(capsys, ["check", str(tmp_path)]) == piped
    assert piped[1].startswith("scenario ") and "\x1b" not in piped[1]


def test_json_stays_plain_on_a_terminal(capsys, monkeypatch):
    _fake_tty(monkeypatch)
    code, out = _out(capsys, ["run", "dataplane-fixed", "--json"])
    assert code == 0 and json.loads(out)["outcome"] == "booted"


def test_without_rich_a_terminal_gets_plain_text(capsys, monkeypatch):
    piped = _out(capsys, ["explain", "dataplane-stall"])
    _fake_tty(monkeypatch)
    monkeypatch.setitem(sys.modules, "rich", None)     # import rich fails
    monkeypatch.setitem(sys.modules, "rich.console", None)
    assert _out(capsys, ["explain", "dataplane-stall"]) == piped


def test_a_terminal_gets_tables(capsys, monkeypatch):
    pytest.importorskip("rich")
    _fake_tty(monkeypatch)
    code, out = _out(capsys, ["run", "dataplane-stall"])
    assert code == 1
    assert "time by SLOF phase" in out and "stalled" in out and "kick" in out
    assert "--- slofsim summary" not in out        # the plain layout is not used


def test_phases_partition_the_run_and_match_the_trace():
    for name, inner in (("dataplane-fixed", {"virtio init", "iso9660 probe", "mbr label",
                                             "load prep partition", "elf load"}),
                        ("dataplane-stall", {"virtio init", "iso9660 probe", "mbr label",
                                             "chrp bootinfo.txt", "gpt label"})):
        r = machine.run(load(f"{SCENARIOS}/{name}.toml"))
        ph = report.summary(r)["phases"]
        top = [p for p in ph if p["depth"] == 0]
        assert inner <= {p["name"] for p in ph if p["depth"] == 1}
        assert {"slof start-up", "pci probe", "boot"} <= {p["name"] for p in top}
        assert abs(sum(p["dur_us"] for p in top) - r.end_ns / 1000) < 1e-6
        slices = [e for e in perfetto.build(r, report.notify_addrs(r))["traceEvents"] if e.get("cat") == "phase"]
        assert [(s["name"], s["ts"]) for s in slices] == [(p["name"], p["start_us"]) for p in ph]
    text = report.format_phases(report.summary(r))
    assert text.splitlines()[0] == "time by SLOF phase:" and "    mbr label" in text
