"""Figures derived from a run's trace: what `slofsim run` prints.

Nothing here is counted on the side: every figure is a count or sum over
trace events, so each can be traced back to the events behind it.

A run has two stages, split at the kernel stage's phase event
(sim.trace.KERNEL_STAGE_PHASE): the firmware stage (SLOF in real mode, up
to and including the hand-off and the image's entry code) and the kernel
stage (the guest kernel's virtio-blk I/O with the MMU on). The historical
figures -- hcalls, exits, QUEUE_NOTIFY, ioeventfd signals, requests, bytes,
register accesses, the diagnosis -- are the firmware stage's: they are what
the 2015 bug is about and what the real-SLOF measurements pin. The kernel
stage has its own `kernel_*` figures. Only the outcome and the simulated
time span both: "booted" means the image ran to its hand-off and the kernel
stage completed its reads (verdict below).
"""

import json
import math
from collections import Counter
from json.encoder import encode_basestring_ascii as _json_str

from sim.abi import papr
from sim.faults import numbers
from sim.abi.kvm import ERRNO_NAMES
from sim.abi.virtio import VIRTIO_PCI_CONFIG_OFF_NO_MSIX, VIRTIO_PCI_MODERN_MEM_BAR, VIRTIO_PCI_REGION_SIZE
from sim.diagnosis import diagnose, notify_addrs  # noqa: F401  (diagnose is re-exported)
from sim.perfetto import phase_spans
from sim.scenario import OUTCOMES  # noqa: F401  (the names verdict returns)
from sim.trace import KERNEL_STAGE_PHASE, Trace, firmware_trace, split_stages  # noqa: F401  (re-exported)


def _bar0_ranges(result):
    """CPU address ranges BAR 0 of the virtio device occupied, from pci_bar_map."""
    io_base = result.machine.io_win_addr
    spans = set()
    for e in result.trace.named("pci_bar_map"):
        f = e.fields
        if f["bar"] == 0 and f["addr"] is not None and f["space"] == "io":
            spans.add((io_base + f["addr"], f["size"]))
    return sorted(spans)


def _bar4_ranges(result):
    """CPU address ranges of the modern BAR 4 (transitional devices), its
    bus address translated through the PHB's memory windows."""
    node = result.machine.phb_node
    spans = set()
    for e in result.trace.named("pci_bar_map"):
        f = e.fields
        if f["bar"] != VIRTIO_PCI_MODERN_MEM_BAR or f["addr"] is None:
            continue
        for win in (node.get("mem64_window"), node["mem_window"]):
            if win is not None and win[0] <= f["addr"] < win[0] + win[2]:
                spans.add((win[1] + f["addr"] - win[0], f["size"]))
                break
    return sorted(spans)


def hcall_pairs(trace):
    """(guest hcall event, the hcall_done that answered it) in order."""
    return iter(trace.memo(hcall_pairs, _hcall_pairs))


def _hcall_pairs(trace) -> list:
    pairs, pending = [], None
    for _i, e in trace.indexed("hcall", "hcall_done"):
        if e.name == "hcall" and e.actor == "guest":
            pending = e
        elif e.name == "hcall_done" and pending is not None:
            pairs.append((pending, e))
            pending = None
    return pairs


def _pair_fields(trace) -> list:
    """hcall_pairs with each guest hcall's fields, built once per trace
    (a raw event's fields are built on every read, sim.trace.Event)."""
    return [(call, done, call.fields) for call, done in hcall_pairs(trace)]


def register_accesses(result) -> list[dict]:
    """Guest accesses to the virtio BAR, value as the guest meant it: LE
    header registers un-swapped, guest-endian device config as read. On a
    transitional device BAR 4 too, where everything is little-endian."""
    spans = [(b, n, 0) for b, n in _bar0_ranges(result)]
    spans += [(b, n, VIRTIO_PCI_MODERN_MEM_BAR) for b, n in _bar4_ranges(result)]
    out = []
    fw = firmware_trace(result.trace)
    for call, done, cf in fw.memo(_pair_fields, _pair_fields):
        nr = cf["nr"]
        if nr not in (papr.H_LOGICAL_CI_LOAD, papr.H_LOGICAL_CI_STORE):
            continue
        size, addr = cf["r4"], cf["r5"]
        base, bar = next(((b, i) for b, n, i in spans if b <= addr < b + n), (None, None))
        if base is None or size not in (1, 2, 4, 8):
            continue
        off = addr - base
        raw = cf["r6"] if nr == papr.H_LOGICAL_CI_STORE else done.fields["r4"]
        raw &= (1 << (8 * size)) - 1
        value = raw if bar == 0 and off >= VIRTIO_PCI_CONFIG_OFF_NO_MSIX or size == 1 else \
            int.from_bytes(raw.to_bytes(size, "big"), "little")
        out.append({"bar": bar, "region": _region(bar, off), "offset": off, "size": size,
                    "rw": "W" if nr == papr.H_LOGICAL_CI_STORE else "R", "value": value})
    return out


def _region(bar: int, off: int) -> str:
    """The virtio-pci region an access in BAR 0 or the modern BAR falls in."""
    if bar == 0:
        return "legacy"
    return ("common", "isr", "device", "notify")[min(off // VIRTIO_PCI_REGION_SIZE, 3)]


def kernel_register_accesses(result) -> list[dict]:
    """The kernel stage's device register accesses in order, as the device
    saw them (region, offset in it, rw, size, value): each guest MMIO load
    or store paired with the device model's access, or, for a QUEUE_NOTIFY
    an ioeventfd took in KVM, with that signal."""
    spans = [(b, n, 0) for b, n in _bar0_ranges(result)]
    spans += [(b, n, VIRTIO_PCI_MODERN_MEM_BAR) for b, n in _bar4_ranges(result)]
    out, pending = [], None
    for _i, e in split_stages(result.trace)[1].indexed("mmio_access", "virtio_pci_access", "ioeventfd_signal"):
        f = e.fields
        if e.name == "mmio_access" and e.actor == "guest":
            pending = e
        elif e.name == "virtio_pci_access" and pending is not None:
            out.append({"region": f["region"], "offset": f["region_offset"], "rw": f["rw"], "size": f["size"],
                        "value": f["value"]})
            pending = None
        elif e.name == "ioeventfd_signal" and pending is not None and pending.fields["rw"] == "W":
            addr = pending.fields["addr"]
            base, bar = next(((b, i) for b, n, i in spans if b <= addr < b + n), (None, None))
            if base is not None:
                off = addr - base
                region = _region(bar, off)
                out.append({"region": region, "offset": off if bar == 0 else off % VIRTIO_PCI_REGION_SIZE
                            if region != "notify" else off - 3 * VIRTIO_PCI_REGION_SIZE,
                            "rw": "W", "size": pending.fields["size"], "value": pending.fields["value"]})
            pending = None
    return out


def block_requests(trace) -> list[dict]:
    completed = {e.fields["used_idx"] for e in trace.named("blk_complete")}
    reqs = []
    for e in trace.named("virtio_blk_submit"):
        f = e.fields
        reqs.append({"type": "write" if f["type"] & 1 else "read", "sector": f["sector"], "count": f["count"],
                     "completed": f["avail_idx"] in completed})
    return reqs


def bytes_read(trace) -> int:
    """Bytes of SLOF's reads that completed with VIRTIO_BLK_S_OK (an IOERR
    completes without data)."""
    ok = {e.fields["used_idx"] for e in trace.named("blk_complete") if e.fields["status"] == 0}
    return sum(e.fields["count"] * 512 for e in trace.named("virtio_blk_submit")
               if not e.fields["type"] & 1 and e.fields["avail_idx"] in ok)


def phases(result) -> list[dict]:
    """Simulated time by SLOF phase, from the trace's phase events.

    The spans are the trace's phase slices (sim.perfetto.phase_spans): top
    phases (start-up, PCI probe, boot, kernel) partition the run; the phases
    inside `boot` (virtio init, each label probe, ELF load) have depth 1.
    """
    return [{"name": e.fields["name"], "depth": 0 if top else 1, "start_us": e.t_ns / 1000,
             "dur_us": (stop - e.t_ns) / 1000}
            for e, stop, top in phase_spans(result.trace.events, result.end_ns)]


def hung_in_qemu(result):
    """The drain the vcpu thread was still in when the run ended (a
    bdrv_drain_begin with no end: it waits for suspended requests), or
    None: the VM hangs in QEMU."""
    begins = result.trace.named("bdrv_drain_begin")
    if begins and len(begins) > len(result.trace.named("bdrv_drain_end")):
        return begins[-1]
    return None


def verdict(result) -> tuple[str, str]:
    """(outcome, reason), from the trace and the guest's result:
    hung-in-qemu: the vcpu thread is blocked in QEMU, holding the BQL, in a
      block-layer drain for requests that never complete (sim.faults);
    qemu-exited: QEMU called exit(1) on a guest error (before 2.8: a bad
      ring or virtio-blk header), with its message;
    watchdog: the simulator's own bound on simulated time ended the run
      (never the 2015 bug: a model that hangs is a slofsim bug);
    booted: the image SLOF loaded ran to its hand-off (sim.handoff) and
      the kernel stage read its blocks;
    stalled: the guest waited on a device that never woke (SLOF's virtio
      timeouts, or the kernel's hung-task check);
    failed: anything else, with the firmware's E34xx message, why the
      image stopped, or why the kernel stage failed."""
    trace = result.trace
    if result.hung or trace.named("watchdog"):
        w = trace.named("watchdog")
        secs = w[0].fields["seconds"] if w else None
        return "watchdog", ("the simulator's watchdog ended the run" +
                            (f" after {secs:.0f} s simulated" if secs else ""))
    exited = trace.named("qemu_exit")
    if exited:     # error_report(); exit(1): the QEMU process, and the VM, ended
        f = exited[0].fields
        return "qemu-exited", f"QEMU exited with status {f['status']}: {f['reason']}"
    drain = hung_in_qemu(result)
    if drain is not None:
        f = drain.fields
        return "hung-in-qemu", (f"the vcpu thread is blocked in QEMU: {f['why']} drains the block layer for "
                                f"suspended request(s) {numbers(f['suspended'])}")
    g = result.guest_result or {}
    linux = g.get("linux") or {}
    if g.get("stage") == "kernel" and g.get("handed_off") is True and linux.get("ok"):
        return "booted", ""
    hung = trace.named("linux_hung_task")
    if hung:
        f = hung[0].fields
        return "stalled", f"the kernel's read of sector {f.get('sector')} never completed " \
                          f"(hung task after {f.get('seconds')} s)"
    timeouts = trace.named("virtio_timeout")
    if timeouts:
        return "stalled", f"{len(timeouts)} SLOF virtio-blk request(s) timed out"
    return "failed", _failure(trace, g)


def _failure(trace, g: dict) -> str:
    for e in trace.named("guest_unbounded"):
        f = e.fields
        return (f"SLOF would never finish: {f['why']}" if f["kind"] == "loop"
                else f"model limit, SLOF would go on: {f['why']}")
    if g.get("stage") == "vm stopped":
        return f"QEMU stopped the VM ({g.get('run_state')})"
    if g.get("stage") == "kernel":
        if g.get("handed_off") is not True:
            return f"the loaded image did not reach its hand-off: {g.get('why')}"
        return f"the kernel stage failed: {(g.get('linux') or {}).get('reason', 'no result')}"
    text = "".join(e.fields["data"] for e in trace.named("vty_write"))
    errors = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()[:3] == "E34"]
    limits = [e.fields["what"] for e in trace.named("model_limit")]
    reason = "; ".join(dict.fromkeys(errors)) or "SLOF stopped without an error message"
    return reason + (f" (model limit: {'; '.join(dict.fromkeys(limits))})" if limits else "")


def outcome(result) -> str:
    """One of OUTCOMES (see verdict)."""
    return verdict(result)[0]


def kernel_stage(result, kern: Trace) -> dict:
    """The kernel stage's figures (all zero when it never ran)."""
    ran = bool(kern.events)
    notify_addrs_k = {e.fields["addr"] for e in kern.named("linux_virtqueue_notify")}
    notifies = []
    pending = None
    for _i, e in kern.indexed("mmio_access", "mmio_done"):
        if e.name == "mmio_access" and e.actor == "guest":
            pending = e
        elif e.name == "mmio_done" and pending is not None:
            if pending.fields["rw"] == "W" and pending.fields["addr"] in notify_addrs_k:
                notifies.append(e.fields["in_kernel"])
            pending = None
    done = kern.named("kernel_stage_done")
    mmu_on = kern.named("mmu_on")
    return {
        "kernel_stage": "done" if done else ("failed" if ran else "not reached"),
        # the guest kernel release the stage followed (firmware_model/linux/releases.py)
        "kernel_guest": mmu_on[0].fields.get("kernel") if mmu_on else None,
        "kernel_notifies": len(notifies),
        "kernel_notifies_in_kernel": sum(notifies),
        "kernel_notify_exits": len(notifies) - sum(notifies),
        "kernel_mmio_exits": sum(1 for e in kern.named("exit") if e.fields["reason"] == "KVM_EXIT_MMIO"),
        "kernel_ioeventfd_signals": len(kern.named("ioeventfd_signal")),
        "kernel_interrupts": len(kern.named("external_interrupt")),
        "kernel_irqfd_interrupts": len(kern.named("irqfd_inject")),
        "kernel_requests_completed": sum(1 for e in kern.named("linux_blk_done") if e.fields["status"] == 0),
    }


def grub_stage(trace) -> dict | None:
    """GRUB's part of the run (firmware_model/grub), from its trace events:
    None when no GRUB ran."""
    start = trace.named("grub_start")
    if not start:
        return None
    files = [{"path": e.fields["path"], "bytes": e.fields["bytes"]} for e in trace.named("grub_file_loaded")]
    prompt = trace.named("grub_prompt")
    return {
        "prefix": start[0].fields["prefix"],
        "config_lines": [e.fields["line"] for e in trace.named("grub_command")],
        "unknown_commands": [e.fields["command"] for e in trace.named("grub_unknown_command")],
        "files": files,
        "bytes_loaded": sum(f["bytes"] for f in files),
        "disk_reads": len(trace.named("grub_disk_read")),
        "ended": ("prompt: " + prompt[0].fields["reason"]) if prompt
                 else ("kernel" if trace.named("grub_boot") else "in GRUB"),
    }


def summary(result) -> dict:
    trace, kern = split_stages(result.trace)
    exits = [e for e in trace.named("exit")]
    exits_by_hcall = Counter()
    for nr, n in Counter(e.fields["nr"] for e in exits).items():
        exits_by_hcall[papr.hcall_name(nr)] += n
    in_kernel = [e for e in trace.named("hcall_done") if e.fields["in_kernel"]]
    addrs = notify_addrs(result)
    notifies = [(c, d) for c, d, cf in trace.memo(_pair_fields, _pair_fields)
                if cf["nr"] == papr.H_LOGICAL_CI_STORE and cf["r5"] in addrs]
    completed = trace.named("blk_complete")
    reads = {e.fields["used_idx"]: e for e in completed}
    bytes_loaded = bytes_read(trace)
    reqs = block_requests(trace)
    first_stalled = next((i for i, r in enumerate(reqs, 1) if not r["completed"]), None)   # request #n, from 1
    outcome_, reason = verdict(result)
    return {
        "scenario": result.scenario.name,
        "outcome": outcome_,
        "reason": reason,
        "sim_time_us": result.end_ns // 1000,
        "hcalls_in_kernel": len(in_kernel),
        "hcall_exits": len(exits),
        "exits_by_hcall": dict(sorted(exits_by_hcall.items())),
        "ioeventfd_signals": len(trace.named("ioeventfd_signal")),
        "notifies": len(notifies),
        "notifies_in_kernel": sum(1 for _, d in notifies if d.fields["in_kernel"]),
        "notify_exits": sum(1 for _, d in notifies if not d.fields["in_kernel"]),
        "enable_cap": enable_cap(trace),
        "requests_submitted": len(reqs),
        "requests_completed": len(reads),
        "timeouts": len(trace.named("virtio_timeout")),
        "first_stalled_request": first_stalled,
        "bytes_loaded": bytes_loaded,
        "phases": phases(result),
        "grub": (g := grub_stage(trace)),
        "grub_ended": g["ended"] if g else "not reached",
        "grub_disk_reads": g["disk_reads"] if g else 0,
        "grub_bytes_loaded": g["bytes_loaded"] if g else 0,
        **kernel_stage(result, kern),
    }


def enable_cap(trace) -> dict:
    """QEMU's KVM_ENABLE_CAP(KVM_CAP_PPC_ENABLE_HCALL) calls, in order:
    whether it made any, the hcall each enabled, the ioctl's return (0 or
    -errno) and the errno's name ("" on success)."""
    calls = trace.named("enable_cap")
    codes = {name: n for n, name in ERRNO_NAMES.items()}
    names = [e.fields["ret"].lstrip("-") for e in calls]      # sim.abi.kvm.errno_name's text
    return {"called": bool(calls), "hcalls": [e.fields["hcall"] for e in calls],
            "results": [0 if n == "0" else -codes.get(n, int(n) if n.isdigit() else 0) for n in names],
            "errors": [n if n != "0" else "" for n in names]}


def format_enable_cap(cap: dict) -> str:
    """The summary's ENABLE_CAP(104) line: "not called", or each return."""
    if not cap["called"]:
        return "not called"
    return ",".join(f"-{e}" if e else str(r) for r, e in zip(cap["results"], cap["errors"]))


# The version of every --json object (run, check, compare, explain); the
# schema is sim/schema/slofsim.schema.json. Bump it when a field changes
# meaning or goes away; adding a field does not.
SCHEMA_VERSION = 1


def to_json(result) -> dict:
    out = {"schema_version": SCHEMA_VERSION, "command": "run", **summary(result)}
    out["block_requests"] = [{k: r[k] for k in ("type", "sector", "count")}
                             for r in block_requests(firmware_trace(result.trace))]
    out["register_accesses"] = register_accesses(result)
    out["kernel_register_accesses"] = kernel_register_accesses(result)
    out["console"] = result.console.text()
    out["diagnosis"] = diagnose(result)
    out["faults"] = [f.text() for f in result.scenario.faults]
    return out


def dumps(obj) -> str:
    """json.dumps(obj, indent=1), byte for byte, in about half the time
    (the stdlib's encoder is pure Python when it indents: a generator per
    container): for the dicts, lists, strings, ints, floats, booleans and
    None of slofsim's --json; anything else takes json.dumps."""
    out = []
    app = out.append

    def enc(o, pad):
        t = type(o)
        if t is str:
            app(_json_str(o))
        elif t is int:
            app(int.__repr__(o))
        elif o is None:
            app("null")
        elif o is True:
            app("true")
        elif o is False:
            app("false")
        elif t is dict or t is list:
            if not o:
                app("{}" if t is dict else "[]")
                return
            inner = pad + " "
            if t is dict:
                sep = "{" + inner
                for k, v in o.items():
                    if type(k) is not str:
                        raise _NotPlain
                    app(sep)
                    app(_json_str(k))
                    app(": ")
                    enc(v, inner)
                    sep = "," + inner
                app(pad + "}")
            else:
                sep = "[" + inner
                for v in o:
                    app(sep)
                    enc(v, inner)
                    sep = "," + inner
                app(pad + "]")
        elif t is float and math.isfinite(o):
            app(float.__repr__(o))
        else:
            raise _NotPlain
    try:
        enc(obj, "\n")
    except (_NotPlain, RecursionError):
        return json.dumps(obj, indent=1)
    return "".join(out)


class _NotPlain(Exception):
    """dumps met what only json.dumps knows how to write."""


def format_summary(s: dict) -> str:
    exits = ", ".join(f"{n} {k}" for k, n in s["exits_by_hcall"].items()) or "none"
    lines = [
        f"outcome:             {s['outcome']}" + (f" ({s['reason']})" if s.get("reason") else ""),
        f"simulated time:      {s['sim_time_us'] / 1e6:.6f} s",
        f"hcalls in kernel:    {s['hcalls_in_kernel']}",
        f"exits to userspace:  {s['hcall_exits']} ({exits})",
        f"QUEUE_NOTIFY:        {s['notifies']} ({s['notifies_in_kernel']} in kernel, {s['notify_exits']} via QEMU)",
        f"ioeventfd signals:   {s['ioeventfd_signals']}",
        f"ENABLE_CAP(104):     {format_enable_cap(s['enable_cap'])}",
        f"block requests:      {s['requests_completed']} of {s['requests_submitted']} completed"
        + (f", {s['timeouts']} timed out" if s["timeouts"] else ""),
        f"bytes loaded:        {s['bytes_loaded']}",
        *([format_grub(s["grub"])] if s.get("grub") else []),
        f"kernel stage:        {kernel_stage_text(s)}",
    ]
    return "\n".join(lines)


def format_grub(g: dict) -> str:
    files = ", ".join(f"{f['path']} {f['bytes']} B" for f in g["files"]) or "none"
    unknown = f"; unknown commands: {', '.join(g['unknown_commands'])}" if g["unknown_commands"] else ""
    return (f"GRUB:                {g['prefix']}: {len(g['config_lines'])} grub.cfg lines followed, "
            f"{g['disk_reads']} disk reads, loaded {files}; ended: {g['ended']}{unknown}")


def format_phases(s: dict) -> str:
    """The time-by-phase table of `slofsim run`: seconds and share of the run."""
    total = s["sim_time_us"] or 1
    width = max((len(p["name"]) + 2 * p["depth"] for p in s["phases"]), default=0)
    lines = ["time by SLOF phase:"]
    for p in s["phases"]:
        name = "  " * p["depth"] + p["name"]
        lines.append(f"  {name:<{width}}  {p['dur_us'] / 1e6:10.6f} s  {100 * p['dur_us'] / total:5.1f} %")
    return "\n".join(lines)


def expect_mismatches(s: dict, expect: dict) -> list[dict]:
    """[expect] keys whose figure differs: {key, got, expected}. A table
    (enable_cap) matches when every field it names matches."""
    bad = []
    for key, want in expect.items():
        got = s.get(key)
        if isinstance(want, dict):
            ok = isinstance(got, dict) and all(got.get(k) == v for k, v in want.items())
        else:
            ok = got == want
        if not ok:
            bad.append({"key": key, "got": got, "expected": want})
    return bad


def kernel_stage_text(s: dict) -> str:
    """The summary's kernel stage line, after its label."""
    if s["kernel_stage"] == "not reached":
        return s["kernel_stage"]
    def n(count, what):
        return f"{count} {what}{'' if count == 1 else 's'}"
    return (f"{s['kernel_stage']} (Linux {s['kernel_guest']}): {n(s['kernel_requests_completed'], 'read')}, "
            f"QUEUE_NOTIFY {s['kernel_notifies']} "
            f"({s['kernel_notifies_in_kernel']} in kernel, {s['kernel_notify_exits']} via QEMU), "
            f"{n(s['kernel_mmio_exits'], 'MMIO exit')}, {n(s['kernel_interrupts'], 'interrupt')} "
            f"({s['kernel_irqfd_interrupts']} by irqfd)")


# compare's rows: (summary key, the label a person reads), in order.
COMPARE_ROWS = (
    ("outcome", "outcome"), ("sim_time_us", "simulated time (s)"), ("hcalls_in_kernel", "hcalls in kernel"),
    ("hcall_exits", "exits to userspace"), ("notifies_in_kernel", "QUEUE_NOTIFY in kernel"),
    ("notify_exits", "QUEUE_NOTIFY via QEMU"), ("ioeventfd_signals", "ioeventfd signals"),
    ("enable_cap", "ENABLE_CAP(104)"), ("requests_submitted", "requests submitted"),
    ("requests_completed", "requests completed"), ("timeouts", "timeouts"), ("bytes_loaded", "bytes loaded"),
)
COMPARE_KERNEL_ROWS = (
    ("kernel_stage", "kernel stage"), ("kernel_requests_completed", "kernel: reads completed"),
    ("kernel_notifies_in_kernel", "kernel: QUEUE_NOTIFY in kernel"),
    ("kernel_notify_exits", "kernel: QUEUE_NOTIFY via QEMU"), ("kernel_mmio_exits", "kernel: MMIO exits"),
    ("kernel_ioeventfd_signals", "kernel: ioeventfd signals"), ("kernel_interrupts", "kernel: interrupts"),
    ("kernel_irqfd_interrupts", "kernel: interrupts by irqfd"),
)


def compare_rows(sums: list[dict]) -> list[tuple[str, list[str]]]:
    """(label, one text per run) for compare: the firmware stage's figures,
    its exits by hcall, then the kernel stage's."""
    def text(key, s):
        v = s[key]
        if key == "sim_time_us":
            return f"{v / 1e6:.6f}"
        return format_enable_cap(v) if key == "enable_cap" else str(v)
    rows = [(label, [text(k, s) for s in sums]) for k, label in COMPARE_ROWS]
    for name in sorted({k for s in sums for k in s["exits_by_hcall"]}):
        rows.append((f"exits: {name}", [str(s["exits_by_hcall"].get(name, 0)) for s in sums]))
    rows += [(label, [text(k, s) for s in sums]) for k, label in COMPARE_KERNEL_ROWS]
    return rows
