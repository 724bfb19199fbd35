"""The causal chain of one block request, read off the trace.

For a stalled boot it follows the first request that never completed; for
a good boot, a typical one (the first partition read). Each step quotes
trace events: their time, the layer, and the real-stack function.
"""

from sim.abi import papr
from sim.faults import numbers
from sim.abi.virtio import VIRTIO_PCI_MODERN_MEM_BAR, VIRTIO_PCI_NOTIFY_OFF, VIRTIO_PCI_QUEUE_NOTIFY
from sim.trace import split_stages


def _step(e, layer: str, func: str, text: str) -> dict:
    return {"t_us": e.t_ns / 1000, "layer": layer, "function": func, "text": text}


def _legacy_notify_addrs(result) -> set[int]:
    io = result.machine.io_win_addr
    return {io + e.fields["addr"] + VIRTIO_PCI_QUEUE_NOTIFY for e in result.trace.named("pci_bar_map")
            if e.fields["bar"] == 0 and e.fields["addr"] is not None}


def notify_addrs(result) -> set[int]:
    """CPU addresses of queue 0's notify register: legacy BAR 0 + 16 and,
    on a transitional device, the modern notify area in BAR 4."""
    addrs = _legacy_notify_addrs(result)
    node = result.machine.phb_node
    for e in result.trace.named("pci_bar_map"):
        if e.fields["bar"] != VIRTIO_PCI_MODERN_MEM_BAR or e.fields["addr"] is None:
            continue
        bus = e.fields["addr"]
        for win in (node.get("mem64_window"), node["mem_window"]):
            if win is not None and win[0] <= bus < win[0] + win[2]:
                addrs.add(win[1] + bus - win[0] + VIRTIO_PCI_NOTIFY_OFF)
                break
    return addrs


def _pick(events, faulted: int | None = None) -> int | None:
    """Index of the request to explain: the first that never completed,
    else the first a fault acted on, else a typical one."""
    done = {e.fields["used_idx"] for _, e in events if e.name == "blk_complete"}
    subs = [(i, e) for i, e in events if e.name == "virtio_blk_submit"]
    for i, e in subs:
        if e.fields["avail_idx"] not in done:
            return i
    if faulted is not None:
        return faulted
    return subs[min(4, len(subs) - 1)][0] if subs else None


def _pick_fault(trace) -> int | None:
    """With faults: the request the first fault acted on (the last one
    SLOF posted before it acted)."""
    acted = trace.indexed("blkdebug", "fault_lost_kick")
    if not acted:
        return None
    k = acted[0][0]
    return next((i for i, _e in reversed(trace.indexed("virtio_blk_submit")) if i <= k), None)


def _grub_read(ev) -> tuple[int | None, list[dict]]:
    """GRUB's first disk read: (index of SLOF's request for it, GRUB's steps)."""
    g = next((i for i, e in enumerate(ev) if e.name == "grub_disk_read"), None)
    if g is None:
        return None, []
    f = ev[g].fields
    steps = [_step(ev[g], "GRUB", "grub_disk_read_small",
                   f"disk-cache miss: chunk at sector {f['sector']} x{f['sectors']} -> grub_ofdisk_read")]
    for i in range(g + 1, len(ev)):
        e = ev[i]
        if e.name == "cif_call" and e.fields["service"] == "read":
            steps.append(_step(e, "GRUB", "grub_ieee1275_read",
                               f"client interface `read` ihandle 0x{e.fields['ihandle']:x}, {e.fields['length']} "
                               "bytes -> SLOF's deblocker"))
        elif e.name == "virtio_blk_submit":
            return i, steps
    return None, steps


def diagnose(result, grub: bool = False) -> list[dict]:
    """The chain of one firmware-stage request (the kernel stage's I/O is
    not what the 2015 bug is about; sim.trace.split_stages). grub: the
    first read GRUB made through SLOF's client interface."""
    fw, kern = split_stages(result.trace)
    ev = fw.events
    pre = []
    if grub:
        start, pre = _grub_read(ev)
        if start is None:
            return pre
    else:
        start = _pick(fw.indexed("virtio_blk_submit", "blk_complete"), _pick_fault(fw))
    if start is None:
        return diagnose_kernel(kern.events)   # SLOF read nothing (-kernel): the kernel's first read
    sub = ev[start]
    want = sub.fields["avail_idx"]
    addrs = notify_addrs(result)
    fn = sub.fields.get("fn", "virtioblk_transfer")   # SLOF before 2645539: virtioblk_read
    steps = pre if grub else _startup(ev, start)   # GRUB's read: its own lead-in, not the start-up race
    steps.append(_step(sub, "SLOF", fn,
                       f"request #{want}: read sector {sub.fields['sector']} x{sub.fields['count']}, "
                       f"avail->idx := {want}"))
    i = start + 1
    while i < len(ev) and not (ev[i].name == "hcall" and ev[i].fields["nr"] == papr.H_LOGICAL_CI_STORE
                               and ev[i].fields["r5"] in addrs):
        i += 1
    if i == len(ev):
        return steps
    call = ev[i]
    addr = call.fields["r5"]
    legacy = addr in _legacy_notify_addrs(result)
    steps.append(_step(call, "SLOF", "virtio_queue_notify",
                       f"hcall 0x40 H_LOGICAL_CI_STORE size {call.fields['r4']} addr 0x{addr:x} "
                       f"val 0x{call.fields['r6']:x} "
                       + ("(QUEUE_NOTIFY <- 0)" if legacy else "(modern notify area, queue 0)")))
    notify_t = call.t_ns
    j = i + 1
    while j < len(ev) and ev[j].name != "hcall_done":
        e, f = ev[j], ev[j].fields
        if e.name == "hcall_gate":
            caps = [x.fields["ret"] for x in ev[:i] if x.name == "enable_cap" and x.fields["hcall"] == call.fields["nr"]]
            why = f"KVM_ENABLE_CAP(104, 0x{call.fields['nr']:x}) returned {caps[-1]}" if caps else "QEMU never called KVM_ENABLE_CAP(104)"
            steps.append(_step(e, "KVM", "kvmppc_pseries_do_hcall" if result.scenario.kvm == "HV" else "kvmppc_h_pr",
                               f"enabled_hcalls bit {f['bit']} {'set' if f['enabled'] else 'clear'} ({why})"))
        elif e.name == "io_bus_write":
            steps.append(_step(e, "KVM", "kvm_io_bus_write",
                               f"KVM_MMIO_BUS addr 0x{f['addr']:x} len {f['len']} data {f['data']}: "
                               + (f"taken by {f['device']}" if f["ret"] == "0" else f"{f['ret']}, no device took it")))
        elif e.name == "ioeventfd_signal":
            steps.append(_step(e, "KVM", "ioeventfd_write", f"eventfd_signal({f['eventfd']!r}), H_SUCCESS, no exit"))
        elif e.name == "exit":
            steps.append(_step(e, "KVM", "kvmppc_handle_exit", f"{f['reason']} nr 0x{f['nr']:x} to QEMU: {f['why']}"))
        elif e.name == "h_logical_store":
            steps.append(_step(e, "QEMU", "h_logical_store", f"stw_phys(0x{f['addr']:x}) -> virtio-pci "
                               + ("BAR0" if legacy else "BAR4 notify")))
        elif e.name == "virtio_queue_notify":
            if legacy:
                steps.append(_step(e, "QEMU", "virtio_ioport_write",
                                   f"QUEUE_NOTIFY -> virtio_queue_notify(vq {f['queue']})"))
            else:
                steps.append(_step(e, "QEMU", "virtio_pci_notify_write",
                                   f"notify area -> virtio_queue_notify(vq {f['queue']})"))
        elif e.name == "virtio_blk_handle_output":
            if f["processed"]:
                text = "no dataplane: QEMU serves the queue itself"
            elif f["dataplane"] == "started dataplane":
                text = "queue belongs to the dataplane: starts it (set_host_notifier, self-kick) and returns"
            else:
                dp = next((x for x in reversed(ev[:j]) if x.name == "dataplane_start"), None)
                text = "dataplane already started" + (f" (by the {dp.fields['by']}, {dp.actor})" if dp else "") \
                    + f": returns without touching the queue -> kick dropped, request #{want} lost"
            steps.append(_step(e, "QEMU", "virtio_blk_handle_output", text))
        elif e.name == "eventfd_set":
            steps.append(_step(e, "QEMU", "event_notifier_set", f"{f['why']}: sets {f['eventfd']!r}"))
        elif e.name == "ioeventfd_emulation_skipped":
            steps.append(_step(e, "QEMU", "memory_region_dispatch_write_eventfds",
                               f"ioeventfd emulation skipped for {f['eventfd']!r}: {f['why']}"))
        elif e.name == "fault_lost_kick":
            steps.append(_fault_step(e))
        elif e.name == "dataplane_start":
            steps.append(_step(e, "QEMU", "virtio_blk_data_plane_start",
                               f"started by this kick ({f['by']}): host notifier {f['host_notifier']!r} "
                               f"moved to {f['iothread']}"))
        j += 1
    # What the serving side did after the notify.
    served = False
    for e in ev[j:]:
        f = e.fields
        if e.name == "eventfd_read" and e.actor in ("iothread", "qemu-main"):
            steps.append(_step(e, e.actor, "aio_dispatch", f"{f['eventfd']!r} readable: handler runs"))
        elif e.name == "blk_request":
            steps.append(_step(e, e.actor, "virtio_blk_handle_request",
                               f"popped {f['type']} sector {f['sector']} x{f['count']}"))
        elif e.name in ("blkdebug", "fault_lost_kick"):
            steps.append(_fault_step(e))
        elif e.name == "blk_complete" and f["used_idx"] == want:
            steps.append(_step(e, e.actor, "virtio_blk_req_complete",
                               f"status {f['status']}" + (" (VIRTIO_BLK_S_IOERR)" if f["status"] == 1 else "")
                               + f", used->idx := {f['used_idx']}"))
            served = True
            break
        elif e.name == "virtio_timeout":
            break
        if len(steps) > 14:
            break
    if not served:
        steps += _unserved(result, ev, j, addr, notify_t, want)
    return _with_faults(result, steps)


_BLKDEBUG = {
    "io_error": ("blkdebug_co_preadv", "inject-error errno 5: the I/O returns -EIO"),
    "hang": ("blkdebug_debug_event", "breakpoint: the request is suspended and never resumed"),
    "delay": ("blkdebug_co_preadv", "a slow backend"),
    "short_read": ("handle_aiocb_rw", "the file returns half: the rest is padded with zeros"),
}


def _fault_step(e) -> dict:
    """A fault acting (sim.faults): in the block backend, or one lost notify."""
    f = e.fields
    if e.name == "fault_lost_kick":
        return _step(e, "fault", f["func"],
                     f"{f['fault']}: notify #{f['kick']} lost at the {f['layer']} layer ({f['where']})")
    func, text = _BLKDEBUG[f["kind"]]
    return _step(e, "fault", func, f"{f['fault']}: {f['event']} of request #{f['request']} "
                                   f"(sector {f['sector']}): {text}")


def _with_faults(result, steps: list[dict]) -> list[dict]:
    """The scenario's faults first; a drain the vcpu thread never left last:
    the VM hangs in QEMU (bus mastering cleared or a reset, the dataplane
    stopped, the block layer drained for a request that never completes)."""
    faults = getattr(result.scenario, "faults", ())
    if not faults:
        return steps
    ev = result.trace.events
    where = {"kvm": "ioeventfd_write", "qemu": "virtio_queue_notify", "iothread": "aio_poll", None: "blkdebug"}
    head = [{"t_us": 0.0, "layer": "fault", "function": where[f.layer],
             "text": f"injected: {f.text()}"} for f in faults]
    tail = []
    begins = [i for i, e in enumerate(ev) if e.name == "bdrv_drain_begin"]
    if begins and len(begins) > len(result.trace.named("bdrv_drain_end")):
        k = begins[-1]
        for e in ev[:k]:
            if e.name == "bus_master_cleared" and e.t_ns >= ev[k].t_ns - 1000:
                tail.append(_step(e, "QEMU", "virtio_write_config",
                                  "SLOF's close clears bus mastering (PCI command & ~7): virtio_pci_stop_ioeventfd"))
            elif e.name == "dataplane_stop" and e.t_ns >= ev[k].t_ns - 1000:
                tail.append(_step(e, "QEMU", "virtio_blk_data_plane_stop", "the dataplane stops; the disk goes "
                                                                           "back to the main loop's context"))
        d = ev[k].fields
        tail.append(_step(ev[k], "QEMU", "bdrv_drain",
                          f"{d['why']} drains the block layer holding the BQL: {d['in_flight']} request(s) in "
                          f"flight, suspended {numbers(d['suspended'])}"))
        tail.append(_step(ev[-1], "QEMU", "BDRV_POLL_WHILE",
                          "only suspended requests are in flight, so the drain never returns: the vcpu thread is "
                          "blocked in QEMU with the BQL -- the VM hangs in QEMU, not in the guest"))
    elif any(e.name == "blkdebug" and e.fields["kind"] == "hang" for e in ev):
        clear = next((e for e in reversed(ev) if e.name == "bus_master_cleared"), None)
        if clear is not None:
            dp = any(e.name == "dataplane_start" for e in ev)
            tail.append(_step(clear, "QEMU", "virtio_write_config", (
                "SLOF's close clears bus mastering; the dataplane keeps running (virtio_set_status(3) stops it "
                "only without DRIVER, before 2.8's stop_ioeventfd)" if dp else
                "SLOF's close clears bus mastering; with no IOThread the disk never leaves the main loop's "
                "context") + ": nothing drains, the suspended request(s) stay in flight and SLOF goes on"))
    return head + sorted(steps + tail, key=lambda st: st["t_us"])     # stable: the chain's order at equal times


def _startup(ev, before: int) -> list[dict]:
    """How the dataplane came to own the queue before request `before` was
    posted: the start-up race of 2015 QEMU (virtio-pci creates the host
    notifier signalled at DRIVER_OK; the main loop, once it has the BQL,
    runs its handler, which starts the dataplane on an empty ring)."""
    k = next((i for i in range(before) if ev[i].name == "dataplane_start"), None)
    if k is None:
        return []
    dp = ev[k]
    steps = []
    init = next((e for e in reversed(ev[:k]) if e.name == "host_notifier_init"
                 and e.fields["handler"] == "main loop"), None)
    if init is not None:
        steps.append(_step(init, "QEMU", "virtio_pci_set_host_notifier_internal",
                           f"DRIVER_OK: {init.fields['eventfd']!r} created already signalled "
                           f"(event_notifier_init(n, {init.fields['signalled']})), handler in the main loop"))
    if dp.actor == "qemu-main":
        wake = next((e for e in reversed(ev[:k]) if e.name == "main_loop_wakeup"), None)
        lock = next((e for e in reversed(ev[:k]) if e.name == "bql_lock" and e.actor == "qemu-main"), None)
        if wake is not None:
            steps.append(_step(wake, "qemu-main", "os_host_main_loop_wait", "ppoll returns: the notifier is readable"))
        if lock is not None:
            steps.append(_step(lock, "qemu-main", "qemu_mutex_lock_iothread",
                               "takes the BQL between two of the vcpu thread's exits"))
    by = dp.fields["by"]
    how = ("the start_ioeventfd hook at DRIVER_OK" if by.startswith("DRIVER_OK")
           else f"handle_output ({by}{', no guest kick behind it' if by == 'start-up notifier' else ''})")
    steps.append(_step(dp, "QEMU", "virtio_blk_data_plane_start",
                       f"{how} starts the dataplane: {dp.fields['host_notifier']!r} moves to {dp.fields['iothread']}"))
    first = next((e for e in ev[k:before] if e.name == "dataplane_handle_notify"), None)
    if first is not None:
        steps.append(_step(first, first.actor, "handle_notify",
                           f"start-time self-kick: popped {first.fields['popped']} "
                           + ("(SLOF has posted nothing yet)" if not first.fields["popped"] else "")))
    return steps


def diagnose_kernel(ev) -> list[dict]:
    """The chain of the kernel stage's first read: an MMU-on store that KVM
    emulates, the io bus, the serving thread, the completion interrupt."""
    start = next((i for i, e in enumerate(ev) if e.name == "linux_blk_submit"), None)
    if start is None:
        return []
    sub = ev[start]
    steps = [_step(sub, "kernel", "virtio_queue_rq",
                   f"read sector {sub.fields['sector']} x{sub.fields['count']}, avail->idx := "
                   f"{sub.fields['avail_idx']}")]
    kick = None
    for e in ev[start + 1:]:
        f = e.fields
        if e.name == "linux_virtqueue_notify":
            kick = f["addr"]
        elif e.name == "mmio_access" and kick is not None and f["addr"] == kick and f["rw"] == "W":
            steps.append(_step(e, "kernel", "vp_notify", f"iowrite16({f['value']}) to 0x{f['addr']:x}: "
                               f"instruction {f['inst']} with MSR[DR]=1, no memslot -> HDSI"))
        elif e.name == "io_bus_write" and f.get("via") == "mmio" and kick is not None and f["addr"] == kick:
            steps.append(_step(e, "KVM", "kvmppc_handle_store",
                               f"KVM_MMIO_BUS addr 0x{f['addr']:x} len {f['len']} data {f['data']}: "
                               + (f"taken by {f['device']}" if f["ret"] == "0" else f"{f['ret']}")))
        elif e.name == "ioeventfd_signal" and kick is not None:
            steps.append(_step(e, "KVM", "ioeventfd_write", f"eventfd_signal({f['eventfd']!r}), no exit"))
        elif e.name == "exit" and kick is not None and f.get("phys_addr") == kick:
            steps.append(_step(e, "KVM", "kvmppc_emulate_mmio", f"{f['reason']} to QEMU: {f['why']}"))
        elif e.name == "eventfd_read" and e.actor in ("iothread", "qemu-main"):
            steps.append(_step(e, e.actor, "aio_dispatch", f"{f['eventfd']!r} readable: handler runs"))
        elif e.name == "fault_lost_kick":
            steps.append(_fault_step(e))
        elif e.name == "dataplane_start":
            steps.append(_step(e, "QEMU", "virtio_blk_data_plane_start",
                               f"host notifier {f['host_notifier']!r} moved to {f['iothread']}"))
        elif e.name == "blk_request":
            steps.append(_step(e, e.actor, "virtio_blk_handle_request",
                               f"popped {f['type']} sector {f['sector']} x{f['count']}"))
        elif e.name == "blk_complete":
            steps.append(_step(e, e.actor, "virtio_blk_req_complete",
                               f"status {f['status']}, used->idx := {f['used_idx']}"))
        elif e.name == "irqfd_inject":
            steps.append(_step(e, "KVM", "irqfd_inject", f"{f['eventfd']!r} -> XICS irq 0x{f['gsi']:x}, no QEMU thread"))
        elif e.name == "spapr_msi_write":
            steps.append(_step(e, e.actor, "msix_notify", f"MSI to XICS irq 0x{f['irq']:x} (KVM_IRQ_LINE)"))
        elif e.name == "external_interrupt":
            steps.append(_step(e, "KVM", "kvmppc_h_cede", "the ceded vcpu wakes: external interrupt (0x500)"))
        elif e.name == "linux_vring_interrupt":
            steps.append(_step(e, "kernel", "vring_interrupt",
                               f"irq 0x{f['irq']:x} (H_XIRR), used->idx {f['used_idx']}"))
        elif e.name == "linux_blk_done":
            steps.append(_step(e, "kernel", "virtblk_done", f"status {f['status']}, sha256 {f['sha256'][:16]}..."))
            break
        elif e.name in ("linux_hung_task", "kernel_stage_failed"):
            steps.append(_step(e, "kernel", "hung_task", "the read never completed"))
            break
    return steps


def _unserved(result, ev, j, addr, notify_t, want) -> list[dict]:
    steps = []
    live = None
    for e in ev:
        if e.t_ns > notify_t:
            break
        if e.name == "ioeventfd_ioctl" and e.fields["addr"] == addr and e.fields["ret"] == "0":
            live = None if e.fields["flags"] & 4 else e
    timeout = next((e for e in ev[j:] if e.name == "virtio_timeout"), None)
    at = timeout or ev[-1]
    if live is not None:
        label = live.fields["eventfd"]
        signals = [e for e in ev if e.name == "ioeventfd_signal" and e.fields["eventfd"] == label and e.t_ns > notify_t]
        steps.append(_step(at, "KVM", "ioeventfd_write",
                           f"ioeventfd at 0x{addr:x} len {live.fields['len']} -> {label!r} "
                           + ("never signalled after the notify" if not signals else f"signalled {len(signals)} times")))
    else:
        steps.append(_step(at, "KVM", "kvm_io_bus", f"no ioeventfd registered at 0x{addr:x}"))
    if timeout is not None:
        fn = next((e.fields.get("fn", "virtioblk_transfer") for e in ev if e.name == "virtio_blk_submit"),
                  "virtioblk_transfer")
        steps.append(_step(timeout, "SLOF", fn,
                           f"used->idx still {want - 1} after {timeout.fields['timeout_ms']} ms: timeout, status 255"))
    text = result.console.text()
    for code in ("E3404", "E3407"):
        k = text.find(code)
        if k >= 0:
            end = text.find("\n", k)
            steps.append(_step(ev[-1], "SLOF", "boot", text[k:end if end >= 0 else len(text)].strip()))
    return steps


def format_diagnosis(steps: list[dict]) -> str:
    return "\n".join(f"  {s['t_us'] / 1e6:12.6f} s  {s['layer']:<9} {s['text']}  [{s['function']}]" for s in steps)
