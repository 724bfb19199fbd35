"""Host memory that backs the guest's RAM.

QEMU allocates it and KVM maps it into the guest as a memslot, so both the
vcpu (real-mode loads and stores) and device DMA touch the same bytes. A
store can wake a watcher: that is how a busy-waiting guest (SLOF polling
used->idx) is modelled as waiting for the write that ends its loop.
"""

import mmap

import trio


class GuestMemoryError(Exception):
    """An access outside guest RAM."""


class GuestRAM:
    __slots__ = ("size", "buf", "mv", "_watches")

    def __init__(self, size: int):
        self.size = size
        self.buf = mmap.mmap(-1, size)   # zero pages, touched lazily like the host's
        self.mv = memoryview(self.buf)
        self._watches: list[tuple[int, int, trio.Event]] = []

    def check(self, addr: int, length: int) -> None:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise GuestMemoryError(f"[0x{addr:x}, +0x{length:x}) is outside guest RAM (0x{self.size:x} bytes)")

    def read(self, addr: int, length: int) -> bytes:
        self.check(addr, length)
        return bytes(self.mv[addr:addr + length])

    def view(self, addr: int, length: int) -> memoryview:
        self.check(addr, length)
        return self.mv[addr:addr + length]

    def write(self, addr: int, data) -> None:
        n = len(data)
        self.check(addr, n)
        self.mv[addr:addr + n] = data
        if self._watches:
            self._notify(addr, n)

    def notify_written(self, addr: int, length: int) -> None:
        """Tell watchers about a store done in place through view()."""
        if self._watches:
            self._notify(addr, length)

    def _notify(self, addr: int, n: int) -> None:
        keep = []
        for w in self._watches:
            start, length, event = w
            if addr < start + length and start < addr + n:
                event.set()
            else:
                keep.append(w)
        self._watches = keep

    def watch(self, addr: int, length: int) -> trio.Event:
        """An event set by the next store that overlaps [addr, addr+length)."""
        event = trio.Event()
        self._watches.append((addr, length, event))
        return event

    def unwatch(self, event: trio.Event) -> None:
        self._watches = [w for w in self._watches if w[2] is not event]
