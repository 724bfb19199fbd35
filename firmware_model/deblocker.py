"""SLOF's deblocker package (slof/fs/packages/deblocker.fs) over virtio-blk.

Byte reads become block reads of at most max-transfer (0x8000 bytes,
virtio-block.fs) each; a partial first or last block goes through a private
one-block buffer. A failed block read is retried at once, and after five
failures in a row the read returns what it has.
"""

MAX_TRANSFER = 0x8000
RETRIES = 5


class Deblocker:
    def __init__(self, dev, scratch: int):
        self.dev = dev
        self.scratch = scratch   # one-block private buffer
        self.ram = dev.ram

    async def _blocks(self, dest: int, block: int, count: int) -> int:
        for _ in range(RETRIES):
            got = await self.dev.transfer(dest, block, count)
            if got:
                return got
        return 0

    async def read(self, dest: int, pos: int, length: int) -> int:
        """read at byte position pos: bytes delivered to dest."""
        bs = self.dev.block_size
        done = 0
        while done < length:
            block, skip = divmod(pos + done, bs)
            if skip or length - done < bs:   # partial block: via the private buffer
                if not await self._blocks(self.scratch, block, 1):
                    return done
                n = min(bs - skip, length - done)
                self.ram.write(dest + done, self.ram.read(self.scratch + skip, n))
                done += n
                continue
            count = min((length - done) // bs, MAX_TRANSFER // bs)
            if not await self._blocks(dest + done, block, count):
                return done
            done += count * bs
        return done
