"""SLOF's deblocker package (slof/fs/packages/deblocker.fs) over virtio-blk.

`read` (deblocker.fs:45-70) turns a byte read into block reads:
- a partial first block (the position is not block-aligned) is read once,
  as one block, into the private `my-block` buffer and the wanted bytes
  copied out; the result of that read is dropped;
- then runs of whole blocks, at most max-transfer (8000, virtio-block.fs:22)
  bytes each, straight to the destination; a run that returns 0 is retried
  at once, and after five zero returns in a row `read` returns 0;
- a partial last block again goes through `my-block`, read once.
Otherwise `read` returns the length asked for, whatever the partial reads
did. The deblocker does no caching.
"""

MAX_TRANSFER = 0x8000
RETRIES = 5                    # `fail-count @ 5 >=` (deblocker.fs:59)


class Deblocker:
    def __init__(self, dev, scratch: int):
        self.dev = dev
        self.scratch = scratch   # `my-block`: one block, private to this instance
        self.ram = dev.ram

    async def read(self, dest: int, pos: int, length: int) -> int:
        """seek to byte pos, then read: length, or 0 after five failed runs."""
        bs = self.dev.block_size
        total = length
        block, skip = divmod(pos, bs)
        if skip:                                   # partial block at the start
            await self.dev.transfer(self.scratch, block, 1)
            n = min(bs - skip, length)
            self.ram.write(dest, self.ram.read(self.scratch + skip, n))
            dest, pos, length = dest + n, pos + n, length - n
        fails = 0
        while length >= bs:                        # whole blocks, max-transfer at a time
            got = await self.dev.transfer(dest, pos // bs, min(length, MAX_TRANSFER) // bs)
            if not got:
                fails += 1
                if fails >= RETRIES:
                    return 0
            else:
                fails = 0
            dest, pos, length = dest + got * bs, pos + got * bs, length - got * bs
        if length > 0:                             # partial block at the end
            await self.dev.transfer(self.scratch, pos // bs, 1)
            self.ram.write(dest, self.ram.read(self.scratch, length))
        return total
