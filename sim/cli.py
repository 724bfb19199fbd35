"""slofsim's command line.

Commands are rows of COMMANDS (the @command decorator): each has a one-line
help, an example and the meaning of its exit statuses, shown by
`slofsim NAME --help`. Every argument is checked before any machine boots.
User errors (a bad scenario, a missing disk, bad usage) print one line
naming the file and field, and exit with status 2. A Python exception is a
slofsim bug: one line and exit 70 (EX_SOFTWARE), the traceback only with
--debug. Ctrl-C prints
`interrupted` and exits with 130; a closed stdout pipe exits with 141.
"""

import gc
import sys


def _program_gc(argv: list[str]) -> None:
    """The program's cycle collector. `run` and `explain` boot one machine
    and exit: little they make is garbage before the end, so the collector
    is off (the reference run: 155 -> 148 ms, best of 31; a 64 MiB boot:
    1331 -> 1134 ms at the same peak RSS; no shipped scenario's RSS grows
    by more than 2 MiB). The other commands, which may boot many
    machines, collect young objects every 10,000 allocations, not 700, as
    sim.machine.run does while a machine runs."""
    if next((a for a in argv if a != "--debug"), None) in ("run", "explain"):
        gc.disable()
    else:
        gc.set_threshold(max(gc.get_threshold()[0], 10_000), *gc.get_threshold()[1:])


if __name__ == "__main__":      # python -m sim.cli: from before the imports (entry does it too)
    _program_gc(sys.argv[1:])

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402
from typing import Callable  # noqa: E402

from sim import __version__, interrupt, report, term  # noqa: E402
from sim.diagnosis import format_diagnosis  # noqa: E402
from sim.scenario import ScenarioError, check_writable, fault_option, load  # noqa: E402

EXIT_OK, EXIT_BOOT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = interrupt.EXIT_INTERRUPTED
BOOT_EXITS = ("0 booted, 1 stalled, failed or watchdog, 2 usage or scenario error, 70 internal error (a slofsim bug), "
              "130 interrupted (Ctrl-C)")
EXIT_SOFTWARE = 70   # sysexits.h EX_SOFTWARE: an internal error (a slofsim bug)


class Command:
    """A plain class, not a dataclass: making one costs 0.5 ms at every start."""

    def __init__(self, name: str, help: str, example: str, exits: str,
                 args: Callable[[argparse.ArgumentParser], None], run: Callable[[argparse.Namespace], int] = None):
        self.name = name
        self.help = help            # one line, in `slofsim --help`
        self.example = example      # shown under `slofsim NAME --help`
        self.exits = exits          # what each exit status means
        self.args = args            # adds the command's arguments
        self.run = run              # the handler; returns the exit status


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, example: str, exits: str = BOOT_EXITS, args=lambda p: None):
    """Register the decorated handler as `slofsim NAME`."""
    def register(fn):
        COMMANDS[name] = Command(name, help, example, exits, args, fn)
        return fn
    return register


# -- argument checks (all before any work) ---------------------------------

def packaged_scenarios() -> str:
    """The directory of the packaged scenarios (the scenarios package; its
    file, not importlib.resources, which costs more to import than the
    lookup is worth)."""
    import scenarios
    return os.path.dirname(scenarios.__file__)


def known_scenarios() -> list[str]:
    """Scenario names in ./scenarios and the packaged set."""
    names = set()
    for base in ("scenarios", packaged_scenarios()):
        if os.path.isdir(base):
            names |= {f[:-5] for f in os.listdir(base) if f.endswith(".toml")}
    return sorted(names)


def did_you_mean(word: str, choices) -> str:
    import difflib      # only on a mistyped name: not on every command's path
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def scenario_path(name: str) -> str:
    """A path, or a scenario name from ./scenarios or the packaged set."""
    if os.path.exists(name) or os.sep in name or name.endswith(".toml"):
        return name
    local = os.path.join("scenarios", name + ".toml")
    if os.path.exists(local):
        return local
    packaged = os.path.join(packaged_scenarios(), name + ".toml")
    if os.path.isfile(packaged):
        return packaged
    raise ScenarioError(f"{name}: no such scenario (not a file, not in ./scenarios, not packaged)"
                        + did_you_mean(name, known_scenarios()) + " (slofsim list shows them)")


def scenario_dir(path: str | None) -> list[str]:
    base = path or ("scenarios" if os.path.isdir("scenarios") else packaged_scenarios())
    if not os.path.isdir(base):
        raise ScenarioError(f"{base}: not a directory of scenarios")
    files = sorted(os.path.join(base, f) for f in os.listdir(base) if f.endswith(".toml"))
    if not files:
        raise ScenarioError(f"{base}: no *.toml scenarios")
    return files


def check_disk(path: str | None) -> None:
    if path and not os.path.lexists(path):     # a symlink loop is devices.block's to name
        raise ScenarioError(f"{path}: --disk: no such file")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _print_json(obj: dict) -> None:
    print(report.dumps(obj))     # json.dumps(obj, indent=1), faster


def _run_one(scn, disk: str | None = None, echo=None, faults=()):
    """Boot scn (a loaded scenario: each command loads it once, before any work)."""
    from sim import machine
    scn.faults = tuple(scn.faults) + tuple(faults or ())     # --fault adds to [[faults]]
    return machine.run(scn, disk_override=disk, echo=echo)


def _fault_arg(p):
    p.add_argument("--fault", action="append", type=fault_option, metavar="KIND[:REQUESTS]",
                   help="inject a fault, as a [[faults]] table would (repeatable): KIND is io_error, hang, "
                        "delay, lost_kick or short_read; REQUESTS all (default), N, N- or N-M; then optional "
                        ",sectors=N-M ,delay_ms=MS (delay) ,layer=kvm|qemu|iothread (lost_kick), "
                        "e.g. hang:2- or lost_kick:1,layer=iothread")


# -- run --------------------------------------------------------------------

def _scenario_arg(p, help="a scenario name (slofsim list) or a .toml file"):
    p.add_argument("scenario", help=help)


def _disk_arg(p):
    p.add_argument("--disk", metavar="IMAGE",
                   help="raw disk image (or .img.xz) to boot instead of the scenario's [disk]")


def _json_arg(p, what="print one JSON object instead of text (schema: sim/schema/slofsim.schema.json)"):
    p.add_argument("--json", action="store_true", help=what)


def _run_args(p):
    _scenario_arg(p)
    _disk_arg(p)
    _json_arg(p)
    p.add_argument("--trace", metavar="FILE.json",
                   help="also write the run as Chrome/Perfetto trace-event JSON (open in ui.perfetto.dev)")
    _fault_arg(p)


@command("run", "boot one scenario: console, summary, time by phase, why",
         "slofsim run dataplane-stall\n  slofsim run dataplane-fixed --trace boot.json\n"
         "  slofsim run dataplane-fixed --disk tests/data/real-slof/disk.img.xz --json",
         args=_run_args)
def cmd_run(args) -> int:
    path = scenario_path(args.scenario)
    check_disk(args.disk)
    if args.trace:
        check_writable(args.trace, "--trace")
    scn = load(path)
    con = term.console(json=args.json)
    if con is None:
        echo = None if args.json else (lambda b: (sys.stdout.write(b.decode("latin-1").replace("\r", "")),
                                                   sys.stdout.flush()))
        result = _run_one(scn, args.disk, echo, args.fault)
    else:
        with term.progress(con, None, f"booting {args.scenario}") as step:
            echo = _ConsoleLines(con, step)
            result = _run_one(scn, args.disk, echo, args.fault)
        echo.close()
    if args.trace:
        write_trace(result, args.trace)
    if args.json:
        _print_json(report.to_json(result))
    elif con is None:
        s = report.summary(result)
        print("\n\n--- slofsim summary " + "-" * 40)
        print(report.format_summary(s))
        print()
        print(report.format_phases(s))
        print("\nwhy (from the trace):")
        print(format_diagnosis(report.diagnose(result)))
    else:
        s = report.summary(result)
        con.print()
        term.print_summary(con, s)
        term.print_phases(con, s)
        term.print_diagnosis(con, report.diagnose(result))
    return EXIT_OK if report.outcome(result) == "booted" else EXIT_BOOT_FAILED


class _ConsoleLines:
    """The guest console on a rich terminal: whole lines printed above the
    progress bar (as text, never as markup), the latest one shown in it."""

    def __init__(self, con, step):
        self.con, self.step, self.pending = con, step, ""

    def __call__(self, data: bytes) -> None:
        *lines, self.pending = (self.pending + data.decode("latin-1").replace("\r", "")).split("\n")
        for line in lines:
            self.con.out(line, highlight=False)
        last = next((x.strip() for x in reversed(lines + [self.pending]) if x.strip()), None)
        if last:
            self.step(last[:60])

    def close(self) -> None:
        if self.pending:
            self.con.out(self.pending, highlight=False)
            self.pending = ""


def write_trace(result, path: str) -> None:
    from sim import perfetto
    from sim.diagnosis import notify_addrs
    try:
        with open(path, "w") as f:
            json.dump(perfetto.build(result, notify_addrs(result)), f)
    except OSError as exc:
        raise ScenarioError(f"{path}: --trace: cannot write: {exc.strerror}") from None


# -- explain ------------------------------------------------------------------

def _explain_args(p):
    _scenario_arg(p)
    _disk_arg(p)
    p.add_argument("--grub", action="store_true",
                   help="follow GRUB's first read through SLOF's client interface instead")
    _json_arg(p)
    _fault_arg(p)


@command("explain", "the causal chain of one request, read off the trace",
         "slofsim explain dataplane-stall\n  slofsim explain dataplane-fixed --json\n  slofsim explain grub-fixed --grub",
         exits="0 explained (whatever the outcome), 2 usage or scenario error, 130 interrupted",
         args=_explain_args)
def cmd_explain(args) -> int:
    path = scenario_path(args.scenario)
    check_disk(args.disk)
    scn = load(path)
    con = term.console(json=args.json)
    with term.progress(con, None, f"booting {args.scenario}"):
        result = _run_one(scn, args.disk, faults=args.fault)
    s = report.summary(result)
    grub = getattr(args, "grub", False)
    stalled = s["first_stalled_request"] is not None
    which = "GRUB's first disk read" if grub else "the first request that did not complete" if stalled \
        else "a typical request"
    if args.json:
        _print_json({"schema_version": report.SCHEMA_VERSION, "command": "explain", "scenario": s["scenario"],
                     "outcome": s["outcome"], "request": "grub" if grub else "first stalled" if stalled else "typical",
                     "diagnosis": report.diagnose(result, grub=grub),
                     "faults": [f.text() for f in result.scenario.faults]})
    elif con is None:
        print(f"{result.scenario.name}: {s['outcome']}. The causal chain of {which}:")
        print(format_diagnosis(report.diagnose(result, grub=grub) or [
            {"t_us": 0, "layer": "-", "function": "-", "text": "GRUB did not run"}]))
    else:
        term.print_diagnosis(con, report.diagnose(result, grub=grub), title=f"{result.scenario.name}: {s['outcome']}. "
                             f"The causal chain of {which}:")
    return EXIT_OK


# -- compare ------------------------------------------------------------------

def print_compare(con, sums: list[dict]) -> None:
    """Two runs' figures side by side (compare, and demo)."""
    rows = report.compare_rows(sums)
    names = [s["scenario"] for s in sums]
    if con is not None:
        term.print_compare(con, names, rows)
        return
    w = max(len(label) for label, _ in rows)
    print(f"{'':<{w}}  " + "  ".join(f"{n:>24}" for n in names))
    for label, vals in rows:
        print(f"{label:<{w}}  " + "  ".join(f"{v:>24}" for v in vals))


def _compare_args(p):
    p.add_argument("a", metavar="A", help="first scenario: a name (slofsim list) or a .toml file")
    p.add_argument("b", metavar="B", help="second scenario: a name or a .toml file")
    p.add_argument("--plot", metavar="FILE.svg|FILE.png",
                   help="also draw both runs' lanes, one panel per run (needs matplotlib)")
    _json_arg(p)


@command("compare", "two scenarios' figures side by side",
         "slofsim compare dataplane-stall dataplane-fixed\n"
         "  slofsim compare dataplane-stall dataplane-fixed --plot lanes.svg",
         exits="0 compared (whatever the outcomes), 2 usage or scenario error, 130 interrupted",
         args=_compare_args)
def cmd_compare(args) -> int:
    from sim import machine
    paths = [scenario_path(n) for n in (args.a, args.b)]
    scns = [load(p) for p in paths]
    if args.plot:
        from sim.plot import check_plot
        check_plot(args.plot)
    con = term.console(json=args.json)
    runs = []
    with term.progress(con, 2 + bool(args.plot), "booting") as step:
        for n, scn in zip((args.a, args.b), scns):
            step(n)
            runs.append(machine.run(scn))
            step(advance=1)
        if args.plot:
            from sim.plot import plot_lanes
            step(f"drawing {args.plot}")
            plot_lanes(runs, args.plot)
            step(advance=1)
    sums = [report.summary(r) for r in runs]
    if args.json:
        _print_json({"schema_version": report.SCHEMA_VERSION, "command": "compare", "runs": sums})
    else:
        print_compare(con, sums)
    if args.plot and not args.json:
        print(f"wrote {args.plot}")
    return EXIT_OK


# -- check ---------------------------------------------------------------------

def check_one(path: str) -> dict:
    """One scenario against its [expect]: its row of the table."""
    from sim import machine
    scn = load(path)
    s = report.summary(machine.run(scn))
    bad = report.expect_mismatches(s, scn.expect)
    return {"scenario": scn.name, "outcome": s["outcome"], "sim_time_us": s["sim_time_us"],
            "notify_exits": s["notify_exits"], "notifies_in_kernel": s["notifies_in_kernel"],
            "ok": bool(scn.expect) and not bad, "has_expect": bool(scn.expect), "mismatches": bad}


def result_text(row: dict) -> str:
    """check's result column: ok, or what differed."""
    if not row["has_expect"]:
        return "MISMATCH: no [expect] table"
    if row["ok"]:
        return "ok"
    def got(m):     # enable_cap as the summary prints it; the rest as in the file
        return report.format_enable_cap(m["got"]) if m["key"] == "enable_cap" else repr(m["got"])
    return "MISMATCH: " + "; ".join(f"{m['key']}={got(m)} (expected {m['expected']!r})" for m in row["mismatches"])


def _ignore_sigint() -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent alone answers Ctrl-C


def check(paths: list[str], step=lambda text=None, advance=0: None, jobs: int = 1) -> tuple[list[dict], bool]:
    """Rows in the order of paths, whatever jobs is; jobs > 1 runs them in
    worker processes (each scenario is its own trio.run)."""
    for path in paths:
        load(path)              # a bad file fails before any boot
    rows = []
    if jobs > 1 and len(paths) > 1:
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(min(jobs, len(paths)), initializer=_ignore_sigint)
        try:
            for row in pool.map(check_one, paths):
                rows.append(row)
                step(row["scenario"], advance=1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    else:
        for path in paths:
            step(os.path.splitext(os.path.basename(path))[0])
            rows.append(check_one(path))
            step(advance=1)
    return rows, all(r["ok"] for r in rows)


def _check_args(p):
    p.add_argument("dir", nargs="?", metavar="DIR",
                   help="a directory of *.toml scenarios (default: ./scenarios, else the packaged set)")
    p.add_argument("-j", "--jobs", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes; the table is the same for any N (default: the number of cores)")
    _json_arg(p)


@command("check", "run every scenario against its [expect] table",
         "slofsim check\n  slofsim check scenarios -j 1 --json",
         exits="0 every scenario as expected, 1 a mismatch, 2 usage or scenario error, 130 interrupted",
         args=_check_args)
def cmd_check(args) -> int:
    paths = scenario_dir(args.dir)
    con = term.console(json=args.json)
    with term.progress(con, len(paths), "check") as step:
        rows, ok = check(paths, step, jobs=args.jobs)
    code = EXIT_OK if ok else EXIT_BOOT_FAILED
    if args.json:
        _print_json({"schema_version": report.SCHEMA_VERSION, "command": "check", "ok": ok,
                     "scenarios": [{k: v for k, v in r.items() if k != "has_expect"} for r in rows]})
        return code
    table = [(r["scenario"], r["outcome"], r["sim_time_us"] / 1e6, r["notify_exits"], r["notifies_in_kernel"],
              result_text(r)) for r in rows]
    if con is not None:
        term.print_check(con, table)
        return code
    width = max(len(r[0]) for r in table)
    ow = max(8, *(len(r[1]) for r in table))
    print(f"{'scenario':<{width}}  {'outcome':<{ow}} {'sim time':>11}  {'notify exits':>12} {'in kernel':>9}  result")
    for name, outcome, t, ex, ik, res in table:
        print(f"{name:<{width}}  {outcome:<{ow}} {t:>9.3f} s  {ex:>12} {ik:>9}  {res}")
    return code


# -- matrix ----------------------------------------------------------------------

def _matrix_args(p):
    p.add_argument("-j", "--jobs", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes; the map is the same for any N (default: the number of cores)")
    _json_arg(p)
    _fault_arg(p)


@command("matrix", "which hosts stall: every modelled QEMU x Linux release",
         "slofsim matrix\n  slofsim matrix --json -j 2\n  slofsim matrix --fault hang:2-",
         exits="0 printed, 2 usage error, 130 interrupted", args=_matrix_args)
def cmd_matrix(args) -> int:
    """The stall map, its boundary lines and the commits behind them (sim.matrix)."""
    from sim import matrix
    m = matrix.run(jobs=args.jobs, faults=args.fault or ())
    if args.json:
        _print_json({"schema_version": report.SCHEMA_VERSION, "command": "matrix", **matrix.to_json(m)})
    else:
        print(matrix.format_text(m))
    return EXIT_OK


# -- list -----------------------------------------------------------------------

@command("list", "the scenarios: names, expected outcomes, descriptions", "slofsim list",
         exits="0 listed, 2 a scenario file is invalid")
def cmd_list(args) -> int:
    rows = []
    for name in known_scenarios():
        scn = load(scenario_path(name))
        rows.append((name, scn.expect.get("outcome", "?"), scn.description))
    con = term.console()
    if con is not None:
        term.print_list(con, rows)
        return EXIT_OK
    w = max(len(r[0]) for r in rows)
    ow = max(8, *(len(r[1]) for r in rows))
    print(f"{'scenario':<{w}}  {'expects':<{ow}}  description")
    for name, outcome, desc in rows:
        print(f"{name:<{w}}  {outcome:<{ow}}  {desc}")
    return EXIT_OK


# -- demo ------------------------------------------------------------------------

@command("demo", "the 2015 stall and its fix side by side, in plain words", "slofsim demo",
         exits="0 shown, 130 interrupted")
def cmd_demo(args) -> int:
    from sim import machine
    con = term.console()
    names = ("dataplane-stall", "dataplane-fixed", "qemu-forwards-kick-old-kernel")
    runs = []
    with term.progress(con, len(names), "demo") as step:
        for name in names:
            step(name)
            runs.append((name, machine.run(load(scenario_path(name)))))
            step(advance=1)
    fwd = report.summary(runs.pop()[1])
    for name, r in runs:
        s = report.summary(r)
        if con is None:
            print(f"=== {name}: {r.scenario.description}")
            print(report.format_summary(s))
            print(format_diagnosis(report.diagnose(r)))
            print()
        else:
            term.print_summary(con, s, title=f"{name}: {r.scenario.description}")
            term.print_diagnosis(con, report.diagnose(r), title=f"{name}: the causal chain")
    stall, fixed = (report.summary(r) for _, r in runs)
    print_compare(con, [stall, fixed])
    if con is None:
        print()
    cap = ("QEMU never asked for them (KVM_ENABLE_CAP not called)" if not stall["enable_cap"]["called"]
           else f"KVM_ENABLE_CAP returned {report.format_enable_cap(stall['enable_cap'])}")
    words = [
        f"In the stall, SLOF's QUEUE_NOTIFY went to QEMU as an exit ({stall['notify_exits']} of "
        f"{stall['notifies']} notifies): the pre-4.1 kernel has no in-kernel H_LOGICAL_CI_STORE, "
        f"{cap}, and the hcall never reached KVM_MMIO_BUS, "
        f"where the dataplane's ioeventfd waits. QEMU 2.1-2.8 drops such a kick once the dataplane "
        f"runs, so the IOThread slept and {stall['timeouts']} requests timed out.",
        f"In the fix, KVM handled {fixed['notifies_in_kernel']} of {fixed['notifies']} notifies itself: "
        f"the bus write matched the ioeventfd ({fixed['ioeventfd_signals']} signals) and woke the "
        f"IOThread with no exit. It needs both halves: the 4.1 kernel's handlers and QEMU 2.4 enabling them.",
        f"Later QEMU (2.9+) also boots the old kernel: it forwards a kick that arrives through "
        f"userspace to the host notifier, so all {fwd['notify_exits']} notifies still exit, but the "
        f"IOThread wakes and {fwd['requests_completed']} requests complete ({fwd['outcome']}).",
        "Try: slofsim check   (every scenario, one knob at a time)",
    ]
    if con is None:
        print("In plain words:")
        for w in words:
            print("  " + w)
    else:
        con.print("[bold]In plain words:[/]")
        for w in words:
            con.print("• " + term.escape(w))
    return EXIT_OK


# -- mkdisk ----------------------------------------------------------------------

def _mkdisk_args(p):
    p.add_argument("out", metavar="OUT.img", help="the image file to write")
    p.add_argument("--size-mib", type=int, default=16, metavar="N", help="disk size in MiB")
    p.add_argument("--part-start", type=int, default=2048, metavar="LBA",
                   help="first sector of the PReP partition")
    p.add_argument("--part-sectors", type=int, default=2048, metavar="N",
                   help="length of the PReP partition in 512-byte sectors")
    p.add_argument("--no-active", action="store_true", help="clear the PReP partition's boot flag (MBR only)")
    p.add_argument("--gpt", action="store_true", help="GPT (protective MBR, PReP type GUID) instead of MBR")
    p.add_argument("--layout", choices=("prep", "grub"), default="prep",
                   help="prep: the tiny ELF in PReP; grub: PReP with a GRUB-format core image plus an ext2 "
                        "partition with grub.cfg, a kernel and an initrd (needs mke2fs; --size-mib >= 8)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite OUT.img if it exists")


@command("mkdisk", "write a bootable raw disk image (PReP partition, tiny ELF)",
         "slofsim mkdisk disk.img\n  slofsim mkdisk disk.img --gpt --size-mib 64 --force\n  slofsim mkdisk grub.img --layout grub",
         exits="0 written, 2 bad option, existing file without --force, or cannot write",
         args=_mkdisk_args)
def cmd_mkdisk(args) -> int:
    from sim.mkdisk import write_disk
    if os.path.exists(args.out) and not args.force:
        raise ScenarioError(f"{args.out}: already exists; use --force to overwrite it")
    try:
        write_disk(args.out, part_start=args.part_start, part_sectors=args.part_sectors,
                   active=not args.no_active, size_mib=args.size_mib, gpt=args.gpt, layout=args.layout)
    except ValueError as exc:
        raise ScenarioError(f"{args.out}: {exc}") from None
    except OSError as exc:
        raise ScenarioError(f"{args.out}: cannot write: {exc.strerror}") from None
    print(f"wrote {args.out}")
    return EXIT_OK


# -- fuzz -------------------------------------------------------------------------

def _fuzz_args(p):
    p.add_argument("--seconds", type=_positive_float, default=10.0, metavar="S",
                   help="wall-clock budget in seconds")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the random choices; the same seed tries the same inputs")


@command("fuzz", "a hostile guest against KVM, QEMU and the devices",
         "slofsim fuzz --seconds 30 --seed 1",
         exits="0 no finding, 1 a host-side exception, hang or oracle violation, 2 usage error, "
               "130 interrupted (counts so far printed)",
         args=_fuzz_args)
def cmd_fuzz(args) -> int:
    from sim.fuzz import cmd_fuzz as fuzz
    return fuzz(args)


# -- completion --------------------------------------------------------------------

def _completion_args(p):
    p.add_argument("shell", choices=("bash", "zsh", "tcsh"), help="the shell to complete for")


@command("completion", "print a shell completion script (needs shtab)",
         'eval "$(slofsim completion bash)"\n'
         "  slofsim completion zsh > ~/.zfunc/_slofsim",
         exits="0 printed, 2 shtab is not installed",
         args=_completion_args)
def cmd_completion(args) -> int:
    try:
        import shtab
    except ImportError:
        raise ScenarioError("completion: needs shtab (pip install 'slofsim[completion]')") from None
    parser, subs = build_parser(rich=False)
    names = " ".join(known_scenarios())
    preamble = {"bash": f'_slofsim_scenarios() {{ compgen -W "{names}" -- "$1"; compgen -f -X "!*.toml" -- "$1"; }}\n'}
    scenarios = {"bash": "_slofsim_scenarios", "zsh": f"({names})", "tcsh": f"({names})"}
    files = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}
    for sub in subs.values():
        for act in sub._actions:
            if act.dest in SCENARIO_ARGS:
                act.complete = scenarios
            elif act.dest in FILE_ARGS:
                act.complete = files
    print(shtab.complete(parser, args.shell, preamble=preamble))
    return EXIT_OK


# Arguments completed with scenario names, and with file names.
SCENARIO_ARGS = ("scenario", "a", "b")
FILE_ARGS = ("disk", "trace", "plot", "out", "dir")


# -- man ----------------------------------------------------------------------------

@command("man", "print a man page (needs argparse-manpage)",
         "slofsim man > slofsim.1 && man ./slofsim.1",
         exits="0 printed, 2 argparse-manpage is not installed")
def cmd_man(args) -> int:
    try:
        from build_manpages.manpage import Manpage
    except ImportError:
        raise ScenarioError("man: needs argparse-manpage (pip install 'slofsim[man]')") from None
    parser, _ = build_parser(rich=False)
    page = [str(Manpage(parser)).rstrip(), ".SH EXAMPLES"]
    for c in COMMANDS.values():        # the subcommands' epilogs, which the generator leaves out
        page += [".nf", *(_roff(line.strip()) for line in c.example.splitlines()), ".fi"]
    page.append(".SH EXIT STATUS")
    page += [f".TP\n\\fBslofsim {c.name}\\fR\n{_roff(c.exits)}" for c in COMMANDS.values()]
    print("\n".join(page))
    return EXIT_OK


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


# -- the parser ----------------------------------------------------------------------

class _Defaults:
    """Shows `(default: X)` after an option's help when X says something."""

    def _get_help_string(self, action):
        h = action.help or ""
        if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                and "default" not in h):
            h += " (default: %(default)s)"
        return h


def _formatter(rich: bool):
    if rich:
        try:
            from rich_argparse import RawDescriptionRichHelpFormatter
            return type("Help", (_Defaults, RawDescriptionRichHelpFormatter), {})
        except ImportError:
            pass
    return type("Help", (_Defaults, argparse.RawDescriptionHelpFormatter), {})


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        m = re.search(r"invalid choice: '([^']*)'", message)
        if m and self.prog == "slofsim":
            message += did_you_mean(m.group(1), COMMANDS)
        raise ScenarioError(f"usage: {message} (see {self.prog} --help)")


def _subparsers(parser) -> dict:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def build_parser(rich: bool = False, only: str | None = None):
    """The top-level parser and its subparsers by name; with `only`, that
    command's subparser alone (when argv names the command, no other is
    read: 11 subparsers cost about 1.5 ms of every start)."""
    fmt = _formatter(rich)
    p = _Parser(prog="slofsim", formatter_class=fmt,
                description="Simulates a POWER KVM guest booting through SLOF from a virtio-blk disk\n"
                            "served by a QEMU iothread: the 2015 dataplane stall and its fix.",
                epilog="examples:\n  slofsim demo\n  slofsim run dataplane-stall\n  slofsim list\n\n"
                       "`slofsim COMMAND --help` shows a command's options, defaults and exit statuses.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="on an internal error (exit 70), print the traceback; accepted anywhere on the line")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser, metavar="COMMAND",
                           title="commands")
    for c in COMMANDS.values() if only is None else (COMMANDS[only],):
        sp = sub.add_parser(c.name, help=c.help, description=c.help[0].upper() + c.help[1:] + ".",
                            formatter_class=fmt,
                            epilog=f"example{'s' if chr(10) in c.example else ''}:\n  {c.example}\n\n"
                                   f"exit status: {c.exits}")
        c.args(sp)
    return p, _subparsers(p)


def _main(argv) -> int:
    parser, subs = build_parser(rich=term.console() is not None,
                                only=argv[0] if argv and argv[0] in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    if extra:
        subs[args.cmd].error(f"unrecognized arguments: {' '.join(extra)}")
    return COMMANDS[args.cmd].run(args)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv          # accepted before or after the command
    argv = [a for a in argv if a != "--debug"]
    interrupt.watch_swallowed()
    try:
        status = _main(argv)
        interrupt.raise_if_swallowed()      # a Ctrl-C a __del__ took: still an interrupt
        return status
    except ScenarioError as exc:
        print(f"slofsim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit:
        raise
    except BaseException as exc:
        if interrupt.caused_by(exc, BrokenPipeError):       # the reader went away (| head)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return interrupt.EXIT_BROKEN_PIPE
        if not interrupt.is_interrupt(exc):
            # A host-side exception is a slofsim bug, never a boot outcome.
            if debug:
                import traceback
                traceback.print_exc()
            what = " ".join(str(exc).split())
            print(f"slofsim: internal error (a slofsim bug): {type(exc).__name__}: {what}"
                  + ("" if debug else " (run with --debug for the traceback)"), file=sys.stderr)
            return EXIT_SOFTWARE
        # The machine is abandoned mid-run: block-layer coroutines spawned in
        # the same step as the interrupt are dropped unstarted, which is fine.
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
    sys.stdout.flush()
    print("interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def entry() -> None:
    """The `slofsim` program: main(), then out without tearing the
    interpreter down. Python's own teardown of a finished run -- collecting
    the machine's object cycles, then every module -- cost about 30 ms of a
    190 ms `slofsim run`; the kernel frees a process's memory at once.
    Output is flushed and atexit handlers run first; with another thread
    alive, or a profiler or tracer (python -m cProfile, coverage, a
    debugger) that writes its findings after the program, the exit is
    Python's usual one."""
    import threading
    _program_gc(sys.argv[1:])
    rc = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:             # the reader went away (| head), as main handles it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        rc = interrupt.EXIT_BROKEN_PIPE
    sys.stderr.flush()
    if threading.active_count() > 1 or sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(rc)
    import atexit
    atexit._run_exitfuncs()
    os._exit(rc)


if __name__ == "__main__":
    entry()
