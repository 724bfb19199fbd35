"""Chrome/Perfetto trace-event JSON from a run's trace.

The documented trace-event format (the "JSON Array/Object Format" that
ui.perfetto.dev and chrome://tracing load): one thread track per actor,
complete slices ("X") for phases, hcalls, exits and request service,
flow events ("s"/"f") from each QUEUE_NOTIFY to where it was consumed or
dropped, and counters ("C") for requests in flight and exits. Times are in
microseconds.
"""

from sim.abi import papr
from sim.trace import KERNEL_STAGE_PHASE

PID = 1
TRACKS = {"guest": (1, "vcpu 0 (SLOF)"), "kvm": (2, "KVM"), "qemu-vcpu": (3, "QEMU vcpu thread"),
          "qemu-main": (4, "QEMU main loop"), "iothread": (5, "IOThread iothread0"), "disk": (6, "disk")}
TOP_PHASES = ("slof start-up", "pci probe", "boot", "forth prompt", "grub", "kernel", KERNEL_STAGE_PHASE)


def _us(ns: int) -> float:
    return ns / 1000


def _slice(name, actor, start_ns, end_ns, cat, **args):
    return {"ph": "X", "name": name, "cat": cat, "pid": PID, "tid": TRACKS[actor][0],
            "ts": _us(start_ns), "dur": max(_us(end_ns - start_ns), 0.001), "args": args}


def phase_spans(events, end_ns: int) -> list[tuple]:
    """(phase event, stop_ns, top) for each SLOF phase the guest announced.

    A top phase (TOP_PHASES) lasts until the next top phase; a phase inside
    one (virtio init, each disk-label probe, elf load) lasts until the next
    phase of any kind. The last phase ends with the run. `slofsim run`'s
    time-by-phase table and the trace's phase slices both come from here.
    """
    out = []
    phases = [e for e in events if e.name == "phase"]
    for i, e in enumerate(phases):
        top = e.fields["name"] in TOP_PHASES
        stop = end_ns
        for nxt in phases[i + 1:]:
            if nxt.fields["name"] in TOP_PHASES or not top:
                stop = nxt.t_ns
                break
        out.append((e, stop, top))
    return out


def _phases(events, end_ns) -> list[dict]:
    out = []
    for e, stop, _ in phase_spans(events, end_ns):
        args = {k: v for k, v in e.fields.items() if k != "name"}
        out.append(_slice(e.fields["name"], "guest", e.t_ns, stop, "phase", **args))
    return out


def build(result, notify_addrs: set[int]) -> dict:
    ev = result.trace.events
    out = [{"ph": "M", "name": "process_name", "pid": PID, "args": {"name": f"slofsim {result.scenario.name}"}}]
    for actor, (tid, label) in TRACKS.items():
        out.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": label}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid, "args": {"sort_index": tid}})
    out += _phases(ev, result.end_ns)
    flow_id, in_flight, exits = 0, 0, 0
    pending_call, pending_notify, pending_req, pending_mmio = None, None, {}, None
    startup_flow, bql_from = None, None
    for e in ev:
        f = e.fields
        # The start-up race (QEMU 2.1-2.4): a host notifier created signalled,
        # the main loop's wake-up and its BQL, the dataplane it starts.
        if e.name == "host_notifier_init" and f.get("signalled") and f.get("handler") == "main loop":
            flow_id += 1
            startup_flow = flow_id
            out.append({"ph": "i", "s": "t", "name": "host notifier created signalled", "pid": PID,
                        "tid": TRACKS[e.actor][0], "ts": _us(e.t_ns), "args": {"eventfd": f["eventfd"]}})
            out.append({"ph": "s", "id": flow_id, "name": "start-up signal", "cat": "startup", "pid": PID,
                        "tid": TRACKS[e.actor][0], "ts": _us(e.t_ns)})
            continue
        if e.name == "main_loop_wakeup":
            out.append({"ph": "i", "s": "t", "name": "main loop wakes", "pid": PID, "tid": TRACKS[e.actor][0],
                        "ts": _us(e.t_ns), "args": {"ready": f["ready"]}})
            continue
        if e.name == "bql_lock" and e.actor in TRACKS:
            bql_from = e
            continue
        if e.name == "bql_unlock" and bql_from is not None:
            out.append(_slice("BQL held", e.actor, bql_from.t_ns, e.t_ns, "bql"))
            bql_from = None
            continue
        if e.name == "dataplane_start":
            out.append(_slice(f"dataplane start (by {f.get('by', '?')})", e.actor, e.t_ns, e.t_ns, "startup",
                              iothread=f["iothread"]))
            if startup_flow is not None:
                out.append({"ph": "f", "bp": "e", "id": startup_flow, "name": "start-up signal", "cat": "startup",
                            "pid": PID, "tid": TRACKS[e.actor][0], "ts": _us(e.t_ns)})
                startup_flow = None
            continue
        if e.name == "linux_virtqueue_notify":       # the kernel stage's kick: an MMU-on store
            flow_id += 1
            pending_notify = flow_id
            out.append({"ph": "s", "id": flow_id, "name": "QUEUE_NOTIFY", "cat": "notify", "pid": PID,
                        "tid": TRACKS["guest"][0], "ts": _us(e.t_ns)})
            continue
        if e.name == "mmio_access" and e.actor == "guest":
            pending_mmio = e
            continue
        if e.name == "mmio_done" and pending_mmio is not None:
            c = pending_mmio
            name = f"MMIO {c.fields['rw']} 0x{c.fields['addr']:x}"
            out.append(_slice(name, "guest", c.t_ns, e.t_ns, "mmio", inst=c.fields["inst"]))
            out.append(_slice(name + (" (in kernel)" if f["in_kernel"] else " (KVM_EXIT_MMIO)"),
                              "kvm" if f["in_kernel"] else "qemu-vcpu", c.t_ns, e.t_ns, "mmio"))
            pending_mmio = None
            continue
        if e.name == "virtio_pci_access":       # every register access the device saw, with its value
            out.append({"ph": "i", "s": "t", "name": f"{f['reg']} {f['rw']} 0x{f['value']:x}", "cat": "register",
                        "pid": PID, "tid": TRACKS[e.actor][0], "ts": _us(e.t_ns),
                        "args": {"region": f.get("region"), "offset": f.get("region_offset", f["offset"]),
                                 "rw": f["rw"], "size": f["size"], "value": f"0x{f['value']:x}"}})
            continue
        if e.name == "irqfd_inject":
            out.append({"ph": "i", "s": "t", "name": "irqfd -> XICS", "pid": PID, "tid": TRACKS["kvm"][0],
                        "ts": _us(e.t_ns), "args": {"gsi": f["gsi"]}})
            continue
        if e.name == "hcall" and e.actor == "guest":
            pending_call = e
            if f["nr"] == papr.H_LOGICAL_CI_STORE and f["r5"] in notify_addrs:
                flow_id += 1
                pending_notify = flow_id
                out.append({"ph": "s", "id": flow_id, "name": "QUEUE_NOTIFY", "cat": "notify", "pid": PID,
                            "tid": TRACKS["guest"][0], "ts": _us(e.t_ns)})
            continue
        if e.name == "exit":        # KVM_EXIT_PAPR_HCALL and KVM_EXIT_MMIO alike
            exits += 1
            out.append({"ph": "C", "name": "exits to userspace", "pid": PID, "ts": _us(e.t_ns),
                        "args": {"exits": exits}})
        elif e.name == "hcall_done" and pending_call is not None:
            c = pending_call
            name = papr.hcall_name(c.fields["nr"])
            actor = "kvm" if f["in_kernel"] else "qemu-vcpu"
            out.append(_slice(name, "guest", c.t_ns, e.t_ns, "hcall", r4=c.fields["r4"], r5=c.fields["r5"]))
            out.append(_slice(name + (" (in kernel)" if f["in_kernel"] else " (exit)"), actor, c.t_ns, e.t_ns,
                              "hcall", ret=f["ret"]))
            pending_call = None
        elif e.name == "ioeventfd_signal" and pending_notify is not None:
            out.append(_slice("ioeventfd_write", "kvm", e.t_ns, e.t_ns, "notify", eventfd=f["eventfd"]))
        elif e.name == "eventfd_read" and pending_notify is not None:
            out.append(_slice("aio: " + f["eventfd"], e.actor, e.t_ns, e.t_ns, "notify", count=f["count"]))
            out.append({"ph": "f", "bp": "e", "id": pending_notify, "name": "QUEUE_NOTIFY", "cat": "notify",
                        "pid": PID, "tid": TRACKS[e.actor][0], "ts": _us(e.t_ns)})
            pending_notify = None
        elif e.name == "virtio_blk_handle_output" and pending_notify is not None:
            dropped = f["dataplane"] == "already started: kick dropped"
            out.append(_slice("virtio_blk_handle_output" + (": kick dropped" if dropped else ""), e.actor,
                              e.t_ns, e.t_ns, "notify", dataplane=f["dataplane"]))
            out.append({"ph": "f", "bp": "e", "id": pending_notify, "name": "QUEUE_NOTIFY", "cat": "notify",
                        "pid": PID, "tid": TRACKS[e.actor][0], "ts": _us(e.t_ns)})
            pending_notify = None
        elif e.name in ("virtio_blk_submit", "linux_blk_submit"):
            in_flight += 1
            out.append({"ph": "C", "name": "requests in flight", "pid": PID, "ts": _us(e.t_ns),
                        "args": {"requests": in_flight}})
        elif e.name == "blk_request":
            pending_req[f["head"]] = e
        elif e.name == "disk_io":
            start = next((r for r in pending_req.values() if r.fields["sector"] == f["sector"]), None)
            if start is not None:
                out.append(_slice(f"{f['type']} sector {f['sector']}", "disk", start.t_ns, e.t_ns, "disk",
                                  bytes=f["bytes"], status=f["status"]))
        elif e.name == "blk_complete":
            start = pending_req.pop(f["head"], None)
            if start is not None:
                out.append(_slice(f"request {start.fields['type']} {start.fields['sector']}", e.actor,
                                  start.t_ns, e.t_ns, "request", status=f["status"]))
            in_flight -= 1
            out.append({"ph": "C", "name": "requests in flight", "pid": PID, "ts": _us(e.t_ns),
                        "args": {"requests": in_flight}})
        elif e.name == "virtio_timeout":
            out.append({"ph": "i", "s": "t", "name": "SLOF timeout", "pid": PID, "tid": TRACKS["guest"][0],
                        "ts": _us(e.t_ns), "args": {"timeout_ms": f["timeout_ms"]}})
        elif e.name in ("blkdebug", "fault_lost_kick") and e.actor in TRACKS:     # sim.faults acting
            out.append({"ph": "i", "s": "t", "name": f"fault {f['fault']}", "pid": PID, "tid": TRACKS[e.actor][0],
                        "ts": _us(e.t_ns), "args": {k: v for k, v in f.items() if k != "fault"}})
        elif e.name == "bdrv_drain_begin":
            end = next((x.t_ns for x in ev if x.name == "bdrv_drain_end" and x.t_ns >= e.t_ns), None)
            out.append(_slice(f"bdrv_drain ({f['why']})" + (": VM hung in QEMU" if end is None else ""),
                              e.actor, e.t_ns, result.end_ns if end is None else end, "drain",
                              in_flight=f["in_flight"]))
    return {"traceEvents": out, "displayTimeUnit": "ns",
            "otherData": {"scenario": result.scenario.name, "generator": "slofsim"}}
