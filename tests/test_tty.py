"""slofsim in a real pseudo-terminal: colours, progress, Ctrl-C (pexpect)."""

import os
import sys
import time

import pytest

from sim.cli import main
from tests.conftest import ROOT

pexpect = pytest.importorskip("pexpect")


def spawn(argv, tmp_path=None, rich=True):
    env = dict(os.environ, PYTHONPATH=ROOT, TERM="xterm-256color", COLUMNS="160", LINES="50")
    env.pop("NO_COLOR", None)
    if not rich:        # a `rich` that cannot be imported, first on the path
        (tmp_path / "rich").mkdir()
        (tmp_path / "rich" / "__init__.py").write_text("raise ImportError('rich hidden by the test')\n")
        env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
    return pexpect.spawn(sys.executable, ["-m", "sim.cli", *argv], env=env, cwd=ROOT, timeout=60,
                         dimensions=(50, 160))


def finish(child) -> str:
    try:
        child.expect(pexpect.EOF)
    except pexpect.TIMEOUT:     # say what the program printed, not its last 100 characters
        child.terminate(force=True)
        pytest.fail("no exit within the timeout; the output:\n" + child.before.decode("utf-8", "replace")[-8000:])
    child.close()
    return child.before.decode("utf-8", "replace")


def test_run_on_a_terminal_is_coloured_and_has_the_kernel_stage_row():
    pytest.importorskip("rich")
    child = spawn(["run", "dataplane-fixed"])
    out = finish(child)
    assert child.exitstatus == 0
    assert "\x1b[" in out and "kernel stage" in out and "done (Linux 4.1): 1 read," in out
    assert "--- slofsim summary" not in out


def test_help_on_a_terminal_is_coloured():
    pytest.importorskip("rich_argparse")
    child = spawn(["run", "--help"])
    out = finish(child)
    assert child.exitstatus == 0 and "\x1b[" in out and "--trace" in out and "dataplane-stall" in out


def test_fuzz_shows_header_and_progress_and_stops_on_ctrl_c():
    pytest.importorskip("rich")
    child = spawn(["fuzz", "--seconds", "60", "--seed", "1"])
    child.expect("slofsim fuzz: seed 1, 60 s budget")
    child.expect(r"inputs/s")
    child.expect(r"\d+ machines, \d+ ops, 0 exceptions")
    t = time.monotonic()
    child.sendintr()
    out = finish(child)
    assert time.monotonic() - t < 10, "Ctrl-C did not stop the campaign"      # its budget is 60 s
    assert child.exitstatus == 130
    assert "interrupted after" in out and "host-side exceptions: 0" in out and "hangs: 0" in out
    assert out.rstrip().endswith("interrupted") and "Traceback" not in out


def test_fuzz_without_rich_draws_a_plain_progress_line(tmp_path):
    child = spawn(["fuzz", "--seconds", "0.3", "--seed", "1"], tmp_path, rich=False)
    out = finish(child)
    assert child.exitstatus == 0
    assert out.startswith("slofsim fuzz: seed 1, 0.3 s budget") and "inputs/s" in out and "\r[" in out


def test_fuzz_piped_prints_no_progress(capsys):
    assert main(["fuzz", "--seconds", "0.2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "inputs/s" not in out and "\r" not in out and "\x1b" not in out


# A boot that loads a 96 MiB PReP partition: a second or more of wall time
# after "Trying to load", so Ctrl-C lands inside the machine.
LONG_LOAD = """
[kernel]
version = "4.1"
[qemu]
version = "2.4"
[device]
iothread = true
[disk]
size_mib = 100
part_sectors = 196608
[firmware]
max_prep_partition_blocks = 262144
"""


@pytest.mark.parametrize("argv, wait_for", [
    (["check", "-j", "2"], "check"),                                # worker processes too
    (["run", "LONG_LOAD"], "Trying to load"),
])
def test_ctrl_c_prints_interrupted_and_exits_130(tmp_path, argv, wait_for):
    if "LONG_LOAD" in argv:
        (tmp_path / "long.toml").write_text(LONG_LOAD)
        argv = [str(tmp_path / "long.toml") if a == "LONG_LOAD" else a for a in argv]
    child = spawn(argv)
    child.expect(wait_for)
    child.sendintr()
    out = finish(child)
    assert child.exitstatus == 130, out
    assert "Traceback" not in out and out.rstrip().endswith("interrupted")
