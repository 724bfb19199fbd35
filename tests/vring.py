"""Test helpers: a legacy split virtqueue built in guest RAM, as a driver
(SLOF) lays it out, and virtio-blk requests placed on it.

Layouts come from sim.abi.virtio (the one construct declaration); nothing
here reads device state, so a test sees only what the guest would see.
"""

import trio

from sim.abi.virtio import VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, layouts, vring_addrs


class Vring:
    """A legacy ring at `base`: desc table, avail ring, used ring at the
    next 4096 boundary."""

    def __init__(self, ram, base: int, num: int, *, big: bool = True):
        self.ram, self.base, self.num, self.big = ram, base, num, big
        self.desc, self.avail, self.used = vring_addrs(base, num)
        self.L = layouts(big)
        self.avail_idx = 0      # the driver's shadow of avail->idx
        self._free = 0          # next descriptor index add_chain hands out

    # -- driver side --------------------------------------------------------

    def restart(self) -> None:
        """Forget what was queued (after a device reset): idx 0, descriptors from 0."""
        self.avail_idx = self._free = 0
        self.set_avail_idx(0)

    def _u16(self, v: int) -> bytes:
        return self.L.u16.build(v & 0xFFFF)

    def write_desc(self, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0, table: int | None = None):
        """Descriptor i of the ring's table (or of an indirect table)."""
        base = self.desc if table is None else table
        self.ram.write(base + 16 * i, self.L.desc.build(dict(addr=addr, len=length, flags=flags, next=nxt)))

    def add_chain(self, bufs) -> int:
        """bufs: [(addr, len, device_writes)]. Returns the head index."""
        idx = [(self._free + k) % self.num for k in range(len(bufs))]
        for k, (addr, length, writable) in enumerate(bufs):
            last = k == len(bufs) - 1
            flags = (VRING_DESC_F_WRITE if writable else 0) | (0 if last else VRING_DESC_F_NEXT)
            self.write_desc(idx[k], addr, length, flags, 0 if last else idx[k + 1])
        self._free += len(bufs)
        return idx[0]

    def put_avail(self, slot: int, head: int) -> None:
        self.ram.write(self.avail + 4 + 2 * (slot % self.num), self._u16(head))

    def set_avail_idx(self, value: int) -> None:
        self.ram.write(self.avail + 2, self._u16(value))

    def set_avail_flags(self, flags: int) -> None:
        self.ram.write(self.avail, self._u16(flags))

    def publish(self, head: int) -> None:
        """avail->ring[idx % num] = head; then avail->idx++."""
        self.put_avail(self.avail_idx, head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.set_avail_idx(self.avail_idx)

    # -- what the device wrote ---------------------------------------------

    def used_idx(self) -> int:
        return self.L.u16.parse(self.ram.read(self.used + 2, 2))

    def used_elem(self, slot: int) -> tuple[int, int]:
        e = self.L.used_elem.parse(self.ram.read(self.used + 4 + 8 * (slot % self.num), 8))
        return e.id, e.len


class BlkRequest:
    """One virtio-blk request: outhdr (16 bytes), optional data, status byte."""

    def __init__(self, ring: Vring, rtype: int, sector: int, *, hdr: int, data: int, data_len: int,
                 status: int, payload: bytes | None = None, in_len: int | None = None):
        self.ring, self.status_addr, self.data_addr, self.data_len = ring, status, data, data_len
        ram = ring.ram
        ram.write(hdr, ring.L.blk_outhdr.build(dict(type=rtype, ioprio=0, sector=sector)))
        ram.write(status, b"\xee")      # a value the device never writes
        bufs = [(hdr, 16, False)]
        if payload is not None:          # OUT: the device reads the data
            ram.write(data, payload)
            bufs.append((data, len(payload), False))
        elif data_len:                   # IN / GET_ID: the device writes it
            bufs.append((data, data_len, True))
        bufs.append((status, 1, True))
        self.head = ring.add_chain(bufs)

    def publish(self) -> "BlkRequest":
        self.ring.publish(self.head)
        return self

    def status(self) -> int:
        return self.ring.ram.read(self.status_addr, 1)[0]

    def data(self) -> bytes:
        return self.ring.ram.read(self.data_addr, self.data_len)


async def wait_used(ring: Vring, n: int, timeout: float = 1.0) -> bool:
    """Wait until used->idx reads n or `timeout` simulated seconds pass (the
    tests run on an autojump MockClock), waking on each store to used->idx
    as a busy-polling driver would see it. True if it got there."""
    with trio.move_on_after(timeout):
        while ring.used_idx() != n & 0xFFFF:
            written = ring.ram.watch(ring.used + 2, 2)
            try:
                await written.wait()
            finally:
                ring.ram.unwatch(written)
        return True
    return False
