"""SLOF's disk-label package `load` (slof/fs/packages/disk-label.fs).

With no arguments: the ISO9660 probe (0x800 bytes at byte 0x8000), then the
DOS/MBR PReP partition (type 0x41 and boot flag 0x80, re-reading sector 0
for every partition tried), read whole up to max-prep-partition-blocks
(d# 65536) to load-base.
"""

from sim.abi.mbr import (
    BOOT_ACTIVE, MBR_SIGNATURE, PART_TYPE_GPT_PROTECTIVE, PART_TYPE_PREP, PART_TYPES_EXTENDED, mbr,
)

MAX_PREP_PARTITION_BLOCKS = 65536


class DiskLabel:
    def __init__(self, deblocker, block_buf: int, trace, max_prep_blocks=MAX_PREP_PARTITION_BLOCKS):
        self.d = deblocker
        self.ram = deblocker.ram
        self.block = block_buf     # disk-label's `block` buffer
        self.trace = trace
        self.max_prep_blocks = max_prep_blocks

    @property
    def bs(self) -> int:
        return self.d.dev.block_size

    async def read_sector(self, sector: int) -> None:
        """read-sector: the block buffer keeps its old bytes if the read fails."""
        await self.d.read(self.block, sector * self.bs, self.bs)

    def _mbr(self):
        return mbr.parse(self.ram.read(self.block, 512))

    async def has_iso9660(self) -> bool:
        self.trace.emit("guest", "phase", name="iso9660 probe")
        await self.d.read(self.block, 0x8000, 0x800)
        data = self.ram.read(self.block, 6)
        return data[0] == 1 and data[1:6] == b"CD001"

    async def no_mbr(self) -> bool:
        await self.read_sector(0)
        m = self._mbr()
        return m.partitions[0].type == PART_TYPE_GPT_PROTECTIVE or m.signature != MBR_SIGNATURE

    async def count_logical(self) -> list:
        """count-dos-logical-partitions: walk the EBR chains of extended entries."""
        await self.read_sector(0)
        logical = []
        for p in self._mbr().partitions:
            if p.type in PART_TYPES_EXTENDED:
                ebr = p.lba_start
                for _ in range(128):
                    await self.read_sector(ebr)
                    e = self._mbr()
                    if e.signature != MBR_SIGNATURE:
                        break
                    logical.append((ebr, e.partitions[0]))
                    nxt = e.partitions[1]
                    if nxt.type not in PART_TYPES_EXTENDED:
                        break
                    ebr = p.lba_start + nxt.lba_start
        return logical

    async def load_dos_prep(self, load_base: int) -> int:
        """load-from-dos-boot-partition: bytes loaded, 0 if no partition."""
        self.trace.emit("guest", "phase", name="mbr label")
        if await self.no_mbr():
            return 0
        logical = await self.count_logical()
        for i in range(4 + len(logical)):
            await self.read_sector(0)    # find-dos-partition re-reads sector 0
            if i < 4:
                part, base = self._mbr().partitions[i], 0
            else:
                ebr, _ = logical[i - 4]
                await self.read_sector(ebr)
                part, base = self._mbr().partitions[0], ebr
            if part.type == PART_TYPE_PREP and part.boot_indicator == BOOT_ACTIVE:
                count = min(part.sectors, self.max_prep_blocks)
                self.trace.emit("guest", "phase", name="load prep partition", start=base + part.lba_start,
                                sectors=count)
                return await self.d.read(load_base, (base + part.lba_start) * self.bs, count * self.bs)
        return 0

    async def load(self, load_base: int) -> int:
        """disk-label load: bytes at load_base, or 0 (-> E3404)."""
        if await self.has_iso9660():
            return 0
        return await self.load_dos_prep(load_base)
