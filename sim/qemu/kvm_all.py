"""QEMU's KVM glue (kvm-all.c, target/ppc/kvm.c): ioctls QEMU issues.

The memory listener on address_space_memory turns every ioeventfd of the
flat view into KVM_IOEVENTFD on KVM_MMIO_BUS (no PIO flag: spapr's I/O
space is MMIO through the PHB window).
"""

from sim.abi import papr
from sim.abi.kvm import (
    KVM_CAP_IOEVENTFD_ANY_LENGTH, KVM_CAP_PPC_ENABLE_HCALL, KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN, errno_name,
    kvm_enable_cap, kvm_ioeventfd,
)
from sim.qemu.memory import TARGET_BIG_ENDIAN, bswap


class KvmMemoryListener:
    """kvm_mem_ioeventfd_add/del."""

    def __init__(self, vm, host_big_endian: bool, trace):
        self.vm = vm
        self.host_big_endian = host_big_endian
        self.trace = trace

    def _ioctl(self, addr, size, match, data, e, deassign: bool) -> int:
        # adjust_ioeventfd_endianness: "The kernel expects ioeventfd values in
        # HOST_WORDS_BIGENDIAN endianness, but the memory core hands them in
        # target endianness."
        if match and self.host_big_endian != TARGET_BIG_ENDIAN and size in (2, 4):
            data = bswap(data, size)
        flags = (KVM_IOEVENTFD_FLAG_DATAMATCH if match else 0) | (KVM_IOEVENTFD_FLAG_DEASSIGN if deassign else 0)
        raw = kvm_ioeventfd.build(dict(datamatch=data if match else 0, addr=addr, len=size, fd=e.fd, flags=flags))
        return self.vm.ioctl_ioeventfd(raw)

    def eventfd_add(self, addr, size, match, data, e) -> None:
        ret = self._ioctl(addr, size, match, data, e, False)
        if ret:
            # kvm_mem_ioeventfd_add: "error adding ioeventfd" is fatal in QEMU
            self.trace.emit("qemu-vcpu", "qemu_error", message=f"kvm_mem_ioeventfd_add: error adding ioeventfd: {errno_name(ret)}")

    def eventfd_del(self, addr, size, match, data, e) -> None:
        self._ioctl(addr, size, match, data, e, True)


def kvm_ioeventfd_any_length_enabled(vm) -> bool:
    """kvm_init: kvm_ioeventfd_any_length_allowed = kvm_check_extension(
    KVM_CAP_IOEVENTFD_ANY_LENGTH) > 0."""
    return vm.ioctl_check_extension(KVM_CAP_IOEVENTFD_ANY_LENGTH) > 0


def kvmppc_enable_hcall(vm, hcall: int) -> int:
    raw = kvm_enable_cap.build(dict(cap=KVM_CAP_PPC_ENABLE_HCALL, flags=0, args=[hcall, 1, 0, 0]))
    return vm.ioctl_enable_cap(raw)


def kvmppc_enable_logical_ci_hcalls(vm, trace) -> None:
    """QEMU 2.4 (026bfd89). QEMU itself ignores the return values; the
    model logs them so a failed enable on an old kernel is visible."""
    for h in (papr.H_LOGICAL_CI_LOAD, papr.H_LOGICAL_CI_STORE):
        ret = kvmppc_enable_hcall(vm, h)
        trace.emit("qemu-vcpu", "kvmppc_enable_hcall", hcall=papr.hcall_name(h), ret=errno_name(ret))
