"""A KVM VM (virt/kvm/kvm_main.c, arch/powerpc/kvm/powerpc.c).

Owns the per-VM enabled_hcalls bitmap, the io buses, ioeventfds and irqfds,
and answers the VM ioctls QEMU makes. Structs cross the ioctl boundary as
bytes, built and parsed with the uapi layouts, as they do in C.
"""

from sim.abi import kvm as uapi
from sim.abi.kvm import EINVAL, errno_name
from sim.kvm import book3s, releases
from sim.eventfd import FdTable
from sim.kvm.ioeventfd import kvm_ioeventfd
from sim.kvm.iobus import KvmIoBus
from sim.kvm.vcpu import Vcpu
from sim.kvm.xics import KvmXics


class KernelConfig:
    """What the host kernel offers: its release's row of sim.kvm.releases."""

    def __init__(self, version: str, flavour: str, host_endian: str = "big",
                 logical_ci_handlers: bool | None = None, overrides: dict | None = None):
        self.version = version
        self.flavour = flavour
        self.host_endian = host_endian
        rel = releases.behaviour(releases.parse(version)).replaced(overrides or {})
        self.logical_ci_handlers = rel.logical_ci if logical_ci_handlers is None else logical_ci_handlers
        self.ioeventfd_any_length = rel.ioeventfd_any_length
        self.tce_multi = rel.tce_multi
        self.emulation_failure_exits = rel.emulation_failure_exits


class KvmVm:
    def __init__(self, kernel: KernelConfig, ram, trace, costs):
        self.kernel = kernel
        self.flavour = kernel.flavour
        self.kernel_has_logical_ci = kernel.logical_ci_handlers
        self.host_byteorder = kernel.host_endian
        self.ram = ram
        self.trace = trace
        self.fault_plan = None      # lost_kick faults at this layer (sim.faults.FaultPlan), set by the VMM
        self.costs = costs
        self.fds = FdTable()
        self.buses = [KvmIoBus() for _ in uapi.BUS_NAMES]
        self.ioeventfds = []
        self.irqfds = {}
        self.irq_lines: dict[int, int] = {}
        self.xics = KvmXics(trace)   # QEMU's xics-kvm: the interrupt controller is in the kernel
        self.vcpus: list[Vcpu] = []
        # kvmppc_core_init_vm_*: copy the default list into the per-VM bitmap.
        self.enabled_hcalls = bytearray(book3s.MAX_HCALL_OPCODE // 4 + 1)
        for h in book3s.DEFAULT_ENABLED[self.flavour]:
            self.enabled_hcalls[h // 4] = 1

    def hcall_enabled(self, nr: int) -> bool:
        return bool(self.enabled_hcalls[nr // 4])

    def hcall_implemented(self, nr: int) -> bool:
        """kvm_ops->hcall_implemented."""
        if nr in book3s.LOGICAL_CI:
            return self.kernel_has_logical_ci
        if nr in book3s.TCE_MULTI:
            return self.kernel.tce_multi
        return nr in book3s.IMPL[self.flavour]

    def create_vcpu(self, cpu) -> Vcpu:
        vcpu = Vcpu(self, cpu)
        self.vcpus.append(vcpu)
        return vcpu

    # -- VM ioctls --------------------------------------------------------

    def ioctl_check_extension(self, cap: int) -> int:
        if cap == uapi.KVM_CAP_IOEVENTFD_ANY_LENGTH:
            return int(self.kernel.ioeventfd_any_length)
        return 1 if cap in (uapi.KVM_CAP_PPC_ENABLE_HCALL, uapi.KVM_CAP_IOEVENTFD) else 0

    def ioctl_enable_cap(self, raw: bytes) -> int:
        """KVM_ENABLE_CAP (kvm_vm_ioctl_enable_cap)."""
        cap = uapi.kvm_enable_cap.parse(raw)
        ret = self._enable_cap(cap)
        self.trace.emit("kvm", "enable_cap", cap=cap.cap, hcall=cap.args[0], enable=cap.args[1],
                        ret=errno_name(ret))
        return ret

    def _enable_cap(self, cap) -> int:
        if cap.flags:
            return -EINVAL
        if cap.cap != uapi.KVM_CAP_PPC_ENABLE_HCALL:
            return -EINVAL
        hcall, on = cap.args[0], cap.args[1]
        if hcall > book3s.MAX_HCALL_OPCODE or hcall & 3 or on > 1:
            return -EINVAL
        if not self.hcall_implemented(hcall):
            return -EINVAL
        self.enabled_hcalls[hcall // 4] = on
        return 0

    def ioctl_ioeventfd(self, raw: bytes) -> int:
        """KVM_IOEVENTFD."""
        args = uapi.kvm_ioeventfd.parse(raw)
        ret = kvm_ioeventfd(self, args)
        efd = self.fds.get(args.fd)
        self.trace.emit("kvm", "ioeventfd_ioctl", addr=args.addr, len=args.len, datamatch=args.datamatch,
                        flags=args.flags, fd=args.fd, eventfd=efd.label if efd else None, ret=errno_name(ret))
        return ret

    def ioctl_irqfd(self, raw: bytes) -> int:
        """KVM_IRQFD: signalling the eventfd raises the GSI in the kernel."""
        args = uapi.kvm_irqfd.parse(raw)
        efd = self.fds.get(args.fd)
        if efd is None:
            return -uapi.EBADF
        if args.flags & uapi.KVM_IRQFD_FLAG_DEASSIGN:   # kvm_irqfd_deassign
            entry = self.irqfds.pop(args.fd, None)
            if entry is None or entry[0] != args.gsi:
                if entry is not None:
                    self.irqfds[args.fd] = entry
                return -uapi.ENOENT
            efd.wait_queue.remove(entry[1])
            self.trace.emit("kvm", "irqfd", fd=args.fd, gsi=args.gsi, eventfd=efd.label, assign=False)
            return 0
        if args.fd in self.irqfds:
            return -uapi.EBUSY
        gsi = args.gsi

        def irqfd_wakeup():
            """irqfd_wakeup -> irqfd_inject: raise the GSI from the signaller's
            context, with no QEMU thread involved."""
            self.trace.emit("kvm", "irqfd_inject", fd=args.fd, gsi=gsi, eventfd=efd.label)
            self.set_irq(gsi, 1, f"irqfd {efd.label}")
        self.irqfds[args.fd] = (gsi, irqfd_wakeup)
        efd.wait_queue.append(irqfd_wakeup)
        self.trace.emit("kvm", "irqfd", fd=args.fd, gsi=gsi, eventfd=efd.label, assign=True)
        return 0

    def set_irq(self, gsi: int, level: int, source: str, lsi: bool = False) -> None:
        """kvm_set_irq (irqfd) / KVM_IRQ_LINE: the in-kernel XICS source
        (gsi = XICS irq number: QEMU's kvm_gsi_direct_mapping). SLOF runs
        with MSR_EE off and polls, so the interrupt stays pending."""
        self.irq_lines[gsi] = level
        self.trace.emit("kvm", "irq", gsi=gsi, level=level, source=source)
        self.xics.deliver(gsi, level, lsi)
