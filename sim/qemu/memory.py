"""QEMU's memory API (softmmu/memory.c, exec.c), reduced to what spapr needs.

A tree of MemoryRegions (RAM, I/O with ops, containers, aliases) is
flattened per AddressSpace into sorted ranges. ioeventfds attached to I/O
regions are projected to absolute addresses on every commit, and the
difference is handed to the listeners (KVM's kvm_mem_ioeventfd_add/del).
"""

import bisect

DEVICE_NATIVE_ENDIAN, DEVICE_BIG_ENDIAN, DEVICE_LITTLE_ENDIAN = "native", "big", "little"
TARGET_BIG_ENDIAN = True  # ppc64 is built TARGET_WORDS_BIGENDIAN


def bswap(value: int, size: int) -> int:
    return int.from_bytes(value.to_bytes(size, "little"), "big") if size > 1 else value


class MemoryRegionOps:
    """Callbacks of an I/O region; values are in the region's byte order."""
    endianness = DEVICE_NATIVE_ENDIAN
    impl_min = 1
    impl_max = 8

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, value: int, size: int) -> None:
        pass


class MemoryRegion:
    def __init__(self, name: str, size: int, *, ops: MemoryRegionOps | None = None,
                 ram=None, ram_offset: int = 0, alias=None, alias_offset: int = 0):
        self.name = name
        self.size = size
        self.ops = ops
        self.ram = ram
        self.ram_offset = ram_offset
        self.alias = alias
        self.alias_offset = alias_offset
        self.subregions: list[tuple[int, "MemoryRegion"]] = []
        self.ioeventfds: list[tuple[int, int, bool, int, object]] = []
        self.core: "MemoryCore | None" = None

    def add_subregion(self, offset: int, mr: "MemoryRegion") -> None:
        self.subregions.append((offset, mr))
        self.subregions.sort(key=lambda s: s[0])
        self._commit()

    def del_subregion(self, mr: "MemoryRegion") -> None:
        self.subregions = [s for s in self.subregions if s[1] is not mr]
        self._commit()

    def add_eventfd(self, addr: int, size: int, match_data: bool, data: int, e) -> None:
        """memory_region_add_eventfd: the datamatch is stored after
        adjust_endianness, i.e. in target order."""
        self.ioeventfds.append((addr, size, match_data, _adjust_endianness(self, data, size), e))
        self._commit()

    def del_eventfd(self, addr: int, size: int, match_data: bool, data: int, e) -> None:
        key = (addr, size, match_data, _adjust_endianness(self, data, size), e)
        self.ioeventfds = [f for f in self.ioeventfds if f != key]
        self._commit()

    def _commit(self) -> None:
        if self.core is not None:
            self.core.commit()


def _adjust_endianness(mr: MemoryRegion, value: int, size: int) -> int:
    """memory_region_wrong_endianness on a big-endian target."""
    if mr.ops is not None and mr.ops.endianness == DEVICE_LITTLE_ENDIAN and TARGET_BIG_ENDIAN:
        return bswap(value, size)
    return value


class FlatRange:
    __slots__ = ("start", "size", "mr", "offset")

    def __init__(self, start, size, mr, offset):
        self.start, self.size, self.mr, self.offset = start, size, mr, offset


class AddressSpace:
    def __init__(self, name: str, root: MemoryRegion):
        self.name = name
        self.root = root
        self.ranges: list[FlatRange] = []
        self._starts: list[int] = []
        self.ioeventfds: list[tuple] = []
        self.listeners = []

    def rebuild(self) -> None:
        ranges: list[FlatRange] = []
        _flatten(self.root, 0, 0, self.root.size, ranges)
        ranges.sort(key=lambda r: r.start)
        self.ranges = ranges
        self._starts = [r.start for r in ranges]
        new = []
        for r in ranges:
            for addr, size, match, data, e in r.mr.ioeventfds:
                if r.offset <= addr < r.offset + r.size:
                    new.append((r.start + addr - r.offset, size, match, data, e))
        for fd in self.ioeventfds:
            if fd not in new:
                for listener in self.listeners:
                    listener.eventfd_del(*fd)
        for fd in new:
            if fd not in self.ioeventfds:
                for listener in self.listeners:
                    listener.eventfd_add(*fd)
        self.ioeventfds = new

    def lookup(self, addr: int) -> FlatRange | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            r = self.ranges[i]
            if addr < r.start + r.size:
                return r
        return None

    # -- ld*_phys / st*_phys: "native" = big-endian for ppc64 -------------

    def load(self, addr: int, size: int) -> tuple[int, FlatRange | None]:
        r = self.lookup(addr)
        if r is None or addr + size > r.start + r.size:
            return 0, None  # unassigned_mem_read
        off = addr - r.start + r.offset
        if r.mr.ram is not None:
            return int.from_bytes(r.mr.ram.read(r.mr.ram_offset + off, size), "big"), r
        value = _dispatch_read(r.mr, off, size)
        if r.mr.ops.endianness == DEVICE_LITTLE_ENDIAN and TARGET_BIG_ENDIAN and size > 1:
            value = int.from_bytes(value.to_bytes(size, "little"), "big")   # _adjust_endianness, inline
        return value, r

    def store(self, addr: int, size: int, value: int) -> FlatRange | None:
        value &= (1 << (8 * size)) - 1
        r = self.lookup(addr)
        if r is None or addr + size > r.start + r.size:
            return None  # unassigned_mem_write: dropped
        off = addr - r.start + r.offset
        if r.mr.ram is not None:
            r.mr.ram.write(r.mr.ram_offset + off, value.to_bytes(size, "big"))
            return r
        value = _adjust_endianness(r.mr, value, size)
        if r.mr.ioeventfds and r.mr.core is not None and r.mr.core.emulate_ioeventfd \
                and _dispatch_write_eventfds(r.mr, off, value, size):
            return r
        _dispatch_write(r.mr, off, value, size)
        return r


def _flatten(mr: MemoryRegion, base: int, clip_lo: int, clip_hi: int, out: list) -> None:
    """Render mr at absolute address base, clipped to [clip_lo, clip_hi) of mr."""
    if mr.alias is not None:
        target = mr.alias
        _flatten(target, base - mr.alias_offset, clip_lo + mr.alias_offset,
                 min(clip_hi + mr.alias_offset, target.size), out)
        return
    if mr.ram is not None or mr.ops is not None:
        if clip_hi > clip_lo:
            out.append(FlatRange(base + clip_lo, clip_hi - clip_lo, mr, clip_lo))
        return
    for off, sub in mr.subregions:
        lo, hi = max(clip_lo, off), min(clip_hi, off + sub.size)
        if hi > lo:
            _flatten(sub, base + off, lo - off, hi - off, out)


def _dispatch_write_eventfds(mr: MemoryRegion, off: int, value: int, size: int) -> bool:
    """memory_region_dispatch_write_eventfds (QEMU 2.5, 8c56c1a): a write
    matching an ioeventfd signals it -- but only when
    !kvm_eventfds_enabled(), i.e. under TCG or qtest, never under KVM."""
    for addr, fsize, match, data, e in mr.ioeventfds:
        if addr == off and fsize == size and (not match or data == value):
            core = mr.core
            if core.kvm_eventfds_enabled:
                core.trace.emit("qemu-vcpu", "ioeventfd_emulation_skipped", eventfd=e.label,
                                why="kvm_eventfds_enabled(): the write goes to the device")
                return False
            e.signal()
            core.trace.emit("qemu-vcpu", "eventfd_set", eventfd=e.label, why="memory: emulate ioeventfd")
            return True
    return False


def _dispatch_read(mr: MemoryRegion, off: int, size: int) -> int:
    """access_with_adjusted_size for reads."""
    ops = mr.ops
    access = size if size <= ops.impl_max else ops.impl_max     # MAX(MIN(size, max), min), inline
    if access < ops.impl_min:
        access = ops.impl_min
    if access == size:
        return ops.read(off, size) & ((1 << (8 * size)) - 1)
    value = 0
    for i in range(0, size, access):
        part = ops.read(off + i, access) & ((1 << (8 * access)) - 1)
        shift = (size - access - i) * 8 if ops.endianness == DEVICE_BIG_ENDIAN else i * 8
        value |= part << shift
    return value & ((1 << (8 * size)) - 1)


def _dispatch_write(mr: MemoryRegion, off: int, value: int, size: int) -> None:
    ops = mr.ops
    access = size if size <= ops.impl_max else ops.impl_max     # MAX(MIN(size, max), min), inline
    if access < ops.impl_min:
        access = ops.impl_min
    if access == size:
        ops.write(off, value, size)
        return
    for i in range(0, size, access):
        shift = (size - access - i) * 8 if ops.endianness == DEVICE_BIG_ENDIAN else i * 8
        ops.write(off + i, (value >> shift) & ((1 << (8 * access)) - 1), access)


class MemoryCore:
    """memory_region_transaction_commit: rebuild every address space."""

    def __init__(self, trace=None, *, emulate_ioeventfd=False, kvm_eventfds_enabled=True):
        self.address_spaces: list[AddressSpace] = []
        self.trace = trace
        self.emulate_ioeventfd = emulate_ioeventfd
        self.kvm_eventfds_enabled = kvm_eventfds_enabled

    def adopt(self, mr: MemoryRegion) -> None:
        stack = [mr]
        while stack:
            m = stack.pop()
            m.core = self
            stack.extend(s for _, s in m.subregions)
            if m.alias is not None:
                stack.append(m.alias)

    def commit(self) -> None:
        for as_ in self.address_spaces:
            self.adopt(as_.root)
            as_.rebuild()
