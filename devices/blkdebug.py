"""The block layer between virtio-blk and the image: blkdebug's fault rules
(block/blkdebug.c) and the in-flight count a drain waits for.

Every read or write the device hands the block layer is a read_aio or
write_aio event (BLKDBG_EVENT in the raw driver, then blkdebug_co_preadv /
_pwritev); the n-th one is request n. The first fault (sim.faults) that
selects it acts as blkdebug would:

- io_error: inject-error errno=5, the I/O returns -EIO; virtio-blk reports
  it (rerror/werror default "report": virtio_blk_handle_rw_error ->
  VIRTIO_BLK_S_IOERR).
- hang: a breakpoint that is never resumed (`break read_aio T`): the
  request stays suspended, in flight, for ever.
- delay: the I/O completes delay_ms later (a slow backend; blkdebug has no
  such rule, null-co's latency-ns is the closest).
- short_read: the file returns only the first half of a read, in whole
  sectors; raw-posix (2015) and file-posix (7.2) pad the rest with zeros
  and report success (handle_aiocb_rw: "Short reads mean EOF, pad with
  zeros").

in_flight is bs->in_flight: bdrv_drain (blk_drain, bdrv_drain_all, and the
one blk_set_aio_context makes when the dataplane hands the disk back to
the main loop) polls until it is 0, so a suspended request keeps a drain
waiting for ever. Counted at the AIO's end, before its completion callback
(ASSUMPTION: QEMU decrements after the callback; the drain's poll runs
the callback in between).
"""

import trio

from devices.block import SECTOR
from sim import vtime
from sim.faults import EIO


class BlkDebug:
    def __init__(self, faults, trace):
        self.faults = tuple(f for f in faults if f.kind != "lost_kick")
        self.trace = trace
        self.requests = 0
        self.in_flight = 0
        self.suspended: list[int] = []
        self._changed = None      # a drain's wait for the next change, made when one waits

    def begin(self) -> None:
        """bdrv_inc_in_flight."""
        self.in_flight += 1

    def end(self) -> None:
        """bdrv_dec_in_flight: a drain waiting on it looks again."""
        self.in_flight -= 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def drain(self) -> bool:
        """BDRV_POLL_WHILE(bs, bdrv_drain_poll(...)): True once nothing is in
        flight. False as soon as only suspended requests are: nothing
        resumes them, so the real poll would never return (the machine
        stops there instead of at its watchdog)."""
        while self.in_flight > len(self.suspended):
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()
        return not self.in_flight

    async def aio(self, is_read: bool, sector: int, nbytes: int) -> tuple[int, int]:
        """Before the I/O: (errno, bytes the file returns). May never return."""
        self.requests += 1
        n = self.requests
        if not self.faults:
            return 0, nbytes
        fault = next((f for f in self.faults if f.selects(n, sector, nbytes // SECTOR)), None)
        if fault is None or fault.kind == "short_read" and not is_read:
            return 0, nbytes
        event = "read_aio" if is_read else "write_aio"
        self.trace.emit("disk", "blkdebug", fault=fault.text(), kind=fault.kind, request=n, event=event,
                        sector=sector, bytes=nbytes)
        if fault.kind == "io_error":
            return EIO, 0
        if fault.kind == "hang":
            self.suspended.append(n)
            await vtime.settle()
            await trio.sleep_forever()
        if fault.kind == "delay":
            vtime.charge(fault.delay_ms / 1000)
            await vtime.settle()
            return 0, nbytes
        return 0, nbytes // 2 // SECTOR * SECTOR        # short_read
