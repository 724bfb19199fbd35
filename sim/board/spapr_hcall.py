"""QEMU's sPAPR hcall table (hw/ppc/spapr_hcall.c, spapr_vty.c, spapr_rtas.c).

args is run->papr_hcall.args, i.e. r4..r12; the return value becomes r3.
ld*/st*_phys are target-native, big-endian for ppc64.
"""

from sim.abi import papr
from sim.trace import fields_builder


# The fields of the events every logical load/store records (Trace.record).
@fields_builder
def _load_fields(size, addr, value, region) -> dict:
    return {"size": size, "addr": addr, "value": value, "region": region}


@fields_builder
def _store_fields(size, addr, value) -> dict:
    return {"size": size, "addr": addr, "value": value}


class SpaprHcalls:
    def __init__(self, machine):
        self.m = machine
        self.table = {
            papr.H_LOGICAL_CI_LOAD: self.h_logical_load,
            papr.H_LOGICAL_CI_STORE: self.h_logical_store,
            0x44: self.h_logical_load,    # H_LOGICAL_CACHE_LOAD: same handler
            0x48: self.h_logical_store,   # H_LOGICAL_CACHE_STORE
            papr.H_PUT_TERM_CHAR: self.h_put_term_char,
            papr.H_GET_TERM_CHAR: self.h_get_term_char,
            papr.KVMPPC_H_RTAS: self.h_rtas,
        }

    def spapr_hypercall(self, opcode: int, args: list[int]) -> int:
        if opcode <= 0x31C and opcode & 3 == 0 or 0xF000 <= opcode <= 0xF002:
            fn = self.table.get(opcode)
            if fn is not None:
                return fn(args)
        self.m.trace.emit("qemu-vcpu", "unimplemented_hcall", nr=opcode)
        return papr.H_FUNCTION

    def h_logical_load(self, args) -> int:
        size, addr = args[0], args[1]
        if size not in (1, 2, 4, 8):
            return papr.H_PARAMETER
        value, where = self.m.address_space.load(addr, size)
        args[0] = value
        self.m.trace.record("qemu-vcpu", "h_logical_load", _load_fields, size, addr, value,
                            where.mr.name if where else "unassigned")
        return papr.H_SUCCESS

    def h_logical_store(self, args) -> int:
        size, addr, val = args[0], args[1], args[2]
        if size not in (1, 2, 4, 8):
            return papr.H_PARAMETER
        self.m.trace.record("qemu-vcpu", "h_logical_store", _store_fields, size, addr, val)
        where = self.m.address_space.store(addr, size, val)
        if where is None:
            self.m.trace.emit("qemu-vcpu", "unassigned_write", addr=addr, size=size)
        return papr.H_SUCCESS

    def h_put_term_char(self, args) -> int:
        reg, length = args[0], args[1]
        if reg != papr.SPAPR_VTY_REG and reg != 0 or length > 16:
            return papr.H_PARAMETER
        data = (args[2].to_bytes(8, "big") + args[3].to_bytes(8, "big"))[:length]
        self.m.trace.emit("qemu-vcpu", "vty_write", data=data.decode("latin-1"))
        self.m.console.write(data)
        return papr.H_SUCCESS

    def h_get_term_char(self, args) -> int:
        args[0] = 0  # no input pending
        return papr.H_SUCCESS

    def h_rtas(self, args) -> int:
        """h_rtas: token/nargs/nret read with rtas_ld (big-endian words)."""
        ram = self.m.ram
        base = args[0]
        try:
            token, nargs, nret = (int.from_bytes(ram.read(base + 4 * i, 4), "big") for i in range(3))
            rargs = [int.from_bytes(ram.read(base + 12 + 4 * i, 4), "big") for i in range(min(nargs, 16))]
        except Exception:
            return papr.H_PARAMETER
        rets = self.m.rtas_call(token, rargs, nret)
        for i, v in enumerate(rets[:nret]):
            try:
                ram.write(base + 12 + 4 * nargs + 4 * i, (v & 0xFFFFFFFF).to_bytes(4, "big"))
            except Exception:
                return papr.H_PARAMETER
        return papr.H_SUCCESS
