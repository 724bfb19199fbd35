"""A conventional PCI function's config space and BAR mapping (hw/pci/pci.c).

BARs are sized and placed by the firmware (write all-ones, read the mask
back, write the address); a BAR is mapped into the bus's I/O or memory
space only while the matching command bit is set (pci_update_mappings).
"""

PCI_VENDOR_ID, PCI_COMMAND, PCI_STATUS, PCI_CLASS_REVISION = 0x00, 0x04, 0x06, 0x08
PCI_HEADER_TYPE, PCI_BASE_ADDRESS_0, PCI_SUBSYSTEM_VENDOR_ID = 0x0E, 0x10, 0x2C
PCI_ROM_ADDRESS, PCI_CAPABILITY_LIST, PCI_INTERRUPT_LINE, PCI_INTERRUPT_PIN = 0x30, 0x34, 0x3C, 0x3D
PCI_COMMAND_IO, PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER = 0x1, 0x2, 0x4
PCI_STATUS_CAP_LIST = 0x10
PCI_BASE_ADDRESS_SPACE_IO, PCI_BASE_ADDRESS_SPACE_MEMORY = 0x1, 0x0
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8
PCI_CAP_ID_MSIX = 0x11
PCI_CONFIG_SPACE_SIZE = 256


class PCIBus:
    """The bus a PHB exposes: its I/O and memory spaces (MemoryRegions)."""

    def __init__(self, io_space, mem_space, trace):
        self.io_space = io_space
        self.mem_space = mem_space
        self.trace = trace
        self.devices: dict[int, "PCIDevice"] = {}

    def plug(self, devfn: int, dev: "PCIDevice") -> None:
        dev.bus, dev.devfn = self, devfn
        self.devices[devfn] = dev


class _Bar:
    __slots__ = ("type", "size", "mr", "mapped_at")

    def __init__(self, type_, size, mr):
        self.type, self.size, self.mr, self.mapped_at = type_, size, mr, None


class PCIDevice:
    name = "pci-device"

    def __init__(self, vendor: int, device: int, class_code: int, revision: int = 0):
        self.config = bytearray(PCI_CONFIG_SPACE_SIZE)
        self.wmask = bytearray(PCI_CONFIG_SPACE_SIZE)
        self.bars: dict[int, _Bar] = {}
        self.bus: PCIBus | None = None
        self.devfn = 0
        self._set(PCI_VENDOR_ID, 2, vendor)
        self._set(PCI_VENDOR_ID + 2, 2, device)
        self._set(PCI_CLASS_REVISION, 4, (class_code << 16) | revision)
        self._set(PCI_INTERRUPT_PIN, 1, 1)
        self.wmask[PCI_COMMAND] = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
        self.wmask[PCI_COMMAND + 1] = 0x04  # INTx disable
        self.wmask[PCI_INTERRUPT_LINE] = 0xFF
        self._cap_next = 0x40

    def _set(self, off: int, size: int, value: int) -> None:
        self.config[off:off + size] = value.to_bytes(size, "little")

    def _get(self, off: int, size: int) -> int:
        return int.from_bytes(self.config[off:off + size], "little")

    def register_bar(self, idx: int, type_: int, mr) -> None:
        """pci_register_bar: size is the region's, rounded to a power of 2."""
        size = 1 << (mr.size - 1).bit_length()
        self.bars[idx] = _Bar(type_, size, mr)
        self._set(PCI_BASE_ADDRESS_0 + 4 * idx, 4, type_)
        mask = ~(size - 1) & 0xFFFFFFFF
        wm = mask & ~(0x3 if type_ & PCI_BASE_ADDRESS_SPACE_IO else 0xF)
        self.wmask[PCI_BASE_ADDRESS_0 + 4 * idx:PCI_BASE_ADDRESS_0 + 4 * idx + 4] = wm.to_bytes(4, "little")
        if type_ & PCI_BASE_ADDRESS_MEM_TYPE_64:
            self.wmask[PCI_BASE_ADDRESS_0 + 4 * idx + 4:PCI_BASE_ADDRESS_0 + 4 * idx + 8] = b"\xff" * 4

    def add_capability(self, cap_id: int, size: int) -> int:
        """pci_add_capability: link a capability into the list at 0x34."""
        off = self._cap_next
        self.config[off] = cap_id
        self.config[off + 1] = self.config[PCI_CAPABILITY_LIST]
        self.config[PCI_CAPABILITY_LIST] = off
        self.config[PCI_STATUS] |= PCI_STATUS_CAP_LIST
        self._cap_next = off + size
        return off

    def config_read(self, addr: int, size: int) -> int:
        if addr + size > PCI_CONFIG_SPACE_SIZE:
            return (1 << (8 * size)) - 1
        return self._get(addr, size)

    def config_write(self, addr: int, value: int, size: int) -> None:
        """pci_default_write_config: only writable bits change."""
        if addr + size > PCI_CONFIG_SPACE_SIZE:
            return
        for i in range(size):
            wm = self.wmask[addr + i]
            byte = (value >> (8 * i)) & 0xFF
            self.config[addr + i] = (self.config[addr + i] & ~wm) | (byte & wm)
        if addr < PCI_BASE_ADDRESS_0 + 24 and addr + size > PCI_COMMAND or addr == PCI_ROM_ADDRESS:
            self.update_mappings()

    def bar_address(self, idx: int) -> int | None:
        bar = self.bars[idx]
        cmd = self._get(PCI_COMMAND, 2)
        raw = self._get(PCI_BASE_ADDRESS_0 + 4 * idx, 4)
        is_io = bar.type & PCI_BASE_ADDRESS_SPACE_IO
        if not cmd & (PCI_COMMAND_IO if is_io else PCI_COMMAND_MEMORY):
            return None
        addr = raw & ~(bar.size - 1) & 0xFFFFFFFF
        wide = not is_io and bar.type & PCI_BASE_ADDRESS_MEM_TYPE_64
        if wide:
            addr |= self._get(PCI_BASE_ADDRESS_0 + 4 * idx + 4, 4) << 32
        last = addr + bar.size - 1
        # pci_bar_address: unmapped while zero, or while sized with all-ones
        if addr == 0 or last <= addr or (not wide and last >= 0xFFFFFFFF) or last >= (1 << 64) - 1:
            return None
        return addr

    def update_mappings(self) -> None:
        for idx, bar in self.bars.items():
            new = self.bar_address(idx)
            if new == bar.mapped_at:
                continue
            space = self.bus.io_space if bar.type & PCI_BASE_ADDRESS_SPACE_IO else self.bus.mem_space
            if bar.mapped_at is not None:
                space.del_subregion(bar.mr)
            bar.mapped_at = new
            if new is not None:
                space.add_subregion(new, bar.mr)
            self.bus.trace.emit("qemu-vcpu", "pci_bar_map", device=self.name, bar=idx,
                                space="io" if bar.type & 1 else "mem", addr=new, size=bar.size)
