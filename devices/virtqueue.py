"""The split virtqueue in guest memory (hw/virtio/virtio.c).

Every index, length and address the guest supplies is checked before use.
A violation raises VirtioError with QEMU's own message; the device then
does what its release does (sim.qemu.releases ring_error): QEMU exits
(before 2.8) or the device marks itself broken (virtio_error). The 2.2-2.5
dataplane walks the ring with its own vring_pop (devices/vring.py).
"""

from sim.abi.virtio import (
    VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, layouts,
    vring_addrs,
)
from sim.ram import GuestMemoryError

VIRTQUEUE_MAX_SIZE = 1024


class VirtioError(Exception):
    """A guest error, in QEMU's words."""


class VirtQueueElement:
    __slots__ = ("index", "out_sg", "in_sg")

    def __init__(self, index, out_sg, in_sg):
        self.index = index
        self.out_sg = out_sg  # [(addr, len)] the device reads
        self.in_sg = in_sg    # [(addr, len)] the device writes

    def in_size(self) -> int:
        return sum(n for _, n in self.in_sg)


class VirtQueue:
    def __init__(self, index: int, num: int, ram):
        self.index = index
        self.num_default = num
        self.ram = ram
        self.host_notifier = None   # EventFd, set when the transport assigns one
        self.aio_owned = False      # an IOThread's AioContext handles it (handle_aio_output is set)
        self.guest_notifier = None
        self.reset()

    def reset(self) -> None:
        self.num = self.num_default
        self.desc = self.avail = self.used = 0
        self.last_avail_idx = 0
        self.used_idx = 0
        self.signalled_used = 0
        self.signalled_used_valid = False
        self.event_idx = False      # VIRTIO_RING_F_EVENT_IDX negotiated (set by the device)
        self.vring_mapped = None    # (desc, avail, used, num) that devices.vring mapped

    def set_legacy_addr(self, pa: int) -> None:
        """virtio_queue_set_addr: a legacy ring is contiguous, 4096-aligned."""
        self.desc, self.avail, self.used = vring_addrs(pa, self.num)

    def ready(self) -> bool:
        return self.desc != 0

    def unmappable(self) -> str | None:
        """virtio_init_region_cache: the reason a ring part is not all in
        RAM (desc, then used, then avail), or None. With EVENT_IDX each of
        avail and used is 2 bytes longer: used_event after avail->ring[num],
        avail_event after used->ring[num] (event_size)."""
        ev = 2 if self.event_idx else 0
        for name, addr, size in (("desc", self.desc, 16 * self.num), ("used", self.used, 4 + 8 * self.num + ev),
                                 ("avail", self.avail, 4 + 2 * self.num + ev)):
            try:
                self.ram.check(addr, size)
            except GuestMemoryError:
                return f"Cannot map {name}"
        return None

    # -- ring access ------------------------------------------------------

    def _u16(self, addr: int, big: bool) -> int:
        try:
            return int.from_bytes(self.ram.view(addr, 2), "big" if big else "little")
        except GuestMemoryError:
            raise VirtioError("virtio: bogus descriptor or out of resources") from None

    def avail_idx(self, big: bool) -> int:
        return self._u16(self.avail + 2, big)

    def empty(self, big: bool) -> bool:
        return self.avail_idx(big) == self.last_avail_idx

    def _read_desc(self, table: int, i: int, big: bool):
        try:
            return layouts(big).desc_fast.unpack_from(self.ram.buf, self._checked(table + 16 * i, 16))
        except GuestMemoryError:
            raise VirtioError("virtio: bogus descriptor or out of resources") from None

    def _checked(self, addr: int, n: int) -> int:
        self.ram.check(addr, n)
        return addr

    def pop(self, big: bool) -> VirtQueueElement | None:
        """virtqueue_pop."""
        avail_idx = self.avail_idx(big)
        if avail_idx == self.last_avail_idx:
            return None
        num_heads = (avail_idx - self.last_avail_idx) & 0xFFFF
        if num_heads > self.num:
            raise VirtioError(f"Guest moved used index from {self.last_avail_idx} to {avail_idx}")
        head = self._u16(self.avail + 4 + 2 * (self.last_avail_idx % self.num), big)
        if head >= self.num:
            raise VirtioError(f"Guest says index {head} is available")
        self.last_avail_idx = (self.last_avail_idx + 1) & 0xFFFF
        if self.event_idx:      # vring_set_avail_event: "I have seen up to here"
            self._w16(self.used + 4 + 8 * self.num, self.last_avail_idx, big)
        table, max_ = self.desc, self.num
        i = head
        addr, length, flags, nxt = self._read_desc(table, i, big)
        if flags & VRING_DESC_F_INDIRECT:
            if length % 16 or length == 0:
                raise VirtioError("Invalid size for indirect buffer table")
            try:  # virtqueue_split_pop maps the whole table first
                self.ram.check(addr, length)
            except GuestMemoryError:
                raise VirtioError("Cannot map indirect buffer") from None
            table, max_, i = addr, length // 16, 0
            addr, length, flags, nxt = self._read_desc(table, i, big)
        out_sg, in_sg = [], []
        while True:
            if flags & VRING_DESC_F_INDIRECT and table != self.desc:
                raise VirtioError("Nested indirect descriptor")
            if length == 0:
                raise VirtioError("virtio: zero sized buffers are not allowed")
            if len(out_sg) + len(in_sg) >= VIRTQUEUE_MAX_SIZE:  # virtqueue_map_desc: iov[] is full
                raise VirtioError("virtio: too many write descriptors in indirect table")
            try:
                self.ram.check(addr, length)
            except GuestMemoryError:
                raise VirtioError("virtio: bogus descriptor or out of resources") from None
            if flags & VRING_DESC_F_WRITE:
                in_sg.append((addr, length))
            else:
                if in_sg:
                    raise VirtioError("Incorrect order for descriptors")
                out_sg.append((addr, length))
            if len(out_sg) + len(in_sg) > max_:
                raise VirtioError("Looped descriptor")
            if not flags & VRING_DESC_F_NEXT:
                break
            if nxt >= max_:
                raise VirtioError(f"Desc next is {nxt}")
            addr, length, flags, nxt = self._read_desc(table, nxt, big)
        return VirtQueueElement(head, out_sg, in_sg)

    def _w16(self, addr: int, value: int, big: bool) -> None:
        try:
            self.ram.write(addr, value.to_bytes(2, "big" if big else "little"))
        except GuestMemoryError:
            raise VirtioError("virtio: bogus descriptor or out of resources") from None

    def push(self, elem: VirtQueueElement, length: int, big: bool) -> int:
        """virtqueue_push (fill + flush): returns the new used->idx.
        virtqueue_flush: if the used index passes signalled_used, the
        event-index state is stale (signalled_used_valid = false)."""
        L = layouts(big)
        slot = self.used + 4 + 8 * (self.used_idx % self.num)
        self.ram.write(slot, L.used_elem_fast.pack(elem.index, length))
        old = self.used_idx
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.ram.write(self.used + 2, self.used_idx.to_bytes(2, "big" if big else "little"))
        if ((self.used_idx - self.signalled_used) & 0xFFFF) < ((self.used_idx - old) & 0xFFFF):
            self.signalled_used_valid = False
        return self.used_idx

    def should_notify(self, big: bool) -> bool:
        """virtio_should_notify (virtio_split_should_notify; 2015: vring_notify):
        without EVENT_IDX the driver's VRING_AVAIL_F_NO_INTERRUPT decides;
        with it, vring_need_event(used_event, new, signalled_used)."""
        if not self.event_idx:
            try:
                return not self._u16(self.avail, big) & VRING_AVAIL_F_NO_INTERRUPT
            except VirtioError:
                return True
        v, self.signalled_used_valid = self.signalled_used_valid, True
        old, new = self.signalled_used, self.used_idx
        self.signalled_used = new
        try:
            event = self._u16(self.avail + 4 + 2 * self.num, big)     # vring_get_used_event
        except VirtioError:
            return True
        return not v or ((new - event - 1) & 0xFFFF) < ((new - old) & 0xFFFF)
