"""kvm_io_bus (virt/kvm/kvm_main.c): in-kernel devices by address range.

A device range (a, L) matches an access (x, n) when it contains it
(a <= x and x+n <= a+L), or, for L == 0, when x == a. Matching devices are
tried in the bus's sorted order and the first whose callback returns 0
takes the access; if none does the bus returns -EOPNOTSUPP and the caller
punts to userspace.
"""

from sim.abi.kvm import ENOENT, ENOSPC, EOPNOTSUPP, NR_IOBUS_DEVS


class IoDevice:
    """struct kvm_io_device: read/write return 0 if handled, else non-zero."""

    is_ioeventfd = False

    def read(self, addr: int, length: int, buf: bytearray) -> int:
        return -EOPNOTSUPP

    def write(self, addr: int, length: int, buf: bytes) -> int:
        return -EOPNOTSUPP

    def describe(self) -> str:
        return type(self).__name__


def _cmp(addr1, len1, addr2, len2) -> int:
    """kvm_io_bus_cmp(r1, r2)."""
    if addr1 < addr2:
        return -1
    if len2:
        addr1 += len1
        addr2 += len2
    return 1 if addr1 > addr2 else 0


class KvmIoBus:
    def __init__(self):
        self.ranges: list[tuple[int, int, IoDevice]] = []
        self.ioeventfd_count = 0

    def register_dev(self, addr: int, length: int, dev: IoDevice) -> int:
        # ioeventfds are left out of the count, but the check is on the bus
        # as it stands: a full bus refuses an ioeventfd too.
        if len(self.ranges) - self.ioeventfd_count > NR_IOBUS_DEVS - 1:
            return -ENOSPC
        i = 0
        while i < len(self.ranges) and _cmp(self.ranges[i][0], self.ranges[i][1], addr, length) <= 0:
            i += 1
        self.ranges.insert(i, (addr, length, dev))
        if dev.is_ioeventfd:
            self.ioeventfd_count += 1
        return 0

    def unregister_dev(self, dev: IoDevice) -> int:
        for i, (_, _, d) in enumerate(self.ranges):
            if d is dev:
                del self.ranges[i]
                if dev.is_ioeventfd:
                    self.ioeventfd_count -= 1
                return 0
        return -ENOENT

    def write(self, addr: int, length: int, buf: bytes) -> tuple[int, IoDevice | None]:
        """__kvm_io_bus_write: (0, device that took it) or (-EOPNOTSUPP, None)."""
        for a, n, dev in self.ranges:       # every H_LOGICAL_CI_* and MMIO exit looks here
            # _cmp(addr, length, a, n) == 0, inline
            if a <= addr and (addr + length <= a + n if n else addr == a) and dev.write(addr, length, buf) == 0:
                return 0, dev
        return -EOPNOTSUPP, None

    def read(self, addr: int, length: int, buf: bytearray) -> tuple[int, IoDevice | None]:
        for a, n, dev in self.ranges:
            if a <= addr and (addr + length <= a + n if n else addr == a) and dev.read(addr, length, buf) == 0:
                return 0, dev
        return -EOPNOTSUPP, None
