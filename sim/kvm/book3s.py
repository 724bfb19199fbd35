"""Book3S hcall handling: the enabled_hcalls gate and the in-kernel
H_LOGICAL_CI_LOAD/STORE (arch/powerpc/kvm/book3s.c, book3s_hv.c,
book3s_pr_papr.c).
"""

from sim.abi import papr
from sim.abi.kvm import KVM_MMIO_BUS, BUS_NAMES, errno_name
from sim.trace import fields_builder

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

# kvmppc_hcall_impl_hv (+ _realmode) and kvmppc_hcall_impl_pr as of 4.0,
# without the logical-CI pair (99342cf, 4.1) and the multi-TCE pair
# (H_PUT_TCE_INDIRECT, H_STUFF_TCE: d3695aa4f452, 4.6), which come and go
# with the release (sim.kvm.releases).
IMPL = {
    "HV": frozenset({H_CEDE, H_PROD, H_CONFER, H_REGISTER_VPA, papr.H_SET_MODE,
                     H_REMOVE, H_ENTER, H_READ, H_PROTECT, H_BULK_REMOVE, H_CLEAR_REF,
                     H_CLEAR_MOD, H_SET_DABR, H_SET_XDABR, H_GET_TCE, H_PUT_TCE, *XICS}),
    "PR": frozenset({H_ENTER, H_REMOVE, H_PROTECT, H_BULK_REMOVE, H_PUT_TCE, H_CEDE, *XICS}),
}
TCE_MULTI = (H_PUT_TCE_INDIRECT, H_STUFF_TCE)
# default_hcall_list: "all hcalls that were implemented before the
# hcall-enabling facility was added". H_LOGICAL_CI_* are in neither list.
DEFAULT_ENABLED = {
    "HV": (H_REMOVE, H_ENTER, H_READ, H_PROTECT, H_BULK_REMOVE, H_GET_TCE, H_PUT_TCE,
           H_SET_DABR, H_SET_XDABR, H_CEDE, H_PROD, H_CONFER, H_REGISTER_VPA, *XICS),
    "PR": (H_ENTER, H_REMOVE, H_PROTECT, H_BULK_REMOVE, H_PUT_TCE, H_CEDE, *XICS),
}


# The fields of the events every H_LOGICAL_CI_* records (Trace.record).
@fields_builder
def _bus_read_fields(addr, size, ret, device) -> dict:
    return {"bus": BUS_NAMES[KVM_MMIO_BUS], "addr": addr, "len": size, "ret": errno_name(ret), "device": device}


@fields_builder
def _bus_write_fields(addr, size, buf, ret, device) -> dict:
    return {"bus": BUS_NAMES[KVM_MMIO_BUS], "addr": addr, "len": size, "data": buf.hex(), "ret": errno_name(ret),
            "device": device}


@fields_builder
def _ioeventfd_signal_fields(addr, length, fd, label) -> dict:
    return {"addr": addr, "len": length, "fd": fd, "eventfd": label}


@fields_builder
def _gate_fields(nr, enabled) -> dict:
    return {"nr": nr, "bit": nr // 4, "enabled": enabled}


def h_logical_ci_load(vcpu) -> int:
    """kvmppc_h_logical_ci_load: r4 = size, r5 = addr; result to r4."""
    gpr = vcpu.gpr
    size, addr = gpr[4], gpr[5]
    if size not in (1, 2, 4, 8):    # !is_power_of_2(size) || size > sizeof(u64)
        vcpu.vm.trace.emit("kvm", "logical_ci_size", nr=papr.H_LOGICAL_CI_LOAD, size=size, ret="H_TOO_HARD")
        return papr.H_TOO_HARD
    buf = bytearray(8)
    ret, dev = vcpu.vm.buses[KVM_MMIO_BUS].read(addr, size, buf)
    vcpu.vm.trace.record("kvm", "io_bus_read", _bus_read_fields, addr, size, ret, dev.describe() if dev else None)
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
    trace.record("kvm", "io_bus_write", _bus_write_fields, addr, size, buf, ret, dev.describe() if dev else None)
    if dev is not None and dev.is_ioeventfd and not dev.lost:
        trace.record("kvm", "ioeventfd_signal", _ioeventfd_signal_fields, dev.addr, dev.length, dev.eventfd.fd,
                     dev.eventfd.label)
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
        enabled = bool(vm.enabled_hcalls[req // 4])     # vm.hcall_enabled(req), inline
        vm.trace.record("kvm", "hcall_gate", _gate_fields, req, enabled)
        if not enabled:
            return False, f"enabled_hcalls bit {req // 4} clear"
    if req in LOGICAL_CI and vm.kernel_has_logical_ci:
        handler = h_logical_ci_load if req == papr.H_LOGICAL_CI_LOAD else h_logical_ci_store
        ret = handler(vcpu)
        if ret == papr.H_TOO_HARD:
            return False, "H_TOO_HARD: no in-kernel device on KVM_MMIO_BUS took it"
        vcpu.gpr[3] = papr.to_reg(ret)
        return True, ""
    if req in (H_XIRR, H_EOI) and vm.xics is not None:
        # kvmppc_xics_hcall (real mode on POWER8: book3s_hv_rm_xics.c)
        xics = vm.xics
        if req == H_XIRR:
            vcpu.gpr[4] = xics.h_xirr()
            vm.trace.emit("kvm", "xics_xirr", xirr=vcpu.gpr[4], irq=vcpu.gpr[4] & 0xFFFFFF)
        else:
            xics.h_eoi(vcpu.gpr[4])
            vm.trace.emit("kvm", "xics_eoi", irq=vcpu.gpr[4] & 0xFFFFFF)
        vcpu.gpr[3] = papr.to_reg(papr.H_SUCCESS)
        return True, ""
    # Other hcalls' in-kernel handlers (HPT, H_PROD ...) are not modelled:
    # the guest models never use them, so they go to userspace. H_CEDE is
    # the vcpu's (it blocks: sim.kvm.vcpu).
    return False, "no in-kernel handler"


# -- the MMU-on MMIO path (book3s_64_mmu_hv.c, powerpc.c, emulate_loadstore.c)

# kvmppc_emulate_loadstore of the 4.x kernels (emulate_loadstore.c: an
# opcode switch, before the 2017 rewrite over analyse_instr), with
# ppc-opcode.h's numbers: (size, store, byte-reversed, sign-extend, update).
# It decodes by opcode alone: RA only forms the EA, which KVM has from the
# fault; OP_LD/OP_STD take every DS-form (ldu, lwa, stdu too) as ld/std; an
# update form sets RA to the EA (vaddr_accessed) even when it exits.
# Everything else -- ldbrx/stdbrx, ldx, lwzux, lhaux, FP, lmw/stmw,
# larx/stcx., string ops -- is EMULATE_FAIL.
EMULATED_PRIMARY = {
    32: (4, False, False, False, False), 33: (4, False, False, False, True),    # lwz, lwzu
    34: (1, False, False, False, False), 35: (1, False, False, False, True),    # lbz, lbzu
    36: (4, True, False, False, False), 37: (4, True, False, False, True),      # stw, stwu
    38: (1, True, False, False, False), 39: (1, True, False, False, True),      # stb, stbu
    40: (2, False, False, False, False), 41: (2, False, False, False, True),    # lhz, lhzu
    42: (2, False, False, True, False), 43: (2, False, False, True, True),      # lha, lhau
    44: (2, True, False, False, False), 45: (2, True, False, False, True),      # sth, sthu
    58: (8, False, False, False, False), 62: (8, True, False, False, False),    # ld, std
}
EMULATED_OP31 = {
    23: (4, False, False, False, False), 87: (1, False, False, False, False),   # lwzx, lbzx
    119: (1, False, False, False, True), 151: (4, True, False, False, False),   # lbzux, stwx
    215: (1, True, False, False, False), 247: (1, True, False, False, True),    # stbx, stbux
    343: (2, False, False, True, False), 279: (2, False, False, False, False),  # lhax, lhzx
    311: (2, False, False, False, True), 407: (2, True, False, False, False),   # lhzux, sthx
    439: (2, True, False, False, True),                                         # sthux
    534: (4, False, True, False, False), 662: (4, True, True, False, False),    # lwbrx, stwbrx
    790: (2, False, True, False, False), 918: (2, True, True, False, False),    # lhbrx, sthbrx
}
CACHE_NOPS_OP31 = (54, 86, 470)   # dcbst, dcbf, dcbi: "Do nothing", EMULATE_DONE


def decode_emulated(word: int):
    """kvmppc_emulate_loadstore's switch: (size, store, byte_reversed,
    sign_extend, rt/rs, update RA or None), "nop", or None (EMULATE_FAIL)."""
    op, rt, ra = word >> 26, (word >> 21) & 31, (word >> 16) & 31
    if op == 31:
        xo = (word >> 1) & 0x3FF            # get_xop
        if xo in CACHE_NOPS_OP31:
            return "nop"
        form = EMULATED_OP31.get(xo)
    else:
        form = EMULATED_PRIMARY.get(op)
    if form is None:
        return None
    size, store, rev, sext, update = form
    return size, store, rev, sext, rt, ra if update else None


class MmioState:
    """vcpu->arch's MMIO fields: what the next KVM_RUN completes."""
    __slots__ = ("rt", "size", "host_swabbed", "is_write", "sign_extend")

    def __init__(self, rt, size, host_swabbed, is_write, sign_extend=False):
        self.rt, self.size, self.host_swabbed, self.is_write = rt, size, host_swabbed, is_write
        self.sign_extend = sign_extend


def need_byteswap(vcpu) -> bool:
    """kvmppc_need_byteswap: the guest's MSR[LE] differs from the host's order."""
    return vcpu.cpu.msr_le != (vcpu.vm.host_byteorder == "little")


def _swab(raw: bytes) -> bytes:
    return raw[::-1]


def emulate_mmio(vcpu, run) -> str:
    """kvmppc_hv_emulate_mmio -> kvmppc_emulate_loadstore ->
    kvmppc_handle_load/store: decode the instruction, try KVM_MMIO_BUS, and
    either finish in the kernel ("done"), or fill run.mmio for a
    KVM_EXIT_MMIO ("exit"), or fail ("fail": a program interrupt).

    The bus and run.mmio.data get the register stored at the lowest bytes
    in host order, byte-swapped when host_swabbed -- which is the memory
    image the guest's instruction would have made, whatever the host."""
    cpu, vm, trace = vcpu.cpu, vcpu.vm, vcpu.vm.trace
    # The 4.x opcode switch (decode_emulated). The model decoded only the
    # forms its CPU encodes, X-forms only with RA=0: lwbrx r,ra,rb with a
    # base register, lwzx, the update forms or lha got a program interrupt
    # where kvmppc_emulate_loadstore emulates them.
    dec = decode_emulated(cpu.last_inst)
    if dec is None:
        trace.emit("kvm", "mmio_emulation_failed", inst=f"0x{cpu.last_inst:08x}", addr=cpu.hdar)
        return "fail"
    if dec == "nop":
        trace.emit("kvm", "mmio_cache_op", inst=f"0x{cpu.last_inst:08x}", addr=cpu.hdar)
        return "done"
    size, store, byte_reversed, sign_extend, rt, update_ra = dec
    addr = cpu.hdar                       # vcpu->arch.paddr_accessed
    is_default_endian = not byte_reversed
    host_swabbed = is_default_endian if need_byteswap(vcpu) else not is_default_endian
    host = vm.host_byteorder
    bus = vm.buses[KVM_MMIO_BUS]
    vcpu.mmio = MmioState(rt, size, host_swabbed, store, sign_extend)
    if store:
        raw = (vcpu.gpr[rt] & ((1 << (8 * size)) - 1)).to_bytes(size, host)
        data = _swab(raw) if host_swabbed else raw
        ret, dev = bus.write(addr, size, data)
        trace.emit("kvm", "io_bus_write", bus=BUS_NAMES[KVM_MMIO_BUS], addr=addr, len=size,
                   data=data.hex(), ret=errno_name(ret), device=dev.describe() if dev else None, via="mmio")
        if dev is not None and dev.is_ioeventfd and not dev.lost:
            trace.emit("kvm", "ioeventfd_signal", addr=dev.addr, len=dev.length, fd=dev.eventfd.fd,
                       eventfd=dev.eventfd.label)
    else:
        buf = bytearray(8)
        ret, dev = bus.read(addr, size, buf)
        data = bytes(buf[:size])
        trace.emit("kvm", "io_bus_read", bus=BUS_NAMES[KVM_MMIO_BUS], addr=addr, len=size,
                   ret=errno_name(ret), device=dev.describe() if dev else None, via="mmio")
    run.set_mmio(addr, data if store else bytes(size), size, store)
    if ret == 0:
        if not store:
            complete_mmio_load(vcpu, data)
        vcpu.mmio = None
    if update_ra is not None:
        # kvmppc_set_gpr(vcpu, ra, vcpu->arch.vaddr_accessed) after the
        # handle_load/store call. The model does not translate: EA = HDAR.
        vcpu.gpr[update_ra] = cpu.hdar
    return "done" if ret == 0 else "exit"


def complete_mmio_load(vcpu, data: bytes) -> None:
    """kvmppc_complete_mmio_load: the bytes as a host-order integer,
    swabbed if host_swabbed, into the target GPR (zero-extended)."""
    m = vcpu.mmio
    raw = bytes(data[:m.size])
    val = int.from_bytes(_swab(raw) if m.host_swabbed else raw, vcpu.vm.host_byteorder)
    if m.sign_extend:      # kvmppc_handle_loads (lha, lhax, lhau)
        sign = 1 << (8 * m.size - 1)
        val = ((val ^ sign) - sign) & 0xFFFF_FFFF_FFFF_FFFF
    vcpu.gpr[m.rt] = val
    vcpu.vm.trace.emit("kvm", "mmio_load_complete", gpr=m.rt, value=val, size=m.size)
