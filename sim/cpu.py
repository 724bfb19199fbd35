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


class Trap:
    """Why the guest stopped running: `sc 1` with LEV=1 (an hcall)."""
    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self.kind = kind


SC1 = Trap("sc1")


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
        self.nip = 0x100     # QEMU's spapr entry point for SLOF

    async def hcall(self, nr: int, *args: int) -> int:
        """Execute `sc 1` with r3 = nr and r4.. = args; return r3."""
        gpr = self.gpr
        gpr[3] = nr
        for i, a in enumerate(args):
            gpr[4 + i] = a & 0xFFFF_FFFF_FFFF_FFFF
        await _take(SC1)
        return gpr[3]

    def mftb(self) -> int:
        return int(vtime.now() * TIMEBASE_FREQ)

    async def compute(self, seconds: float) -> None:
        """Time the guest spends running its own code."""
        if seconds > 0:
            vtime.charge(seconds)
            await vtime.checkpoint()


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
                return "idle: branch to self"
            nip = (li if word & 2 else nip + li) & mask
            continue
        else:
            return f"unmodelled instruction 0x{word:08x} at 0x{nip:x}"
        nip += 4
    return "step limit"
