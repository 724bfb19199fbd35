"""What slofsim's commands look like on a terminal: colours, tables, progress.

Plain text is the contract: it is what every command prints when stdout is
not a terminal (a pipe, a file, a test), under --json, when NO_COLOR is set
(https://no-color.org: present and not empty), on TERM=dumb, and whenever
`rich` is not installed (it is optional: `pip install 'slofsim[rich]'`).
Only when all of those allow it does `console()` return a rich Console, and
the commands then draw the same figures as tables. Nothing here computes a
figure: every number comes from sim.report, so the two renderings agree.
"""

import contextlib
import os
import sys

from sim import interrupt

_LAYER_STYLE = {"SLOF": "cyan", "KVM": "magenta", "QEMU": "yellow", "iothread": "green",
                "qemu-main": "green"}
_OUTCOME_STYLE = {"booted": "bold green", "stalled": "bold red", "failed": "bold red", "watchdog": "bold yellow",
                  "hung-in-qemu": "bold red", "qemu-exited": "bold red"}


def wants_rich(stream=None, *, json: bool = False) -> bool:
    """True when output to stream (default stdout) may use colours and tables."""
    stream = stream if stream is not None else sys.stdout
    if json or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def console(*, json: bool = False):
    """A rich Console for stdout, or None for plain text."""
    if not wants_rich(json=json):
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(highlight=False)


def _table(*columns, title=None):
    from rich import box
    from rich.table import Table
    t = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", title_style="bold")
    for c in columns:
        if isinstance(c, tuple):
            t.add_column(c[0], justify=c[1])
        else:
            t.add_column(c)
    return t


def _outcome(text: str) -> str:
    return f"[{_OUTCOME_STYLE.get(text, 'bold')}]{text}[/]"


def escape(text) -> str:
    """text with rich markup characters escaped."""
    from rich.markup import escape as _escape
    return _escape(str(text))


_esc = escape


def print_summary(con, s: dict, title: str = "slofsim summary") -> None:
    """The figures of sim.report.format_summary as a two-column table."""
    from sim.report import format_enable_cap, kernel_stage_text
    exits = ", ".join(f"{n} {k}" for k, n in s["exits_by_hcall"].items()) or "none"
    notify = (f"{s['notifies']} ([green]{s['notifies_in_kernel']} in kernel[/], "
              f"[{'red' if s['notify_exits'] else 'green'}]{s['notify_exits']} via QEMU[/])")
    reqs = f"{s['requests_completed']} of {s['requests_submitted']} completed"
    if s["timeouts"]:
        reqs += f", [red]{s['timeouts']} timed out[/]"
    t = _table("figure", ("value", "left"), title=title)
    for k, v in (("outcome", _outcome(s["outcome"]) + (f" ({_esc(s['reason'])})" if s.get("reason") else "")),
                 ("simulated time", f"{s['sim_time_us'] / 1e6:.6f} s"),
                 ("hcalls in kernel", str(s["hcalls_in_kernel"])),
                 ("exits to userspace", f"{s['hcall_exits']} ({_esc(exits)})"),
                 ("QUEUE_NOTIFY", notify),
                 ("ioeventfd signals", str(s["ioeventfd_signals"])),
                 ("ENABLE_CAP(104)", _esc(format_enable_cap(s["enable_cap"]))),
                 ("block requests", reqs),
                 ("bytes loaded", str(s["bytes_loaded"])),
                 ("kernel stage", _esc(kernel_stage_text(s)))):
        t.add_row(k, v)
    if s.get("grub"):
        from sim.report import format_grub
        t.add_row("GRUB", _esc(format_grub(s["grub"]).split(":", 1)[1].strip()))
    con.print(t)


def print_phases(con, s: dict) -> None:
    """sim.report.format_phases as a table with a bar per phase."""
    total = s["sim_time_us"] or 1
    t = _table("SLOF phase", ("time (s)", "right"), ("share", "right"), "", title="time by SLOF phase")
    for p in s["phases"]:
        share = p["dur_us"] / total
        bar = "█" * round(30 * share) if p["depth"] == 0 else "[dim]" + "▪" * round(30 * share) + "[/]"
        name = ("  " * p["depth"]) + _esc(p["name"])
        t.add_row(name if p["depth"] else f"[bold]{name}[/]", f"{p['dur_us'] / 1e6:.6f}",
                  f"{100 * share:.1f} %", bar)
    con.print(t)


def _mark(text: str) -> str:
    text = _esc(text)
    for bad in ("kick dropped", "timeout", "never signalled", "no device took it", "E3404", "E3407"):
        text = text.replace(bad, f"[bold red]{bad}[/]")
    for good in ("no exit", "H_SUCCESS"):
        text = text.replace(good, f"[green]{good}[/]")
    return text


def print_diagnosis(con, steps: list[dict], title: str = "why (from the trace)") -> None:
    """sim.diagnosis.format_diagnosis as a table, the decisive steps coloured."""
    t = _table(("time (s)", "right"), "layer", "what happened", "function", title=title)
    for st in steps:
        style = _LAYER_STYLE.get(st["layer"], "white")
        t.add_row(f"{st['t_us'] / 1e6:.6f}", f"[{style}]{_esc(st['layer'])}[/]", _mark(st["text"]),
                  f"[dim]{_esc(st['function'])}[/]")
    con.print(t)


def print_check(con, rows: list[tuple]) -> None:
    t = _table("scenario", "outcome", ("sim time (s)", "right"), ("notify exits", "right"),
               ("in kernel", "right"), "result")
    for name, outcome, secs, ex, ik, res in rows:
        t.add_row(_esc(name), _outcome(outcome), f"{secs:.3f}", str(ex), str(ik),
                  "[green]ok[/]" if res == "ok" else f"[bold red]{_esc(res)}[/]")
    con.print(t)


def print_compare(con, names: list[str], rows: list[tuple[str, list[str]]]) -> None:
    """sim.report.compare_rows as a table, the rows that differ in bold."""
    t = _table("", *[(_esc(n), "right") for n in names])
    for label, vals in rows:
        cells = [_outcome(v) if label == "outcome" else _esc(v) for v in vals]
        if label != "outcome" and len(set(vals)) > 1:
            cells = [f"[bold]{c}[/]" for c in cells]
        t.add_row(_esc(label), *cells)
    con.print(t)


@contextlib.contextmanager
def progress(con, total: int | None, label: str):
    """A transient progress bar while machines boot; yields step(text), which
    names the current step and, with a total, advances the bar by one.
    With con None (plain output) it draws nothing."""
    if con is None:
        yield lambda text=None, advance=0: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn)
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn()]
    if total is not None:
        columns.append(MofNCompleteColumn())
    columns += [TimeElapsedColumn(), TextColumn("[dim]{task.fields[step]}")]
    bar = Progress(*columns, console=con, transient=True)
    with interrupt.threads_leave_signals_to_main():
        bar.start()                     # its refresh thread
    with bar:
        task = bar.add_task(label, total=total, step="")

        def step(text=None, advance=0):
            bar.update(task, advance=advance, **({"step": text} if text is not None else {}))
        yield step


def print_list(con, rows: list[tuple]) -> None:
    """slofsim list: scenario, expected outcome, description."""
    t = _table("scenario", "expects", "description")
    for name, outcome, desc in rows:
        t.add_row(_esc(name), _outcome(outcome), _esc(desc))
    con.print(t)


@contextlib.contextmanager
def rate_progress(seconds: float, header: str, unit: str):
    """A header and a bar over a wall-clock budget, with UNIT per second and
    the running counts; yields update(elapsed_s, n, counts_text). Rich on a
    colour terminal, one rewritten plain line on any other terminal, and
    nothing at all when stdout is not a terminal."""
    con = console()
    if con is None and not _isatty(sys.stdout):
        yield lambda elapsed, n, text: None
        return
    if con is None:
        print(header, flush=True)

        width = [0]         # no escape sequences: padding blanks what the last line left

        def plain(elapsed, n, text):
            done = min(elapsed / seconds, 1.0)
            bar = "#" * round(20 * done) + "-" * (20 - round(20 * done))
            line = f"[{bar}] {elapsed:5.1f}/{seconds:g} s  {n / max(elapsed, 1e-9):7.1f} {unit}/s  {text}"
            sys.stdout.write("\r" + line.ljust(width[0]))
            sys.stdout.flush()
            width[0] = len(line)
        try:
            yield plain
        finally:
            sys.stdout.write("\r" + " " * width[0] + "\r")
            sys.stdout.flush()
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    con.print(f"[bold]{escape(header)}[/]")
    columns = [BarColumn(), TimeElapsedColumn(), TextColumn("[cyan]{task.fields[rate]}"),
               TextColumn("{task.fields[counts]}")]
    bar = Progress(*columns, console=con, transient=True)
    with interrupt.threads_leave_signals_to_main():
        bar.start()                     # its refresh thread
    with bar:
        task = bar.add_task(header, total=seconds, rate="", counts="")

        def update(elapsed, n, text):
            bar.update(task, completed=min(elapsed, seconds), rate=f"{n / max(elapsed, 1e-9):.1f} {unit}/s",
                       counts=escape(text))
        yield update


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
