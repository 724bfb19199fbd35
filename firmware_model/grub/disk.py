"""GRUB 2.06's disk layer on ieee1275: kern/disk.c (the disk cache and
grub_disk_read), disk/ieee1275/ofdisk.c (the firmware disk) and the two
partition maps (partmap/msdos.c, partmap/gpt.c), over SLOF's client interface.

Why each block request happens:
- The cache holds 64-sector chunks (GRUB_DISK_CACHE_BITS 6), direct-mapped
  on 1021 slots (GRUB_DISK_CACHE_NUM) by chunk number; every read smaller
  than a chunk goes through it (grub_disk_read_small), so a miss is one
  32 KiB client `read`, which SLOF's deblocker turns into one 64-sector
  request. Aligned runs of whole chunks are read at once, up to 32 chunks
  (max_agglomerate, 1 MiB), and then stored chunk by chunk.
- grub_disk_open probes the partition first, *then* compares the
  firmware's `milliseconds` with the last disk use: more than 2 s
  (GRUB_CACHE_TIMEOUT) since it invalidates the whole cache. grub_last_time
  starts at 0, so when SLOF has run longer than 2 s the chunk the first
  probe read is dropped at once and the next open reads sector 0 again.
- ofdisk: every open closes the previous ihandle, opens the node without
  arguments and asks its block-size; the first read after that closes it
  and opens `<path>:0` (open_path). grub_disk_close closes the ihandle only
  if it is that read one (last_devpath).

The cache slot index is modelled as (chunk % 1021): GRUB also adds the
device and disk ids (pointers), a constant per disk, which only rotates the
slots. ASSUMPTION: that constant is 0.
"""

from sim.abi import gpt as G
from sim.abi.mbr import MBR_SIGNATURE, PART_TYPE_GPT_PROTECTIVE, PART_TYPES_EXTENDED, SECTOR, mbr

CACHE_BITS = 6
CACHE_SECTORS = 1 << CACHE_BITS
CHUNK = CACHE_SECTORS * SECTOR
CACHE_NUM = 1021
CACHE_TIMEOUT_MS = 2000
MAX_AGGLOMERATE = (1 << 20) // CHUNK
MAX_EBR = 64                       # model limit on the msdos EBR walk (GRUB has a loop check only)
MAX_GPT_ENTRIES = 1024             # model limit (GRUB reads num_entries as given)


class DiskError(Exception):
    """A grub_error on a disk: the message GRUB prints."""


class DiskCache:
    def __init__(self):
        self.slots: dict[int, tuple[int, bytes]] = {}

    def fetch(self, chunk: int) -> bytes | None:
        hit = self.slots.get(chunk % CACHE_NUM)
        return hit[1] if hit is not None and hit[0] == chunk else None

    def store(self, chunk: int, data: bytes) -> None:
        self.slots[chunk % CACHE_NUM] = (chunk, data)

    def invalidate_all(self) -> None:
        self.slots.clear()


class OfDisk:
    """The state ofdisk.c and disk.c keep across opens (statics)."""

    def __init__(self, cif, trace, costs, cpu, buffer: int):
        self.cif = cif
        self.trace = trace
        self.costs = costs
        self.cpu = cpu
        self.ram = cpu.ram
        self.buffer = buffer                   # a 1 MiB read buffer in GRUB's heap
        self.cache = DiskCache()
        self.last_ihandle = 0
        self.last_devpath: str | None = None
        self.last_time = 0                     # grub_last_time
        self.reads: list[tuple[int, int]] = [] # (sector, sectors) of each client read

    async def open(self, name: str, partition: str | None) -> "Disk":
        """grub_disk_open("ieee1275/<name>[,<partition>]")."""
        cif = self.cif
        if await cif.finddevice(name) == -1 or await cif.getprop(name, "device_type") != b"block\0":
            raise DiskError(f"disk `ieee1275/{name}' not found")
        # grub_ofdisk_get_block_size
        if self.last_ihandle:
            await cif.close(self.last_ihandle)
        self.last_ihandle, self.last_devpath = 0, None
        self.last_ihandle = await cif.open(name)
        if not self.last_ihandle:
            raise DiskError("can't open device")
        block_size = await cif.block_size(self.last_ihandle)
        if block_size != SECTOR:
            raise DiskError(f"block size {block_size} not modelled")
        disk = Disk(self, name)
        if partition is not None:
            disk.start, disk.length = await probe_partition(disk, partition)
        now = await cif.milliseconds()
        if now > self.last_time + CACHE_TIMEOUT_MS:
            self.trace.emit("guest", "grub_cache_invalidate", ms=now, last_ms=self.last_time)
            self.cache.invalidate_all()
        self.last_time = now
        return disk

    async def close(self, disk: "Disk") -> None:
        """grub_disk_close: ofdisk closes only the ihandle its reads opened."""
        if disk.open_path == self.last_devpath:
            if self.last_ihandle:
                await self.cif.close(self.last_ihandle)
            self.last_ihandle, self.last_devpath = 0, None
        self.last_time = await self.cif.milliseconds()

    async def firmware_read(self, disk: "Disk", sector: int, sectors: int) -> bytes:
        """grub_ofdisk_read: prepare (reopen on another path), seek, read."""
        cif = self.cif
        if disk.open_path != self.last_devpath:
            if self.last_ihandle:
                await cif.close(self.last_ihandle)
            self.last_ihandle, self.last_devpath = 0, None
            self.last_ihandle = await cif.open(disk.open_path)
            if not self.last_ihandle:
                raise DiskError("can't open device")
            self.last_devpath = disk.open_path
        if await cif.seek(self.last_ihandle, sector * SECTOR) < 0:
            raise DiskError(f"seek error, can't seek block {sector}")
        size = sectors * SECTOR
        self.reads.append((sector, sectors))
        self.trace.emit("guest", "grub_disk_read", sector=sector, sectors=sectors)
        actual = await cif.read(self.last_ihandle, self.buffer, size)
        if actual != size:
            raise DiskError(f"failure reading sector 0x{sector:x} from `{disk.name}'")
        return self.ram.read(self.buffer, size)


class Disk:
    """One grub_disk_t: a name, a partition window, reads through the cache."""

    def __init__(self, of: OfDisk, name: str):
        self.of = of
        self.name = f"ieee1275/{name}"
        self.open_path = f"{name}:0"
        self.start = 0                       # partition start (sectors)
        self.length: int | None = None

    async def read(self, sector: int, offset: int, size: int) -> bytes:
        """grub_disk_read, relative to the partition."""
        sector += offset // SECTOR
        offset %= SECTOR
        if self.length is not None and (sector * SECTOR + offset + size) > self.length * SECTOR:
            raise DiskError("attempt to read or write outside of partition")
        return await self.read_abs(self.start + sector, offset, size)

    async def read_abs(self, sector: int, offset: int, size: int) -> bytes:
        of = self.of
        out = bytearray()
        pos = sector * SECTOR + offset
        end = pos + size
        while pos < end:
            chunk, within = divmod(pos, CHUNK)
            if within == 0 and end - pos >= CHUNK:
                # agglomerate whole chunks up to the first cached one
                n = 0
                while n < min((end - pos) // CHUNK, MAX_AGGLOMERATE) and of.cache.fetch(chunk + n) is None:
                    n += 1
                if n:
                    data = await of.firmware_read(self, chunk * CACHE_SECTORS, n * CACHE_SECTORS)
                    for i in range(n):
                        of.cache.store(chunk + i, data[i * CHUNK:(i + 1) * CHUNK])
                    out += data
                    pos += n * CHUNK
                    continue
            data = of.cache.fetch(chunk)
            if data is None:                  # grub_disk_read_small: a miss reads the chunk
                await of.cpu.compute(of.costs.grub_per_block)
                data = await of.firmware_read(self, chunk * CACHE_SECTORS, CACHE_SECTORS)
                of.cache.store(chunk, data)
            take = min(CHUNK - within, end - pos)
            out += data[within:within + take]
            pos += take
        return bytes(out)


async def probe_partition(disk: Disk, name: str) -> tuple[int, int]:
    """grub_partition_probe(disk, "msdosN" / "gptN"): (start, sectors)."""
    for kind, fn in (("msdos", _msdos), ("gpt", _gpt)):
        if name.startswith(kind) and name[len(kind):].isdigit():
            found = await fn(disk, int(name[len(kind):]))
            if found is None:
                raise DiskError("no such partition")
            return found
    raise DiskError(f"unknown partition map in `{name}'")


async def _msdos(disk: Disk, number: int):
    """partmap/msdos.c: primaries are 1-4, logical partitions from 5 along the EBR chain."""
    m = mbr.parse(await disk.read_abs(0, 0, SECTOR))
    if m.signature != MBR_SIGNATURE:
        raise DiskError("no signature")
    if m.partitions[0].type == PART_TYPE_GPT_PROTECTIVE:
        raise DiskError("dummy mbr")
    if number <= 4:
        e = m.partitions[number - 1]
        return (e.lba_start, e.sectors) if e.type and e.type not in PART_TYPES_EXTENDED else None
    ext = next((e for e in m.partitions if e.type in PART_TYPES_EXTENDED), None)
    if ext is None:
        return None
    ebr, index = ext.lba_start, 5
    for _ in range(MAX_EBR):
        m = mbr.parse(await disk.read_abs(ebr, 0, SECTOR))
        if m.signature != MBR_SIGNATURE:
            return None
        e, nxt = m.partitions[0], m.partitions[1]
        if index == number:
            return (ebr + e.lba_start, e.sectors) if e.type else None
        if nxt.type not in PART_TYPES_EXTENDED or not nxt.lba_start:
            return None
        ebr, index = ext.lba_start + nxt.lba_start, index + 1
    return None


async def _gpt(disk: Disk, number: int):
    """partmap/gpt.c: protective MBR, header at LBA 1, then the entries one by one."""
    m = mbr.parse(await disk.read_abs(0, 0, SECTOR))
    if m.signature != MBR_SIGNATURE or all(p.type != PART_TYPE_GPT_PROTECTIVE for p in m.partitions):
        raise DiskError("no GPT partition map found")
    h = G.gpt_header.parse(await disk.read_abs(1, 0, G.HEADER_SIZE))
    if h.signature != G.SIGNATURE:
        raise DiskError("no valid GPT header")
    size = h.part_entry_size
    if size < G.ENTRY_SIZE or size > 4096 or number > min(h.num_part_entries, MAX_GPT_ENTRIES):
        return None
    sector, offset = h.part_entry_lba, 0
    for i in range(1, number + 1):
        e = G.gpt_entry.parse(await disk.read_abs(sector, offset, G.ENTRY_SIZE))
        if i == number:
            return (e.first_lba, e.last_lba - e.first_lba + 1) if e.type_guid != bytes(16) else None
        offset += size
        sector, offset = sector + offset // SECTOR, offset % SECTOR
    return None
