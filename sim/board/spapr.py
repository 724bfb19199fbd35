"""The pseries machine (hw/ppc/spapr.c, spapr_pci.c) and its vcpu thread.

Builds RAM, the PHB with its I/O and MMIO windows, one virtio-blk-pci on
the PHB, the main loop and an optional IOThread; enables the in-kernel
H_LOGICAL_CI_* hcalls when the scenario asks (2.4+, 026bfd89); then runs
the vcpu thread (kvm_cpu_exec): KVM_RUN, handle the exit, repeat.
"""

import trio

from sim import vtime
from sim.abi import papr
from sim.faults import FaultPlan
from sim.abi import kvm as uapi
from sim.abi.kvm import KVM_EXIT_MMIO, KVM_EXIT_PAPR_HCALL, KVM_EXIT_UNKNOWN
from sim.kvm.vcpu import SIM_GUEST_IDLE
from sim.qemu.aio import AioContext
from sim.qemu.main_loop import Bql
from sim.qemu import releases as qemu_releases
from sim.qemu.kvm_all import KvmMemoryListener, kvm_ioeventfd_any_length_enabled, kvmppc_enable_logical_ci_hcalls
from sim.qemu.memory import AddressSpace, MemoryCore, MemoryRegion
from sim.board.spapr_hcall import SpaprHcalls
from devices.blkdebug import BlkDebug
from devices.dataplane import VirtIOBlockDataPlane
from devices.pci import PCI_CONFIG_SPACE_SIZE, PCIBus
from devices.virtio_blk import VirtIOBlock
from devices.virtio_pci import VirtIOPCIProxy
from sim.abi.virtio import PCI_DEVICE_ID_VIRTIO_BLOCK
from sim.trace import fields_builder

SPAPR_PCI_BASE_BUID = 0x800000020000000
SPAPR_PCI_MEM_WIN_BUS_OFFSET = 0x80000000
SPAPR_PCI_MSI_WINDOW = 0x40000000000     # spapr_pci.h: MSI messages are written here
# The XICS numbers QEMU hands out for MSIs. 2015 QEMU allocated them
# dynamically (spapr_irq_alloc_block); later QEMU fixed the layout with
# SPAPR_IRQ_MSI 0x1300 (spapr_irq.h), the base the model takes.
SPAPR_IRQ_MSI = 0x1300
KERNEL_LOAD_ADDR = 0x400000              # FW_MAX_SIZE: where QEMU puts a -kernel image


def phb_windows(placement: bool) -> dict:
    """PHB 0's windows: the 2.1-2.7 fixed layout, or spapr_phb_placement (2.8+),
    which adds a 64-bit MMIO window whose PCI address is its CPU address
    (mem64_win_pciaddr defaults to mem64_win_addr; real SLOF put the modern
    virtio BAR 4 at 0x210000000000, real-slof/tr-modern-*_pcicfg.csv)."""
    if placement:
        base = 1 << 45
        return dict(io=(base, 0x10000), mem=(base + (1 << 31), (1 << 32) - 0x80000000),
                    mem64=(base + (1 << 40), 1 << 40))
    windows_base = 0x10000000000                 # SPAPR_PCI_WINDOW_BASE, index 0
    return dict(io=(windows_base + 0x80000000, 0x10000),      # SPAPR_PCI_IO_WIN_OFF/SIZE
                mem=(windows_base + 0xA0000000, 0x1000000000 - SPAPR_PCI_MEM_WIN_BUS_OFFSET))


def rtas_pci_cfgaddr(arg: int) -> int:
    """rtas_pci_cfgaddr (hw/ppc/spapr_pci.c): the register number, with the
    extended-config bits 31:28 of the RTAS config address as bits 11:8."""
    return ((arg >> 20) & 0xF00) | (arg & 0xFF)


class Console:
    """spapr_vty: bytes the guest wrote with H_PUT_TERM_CHAR."""

    def __init__(self, trace, echo=None):
        self.buf = bytearray()
        self.trace = trace
        self.echo = echo

    def write(self, data: bytes) -> None:
        self.buf += data
        if self.echo:
            self.echo(data)

    def text(self) -> str:
        return self.buf.decode("latin-1").replace("\r", "")


class SpaprMachine:
    def __init__(self, cfg, vm, ram, backend, trace, costs, console, kernel_image: bytes | None = None):
        self.cfg = cfg
        self.vm = vm
        self.ram = ram
        self.trace = trace
        self.costs = costs
        self.console = console
        self.fds = vm.fds
        self.hcalls = SpaprHcalls(self)
        # Memory: RAM at 0, the PHB's windows as aliases of its bus spaces.
        # Under KVM kvm_eventfds_allowed is true, so 2.5's ioeventfd emulation never fires.
        self.core = MemoryCore(trace, emulate_ioeventfd=cfg.emulate_ioeventfd, kvm_eventfds_enabled=True)
        system = MemoryRegion("system", 1 << 64)
        system.add_subregion(0, MemoryRegion("ppc_spapr.ram", ram.size, ram=ram))
        rel = qemu_releases.behaviour(cfg.qemu_version).replaced(cfg.qemu_overrides)
        win = phb_windows(rel.phb_placement)
        self.io_win_addr = win["io"][0]
        iospace = MemoryRegion("pci-io", win["io"][1])
        memspace = MemoryRegion("pci-mem", 1 << 64)
        system.add_subregion(win["io"][0], MemoryRegion("pci-io-window", win["io"][1], alias=iospace))
        system.add_subregion(win["mem"][0], MemoryRegion("pci-mem-window", win["mem"][1], alias=memspace,
                                                         alias_offset=SPAPR_PCI_MEM_WIN_BUS_OFFSET))
        if "mem64" in win:
            system.add_subregion(win["mem64"][0], MemoryRegion("pci-mem64-window", win["mem64"][1], alias=memspace,
                                                               alias_offset=win["mem64"][0]))
        self.address_space = AddressSpace("memory", system)
        self.address_space.listeners.append(KvmMemoryListener(vm, vm.host_byteorder == "big", trace))
        self.core.address_spaces.append(self.address_space)
        self.core.commit()
        self.phb_node = dict(buid=SPAPR_PCI_BASE_BUID, io_window=win["io"],
                             mem_window=(SPAPR_PCI_MEM_WIN_BUS_OFFSET, win["mem"][0], win["mem"][1]),
                             children=[0])
        if "mem64" in win:
            self.phb_node["mem64_window"] = (win["mem64"][0], win["mem64"][0], win["mem64"][1])
        # Threads with an event loop.
        self.exited = None          # (status, message) once QEMU called exit() (qemu_exit)
        self.bql = Bql(trace)
        self.main_ctx = AioContext("qemu-main", trace, costs, bql=self.bql)
        self.iothread_ctx = AioContext("iothread", trace, costs) if cfg.iothread else None
        # The disk: -device virtio-blk-pci,drive=...,iothread=io1
        self.bus = PCIBus(iospace, memspace, trace)
        self.blk = VirtIOBlock(backend, ram, trace, costs, release=rel, queue_size=cfg.queue_size)
        self.blk.main_ctx = self.main_ctx
        if cfg.forward_userspace_kick:   # the release's forwarding, or 2.8's on an older QEMU
            self.blk.userspace_kick = rel.userspace_kick if rel.userspace_kick != "handle_output" else "iothread"
        # disable-modern=off gives a transitional device; page-per-vq is on
        # for machine types up to 2.7 (HW_COMPAT_2_7); the any-length notify
        # ioeventfd needs KVM_CAP_IOEVENTFD_ANY_LENGTH (QEMU 2.5+ asks).
        self.proxy = VirtIOPCIProxy(self.blk, PCI_DEVICE_ID_VIRTIO_BLOCK, ioeventfd=cfg.ioeventfd, qemu=self,
                                    modern=not cfg.disable_modern, page_per_vq=rel.page_per_vq,
                                    fast_mmio=not cfg.disable_modern and rel.any_length_notify
                                    and kvm_ioeventfd_any_length_enabled(vm))
        self.bus.plug(0, self.proxy)
        if self.iothread_ctx is not None:
            self.blk.dataplane = VirtIOBlockDataPlane(self.blk, self.iothread_ctx, trace)
        if cfg.enable_logical_ci:
            kvmppc_enable_logical_ci_hcalls(vm, trace)
        self.vcpu_waits = []        # drains the exit being handled started (bdrv_drain)
        self.blk.blkdebug = BlkDebug(cfg.faults, trace)
        if cfg.faults:      # lost kicks: at KVM's ioeventfd, QEMU's userspace notify, the IOThread's poll
            vm.fault_plan = self.blk.fault_plan = FaultPlan(cfg.faults, trace)
            if self.iothread_ctx is not None:
                self.iothread_ctx.fault_plan = vm.fault_plan
        self.next_msi_irq = SPAPR_IRQ_MSI
        self.msi_irqs: dict[int, list[int]] = {}    # config address -> the XICS irqs of its vectors
        # -kernel: the image in RAM and /chosen/qemu,boot-kernel for SLOF
        self.boot_kernel = self.load_kernel(kernel_image) if kernel_image is not None else None

    def load_kernel(self, image: bytes) -> tuple[int, int]:
        """spapr's -kernel: load_elf(..., translate_kernel_address, ...):
        each PT_LOAD lands at (p_paddr & 0x0fffffff) + KERNEL_LOAD_ADDR,
        i.e. a vmlinux linked at physical 0 sits at KERNEL_LOAD_ADDR. The
        model takes the image's lowest p_paddr as its 0, so the mkdisk
        payload (linked at KERNEL_LOAD_ADDR itself) lands where it was
        linked. Returns (kernel address, size): qemu,boot-kernel."""
        from sim.abi.elf import PT_LOAD, elf64
        ehdr_t, phdr_t, _ = elf64(True)
        eh = ehdr_t.parse(image)
        phdrs = [phdr_t.parse(image[eh.e_phoff + i * phdr_t.sizeof():]) for i in range(eh.e_phnum)]
        loads = [p for p in phdrs if p.p_type == PT_LOAD]
        low = min(p.p_paddr for p in loads)
        high = KERNEL_LOAD_ADDR
        for p in loads:
            at = KERNEL_LOAD_ADDR + p.p_paddr - low
            self.ram.write(at, image[p.p_offset:p.p_offset + p.p_filesz])
            high = max(high, at + p.p_memsz)
        size = high - KERNEL_LOAD_ADDR
        self.trace.emit("qemu-vcpu", "kernel_loaded", addr=KERNEL_LOAD_ADDR, size=size)
        return KERNEL_LOAD_ADDR, size

    # -- interrupts: MSI and irqfd (xics-kvm) ------------------------------

    def kvm_msi_via_irqfd_enabled(self) -> bool:
        """xics_kvm realize sets kvm_msi_via_irqfd_allowed (and
        kvm_gsi_direct_mapping): the in-kernel XICS takes MSIs by irqfd."""
        return True

    def kvm_irqfd(self, efd, gsi: int, assign: bool) -> int:
        """kvm_irqchip_add/remove_irqfd_notifier_gsi: KVM_IRQFD."""
        flags = 0 if assign else uapi.KVM_IRQFD_FLAG_DEASSIGN
        raw = uapi.kvm_irqfd.build(dict(fd=efd.fd, gsi=gsi, flags=flags, resamplefd=0))
        ret = self.vm.ioctl_irqfd(raw)
        self.trace.emit("qemu-vcpu", "kvm_irqfd", eventfd=efd.label, gsi=gsi, assign=assign,
                        ret=uapi.errno_name(ret))
        return ret

    def cpu_virtio_is_big_endian(self) -> bool | None:
        """virtio_current_cpu_endian for a reset the vcpu thread causes
        (current_cpu): ppc_cpu_is_big_endian, !MSR[LE]; None off a vcpu."""
        cpu = getattr(self, "current_cpu", None)
        return None if cpu is None else not cpu.msr_le

    def msi_send(self, address: int, data: int, actor: str) -> None:
        """msix_notify -> msi_send_message: a 4-byte store of data to the
        MSI window, spapr_msi_write -> qemu_irq_pulse(XICS irq data) ->
        xics-kvm: KVM_IRQ_LINE. Runs in the notifying QEMU thread."""
        self.trace.emit(actor, "spapr_msi_write", address=address, irq=data)
        if address == SPAPR_PCI_MSI_WINDOW:
            self.vm.set_irq(data, 1, "MSI via KVM_IRQ_LINE")

    # -- services the devices use (event notifiers, INTx, drains) ---------

    def bdrv_drain(self, actor: str, blk, why: str) -> None:
        """A drain in an exit handler (util/aio-wait.h BDRV_POLL_WHILE): the
        vcpu thread polls, holding the BQL, until nothing is in flight. The
        handler's call returns here at once; kvm_cpu_exec waits before it
        lets the BQL go (sim.qemu.main_loop.Bql.hold)."""
        if not blk.in_flight:
            return
        self.trace.emit(actor, "bdrv_drain_begin", why=why, in_flight=blk.in_flight,
                        suspended=list(blk.suspended))
        self.vcpu_waits.append((why, blk))

    def event_notifier_init(self, label: str, active: bool = False):
        """event_notifier_init(e, active): an eventfd whose counter starts
        at 1 when active (already signalled)."""
        return self.fds.eventfd(label, int(active))

    def pci_set_irq(self, dev, level: int) -> None:
        """INTx through the PHB's LSI to the in-kernel XICS (KVM_IRQ_LINE)."""
        if level:
            self.vm.set_irq(0x1000 + dev.devfn // 8, level, "INTx")

    # -- RTAS: ibm,read-pci-config / ibm,write-pci-config ------------------

    def spapr_pci_find_dev(self, buid: int, config_addr: int):
        """spapr_pci_find_dev: the PHB by BUID, then bus (config_addr >> 16)
        & 0xff and devfn (config_addr >> 8) & 0xff on it; the one PHB has
        only its root bus, 0."""
        if buid != SPAPR_PCI_BASE_BUID or (config_addr >> 16) & 0xFF:
            return None
        return self.bus.devices.get((config_addr >> 8) & 0xFF)

    def rtas_call(self, token: int, args: list[int], nret: int) -> list[int]:
        if token in (papr.RTAS_IBM_READ_PCI_CONFIG, papr.RTAS_IBM_WRITE_PCI_CONFIG):
            if len(args) < 4:
                return [-3 & 0xFFFFFFFF]
            addr, buid, size = args[0], (args[1] << 32) | args[2], args[3]
            dev = self.spapr_pci_find_dev(buid, addr)
            reg = rtas_pci_cfgaddr(addr)
            if dev is None or size not in (1, 2, 4) or reg % size or reg >= PCI_CONFIG_SPACE_SIZE:
                return [-1 & 0xFFFFFFFF, 0]   # RTAS_OUT_HW_ERROR
            if token == papr.RTAS_IBM_READ_PCI_CONFIG:
                value = dev.config_read(reg, size)
                self.trace.emit("qemu-vcpu", "pci_cfg_read", reg=reg, size=size, value=value)
                return [0, value]
            if len(args) < 5:
                return [-3 & 0xFFFFFFFF]
            self.trace.emit("qemu-vcpu", "pci_cfg_write", reg=reg, size=size, value=args[4])
            dev.config_write(reg, args[4], size)
            return [0]
        if token == papr.RTAS_IBM_CHANGE_MSI:
            return self._rtas_change_msi(args, nret)
        if token == papr.RTAS_IBM_QUERY_INTERRUPT_SOURCE_NUMBER:
            if len(args) < 4:
                return [-3 & 0xFFFFFFFF]
            irqs = self.msi_irqs.get(args[0], [])
            if args[3] >= len(irqs):
                return [-3 & 0xFFFFFFFF]
            # trace_spapr_pci_rtas_ibm_query_interrupt_source_number(ioa_intr_num, intr_num)
            self.trace.emit("qemu-vcpu", "spapr_pci_rtas_ibm_query_interrupt_source_number", ioa=args[3],
                            irq=irqs[args[3]])
            return [0, irqs[args[3]], 1]      # status, XICS irq, 1: edge (an MSI)
        # spapr_rtas_call, unknown token: only rets[0] is stored (nret is the
        # guest's and may be anything).
        return [-3 & 0xFFFFFFFF]  # RTAS_OUT_NOT_SUPPORTED

    def _rtas_change_msi(self, args: list[int], nret: int) -> list[int]:
        """rtas_ibm_change_msi, MSI-X only: allocate req_num XICS irqs and
        write each vector's message (SPAPR_PCI_MSI_WINDOW, irq) into the
        device's MSI-X table (spapr_msi_setmsg). req_num 0 releases them."""
        if len(args) < 5:
            return [-3 & 0xFFFFFFFF]
        config_addr, buid, func, req_num = args[0], (args[1] << 32) | args[2], args[3], args[4]
        seq = args[5] if len(args) > 5 else 0
        dev = self.spapr_pci_find_dev(buid, config_addr)
        if func != papr.RTAS_CHANGE_MSIX_FN or dev is None or not hasattr(dev, "msix_set_message"):
            return [-3 & 0xFFFFFFFF]
        if req_num == 0:
            self.msi_irqs.pop(config_addr, None)
            return [0, 0, seq + 1, 2]
        req_num = min(req_num, dev.msix_nvectors)
        irqs = self.msi_irqs.get(config_addr)
        if irqs is None or len(irqs) != req_num:
            irqs = list(range(self.next_msi_irq, self.next_msi_irq + req_num))
            self.next_msi_irq += req_num
            self.msi_irqs[config_addr] = irqs
        for vector, irq in enumerate(irqs):
            dev.msix_set_message(vector, SPAPR_PCI_MSI_WINDOW, irq)
        self.trace.emit("qemu-vcpu", "spapr_msi_setup", device=dev.name, vectors=req_num, irqs=irqs)
        return [0, req_num, seq + 1, 2][:max(nret, 1)]   # status, vectors, seq, RTAS_TYPE_MSIX

    # -- the vcpu thread ---------------------------------------------------

    async def run(self, vcpu, watchdog_s: float) -> tuple[object, bool]:
        """The QEMU process: the main loop and IOThreads as tasks, the vcpu
        thread here, for at most watchdog_s. Returns (guest result, hung)."""
        async with trio.open_nursery() as nursery:
            self._process = nursery.cancel_scope
            for ctx in (self.main_ctx, self.iothread_ctx):
                if ctx is not None:
                    ctx.nursery = nursery
                    nursery.start_soon(ctx.run)
            result, hung = None, True
            with trio.move_on_after(watchdog_s):
                result, hung = await self.kvm_cpu_exec(vcpu), False
            nursery.cancel_scope.cancel()
        if self.exited is not None:
            return {"stage": "qemu exited", "status": self.exited[0], "reason": self.exited[1]}, False
        return result, hung

    def qemu_exit(self, status: int, reason: str, actor: str) -> None:
        """error_report(reason); exit(status) in any QEMU thread: the
        process, and the VM with it, ends here (every thread stops)."""
        if self.exited is None:
            self.exited = (status, reason)
            self.trace.emit(actor, "qemu_exit", status=status, reason=reason)
            self._process.cancel()

    async def kvm_cpu_exec(self, vcpu) -> object:
        """qemu_kvm_cpu_thread_fn / kvm_cpu_exec: returns the guest model's result."""
        trace, costs = self.trace, self.costs
        self.current_cpu = vcpu.cpu
        while True:
            run = await vcpu.ioctl_run()
            if run.exit_reason == SIM_GUEST_IDLE:
                return run.guest_result
            # kvm_cpu_exec: KVM_RUN returned; the exit is handled under the
            # BQL, released before the next KVM_RUN.
            if self.bql.free():
                self.bql.take("qemu-vcpu")
            else:
                await self.bql.lock("qemu-vcpu")
            result = self._handle_exit(run)
            while self.vcpu_waits:
                why, blk = self.vcpu_waits.pop(0)
                drained = await self.bql.hold("qemu-vcpu", blk.drain())
                if not drained:     # the vcpu thread never leaves QEMU, the BQL is never released
                    self.trace.emit("qemu-vcpu", "vm_hung_in_qemu", why=why, suspended=list(blk.suspended))
                    return {"stage": "hung in QEMU", "drain": why}
                self.trace.emit("qemu-vcpu", "bdrv_drain_end", why=why)
            self.bql.unlock("qemu-vcpu")
            if result is not None:
                return result

    def _handle_exit(self, run):
        """kvm_cpu_exec's switch on exit_reason (kvm_arch_handle_exit for
        the ppc ones); a result stops the vcpu thread."""
        if run.exit_reason == KVM_EXIT_PAPR_HCALL:
            hc = run.papr_hcall
            vtime.charge(self.costs.qemu_dispatch)
            hc.ret = self.hcalls.spapr_hypercall(hc.nr, hc.args)
            self.trace.record("qemu-vcpu", "hcall_done", _hcall_done_fields, hc.nr, hc.ret, hc.args[0])
            return None
        if run.exit_reason == KVM_EXIT_MMIO:
            self.handle_mmio_exit(run)
            return None
        if run.exit_reason == KVM_EXIT_UNKNOWN:
            # accel/kvm/kvm-all.c kvm_cpu_exec, case KVM_EXIT_UNKNOWN; book3s
            # HV/PR preset the exit reason and never fill hw.hardware_exit_reason.
            why = f"KVM: unknown exit, hardware reason {run.hardware_exit_reason:x}"
        else:
            # kvm_arch_handle_exit (target/ppc/kvm.c), default case.
            why = f"KVM: unknown exit reason {run.exit_reason}"
        # ret = -1: kvm_cpu_exec does vm_stop(RUN_STATE_INTERNAL_ERROR).
        self.trace.emit("qemu-vcpu", "vm_stop", state="internal-error", why=why)
        return {"stage": "vm stopped", "run_state": "internal-error", "exit_reason": run.exit_reason}

    def handle_mmio_exit(self, run) -> None:
        """kvm_cpu_exec, case KVM_EXIT_MMIO: address_space_rw(&address_space_memory,
        phys_addr, data, len, is_write). data is a memory image, read and
        written as target (big-endian) values by ldn_p/stn_p; the region's
        own endianness is applied after (adjust_endianness), as for any CPU
        access."""
        m = run.get_mmio()
        vtime.charge(self.costs.qemu_dispatch)
        if m.is_write:
            value = int.from_bytes(m.data[:m.len], "big")
            where = self.address_space.store(m.phys_addr, m.len, value)
            self.trace.emit("qemu-vcpu", "mmio_done", addr=m.phys_addr, len=m.len, is_write=True,
                            data=m.data[:m.len].hex(), region=where.mr.name if where else "unassigned",
                            in_kernel=False)
            return
        value, where = self.address_space.load(m.phys_addr, m.len)
        data = value.to_bytes(m.len, "big")
        run.set_mmio(m.phys_addr, data, m.len, False)
        self.trace.emit("qemu-vcpu", "mmio_done", addr=m.phys_addr, len=m.len, is_write=False,
                        data=data.hex(), region=where.mr.name if where else "unassigned", in_kernel=False)


@fields_builder
def _hcall_done_fields(nr: int, ret: int, r4: int) -> dict:
    """An hcall QEMU handled: its trace fields (Trace.record: built when read)."""
    return {"nr": nr, "ret": ret, "r4": r4, "in_kernel": False}
