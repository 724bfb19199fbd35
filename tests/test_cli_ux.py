"""The command line as a person meets it: discoverability, help, argument
checks before any work, Ctrl-C, --json and its schema, compare --plot."""

import argparse
import errno
import json
import os
import tomllib

import pytest

import sim
from sim import interrupt, machine, report
from sim.cli import COMMANDS, build_parser, main
from sim.scenario import OUTCOMES, ScenarioError, load
from tests.conftest import ROOT, SCENARIOS

SCHEMA_PATH = os.path.join(ROOT, "sim", "schema", "slofsim.schema.json")


def _no_boot(monkeypatch):
    """Any boot from here on fails the test: an argument check came too late."""
    def boom(*a, **k):
        raise AssertionError("a machine booted before the arguments were checked")
    monkeypatch.setattr(machine, "run", boom)


# -- discoverability ----------------------------------------------------------

def test_version_is_the_project_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert capsys.readouterr().out == f"slofsim {version}\n" and sim.__version__ == version


def test_list_names_every_scenario_with_its_expected_outcome(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = sorted(f[:-5] for f in os.listdir(SCENARIOS) if f.endswith(".toml"))
    assert [ln.split()[0] for ln in lines[1:]] == names
    stall = next(ln for ln in lines if ln.startswith("dataplane-stall "))
    assert stall.split()[1] == "stalled" and load(os.path.join(SCENARIOS, "dataplane-stall.toml")).description in stall


@pytest.mark.parametrize("argv, hint", [
    (["run", "dataplane_stall"], "did you mean 'dataplane-stall'?"),
    (["explain", "dataplane-stal"], "did you mean 'dataplane-stall'?"),
    (["rnu", "dataplane-stall"], "did you mean 'run'?"),
    (["compar", "a", "b"], "did you mean 'compare'?"),
])
def test_close_misses_get_a_suggestion(capsys, argv, hint):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert hint in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, see", [
    (["run", "dataplane-stall", "--bogus"], "(see slofsim run --help)"),
    (["check", "--jobs", "x"], "(see slofsim check --help)"),
    (["frobnicate"], "(see slofsim --help)"),
    (["fuzz", "--seconds", "-1"], "(see slofsim fuzz --help)"),
])
def test_usage_errors_point_to_the_right_help(capsys, monkeypatch, argv, see):
    _no_boot(monkeypatch)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert see in err and "slofsim slofsim" not in err and err.count("\n") == 1


def test_top_level_help_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name, c in COMMANDS.items():
        assert f"    {name}" in out and c.help in out
    assert "examples:" in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_and_option_has_help_an_example_and_exit_statuses(name, capsys):
    parser, subs = build_parser()
    sub = subs[name]
    for act in sub._actions:
        if not isinstance(act, argparse._HelpAction):
            assert act.help, f"slofsim {name}: {act.dest} has no help text"
    with pytest.raises(SystemExit):
        main([name, "--help"])
    out = capsys.readouterr().out
    assert "example" in out and f"slofsim {name}" in out.split("example")[-1]
    assert "exit status: 0 " in out
    for act in sub._actions:        # every default worth saying is said
        if act.option_strings and act.default not in (None, False, argparse.SUPPRESS):
            said = "(default: " in act.help or f"(default: {act.default})" in " ".join(out.split())
            assert said, (name, act.dest)


def test_completion_script_knows_commands_and_scenarios(capsys, monkeypatch):
    pytest.importorskip("shtab")
    assert main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and "mkdisk" in out and "--part-sectors" in out and "dataplane-stall" in out
    monkeypatch.setitem(__import__("sys").modules, "shtab", None)
    assert main(["completion", "bash"]) == 2
    assert "pip install 'slofsim[completion]'" in capsys.readouterr().err


# -- every argument before any work ----------------------------------------------

@pytest.mark.parametrize("argv, fragment", [
    (["run", "dataplane-stall", "--trace", "/nonexistent/dir/boot.json"], "--trace: cannot write"),
    (["run", "dataplane-stall", "--trace", "/"], "--trace: is a directory"),
    (["run", "dataplane-stall", "--disk", "/nonexistent.img"], "--disk: no such file"),
    (["compare", "dataplane-stall", "dataplane-fixed", "--plot", "/nonexistent/x.svg"], "--plot: cannot write"),
    (["compare", "dataplane-stall", "dataplane-fixed", "--plot", "x.pdf"], "expected a file name ending in .svg"),
    (["compare", "dataplane-stall", "no-such", "--plot", "x.svg"], "no-such: no such scenario"),
])
def test_bad_arguments_fail_before_any_boot(capsys, monkeypatch, argv, fragment):
    _no_boot(monkeypatch)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and fragment in err and err.count("\n") == 1


def test_plot_without_matplotlib_fails_before_any_boot(capsys, monkeypatch, tmp_path):
    _no_boot(monkeypatch)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    assert main(["compare", "dataplane-stall", "dataplane-fixed", "--plot", str(tmp_path / "x.svg")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--plot needs matplotlib (pip install 'slofsim[plot]')" in err
    assert not (tmp_path / "x.svg").exists()


def test_trace_check_leaves_no_file_behind(tmp_path, capsys, monkeypatch):
    _no_boot(monkeypatch)
    path = tmp_path / "t.json"
    assert main(["run", "dataplane-stall", "--trace", str(path)]) == 70     # the boot ran (and was refused)
    assert "a machine booted" in capsys.readouterr().err
    assert not path.exists()


def test_a_scenario_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    p = tmp_path / "latin1.toml"
    p.write_bytes('description = "caf\u00e9"\n'.encode("latin-1"))
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(p) in err and "not UTF-8 text (byte 0xe9 at offset 18)" in err


def test_mkdisk_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "disk.img"
    out.write_bytes(b"precious")
    assert main(["mkdisk", str(out)]) == 2
    assert "already exists; use --force" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert main(["mkdisk", str(out), "--force"]) == 0
    assert out.stat().st_size == 16 << 20


def test_read_only_image_with_persist_says_why_it_wanted_write(tmp_path, capsys, monkeypatch):
    import devices.block as block
    img = tmp_path / "ro.img"
    assert main(["mkdisk", str(img)]) == 0
    real_open = os.open

    def ro_open(path, flags, *a):          # a read-only file (root ignores chmod)
        if str(path) == str(img) and flags & os.O_RDWR:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(path, flags, *a)
    monkeypatch.setattr(block.os, "open", ro_open)
    scn = tmp_path / "p.toml"
    scn.write_text(f'[disk]\nimage = "{img}"\nwritable = true\npersist = true\n')
    capsys.readouterr()
    assert main(["run", str(scn)]) == 2
    err = capsys.readouterr().err
    assert "for writing, because [disk] persist = true" in err and "Permission denied" in err
    scn.write_text(f'[disk]\nimage = "{img}"\nwritable = true\n')       # no persist: opened read-only
    assert main(["run", str(scn)]) == 0


# -- Ctrl-C ----------------------------------------------------------------------

def test_ctrl_c_in_any_command_is_one_line_and_130(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(COMMANDS["run"], "run", interrupted)
    assert main(["run", "dataplane-stall"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_an_interrupt_wrapped_by_trio_is_still_an_interrupt():
    group = BaseExceptionGroup("trio", [KeyboardInterrupt()])
    assert interrupt.is_interrupt(group)
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as ki:
            raise RuntimeError("TrioInternalError") from ki
    except RuntimeError as exc:
        assert interrupt.is_interrupt(exc)
    assert not interrupt.is_interrupt(ValueError("a real finding"))


def test_a_ctrl_c_while_trio_closes_its_wakeup_socket_waits_for_the_run_to_end(monkeypatch, capfd):
    """trio closes its wakeup socketpair before restoring the wakeup fd; a
    Ctrl-C in that window printed a BrokenPipeError report (CI saw it once
    under fuzz). run_trio holds SIGINT there, then delivers it."""
    import signal
    import threading
    from trio._core._wakeup_socketpair import WakeupSocketpair
    real_close = WakeupSocketpair.close
    seen = {}

    def close_with_a_ctrl_c(self):
        # The user's Ctrl-C, in the window, to the thread that runs trio: a
        # process-directed kill goes to any thread not blocking SIGINT, and
        # the test process may have one (the program has only this one).
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        seen["held"] = signal.SIGINT in signal.sigpending()
        real_close(self)
    monkeypatch.setattr(WakeupSocketpair, "close", close_with_a_ctrl_c)

    async def machine():
        return "done"
    with pytest.raises(KeyboardInterrupt):
        interrupt.run_trio(machine)
    assert seen["held"]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])    # released again
    assert "Exception ignored" not in capfd.readouterr().err


def test_fuzz_interrupted_keeps_its_counts_and_finds_nothing(monkeypatch):
    import importlib
    camp = importlib.import_module("sim.fuzz.campaign")
    real = camp.trio.run
    calls = []

    def trio_run(*a, **k):
        calls.append(a)
        if len(calls) == 3:     # Ctrl-C inside trio, wrapped in a group: not a finding
            raise BaseExceptionGroup("trio", [KeyboardInterrupt()])
        return real(*a, **k)
    monkeypatch.setattr(camp.trio, "run", trio_run)
    c = camp.campaign(60.0, seed=1, disks=False)
    assert c.interrupted and c.cases == 2 and c.ok and not c.exceptions
    text = camp.format_campaign(c, 60.0, 1)
    assert "interrupted after" in text and "host-side exceptions: 0" in text


def test_fuzz_interrupted_in_a_hostile_disk_boot_is_not_a_finding(monkeypatch):
    import importlib
    camp = importlib.import_module("sim.fuzz.campaign")

    def trio_run(*a, **k):
        raise BaseExceptionGroup("trio", [KeyboardInterrupt()])
    monkeypatch.setattr(camp.trio, "run", trio_run)
    c = camp.campaign(60.0, seed=1)          # the first case is a disk (DISK_SHARE of no time yet)
    assert c.interrupted and c.ok and not c.exceptions and not c.disks


# -- --json and its schema ----------------------------------------------------------

@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    with open(SCHEMA_PATH) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("argv, code", [
    (["run", "dataplane-fixed", "--json"], 0),
    (["run", "qemu-fixed-kernel-old", "--json"], 1),
    (["explain", "dataplane-stall", "--json"], 0),
    (["run", "fault-hang-after1-io", "--json"], 1),
    (["explain", "fault-eio-2015", "--json", "--fault", "delay:3,delay_ms=5"], 0),
    (["compare", "dataplane-stall", "dataplane-fixed", "--json"], 0),
    (["check", SCENARIOS, "-j", "1", "--json"], 0),
])
def test_json_output_is_valid_against_the_shipped_schema(capsys, validator, argv, code):
    assert main(argv) == code
    out = json.loads(capsys.readouterr().out)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(out)]
    assert errors == []
    assert out["schema_version"] == report.SCHEMA_VERSION and out["command"] == argv[0]


def test_the_schema_rejects_what_it_does_not_describe(validator):
    s = report.summary(machine.run(load(os.path.join(SCENARIOS, "dataplane-fixed.toml"))))
    good = {"schema_version": 1, "command": "compare", "runs": [s, s]}
    assert validator.is_valid(good)
    for bad in ({**s, "enable_cap": "0,0"}, {**s, "undocumented": 1}, {k: v for k, v in s.items() if k != "outcome"}):
        assert not validator.is_valid({**good, "runs": [s, bad]})
    assert not validator.is_valid({**good, "schema_version": "1"})


def test_schema_outcomes_are_the_scenario_outcomes():
    with open(SCHEMA_PATH) as f:
        schema = json.load(f)
    assert tuple(schema["$defs"]["summary"]["properties"]["outcome"]["enum"]) == OUTCOMES


def test_enable_cap_is_structured(capsys):
    sums = {n: report.summary(machine.run(load(os.path.join(SCENARIOS, n + ".toml"))))
            for n in ("dataplane-stall", "dataplane-fixed", "qemu-fixed-kernel-old")}
    assert sums["dataplane-stall"]["enable_cap"] == {"called": False, "hcalls": [], "results": [], "errors": []}
    assert sums["dataplane-fixed"]["enable_cap"] == {"called": True, "hcalls": [0x3c, 0x40], "results": [0, 0],
                                                     "errors": ["", ""]}
    assert sums["qemu-fixed-kernel-old"]["enable_cap"]["results"] == [-errno.EINVAL, -errno.EINVAL]
    assert [report.format_enable_cap(s["enable_cap"]) for s in sums.values()] == \
        ["not called", "0,0", "-EINVAL,-EINVAL"]


def test_expect_enable_cap_is_a_table(scenario_file, capsys, tmp_path):
    fixed = open(os.path.join(SCENARIOS, "dataplane-fixed.toml")).read()
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.toml").write_text(fixed.replace("enable_cap = { called = true, results = [0, 0] }",
                                            "enable_cap = { called = false }"))
    assert main(["check", str(d), "-j", "1"]) == 1
    assert "MISMATCH: enable_cap=0,0 (expected {'called': False})" in capsys.readouterr().out
    with pytest.raises(ScenarioError, match=r"\[expect\] enable_cap: result = 0; expected a table of"):
        load(scenario_file("[expect]\nenable_cap = { result = 0 }\n"))


# -- compare ---------------------------------------------------------------------------

def test_compare_rows_have_human_names_and_the_kernel_stage(capsys):
    assert main(["compare", "dataplane-stall", "dataplane-fixed"]) == 0
    out = capsys.readouterr().out
    for label in ("simulated time (s)", "QUEUE_NOTIFY via QEMU", "exits: H_LOGICAL_CI_STORE", "kernel stage",
                  "kernel: reads completed", "kernel: interrupts by irqfd"):
        assert label in out
    assert "sim_time_us" not in out and "notify_exits" not in out
    row = next(ln for ln in out.splitlines() if ln.startswith("kernel stage "))
    assert row.split()[-3:] == ["not", "reached", "done"]


def test_plot_draws_each_lane_as_one_collection(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from sim import plot
    calls = []
    real = Axes.broken_barh
    monkeypatch.setattr(Axes, "broken_barh", lambda self, *a, **k: calls.append(len(a[0])) or real(self, *a, **k))
    out = tmp_path / "lanes.svg"
    assert main(["compare", "dataplane-stall", "dataplane-fixed", "--plot", str(out)]) == 0
    labels, lanes, kstart = plot.lanes(machine.run(load(os.path.join(SCENARIOS, "dataplane-fixed.toml"))))
    assert len(calls) <= 2 * len(labels) and sum(calls) > 1000        # thousands of slices, a few calls
    assert "vcpu 0: kernel stage" in labels and kstart is not None
    assert lanes[labels.index("vcpu 0: kernel stage")], "the kernel stage's loads and stores are drawn"
    svg = out.read_text()
    assert "kernel stage" in svg and "QUEUE_NOTIFY path" in svg          # the legend
    for name in ("dataplane-stall", "dataplane-fixed"):                  # an axis per run, its own range
        end = machine.run(load(os.path.join(SCENARIOS, f"{name}.toml"))).end_ns
        assert f"simulated time (s), 0 to {end // 1000 / 1e6:.6f}" in svg


def test_a_closed_pipe_is_silent_and_141():
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-m", "sim.cli", "run", "dataplane-stall"], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(1)            # `| head -c 1`
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait() == 141 and err == b""


def test_man_page_has_every_command_option_example_and_exit_status(capsys, monkeypatch):
    pytest.importorskip("build_manpages")
    assert main(["man"]) == 0
    page = capsys.readouterr().out
    assert page.startswith(".TH SLOFSIM") and ".SH EXAMPLES" in page and ".SH EXIT STATUS" in page
    for name, c in COMMANDS.items():
        assert f"\\fBslofsim {name}\\fR" in page
    assert "\\-\\-part\\-sectors" in page and "slofsim run dataplane\\-stall" in page
    monkeypatch.setitem(__import__("sys").modules, "build_manpages.manpage", None)
    assert main(["man"]) == 2
    assert "pip install 'slofsim[man]'" in capsys.readouterr().err


def test_list_on_a_terminal_is_a_table(capsys, monkeypatch):
    pytest.importorskip("rich")
    import sys
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" in out and "dataplane-stall" in out and "─" in out
