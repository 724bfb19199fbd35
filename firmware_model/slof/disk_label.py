"""SLOF's disk-label package (slof/fs/packages/disk-label.fs).

One `DiskLabel` is one instance of the package, interposed on the
virtio-block node with its own 4096-byte `block` buffer, its own deblocker
and its own `part-offset`, which every `seek` adds (`offset`, :112).

`load` with no arguments and no partition (:736-760):
1. `has-iso9660-filesystem` (:316): 0x800 bytes at byte 0x8000.
2. `load-from-boot-partition` (:609-621), three tries in this order, the
   first non-zero size wins:
   - DOS/MBR (`load-from-dos-boot-partition`, :351): partition id 0x41 *and*
     the boot flag 0x80 (`41 = and`, :365), read whole from its first
     sector, capped at `max-prep-partition-blocks` (d# 65536, :22);
   - CHRP (`load-chrp-boot-file`, :573): open `<disk>:1,\\ppc\\bootinfo.txt`,
     a second instance whose `open` probes partition 1 and its filesystem;
   - GPT (`load-from-gpt-prep-partition`, :469): the first entry with the
     PReP type GUID, read whole, with no cap.
3. Size 0 → `ABORT" No boot partition found"` (:757), which `do-load`
   reports as E3404.

The reads are SLOF's, one for one: every `no-mbr?` / `no-gpt?` re-reads
sector 0, every MBR partition tried re-reads it again, and every GPT entry
is its own read.

The release row (firmware_model/slof/releases.py) carries what 0097e61
(SLOF 20150813) changed: before it try-dos-partition prints "No DOS
disk-label found.", no-gpt? ignores the aa55 magic, the GPT header is
taken unchecked (32-bit entry LBA, no size cap, no "EFI PART"), seek-pos
advances by gpt-part-size * i after entry i, and the CHRP open tries no
GPT FAT partition.

Bounds. SLOF bounds only the GPT entry size (`gpt-part-size
block-array-size >`, :424) and an entry count of 0 (:470, :508); its EBR
walks (:206-215, :249-265) and GPT entry loops have no bound. The model
keeps SLOF's reads but ends the boot (GuestUnbounded, outcome "failed"
with the reason) where real SLOF would not finish:
- an EBR chain that comes back to a sector it read: the walk's state is
  the sector (a failed read leaves `block` as it was, so the same next
  pointer follows), so count-dos-logical-partitions would spin forever;
- more than MAX_LOGICAL_PARTITIONS logical partitions: SLOF re-walks the
  chain from its start for each one (load-from-dos-boot-partition calls
  find-dos-partition for every i), so its reads grow with the square of
  the chain; 59 logical partitions (63 in all, the partitions a Linux IDE
  disk's 64 minors held) cost about 1,900 reads;
- more than MAX_GPT_ENTRIES entries scanned without a match: SLOF would
  read up to 2^32 - 1 of them, one read each.
A filesystem found by the CHRP probe (FAT, ext2, ISO9660 inside partition
1) is reported as a trace event and not loaded from.
"""

from collections.abc import Awaitable

from sim.abi import gpt as G
from sim.abi.mbr import (
    BOOT_ACTIVE, MBR_SIGNATURE, PART_TYPE_GPT_PROTECTIVE, PART_TYPE_PREP, PART_TYPES_EXTENDED, mbr,
)

MAX_PREP_PARTITION_BLOCKS = 65536   # d# 65536 value max-prep-partition-blocks (:22)
BLOCK_ARRAY_SIZE = 4096             # d# 4096 CONSTANT block-array-size (:23)
EXT2_MAGIC = 0xEF53
MAX_LOGICAL_PARTITIONS = 63 - 4     # model limit (see above)
MAX_GPT_ENTRIES = 1024              # model limit: 8 x the usual 128-entry array


class GuestUnbounded(Exception):
    """SLOF would not finish here: a loop it never leaves (kind "loop"), or
    work past a documented model limit (kind "limit")."""

    def __init__(self, kind: str, why: str):
        super().__init__(why)
        self.kind = kind


class DiskLabel:
    def __init__(self, deblocker, block_buf: int, trace, max_prep_blocks=MAX_PREP_PARTITION_BLOCKS, *,
                 open_chrp=None, print=None, load_limit: int | None = None, release):
        self.d = deblocker
        self.rel = release
        self.ram = deblocker.ram
        self.block = block_buf     # disk-label's `block` buffer (init-block: alloc-mem, erase)
        self.trace = trace
        self.max_prep_blocks = max_prep_blocks
        self.open_chrp = open_chrp   # async () -> a fresh DiskLabel on the same disk, after the node's open
        self._print = print
        self.load_limit = load_limit  # end of the RAM a load may fill (SLOF's own data lies above)
        self.part_offset = 0       # `part-offset` (bytes)
        self.seek_pos = 0          # `seek-pos` (bytes)
        self.gpt_part_size = 0     # `gpt-part-size`

    @property
    def bs(self) -> int:
        return self.d.dev.block_size

    def phase(self, name: str, **fields) -> None:
        self.trace.emit("guest", "phase", name=name, **fields)

    async def print(self, text: str) -> None:
        if self._print is not None:
            await self._print(text)

    # --- seek / read (:112-140) ------------------------------------------------

    def read_at(self, dest: int, pos: int, length: int) -> Awaitable[int]:
        """`pos 0 seek drop  dest length read`: seek adds part-offset.
        A plain def returning the deblocker's coroutine: one frame fewer
        for every trap of the load to pass through."""
        return self.d.read(dest, pos + self.part_offset, length)

    async def read_sector(self, sector: int) -> None:
        """read-sector: the block buffer keeps its old bytes if the read fails."""
        await self.read_at(self.block, sector * self.bs, self.bs)

    def _mbr(self):
        return mbr.parse(self.ram.read(self.block, 512))

    def _entry(self, n: int):
        """`n partition>part-entry`, from whatever `block` holds now."""
        return self._mbr().partitions[n - 1]

    # --- probes -----------------------------------------------------------------

    async def has_iso9660(self) -> bool:
        """has-iso9660-filesystem (:316-328): block c@ 1 = and "CD001" at +1."""
        await self.read_at(self.block, 0x10 * 0x800, 0x800)
        data = self.ram.read(self.block, 6)
        return data[0] == 1 and data[1:6] == b"CD001"

    async def no_mbr(self) -> bool:
        """no-mbr? (:178-182): entry 1 id ee, or no aa55 (w@-le) at 0x1FE."""
        await self.read_sector(0)
        m = self._mbr()
        return m.partitions[0].type == PART_TYPE_GPT_PROTECTIVE or m.signature != MBR_SIGNATURE

    async def no_gpt(self) -> bool:
        """no-gpt? (:185-189): entry 1 id not ee, or (from 0097e61) no aa55."""
        await self.read_sector(0)
        m = self._mbr()
        return m.partitions[0].type != PART_TYPE_GPT_PROTECTIVE or (
            self.rel.gpt_checks_mbr_magic and m.signature != MBR_SIGNATURE)

    def _fat_bootblock(self) -> bool:
        """fat-bootblock? (:333-339): e9, or eb ?? 90."""
        b = self.ram.read(self.block, 3)
        return b[0] == 0xE9 or (b[0] == 0xEB and b[2] == 0x90)

    # --- DOS / MBR --------------------------------------------------------------

    async def _walk_ebrs(self, start: int, want: int | None) -> tuple[int, tuple | None]:
        """The EBR walk of count-dos-logical-partitions (:206-215) or, with
        want, of find-dos-partition (:249-265). Entry 2's start is relative
        to the first EBR (lpart-start). Linear: each sector once, or
        GuestUnbounded."""
        part_start = lpart_start = start
        count = 0
        seen = set()
        while True:
            if part_start in seen:
                self._unbounded("loop", f"the EBR chain from sector {start} comes back to sector {part_start} "
                                "(disk-label.fs walks it with no bound)")
            seen.add(part_start)
            await self.read_sector(part_start)                    # read EBR
            first = self._entry(1)
            if first.lba_start:
                count += 1
                if want is not None and count == want:
                    return count, self._params(part_start, first)
                if count > MAX_LOGICAL_PARTITIONS:
                    self._unbounded("limit", f"more than {MAX_LOGICAL_PARTITIONS} logical partitions in the "
                                    f"EBR chain from sector {start} (SLOF re-walks it for each one)")
            elif want is not None:
                return count, None                                # find-dos-partition stops here
            nxt = self._entry(2).lba_start
            if not nxt:
                return count, None
            # Modulo 2^32, as measured: real SLOF (20220719, QEMU 7.2) follows a
            # next pointer of 0xFFFFFFCE from an extended partition at 100 to
            # the EBR at sector 50 and boots from it; 0xFFFFFFFF ends on the
            # empty sector 99 (E3404). Where the Forth wraps is not pinned.
            part_start = (lpart_start + nxt) & 0xFFFF_FFFF

    def _unbounded(self, kind: str, why: str):
        self.trace.emit("guest", "guest_unbounded", kind=kind, why=why)
        raise GuestUnbounded(kind, why)

    async def count_dos_logical(self) -> int:
        """count-dos-logical-partitions (:199-220). `i partition>part-entry`
        reads the *current* block, so after an EBR walk entries 2..4 come
        from the last EBR read, as in SLOF."""
        if await self.no_mbr():
            return 0
        total = 0
        for i in range(1, 5):
            e = self._entry(i)
            if e.type in PART_TYPES_EXTENDED:
                n, _ = await self._walk_ebrs(e.lba_start, None)
                total += n
        return total

    def _params(self, ext_start: int, e) -> tuple:
        """(get-dos-partition-params) (:222-227): offset count active? id."""
        return ext_start + e.lba_start, e.sectors, e.boot_indicator == BOOT_ACTIVE, e.type

    async def find_dos_partition(self, n: int):
        """find-dos-partition (:229-272): (offset, count, active?, id) or None."""
        self.part_offset = 0
        if n <= 0 or await self.no_mbr():                         # re-reads sector 0
            return None
        if n <= 4:
            return self._params(0, self._entry(n))
        current = 0
        for i in range(1, 5):
            e = self._entry(i)
            if e.type in PART_TYPES_EXTENDED:
                found, params = await self._walk_ebrs(e.lba_start, n - 4 - current)
                if params is not None:
                    return params
                current += found
        return None

    async def load_dos_prep(self, load_base: int) -> int:
        """load-from-dos-boot-partition (:351-380): bytes loaded, 0 if none."""
        self.phase("mbr label")
        if await self.no_mbr():
            return 0
        logical = await self.count_dos_logical()
        for i in range(1, 5 + logical):
            found = await self.find_dos_partition(i)
            if found is None:
                continue
            offset, count, active, ptype = found
            if ptype == PART_TYPE_PREP and active:                # 41 = and (:365)
                count = min(count, self.max_prep_blocks)          # max-prep-partition-blocks min (:367)
                self.part_offset = offset * self.bs
                self.phase("load prep partition", start=offset, sectors=count)
                return await self._load(load_base, count * self.bs)   # UNLOOP EXIT, even with 0
        return 0

    # --- GPT --------------------------------------------------------------------

    async def get_gpt_partition(self) -> bool:
        """get-gpt-partition (:420-432): protective MBR, header at LBA 1.
        Before 0097e61 (load-from-gpt-prep-partition, 20150429
        disk-label.fs:383-390): the entry LBA's low 32 bits (l@-le), no
        size check, no signature check."""
        if await self.no_gpt():
            return False
        await self.read_sector(1)
        h = G.gpt_header.parse(self.ram.read(self.block, G.HEADER_SIZE))
        if not self.rel.gpt_header_checked:
            self.seek_pos = (h.part_entry_lba & 0xFFFFFFFF) * self.bs
            self.gpt_part_size = h.part_entry_size
            if self.gpt_part_size > BLOCK_ARRAY_SIZE:
                # real SLOF reads past its 4096-byte block buffer; the model stops at it
                self.trace.emit("guest", "model_limit", what="GPT entry size beyond the block buffer",
                                size=self.gpt_part_size)
                self.gpt_part_size = BLOCK_ARRAY_SIZE
            return True
        self.seek_pos = h.part_entry_lba * self.bs
        self.gpt_part_size = h.part_entry_size
        if self.gpt_part_size > BLOCK_ARRAY_SIZE:
            await self.print("\r\nGPT part size exceeds buffer allocated \r\n")
            return False
        return h.signature == G.SIGNATURE

    async def _scan_gpt(self, types: tuple):
        """The entry loop of :471-489 / :508-526: one read of gpt-part-size
        bytes at seek-pos per entry, until an entry of one of `types`."""
        n = G.gpt_header.parse(self.ram.read(self.block, G.HEADER_SIZE)).num_part_entries
        for i in range(1, n + 1):                                 # 0 entries: false (:470)
            if i > MAX_GPT_ENTRIES:
                self._unbounded("limit", f"no matching GPT entry in the first {MAX_GPT_ENTRIES} of "
                                f"{n} (SLOF reads each one)")
            await self.read_at(self.block, self.seek_pos, self.gpt_part_size)
            e = G.gpt_entry.parse(self.ram.read(self.block, G.ENTRY_SIZE))
            if e.type_guid in types:
                return e
            # `seek-pos gpt-part-size i * + to seek-pos` (20150429 :406), fixed by 0097e61
            self.seek_pos += self.gpt_part_size * (i if self.rel.gpt_seek_per_entry_bug else 1)
        return None

    async def load_gpt_prep(self, load_base: int) -> int:
        """load-from-gpt-prep-partition (:469-491): no max-prep cap."""
        self.phase("gpt label")
        if not await self.get_gpt_partition():
            return 0
        e = await self._scan_gpt((G.PREP,))                       # gpt-prep-partition? (:388)
        if e is None:
            return 0
        blocks = e.last_lba - e.first_lba + 1                     # over - 1+ (:478)
        self.part_offset = e.first_lba * self.bs
        self.phase("load prep partition", start=e.first_lba, sectors=blocks)
        return await self._load(load_base, blocks * self.bs)

    async def _load(self, load_base: int, length: int) -> int:
        """`0 0 seek drop  addr length read`."""
        if length <= 0:
            return 0
        if self.load_limit is not None and load_base + length > self.load_limit:
            # Real SLOF would read over its own memory; the model refuses.
            self.trace.emit("guest", "model_limit", what="PReP partition larger than free RAM", bytes=length)
            return 0
        return await self.read_at(load_base, 0, length)

    # --- the CHRP instance: open with "1,\ppc\bootinfo.txt" ----------------------

    async def try_dos_partition(self, partition: int) -> bool:
        """try-dos-partition (:274-306): sets part-offset to the partition."""
        if await self.no_mbr():
            if self.rel.no_dos_label_message:     # printed until 0097e61 (20150429 :269)
                await self.print("\r\nNo DOS disk-label found.\r\n")
            return False
        logical = await self.count_dos_logical()
        if not 1 <= partition < 5 + logical:
            await self.print(f"\r\nPartition # not 1-{4 + logical} \r\n")
            return False
        found = await self.find_dos_partition(partition)
        if found is None:
            return False
        self.part_offset = found[0] * self.bs
        return True

    async def try_gpt_dos_partition(self) -> bool:
        """try-gpt-dos-partition (:505-528): the first basic-data or Linux
        entry; true if its first block is a FAT boot block."""
        if not await self.get_gpt_partition():
            return False
        e = await self._scan_gpt((G.BASIC_DATA, G.LINUX_FS))
        if e is None:
            return False
        self.part_offset = e.first_lba * self.bs
        await self.read_at(self.block, 0, self.bs)
        return self._fat_bootblock()

    async def try_files(self) -> str | None:
        """try-files (:687-698) with a path: the filesystem package found."""
        if not await self.no_mbr() and self._fat_bootblock():    # try-dos-files (:673)
            return "fat-files"
        await self.read_sector(2)                                  # try-ext2-files (:497)
        if int.from_bytes(self.ram.read(self.block + 56, 2), "little") == EXT2_MAGIC:
            return "ext2-files"
        if await self.has_iso9660():                               # try-iso9660-files (:681)
            return "iso-9660"
        return None

    async def open_partition(self, partition: int) -> bool:
        """open (:717-731) with "<partition>,<path>": try-partitions (:700).
        Always False in the model: a filesystem found is not searched."""
        if await self.try_dos_partition(partition) or (
                self.rel.chrp_tries_gpt_fat and await self.try_gpt_dos_partition()):   # 0097e61
            fs = await self.try_files()
            if fs is not None:
                self.trace.emit("guest", "model_limit", what=f"{fs} filesystem in partition {partition}: "
                                "bootinfo.txt is not looked up")
        return False

    async def load_chrp(self, load_base: int) -> int:
        """load-chrp-boot-file (:573-606) as load-from-boot-partition calls
        it: open `<disk>:1,\\ppc\\bootinfo.txt`. When that open fails, the
        node's instance is left open (open-node, node.fs:430-449)."""
        if self.open_chrp is None:
            return 0
        self.phase("chrp bootinfo.txt")
        inst = await self.open_chrp()
        await inst.open_partition(1)
        return 0

    # --- load ------------------------------------------------------------------

    async def load(self, load_base: int) -> int:
        """disk-label load (:736-760): bytes at load_base, or 0 (-> E3404)."""
        self.phase("iso9660 probe")
        if await self.has_iso9660():
            return 0          # CD-ROM route (2048-byte blocks, bootinfo.txt): not modelled
        for step in (self.load_dos_prep, self.load_chrp, self.load_gpt_prep):
            size = await step(load_base)
            if size:
                return size
        return 0
