"""eventfd(2) (fs/eventfd.c): a counter a writer bumps and a reader drains.

Signals that arrive before the reader runs coalesce: the reader's
test-and-clear takes the whole count in one wake-up.
"""

import trio


class EventFd:
    __slots__ = ("fd", "label", "count", "signals", "_lot", "wait_queue")

    def __init__(self, fd: int, label: str):
        self.fd = fd
        self.label = label
        self.count = 0
        self.signals = 0
        self._lot = trio.lowlevel.ParkingLot()
        self.wait_queue = []  # in-kernel wakeup callbacks (irqfd_wakeup)

    def signal(self) -> None:
        """eventfd_signal(ctx): add 1 and wake pollers."""
        self.count += 1
        self.signals += 1
        for wake in self.wait_queue:
            wake()
        if self._lot:
            self._lot.unpark_all()

    def test_and_clear(self) -> int:
        """event_notifier_test_and_clear: read(2) the counter, leaving 0."""
        n, self.count = self.count, 0
        return n

    async def wait_readable(self) -> None:
        while not self.count:
            await self._lot.park()


class FdTable:
    """The process's file descriptors, as far as eventfds go."""

    def __init__(self):
        self._next = 10
        self._files: dict[int, EventFd] = {}

    def eventfd(self, label: str, initval: int = 0) -> EventFd:
        """eventfd(initval, ...): a counter that starts at initval (QEMU's
        event_notifier_init(e, active) passes active as initval). An initial
        value is not a signal: `signals` stays 0."""
        efd = EventFd(self._next, label)
        efd.count = initval
        self._files[efd.fd] = efd
        self._next += 1
        return efd

    def get(self, fd: int) -> EventFd | None:
        return self._files.get(fd)

    def close(self, fd: int) -> None:
        self._files.pop(fd, None)
