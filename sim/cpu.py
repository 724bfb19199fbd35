"""The POWER hardware thread as guest code sees it.

Guest code (the firmware model, later the kernel model) runs as a
coroutine on this CPU. It reads and writes guest RAM directly (real mode,
MMU off) and leaves the guest only by trapping: `sc 1` (an hcall) is the one
way SLOF reaches the hypervisor. A trap suspends the guest coroutine and
hands control to whoever is running the CPU (KVM's vcpu loop), which
resumes it after writing the result registers, as on real hardware.
"""

import types

from sim import vtime

TIMEBASE_FREQ = 512_000_000  # SPAPR_TIMEBASE_FREQ; POWER8/9 timebase is 512 MHz
IDLE_SPIN = "idle: branch to self"   # execute()'s stop when the code reaches `b .`


class Trap:
    """Why the guest stopped running: `sc 1` with LEV=1 (an hcall), or a
    load/store the hardware could not complete (an HDSI on emulated MMIO)."""
    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self.kind = kind


SC1 = Trap("sc1")
# Hypervisor data storage interrupt (0xe00, BOOK3S_INTERRUPT_H_DATA_STORAGE):
# a load or store with MSR[DR]=1 to a guest-physical page with no memslot,
# i.e. a device register. HDAR holds the address, HEIR/last_inst the
# instruction; KVM emulates it (kvmppc_hv_emulate_mmio).
HDSI = Trap("hdsi")

# The registers the kernel model's accessors use: the address in r9, the
# data in r10 (any GPRs would do; KVM reads them from the instruction).
MMIO_ADDR_REG, MMIO_DATA_REG = 9, 10

# The load/store forms this CPU model's load/store methods encode (KVM's own
# decoder, the 4.x opcode switch, is sim.kvm.book3s.decode_emulated; it has
# no ldbrx/stdbrx): (primary opcode, extended opcode or None) per
# (size, store, byte-reversed).
# D-form: lbz 34, lhz 40, lwz 32, stb 38, sth 44, stw 36; DS-form ld 58/0,
# std 62/0; X-form (31): lhbrx 790, lwbrx 534, ldbrx 532, sthbrx 918,
# stwbrx 662, stdbrx 660.
LOADSTORE_OPS = {
    (1, False, False): (34, None), (2, False, False): (40, None), (4, False, False): (32, None),
    (8, False, False): (58, None), (1, True, False): (38, None), (2, True, False): (44, None),
    (4, True, False): (36, None), (8, True, False): (62, None),
    (2, False, True): (31, 790), (4, False, True): (31, 534), (8, False, True): (31, 532),
    (2, True, True): (31, 918), (4, True, True): (31, 662), (8, True, True): (31, 660),
}


def encode_loadstore(size: int, store: bool, byte_reversed: bool, rt: int, ra: int) -> int:
    """The instruction word of `op rt,0(ra)` (D/DS-form) or `op rt,0,ra` (X-form)."""
    op, xo = LOADSTORE_OPS[(size, store, byte_reversed)]
    if xo is None:
        return (op << 26) | (rt << 21) | (ra << 16)
    return (op << 26) | (rt << 21) | (0 << 16) | (ra << 11) | (xo << 1)


def decode_loadstore(word: int):
    """(size, store, byte_reversed, rt, ea register) or None (not a load/store KVM emulates here)."""
    op, rt, ra, rb = word >> 26, (word >> 21) & 31, (word >> 16) & 31, (word >> 11) & 31
    for (size, store, rev), (o, xo) in LOADSTORE_OPS.items():
        if o != op:
            continue
        if xo is None and (op not in (58, 62) or word & 3 == 0):
            return size, store, rev, rt, ra
        if xo is not None and (word >> 1) & 0x3FF == xo and ra == 0:
            return size, store, rev, rt, rb
    return None


@types.coroutine
def _take(trap: Trap):
    yield trap


class PowerCPU:
    """Registers, RAM and the trap instruction of one hardware thread."""

    def __init__(self, ram, index: int = 0):
        self.index = index
        self.ram = ram
        self.gpr = [0] * 32
        self.msr_dr = False  # data relocation off: real mode, as SLOF runs
        self.msr_le = False  # big-endian, as SLOF and a 2015 ppc64 kernel run
        self.nip = 0x100     # QEMU's spapr entry point for SLOF
        self.hdar = 0        # the faulting address of the last HDSI
        self.last_inst = 0   # the instruction that took it (HEIR)
        self.dec_expiry = None   # the decrementer's next expiry (simulated time), if armed
        self.pending_exception = None   # an interrupt KVM delivered on re-entry (0x500)

    async def hcall(self, nr: int, *args: int) -> int:
        """Execute `sc 1` with r3 = nr and r4.. = args; return r3."""
        gpr = self.gpr
        gpr[3] = nr
        for i, a in enumerate(args):
            gpr[4 + i] = a & 0xFFFF_FFFF_FFFF_FFFF
        await _take(SC1)
        return gpr[3]

    async def _mmio(self, addr: int, size: int, store: bool, value: int, byte_reversed: bool) -> int:
        if not self.msr_dr:
            raise RuntimeError("a real-mode guest reaches device registers through H_LOGICAL_CI_*")
        gpr = self.gpr
        if 0 <= addr and addr + size <= self.ram.size:   # a memslot: the access just happens
            order = "little" if byte_reversed != self.msr_le else "big"
            if store:
                self.ram.write(addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, order))
                return 0
            return int.from_bytes(self.ram.read(addr, size), order)
        gpr[MMIO_ADDR_REG] = addr
        if store:
            gpr[MMIO_DATA_REG] = value & ((1 << (8 * size)) - 1)
        self.last_inst = encode_loadstore(size, store, byte_reversed, MMIO_DATA_REG, MMIO_ADDR_REG)
        self.hdar = addr
        await _take(HDSI)
        return 0 if store else gpr[MMIO_DATA_REG] & ((1 << (8 * size)) - 1)

    async def execute_loadstore(self, word: int, ea: int) -> None:
        """Execute one instruction word (any word: the guest's own code) as
        a data access to ea that faults to the hypervisor -- an HDSI, as
        for a device register with MSR[DR]=1. KVM reads the word (HEIR)
        and emulates it, or fails to; the guest reads any result from the
        GPRs. ea must be outside RAM (a memslot would not fault)."""
        if not self.msr_dr:
            raise RuntimeError("an HDSI on emulated MMIO needs MSR[DR]=1")
        if 0 <= ea < self.ram.size:
            raise ValueError(f"0x{ea:x} is guest RAM: the access would not fault")
        self.last_inst = word & 0xFFFF_FFFF
        self.hdar = ea & 0xFFFF_FFFF_FFFF_FFFF
        await _take(HDSI)

    async def load(self, addr: int, size: int, byte_reversed: bool = False) -> int:
        """A data-relocated load: lbz/lhz/lwz/ld, or lhbrx/lwbrx/ldbrx."""
        return await self._mmio(addr, size, False, 0, byte_reversed)

    async def store(self, addr: int, size: int, value: int, byte_reversed: bool = False) -> None:
        """A data-relocated store: stb/sth/stw/std, or sthbrx/stwbrx/stdbrx."""
        await self._mmio(addr, size, True, value, byte_reversed)

    def take_exception(self):
        """The interrupt delivered at the last re-entry (and clear it)."""
        vec, self.pending_exception = self.pending_exception, None
        return vec

    def mftb(self) -> int:
        return int(vtime.now() * TIMEBASE_FREQ)

    async def compute(self, seconds: float) -> None:
        """Time the guest spends running its own code."""
        if seconds > 0:
            vtime.charge(seconds)
            if vtime.overdue():     # vtime.checkpoint()
                await vtime.settle()


def _sext(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


async def execute(cpu: PowerCPU, nip: int, max_steps: int = 100_000) -> str:
    """Run real big-endian PowerPC64 code from RAM at nip (a small subset of
    the Power ISA: addi, addis, ori, oris, ld, sc, b) until it branches to
    itself (an idle spin) or meets an instruction outside the subset.
    Returns why it stopped."""
    gpr, ram, mask = cpu.gpr, cpu.ram, (1 << 64) - 1
    for _ in range(max_steps):
        cpu.nip = nip
        try:
            word = int.from_bytes(ram.read(nip, 4), "big")
        except Exception:
            return f"instruction fetch outside RAM at 0x{nip:x}"
        op = word >> 26
        rt, ra = (word >> 21) & 31, (word >> 16) & 31
        if op in (14, 15):                                  # addi / addis
            imm = _sext(word & 0xFFFF, 16) << (16 if op == 15 else 0)
            gpr[rt] = ((gpr[ra] if ra else 0) + imm) & mask
        elif op in (24, 25):                                # ori / oris (rs=rt field)
            gpr[ra] = gpr[rt] | ((word & 0xFFFF) << (16 if op == 25 else 0))
        elif op == 58 and word & 3 == 0:                    # ld
            ea = ((gpr[ra] if ra else 0) + _sext(word & 0xFFFC, 16)) & mask
            try:
                gpr[rt] = int.from_bytes(ram.read(ea, 8), "big")
            except Exception:
                return f"data storage interrupt at 0x{ea:x}"
        elif word == 0x44000022:                            # sc 1: hcall
            await _take(SC1)
        elif op == 18:                                      # b / ba / bl
            li = _sext(word & 0x03FFFFFC, 26)
            if li == 0 and not word & 2:
                return IDLE_SPIN
            nip = (li if word & 2 else nip + li) & mask
            continue
        else:
            return f"unmodelled instruction 0x{word:08x} at 0x{nip:x}"
        nip += 4
    return "step limit"
