"""Book3S hcall handling: the enabled_hcalls gate and the in-kernel
H_LOGICAL_CI_LOAD/STORE (arch/powerpc/kvm/book3s.c, book3s_hv.c,
book3s_pr_papr.c).
"""

from sim.abi import papr
from sim.abi.kvm import KVM_MMIO_BUS, BUS_NAMES, errno_name

# hvcall.h opcodes named in the implemented/default lists below.
H_REMOVE, H_ENTER, H_READ, H_CLEAR_MOD, H_CLEAR_REF, H_PROTECT = 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18
H_GET_TCE, H_PUT_TCE, H_SET_DABR, H_PAGE_INIT = 0x1C, 0x20, 0x28, 0x2C
H_EOI, H_CPPR, H_IPI, H_IPOLL, H_XIRR = 0x64, 0x68, 0x6C, 0x70, 0x74
H_SET_XDABR, H_REGISTER_VPA, H_CEDE, H_CONFER, H_PROD = 0x134, 0xDC, 0xE0, 0xE4, 0xE8
H_PUT_TCE_INDIRECT, H_STUFF_TCE, H_BULK_REMOVE, H_XIRR_X = 0x224, 0x228, 0x24C, 0x2FC
XICS = (H_EOI, H_CPPR, H_IPI, H_IPOLL, H_XIRR, H_XIRR_X)
LOGICAL_CI = (papr.H_LOGICAL_CI_LOAD, papr.H_LOGICAL_CI_STORE)

# MAX_HCALL_OPCODE is H_SET_MODE in the 3.17-4.x kernels this models; the
# bitmap has MAX/4 + 1 bits.
MAX_HCALL_OPCODE = papr.H_SET_MODE

# kvmppc_hcall_impl_hv (+ _realmode) and kvmppc_hcall_impl_pr, without the
# logical-CI pair, which only kernels with commit 99342cf (4.1) implement.
IMPL = {
    "HV": frozenset({H_CEDE, H_PROD, H_CONFER, H_REGISTER_VPA, papr.H_SET_MODE,
                     H_REMOVE, H_ENTER, H_READ, H_PROTECT, H_BULK_REMOVE, H_CLEAR_REF,
                     H_CLEAR_MOD, H_SET_DABR, H_SET_XDABR, H_GET_TCE, H_PUT_TCE,
                     H_PUT_TCE_INDIRECT, H_STUFF_TCE, *XICS}),
    "PR": frozenset({H_ENTER, H_REMOVE, H_PROTECT, H_BULK_REMOVE, H_PUT_TCE,
                     H_PUT_TCE_INDIRECT, H_STUFF_TCE, H_CEDE, *XICS}),
}
# default_hcall_list: "all hcalls that were implemented before the
# hcall-enabling facility was added". H_LOGICAL_CI_* are in neither list.
DEFAULT_ENABLED = {
    "HV": (H_REMOVE, H_ENTER, H_READ, H_PROTECT, H_BULK_REMOVE, H_GET_TCE, H_PUT_TCE,
           H_SET_DABR, H_SET_XDABR, H_CEDE, H_PROD, H_CONFER, H_REGISTER_VPA, *XICS),
    "PR": (H_ENTER, H_REMOVE, H_PROTECT, H_BULK_REMOVE, H_PUT_TCE, H_CEDE, *XICS),
}


def _is_power_of_2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def h_logical_ci_load(vcpu) -> int:
    """kvmppc_h_logical_ci_load: r4 = size, r5 = addr; result to r4."""
    gpr = vcpu.gpr
    size, addr = gpr[4], gpr[5]
    if not _is_power_of_2(size) or size > 8:
        vcpu.vm.trace.emit("kvm", "logical_ci_size", nr=papr.H_LOGICAL_CI_LOAD, size=size, ret="H_TOO_HARD")
        return papr.H_TOO_HARD
    buf = bytearray(8)
    ret, dev = vcpu.vm.buses[KVM_MMIO_BUS].read(addr, size, buf)
    vcpu.vm.trace.emit("kvm", "io_bus_read", bus=BUS_NAMES[KVM_MMIO_BUS], addr=addr, len=size,
                       ret=errno_name(ret), device=dev.describe() if dev else None)
    if ret != 0:
        return papr.H_TOO_HARD
    gpr[4] = int.from_bytes(buf[:size], "big")
    return papr.H_SUCCESS


def h_logical_ci_store(vcpu) -> int:
    """kvmppc_h_logical_ci_store: r4 = size, r5 = addr, r6 = value.

    The bus buffer holds the value big-endian (cpu_to_be*) on every host.
    """
    gpr = vcpu.gpr
    size, addr, val = gpr[4], gpr[5], gpr[6]
    if size not in (1, 2, 4, 8):
        vcpu.vm.trace.emit("kvm", "logical_ci_size", nr=papr.H_LOGICAL_CI_STORE, size=size, ret="H_TOO_HARD")
        return papr.H_TOO_HARD
    buf = (val & ((1 << (8 * size)) - 1)).to_bytes(size, "big")
    ret, dev = vcpu.vm.buses[KVM_MMIO_BUS].write(addr, size, buf)
    trace = vcpu.vm.trace
    trace.emit("kvm", "io_bus_write", bus=BUS_NAMES[KVM_MMIO_BUS], addr=addr, len=size,
               data=buf.hex(), ret=errno_name(ret), device=dev.describe() if dev else None)
    if dev is not None and dev.is_ioeventfd:
        trace.emit("kvm", "ioeventfd_signal", addr=dev.addr, len=dev.length, fd=dev.eventfd.fd,
                   eventfd=dev.eventfd.label)
    if ret != 0:
        return papr.H_TOO_HARD
    return papr.H_SUCCESS


def do_hcall(vcpu) -> tuple[bool, str]:
    """Try an hcall in the kernel: (handled, why not).

    HV's kvmppc_pseries_do_hcall and PR's kvmppc_h_pr differ only in
    plumbing (RESUME_HOST vs EMULATE_FAIL); the visible result is the same.
    """
    vm = vcpu.vm
    req = vcpu.gpr[3]
    if req <= MAX_HCALL_OPCODE:
        enabled = vm.hcall_enabled(req)
        vm.trace.emit("kvm", "hcall_gate", nr=req, bit=req // 4, enabled=enabled)
        if not enabled:
            return False, f"enabled_hcalls bit {req // 4} clear"
    if req in LOGICAL_CI and vm.kernel_has_logical_ci:
        handler = h_logical_ci_load if req == papr.H_LOGICAL_CI_LOAD else h_logical_ci_store
        ret = handler(vcpu)
        if ret == papr.H_TOO_HARD:
            return False, "H_TOO_HARD: no in-kernel device on KVM_MMIO_BUS took it"
        vcpu.gpr[3] = papr.to_reg(ret)
        return True, ""
    # Other hcalls' in-kernel handlers (HPT, XICS, H_CEDE ...) are not
    # modelled: SLOF's path never uses them, so they go to userspace.
    return False, "no in-kernel handler"
