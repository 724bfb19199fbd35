"""KVM_IOEVENTFD (virt/kvm/eventfd.c): a guest write that signals an eventfd.

Write-only: an ioeventfd has no read op, so a load at its address is passed
on. Datamatch compares the access buffer's raw bytes read as a host-endian
integer; KVM does no byte swapping.
"""

from sim.abi.kvm import (
    EEXIST, EINVAL, ENOENT, KVM_FAST_MMIO_BUS, KVM_IOEVENTFD_FLAG_DATAMATCH,
    KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_IOEVENTFD_FLAG_PIO, KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY,
    KVM_IOEVENTFD_VALID_FLAG_MASK, KVM_MMIO_BUS, KVM_PIO_BUS, KVM_VIRTIO_CCW_NOTIFY_BUS, EBADF,
)
from sim.kvm.iobus import IoDevice
from sim.abi.kvm import EOPNOTSUPP


class IoEventFd(IoDevice):
    """struct _ioeventfd."""

    is_ioeventfd = True

    def __init__(self, vm, addr, length, eventfd, datamatch, wildcard, bus_idx):
        self.vm = vm
        self.addr = addr
        self.length = length
        self.eventfd = eventfd
        self.datamatch = datamatch
        self.wildcard = wildcard
        self.bus_idx = bus_idx

    def in_range(self, addr: int, length: int, buf: bytes) -> bool:
        """ioeventfd_in_range."""
        if addr != self.addr:
            return False
        if not self.length:
            return True
        if length != self.length:
            return False
        if self.wildcard:
            return True
        if length not in (1, 2, 4, 8):
            return False
        return int.from_bytes(buf[:length], self.vm.host_byteorder) == self.datamatch

    lost = False     # the last write matched but a lost_kick fault kept the signal (sim.faults)

    def write(self, addr: int, length: int, buf: bytes) -> int:
        if not self.in_range(addr, length, buf):
            return -EOPNOTSUPP
        plan = self.vm.fault_plan
        self.lost = plan is not None and plan.drop_kick("kvm", "kvm", "ioeventfd_write", self.describe())
        if not self.lost:
            self.eventfd.signal()
        return 0

    _description = None

    def describe(self) -> str:
        """Its fields never change once assigned: formatted once (it is in
        the trace of every notify)."""
        if self._description is None:
            dm = "any data" if self.wildcard else f"datamatch 0x{self.datamatch:x}"
            self._description = (f"ioeventfd at 0x{self.addr:x} len {self.length} {dm} "
                                 f"-> eventfd {self.eventfd.label!r}")
        return self._description


def _bus_for(flags: int) -> int:
    if flags & KVM_IOEVENTFD_FLAG_PIO:
        return KVM_PIO_BUS
    if flags & KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY:
        return KVM_VIRTIO_CCW_NOTIFY_BUS
    return KVM_MMIO_BUS


def kvm_ioeventfd(vm, args) -> int:
    """The KVM_IOEVENTFD ioctl on a parsed struct kvm_ioeventfd."""
    flags, length, addr = args.flags, args.len, args.addr
    if flags & ~KVM_IOEVENTFD_VALID_FLAG_MASK:
        return -EINVAL
    if flags & KVM_IOEVENTFD_FLAG_DEASSIGN:
        return _deassign(vm, args)
    if length not in (0, 1, 2, 4, 8):
        return -EINVAL
    if addr + length > 0xFFFF_FFFF_FFFF_FFFF:  # addr + len < addr in C
        return -EINVAL
    if not length and flags & KVM_IOEVENTFD_FLAG_DATAMATCH:
        return -EINVAL
    eventfd = vm.fds.get(args.fd)
    if eventfd is None:
        return -EBADF
    bus_idx = _bus_for(flags)
    wildcard = not flags & KVM_IOEVENTFD_FLAG_DATAMATCH
    p = IoEventFd(vm, addr, length, eventfd, 0 if wildcard else args.datamatch, wildcard, bus_idx)
    for q in vm.ioeventfds:  # ioeventfd_check_collision
        if q.bus_idx == bus_idx and q.addr == addr and (
                not q.length or not length
                or (q.length == length and (q.wildcard or p.wildcard or q.datamatch == p.datamatch))):
            return -EEXIST
    ret = vm.buses[bus_idx].register_dev(addr, length, p)
    if ret < 0:
        return ret
    if not length and bus_idx == KVM_MMIO_BUS:
        vm.buses[KVM_FAST_MMIO_BUS].register_dev(addr, 0, p)
    vm.ioeventfds.append(p)
    return 0


def _deassign(vm, args) -> int:
    bus_idx = _bus_for(args.flags)
    wildcard = not args.flags & KVM_IOEVENTFD_FLAG_DATAMATCH
    eventfd = vm.fds.get(args.fd)
    for p in vm.ioeventfds:
        if (p.bus_idx == bus_idx and p.eventfd is eventfd and p.addr == args.addr
                and p.length == args.len and p.wildcard == wildcard
                and (wildcard or p.datamatch == args.datamatch)):
            vm.buses[bus_idx].unregister_dev(p)
            if not p.length and bus_idx == KVM_MMIO_BUS:
                vm.buses[KVM_FAST_MMIO_BUS].unregister_dev(p)
            vm.ioeventfds.remove(p)
            return 0
    return -ENOENT
