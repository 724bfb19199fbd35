"""SLOF's libhvcall: cache-inhibited I/O and the console in real mode.

ci_read/ci_write (include/ppcp7/cache.h) issue H_LOGICAL_CI_LOAD/STORE
with r4 = size in bytes, r5 = address, r6 = value; a failed load returns
all-ones. SLOF swaps little-endian PCI registers itself (cpu_to_le*), since
the hcall returns the big-endian view of the bus.
"""

from collections.abc import Awaitable

from sim.abi import papr


def bswap(value: int, size: int) -> int:
    return int.from_bytes(value.to_bytes(size, "little"), "big") if size > 1 else value


class HvCalls:
    def __init__(self, cpu, rtas_args_addr: int):
        self.cpu = cpu
        self.rtas_args = rtas_args_addr

    async def ci_read(self, size: int, addr: int) -> int:
        r3 = await self.cpu.hcall(papr.H_LOGICAL_CI_LOAD, size, addr)
        if r3:
            return (1 << (8 * size)) - 1
        return self.cpu.gpr[4] & ((1 << (8 * size)) - 1)

    async def ci_write(self, size: int, addr: int, value: int) -> int:
        return papr.from_reg(await self.cpu.hcall(papr.H_LOGICAL_CI_STORE, size, addr, value))

    async def ci_read_le(self, size: int, addr: int) -> int:
        return bswap(await self.ci_read(size, addr), size)

    def ci_write_le(self, size: int, addr: int, value: int) -> Awaitable[int]:
        # A plain def returning ci_write's coroutine: one frame fewer
        # between the guest's trap and KVM (a notify per block request).
        return self.ci_write(size, addr, bswap(value, size))

    async def put_term_char(self, text: str) -> None:
        """hv-putchar: one H_PUT_TERM_CHAR per character (vio-hvterm.fs)."""
        for ch in text.encode("latin-1", "replace"):
            await self.cpu.hcall(papr.H_PUT_TERM_CHAR, papr.SPAPR_VTY_REG, 1, ch << 56, 0)

    async def rtas(self, token: int, args: list[int], nret: int) -> list[int]:
        """enter-rtas: the argument buffer {token, nargs, nret, args.., rets..}
        (big-endian words) in RAM, then hcall KVMPPC_H_RTAS with r4 = buffer."""
        words = [token, len(args), nret, *args] + [0] * nret
        ram = self.cpu.ram
        ram.write(self.rtas_args, b"".join((w & 0xFFFFFFFF).to_bytes(4, "big") for w in words))
        await self.cpu.hcall(papr.KVMPPC_H_RTAS, self.rtas_args)
        base = self.rtas_args + 4 * (3 + len(args))
        return [int.from_bytes(ram.read(base + 4 * i, 4), "big") for i in range(nret)]
