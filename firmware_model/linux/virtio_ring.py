"""Linux's split virtqueue, the driver side (drivers/virtio/virtio_ring.c).

What the guest writes into its own RAM: descriptors (direct chains, or one
descriptor pointing at an indirect table when VIRTIO_RING_F_INDIRECT_DESC
was negotiated and a request has more than one buffer:
virtqueue_use_indirect), the avail ring and, with VIRTIO_RING_F_EVENT_IDX,
used_event (avail->ring[num]); what it reads: the used ring and
avail_event (used->ring[num]). Byte order: the guest's own for a legacy
device (virtio_legacy_is_little_endian), little-endian for VERSION_1.
"""

from sim.abi.virtio import (
    VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY, layouts,
)


def vring_need_event(event_idx: int, new: int, old: int) -> bool:
    """vring_need_event (include/uapi/linux/virtio_ring.h)."""
    return (new - event_idx - 1) & 0xFFFF < (new - old) & 0xFFFF


class SplitVirtqueue:
    """One vring_virtqueue: shadow indices, free list and the ring in RAM."""

    def __init__(self, ram, num, addrs, *, big_endian, event_idx, indirect, indirect_pool,
                 disable_cb_sets_flags):
        self.ram, self.num = ram, num
        self.desc, self.avail, self.used = addrs
        self.order = "big" if big_endian else "little"
        self.L = layouts(big_endian)
        self.event, self.indirect = event_idx, indirect
        self.indirect_pool = indirect_pool        # kmalloc'd tables: one 64-byte slot per head
        self.disable_cb_sets_flags = disable_cb_sets_flags
        self.next = [(i + 1) % num for i in range(num)]     # desc[i].next of the free list
        self.free_head, self.num_free = 0, num
        self.chain_len = {}                        # head -> descriptors it holds in the ring
        self.avail_idx_shadow = self.num_added = self.last_used_idx = 0
        self.avail_flags_shadow = 0

    # -- memory helpers ----------------------------------------------------

    def _w16(self, addr: int, value: int) -> None:
        self.ram.write(addr, (value & 0xFFFF).to_bytes(2, self.order))

    def _r16(self, addr: int) -> int:
        return int.from_bytes(self.ram.read(addr, 2), self.order)

    @property
    def used_event_addr(self) -> int:
        return self.avail + 4 + 2 * self.num

    @property
    def avail_event_addr(self) -> int:
        return self.used + 4 + 8 * self.num

    # -- virtqueue_add_split ------------------------------------------------

    def add_sgs(self, out_sgs, in_sgs) -> int | None:
        """Queue one buffer list; returns the head, or None when the ring is full."""
        sgs = [(a, n, 0) for a, n in out_sgs] + [(a, n, VRING_DESC_F_WRITE) for a, n in in_sgs]
        total = len(sgs)
        use_indirect = self.indirect and total > 1 and self.num_free
        needed = 1 if use_indirect else total
        if self.num_free < needed:
            return None
        head = self.free_head
        pack = self.L.desc_fast.pack
        if use_indirect:
            table = self.indirect_pool + 64 * head
            for i, (addr, n, flags) in enumerate(sgs):
                last = i == total - 1
                self.ram.write(table + 16 * i, pack(addr, n, flags | (0 if last else VRING_DESC_F_NEXT), i + 1))
            self.ram.write(self.desc + 16 * head, pack(table, 16 * total, VRING_DESC_F_INDIRECT, self.next[head]))
            self.free_head = self.next[head]
        else:
            i = head
            for k, (addr, n, flags) in enumerate(sgs):
                last = k == total - 1
                self.ram.write(self.desc + 16 * i, pack(addr, n, flags | (0 if last else VRING_DESC_F_NEXT),
                                                        self.next[i]))
                i = self.next[i]
            self.free_head = i
        self.num_free -= needed
        self.chain_len[head] = needed
        slot = self.avail_idx_shadow % self.num
        self._w16(self.avail + 4 + 2 * slot, head)
        self.avail_idx_shadow = (self.avail_idx_shadow + 1) & 0xFFFF
        self._w16(self.avail + 2, self.avail_idx_shadow)      # after virtio_wmb
        self.num_added += 1
        return head

    def kick_prepare(self) -> bool:
        """virtqueue_kick_prepare_split: with EVENT_IDX the device's
        avail_event decides, else its VRING_USED_F_NO_NOTIFY flag."""
        new = self.avail_idx_shadow
        old = (new - self.num_added) & 0xFFFF
        self.num_added = 0
        if self.event:
            return vring_need_event(self._r16(self.avail_event_addr), new, old)
        return not self._r16(self.used) & VRING_USED_F_NO_NOTIFY

    # -- completions -------------------------------------------------------

    def more_used(self) -> bool:
        return self._r16(self.used + 2) != self.last_used_idx

    def get_buf(self):
        """virtqueue_get_buf_ctx_split: (head, len) or None. With EVENT_IDX
        and callbacks on, publishes used_event = last_used_idx."""
        if not self.more_used():
            return None
        slot = self.used + 4 + 8 * (self.last_used_idx % self.num)
        head, length = self.L.used_elem_fast.unpack(self.ram.read(slot, 8))
        n = self.chain_len.pop(head, 1)            # detach_buf_split: back on the free list
        tail = head
        for _ in range(n - 1):
            tail = self.next[tail]
        self.next[tail] = self.free_head
        self.free_head = head
        self.num_free += n
        self.last_used_idx = (self.last_used_idx + 1) & 0xFFFF
        if not self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self._w16(self.used_event_addr, self.last_used_idx)
        return head, length

    def disable_cb(self) -> None:
        """virtqueue_disable_cb_split. 4.1 writes avail->flags always; with
        the shadowed flags ("virtio_ring: shadow available ring flags &
        index") an EVENT_IDX ring writes used_event = 0 instead."""
        if self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            return
        self.avail_flags_shadow |= VRING_AVAIL_F_NO_INTERRUPT
        if self.event and not self.disable_cb_sets_flags:
            self._w16(self.used_event_addr, 0)
        else:
            self._w16(self.avail, self.avail_flags_shadow)

    def enable_cb(self) -> bool:
        """virtqueue_enable_cb: flags back on, used_event = last_used_idx;
        False if buffers arrived meanwhile (virtqueue_poll)."""
        if self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self.avail_flags_shadow &= ~VRING_AVAIL_F_NO_INTERRUPT
            if not self.event or self.disable_cb_sets_flags:
                self._w16(self.avail, self.avail_flags_shadow)
        self._w16(self.used_event_addr, self.last_used_idx)
        return not self.more_used()
