"""SLOF's PCI side: config space through RTAS, the probe, BAR placement.

rtas-config-@/! (board-qemu/slof/rtas.fs): ibm,read-pci-config with
args {config-addr, puid hi, puid lo, size}, ibm,write-pci-config with the
value as a fifth argument. BARs are sized (write -1, read back, restore)
and placed from the PHB's pools by SLOF itself (pci-device-generic-setup).
"""

from sim.abi import papr

PCI_COMMAND_IO, PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER = 1, 2, 4


class PciFunction:
    """A function on the PHB as SLOF's pci-device.fs sees it."""

    def __init__(self, hv, phb, devfn: int):
        self.hv = hv
        self.phb = phb
        self.devfn = devfn
        self.bars: dict[int, int] = {}   # index -> bus address (flags cleared)
        self.bar_is_io: dict[int, bool] = {}

    def _cfg_addr(self, reg: int) -> int:
        return (0 << 16) | (self.devfn << 8) | reg

    async def read(self, reg: int, size: int) -> int:
        status, value = await self.hv.rtas(papr.RTAS_IBM_READ_PCI_CONFIG,
                                           [self._cfg_addr(reg), self.phb.buid >> 32,
                                            self.phb.buid & 0xFFFFFFFF, size], 2)
        return 0xFFFFFFFF if status else value  # a failed read silently gives ffffffff

    async def write(self, reg: int, size: int, value: int) -> None:
        await self.hv.rtas(papr.RTAS_IBM_WRITE_PCI_CONFIG,
                           [self._cfg_addr(reg), self.phb.buid >> 32, self.phb.buid & 0xFFFFFFFF,
                            size, value], 1)

    async def command(self, set_bits: int = 0, clear_bits: int = 0) -> None:
        """A read-modify-write of the command register (pci-*-enable)."""
        cmd = await self.read(0x04, 4)
        await self.write(0x04, 4, (cmd & ~clear_bits & 0xFFFF) | set_bits)

    async def enable(self) -> None:
        """Device open: pci-master-enable, pci-mem-enable, pci-io-enable."""
        for bit in (PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, PCI_COMMAND_IO):
            await self.command(set_bits=bit)

    async def disable(self) -> None:
        """pci-device-disable: command &= ~7."""
        await self.command(clear_bits=PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)

    async def assign_bars(self) -> None:
        """assign-all-device-bars over 0x10..0x24, then the ROM BAR."""
        idx = 0
        while idx < 6:
            reg = 0x10 + 4 * idx
            orig = await self.read(reg, 4)
            await self.write(reg, 4, 0xFFFFFFFF)
            mask = await self.read(reg, 4)
            await self.write(reg, 4, orig)
            if mask in (0, 0xFFFFFFFF):
                idx += 1
                continue
            is_io = bool(mask & 1)
            wide = not is_io and mask & 0x6 == 0x4 and idx < 5   # a 64-bit memory BAR
            if wide:   # the upper dword is sized the same way (pci-bar-size-mem64)
                orig_hi = await self.read(reg + 4, 4)
                await self.write(reg + 4, 4, 0xFFFFFFFF)
                mask_hi = await self.read(reg + 4, 4)
                await self.write(reg + 4, 4, orig_hi)
                size = (~((mask_hi << 32) | (mask & ~0xF)) + 1) & 0xFFFFFFFFFFFFFFFF
            else:
                size = (~(mask & (~0x3 if is_io else ~0xF)) + 1) & 0xFFFFFFFF
            addr = self.phb.allocate(is_io, size, wide)
            await self.write(reg, 4, (addr & 0xFFFFFFFF) | (orig & (0x3 if is_io else 0xF)))
            if wide:
                await self.write(reg + 4, 4, addr >> 32)
            self.bars[idx], self.bar_is_io[idx] = addr, is_io
            idx += 2 if wide else 1
        orig = await self.read(0x30, 4)
        await self.write(0x30, 4, 0xFFFFFFFF)
        await self.read(0x30, 4)
        await self.write(0x30, 4, orig)

    async def capabilities(self):
        """Walk the capability list from 0x34: [(offset, id)]."""
        caps = []
        ptr = await self.read(0x34, 1)
        while ptr and len(caps) < 48:
            cap_id = await self.read(ptr, 1)
            caps.append((ptr, cap_id))
            ptr = await self.read(ptr + 1, 1)
        return caps

    def cpu_address(self, idx: int) -> int:
        """translate-my-address: bus address to CPU real address."""
        return self.phb.translate(self.bars[idx], self.bar_is_io[idx])


class Phb:
    """The PHB node from the device tree: BUID and its ranges."""

    def __init__(self, node: dict):
        self.buid = node["buid"]
        self.path = f"/pci@{self.buid:x}"
        self.io_cpu, self.io_size = node["io_window"]
        self.mem_bus, self.mem_cpu, self.mem_size = node["mem_window"]
        # The 64-bit MMIO range, when the PHB has one (QEMU 2.8+ placement).
        self.mem64_bus, self.mem64_cpu, self.mem64_size = node.get("mem64_window", (None, None, 0))
        self._next_io = 0x10          # "BARs must not be set to zero"
        self._next_mem = self.mem_bus
        self._next_mem64 = self.mem64_bus

    def allocate(self, is_io: bool, size: int, wide: bool = False) -> int:
        """From the I/O pool, the 64-bit pool (64-bit BARs, when the PHB
        has a 64-bit range) or the 32-bit memory pool."""
        if is_io:
            addr = (self._next_io + size - 1) & ~(size - 1)
            self._next_io = addr + size
        elif wide and self.mem64_bus is not None:
            align = max(size, 0x10000)
            addr = (self._next_mem64 + align - 1) & ~(align - 1)
            self._next_mem64 = addr + size
        else:
            align = max(size, 0x10000)  # qemu,mem-bar-min-align
            addr = (self._next_mem + align - 1) & ~(align - 1)
            self._next_mem = addr + size
        return addr

    def translate(self, bus_addr: int, is_io: bool) -> int:
        if is_io:
            return self.io_cpu + bus_addr
        if self.mem64_bus is not None and self.mem64_bus <= bus_addr < self.mem64_bus + self.mem64_size:
            return self.mem64_cpu + (bus_addr - self.mem64_bus)
        return self.mem_cpu + (bus_addr - self.mem_bus)
