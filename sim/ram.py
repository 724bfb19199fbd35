"""Host memory that backs the guest's RAM.

QEMU allocates it and KVM maps it into the guest as a memslot, so both the
vcpu (real-mode loads and stores) and device DMA touch the same bytes. A
store can wake a watcher: that is how a busy-waiting guest (SLOF polling
used->idx) is modelled as waiting for the write that ends its loop.
"""

import mmap
import sys

from sim import vtime

# MAP_NORESERVE (Python exposes it from 3.12; 0x4000 in Linux's generic
# mman headers): no swap is reserved, so a 64 GiB guest maps on a smaller
# host under the default overcommit heuristic; only pages the guest or a
# device touches are backed, as with QEMU's own RAM.
_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform == "linux" else 0)


class GuestMemoryError(Exception):
    """An access outside guest RAM."""


class RamAllocError(Exception):
    """The host cannot map the guest's RAM (message names the size)."""


class GuestRAM:
    __slots__ = ("size", "buf", "mv", "_watches")

    def __init__(self, size: int):
        self.size = size
        try:   # zero pages, backed lazily when first touched
            self.buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _NORESERVE)
        except (OSError, OverflowError) as exc:
            raise RamAllocError(f"cannot map {size >> 20} MiB of guest RAM on this host: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
        self.mv = memoryview(self.buf)
        self._watches: list[tuple[int, int, vtime.Flag]] = []

    def check(self, addr: int, length: int) -> None:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise GuestMemoryError(f"[0x{addr:x}, +0x{length:x}) is outside guest RAM (0x{self.size:x} bytes)")

    # read/view/write test the range inline (check() raises): the calls
    # saved are a few per hcall and ring access.
    def read(self, addr: int, length: int) -> bytes:
        if addr < 0 or length < 0 or addr + length > self.size:
            self.check(addr, length)
        return bytes(self.mv[addr:addr + length])

    def view(self, addr: int, length: int) -> memoryview:
        if addr < 0 or length < 0 or addr + length > self.size:
            self.check(addr, length)
        return self.mv[addr:addr + length]

    def write(self, addr: int, data) -> None:
        n = len(data)
        if addr < 0 or addr + n > self.size:
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

    def watch(self, addr: int, length: int) -> vtime.Flag:
        """An event set by the next store that overlaps [addr, addr+length)."""
        event = vtime.Flag()
        self._watches.append((addr, length, event))
        return event

    def unwatch(self, event: vtime.Flag) -> None:
        self._watches = [w for w in self._watches if w[2] is not event]
