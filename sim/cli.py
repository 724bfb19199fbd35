"""slofsim's command line: run, check, demo, mkdisk.

User errors (a bad scenario, a missing disk, bad usage) print one line
naming the file and field, and exit with status 2.
"""

import argparse
import json
import os
import sys
from importlib import resources

from sim import report, term
from sim.diagnosis import format_diagnosis
from sim.scenario import ScenarioError, load

EXIT_OK, EXIT_BOOT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ScenarioError(f"usage: {message} (see slofsim {self.prog.split()[-1]} --help)")


def scenario_path(name: str) -> str:
    """A path, or a scenario name from ./scenarios or the packaged set."""
    if os.path.exists(name) or os.sep in name or name.endswith(".toml"):
        return name
    local = os.path.join("scenarios", name + ".toml")
    if os.path.exists(local):
        return local
    packaged = resources.files("scenarios") / (name + ".toml")
    if packaged.is_file():
        return str(packaged)
    raise ScenarioError(f"{name}: no such scenario (not a file, not in ./scenarios, not packaged)")


def scenario_dir(path: str | None) -> list[str]:
    base = path or ("scenarios" if os.path.isdir("scenarios") else str(resources.files("scenarios")))
    if not os.path.isdir(base):
        raise ScenarioError(f"{base}: not a directory of scenarios")
    files = sorted(os.path.join(base, f) for f in os.listdir(base) if f.endswith(".toml"))
    if not files:
        raise ScenarioError(f"{base}: no *.toml scenarios")
    return files


def _run_one(path: str, disk: str | None = None, echo=None):
    from sim import machine
    return machine.run(load(path), disk_override=disk, echo=echo)


def cmd_run(args) -> int:
    path = scenario_path(args.scenario)
    if args.disk and not os.path.exists(args.disk):
        raise ScenarioError(f"{args.disk}: --disk: no such file")
    con = term.console(json=args.json)
    if con is None:
        echo = None if args.json else (lambda b: (sys.stdout.write(b.decode("latin-1").replace("\r", "")),
                                                   sys.stdout.flush()))
        result = _run_one(path, args.disk, echo)
    else:
        with term.progress(con, None, f"booting {args.scenario}") as step:
            echo = _ConsoleLines(con, step)
            result = _run_one(path, args.disk, echo)
        echo.close()
    if args.trace:
        write_trace(result, args.trace)
    if args.json:
        print(json.dumps(report.to_json(result), indent=1))
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


def cmd_explain(args) -> int:
    con = term.console()
    with term.progress(con, None, f"booting {args.scenario}"):
        result = _run_one(scenario_path(args.scenario), args.disk)
    s = report.summary(result)
    grub = getattr(args, "grub", False)
    which = "GRUB's first disk read" if grub else "the first request that did not complete" \
        if s["first_stalled_request"] is not None else "a typical request"
    if con is None:
        print(f"{result.scenario.name}: {s['outcome']}. The causal chain of {which}:")
        print(format_diagnosis(report.diagnose(result, grub=grub) or [
            {"t_us": 0, "layer": "-", "function": "-", "text": "GRUB did not run"}]))
    else:
        term.print_diagnosis(con, report.diagnose(result, grub=grub), title=f"{result.scenario.name}: {s['outcome']}. "
                             f"The causal chain of {which}:")
    return EXIT_OK


COMPARE_ROWS = ("outcome", "sim_time_us", "hcalls_in_kernel", "hcall_exits", "notifies_in_kernel",
                "notify_exits", "ioeventfd_signals", "enable_cap", "requests_submitted", "requests_completed",
                "timeouts", "bytes_loaded")


def print_compare(con, sums: list[dict]) -> None:
    """Two runs' figures side by side (compare, and demo)."""
    keys = list(COMPARE_ROWS) + sorted({f"exits {k}" for s in sums for k in s["exits_by_hcall"]})
    rows = [[s["exits_by_hcall"].get(k[6:], 0) if k.startswith("exits ") else s[k] for s in sums] for k in keys]
    if con is not None:
        term.print_compare(con, keys, [s["scenario"] for s in sums], rows)
        return
    w = max(len(k) for k in keys)
    print(f"{'':<{w}}  {sums[0]['scenario']:>24}  {sums[1]['scenario']:>24}")
    for k, vals in zip(keys, rows):
        print(f"{k:<{w}}  {str(vals[0]):>24}  {str(vals[1]):>24}")


def cmd_compare(args) -> int:
    from sim import machine
    con = term.console()
    runs = []
    with term.progress(con, 2, "booting") as step:
        for n in (args.a, args.b):
            step(n)
            runs.append(machine.run(load(scenario_path(n))))
            step(advance=1)
    print_compare(con, [report.summary(r) for r in runs])
    if args.plot:
        from sim.plot import plot_lanes
        plot_lanes(runs, args.plot)
        print(f"wrote {args.plot}")
    return EXIT_OK


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def check_one(path: str) -> tuple:
    """One scenario against its [expect]: its row of the table."""
    from sim import machine
    scn = load(path)
    s = report.summary(machine.run(scn))
    bad = [f"{k}={s.get(k)!r} (expected {v!r})" for k, v in scn.expect.items() if s.get(k) != v]
    if not scn.expect:
        bad = ["no [expect] table"]
    return (scn.name, s["outcome"], s["sim_time_us"] / 1e6, s["notify_exits"], s["notifies_in_kernel"],
            "ok" if not bad else "MISMATCH: " + "; ".join(bad))


def check(paths: list[str], step=lambda text=None, advance=0: None, jobs: int = 1) -> tuple[list[tuple], bool]:
    """Rows in the order of paths, whatever jobs is; jobs > 1 runs them in
    worker processes (each scenario is its own trio.run)."""
    for path in paths:
        load(path)              # a bad file fails before any boot
    if jobs > 1 and len(paths) > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(min(jobs, len(paths))) as pool:
            rows = []
            for row in pool.map(check_one, paths):
                rows.append(row)
                step(row[0], advance=1)
    else:
        rows = []
        for path in paths:
            step(os.path.splitext(os.path.basename(path))[0])
            rows.append(check_one(path))
            step(advance=1)
    return rows, all(r[-1] == "ok" for r in rows)


def cmd_check(args) -> int:
    paths = scenario_dir(args.dir)
    con = term.console()
    with term.progress(con, len(paths), "check") as step:
        rows, ok = check(paths, step, jobs=args.jobs)
    if con is not None:
        term.print_check(con, rows)
        return EXIT_OK if ok else EXIT_BOOT_FAILED
    width = max(len(r[0]) for r in rows)
    print(f"{'scenario':<{width}}  {'outcome':<8} {'sim time':>11}  {'notify exits':>12} {'in kernel':>9}  result")
    for name, outcome, t, ex, ik, res in rows:
        print(f"{name:<{width}}  {outcome:<8} {t:>9.3f} s  {ex:>12} {ik:>9}  {res}")
    return EXIT_OK if ok else EXIT_BOOT_FAILED


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
    cap = ("QEMU never asked for them (KVM_ENABLE_CAP not called)" if stall["enable_cap"] == "not called"
           else f"KVM_ENABLE_CAP returned {stall['enable_cap']}")
    words = [
        f"In the stall, SLOF's QUEUE_NOTIFY went to QEMU as an exit ({stall['notify_exits']} of "
        f"{stall['notifies']} notifies): the pre-4.1 kernel has no in-kernel H_LOGICAL_CI_STORE, "
        f"{cap}, and the hcall never reached KVM_MMIO_BUS, "
        f"where the dataplane's ioeventfd waits. QEMU 2.2-2.4 drops such a kick once the dataplane "
        f"runs, so the IOThread slept and {stall['timeouts']} requests timed out.",
        f"In the fix, KVM handled {fixed['notifies_in_kernel']} of {fixed['notifies']} notifies itself: "
        f"the bus write matched the ioeventfd ({fixed['ioeventfd_signals']} signals) and woke the "
        f"IOThread with no exit. It needs both halves: the 4.1 kernel's handlers and QEMU 2.4 enabling them.",
        f"Later QEMU (4.2+) also boots the old kernel: it forwards a kick that arrives through "
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


def cmd_mkdisk(args) -> int:
    from sim.mkdisk import write_disk
    try:
        write_disk(args.out, part_start=args.part_start, part_sectors=args.part_sectors,
                   active=not args.no_active, size_mib=args.size_mib, gpt=args.gpt, layout=args.layout)
    except ValueError as exc:
        raise ScenarioError(f"{args.out}: {exc}") from None
    except OSError as exc:
        raise ScenarioError(f"{args.out}: cannot write: {exc.strerror}") from None
    print(f"wrote {args.out}")
    return EXIT_OK


def main(argv=None) -> int:
    p = _Parser(prog="slofsim", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="boot one scenario")
    r.add_argument("scenario")
    r.add_argument("--disk", help="raw disk image to boot instead of the scenario's")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--trace", metavar="FILE", help="write Chrome/Perfetto trace-event JSON")
    e = sub.add_parser("explain", help="the causal chain of one request, from the trace")
    e.add_argument("scenario")
    e.add_argument("--disk")
    e.add_argument("--grub", action="store_true", help="GRUB's first read through SLOF's client interface")
    cp = sub.add_parser("compare", help="two scenarios' figures side by side")
    cp.add_argument("a")
    cp.add_argument("b")
    cp.add_argument("--plot", metavar="FILE.svg|FILE.png", help="draw both runs' lanes (needs matplotlib)")
    c = sub.add_parser("check", help="run every scenario against its [expect]")
    c.add_argument("dir", nargs="?")
    c.add_argument("-j", "--jobs", type=_positive_int, default=os.cpu_count() or 1,
                   help="worker processes (default: the number of cores)")
    sub.add_parser("demo", help="the stall and the fix side by side")
    m = sub.add_parser("mkdisk", help="write a bootable raw disk image")
    m.add_argument("out")
    m.add_argument("--part-start", type=int, default=2048)
    m.add_argument("--part-sectors", type=int, default=2048)
    m.add_argument("--size-mib", type=int, default=16)
    m.add_argument("--no-active", action="store_true", help="clear the PReP partition's boot flag (MBR)")
    m.add_argument("--gpt", action="store_true", help="GPT (protective MBR, PReP type GUID) instead of MBR")
    m.add_argument("--layout", choices=("prep", "grub"), default="prep",
                   help="grub: PReP with a GRUB-format core image + ext2 with grub.cfg, kernel, initrd "
                        "(needs mke2fs; --size-mib >= 8, default 16)")
    f = sub.add_parser("fuzz", help="a hostile guest against KVM, QEMU and the devices")
    f.add_argument("--seconds", type=float, default=10.0, help="wall-clock budget (default 10)")
    f.add_argument("--seed", type=int, default=0)
    try:
        args = p.parse_args(argv)
        if args.cmd == "fuzz":
            from sim.fuzz import cmd_fuzz
            return cmd_fuzz(args)
        return {"run": cmd_run, "check": cmd_check, "demo": cmd_demo, "mkdisk": cmd_mkdisk,
                "explain": cmd_explain, "compare": cmd_compare}[args.cmd](args)
    except ScenarioError as exc:
        print(f"slofsim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
