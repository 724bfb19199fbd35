"""An .xz disk image, unpacked only as far as the guest reads.

slofsim's own packaging (QEMU has no xz block driver): the image's size
comes from the streams' footers and indexes (sim.abi.xz), checked at open;
the data is unpacked from the start, stream by stream, up to the highest
byte a read needs. A boot of the reference disk reads its first 2 MiB of 16.
"""

import lzma
import zlib

from sim.abi import xz as X   # sim.abi first: it defers construct's pdb

import construct as c  # noqa: E402,I001

UNPACK_STEP = 256 << 10       # unpack at least this much per step
UNPACK_MAX = 4 << 30          # the unpacked image is held in memory
# Bounds on the layout walk (a few us a record in Python): xz -T0 cuts
# blocks of 3 dictionaries (24 MiB at -6), so a 1 TiB image has ~44,000.
MAX_BLOCKS = 1 << 16
MAX_STREAMS = 1 << 12


class XzError(ValueError):
    """Not a valid .xz file; the message says where and why."""


def _crc_ok(data, crc: int) -> bool:
    return zlib.crc32(data) == crc


def xz_streams(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, length, unpacked size) of each stream of an .xz file, first
    first, from its footers and indexes alone: the layout, not the data, is
    checked (header, footer and index CRC32s, flags, sizes)."""
    mv = memoryview(data)
    end = len(data)
    out, nblocks = [], 0
    while True:
        padded, end = end, _padding_start(mv, end)         # 2.2 stream padding
        if end == 0:
            break
        where = f"stream ending at byte {end}"
        if (padded - end) % 4:
            raise XzError(f"{where}: stream padding of {padded - end} bytes, not a multiple of 4")
        if end < 2 * X.STREAM_HEADER_SIZE:
            raise XzError(f"{where}: truncated ({end} bytes, less than a stream header and footer)")
        foot = _parse(X.stream_footer, mv[end - 12:end], f"{where}: stream footer")
        if not _crc_ok(mv[end - 8:end - 2], foot.crc32):
            raise XzError(f"{where}: stream footer CRC32 mismatch")
        check = _check_id(foot.flags, f"{where}: stream footer")
        index_end = end - X.STREAM_HEADER_SIZE
        index_start = index_end - X.backward_bytes(foot.backward_size)
        if index_start < X.STREAM_HEADER_SIZE:
            raise XzError(f"{where}: the footer's index size ({index_end - index_start} bytes) "
                          "runs past the stream's start (truncated?)")
        nblocks += _parse(X.vli, mv[index_start + 1:index_end], f"{where}: index record count")
        if len(out) >= MAX_STREAMS or nblocks > MAX_BLOCKS:
            raise XzError(f"more than {MAX_STREAMS} streams or {MAX_BLOCKS} blocks, slofsim's bound: "
                          "unxz it and boot the raw file")
        ix = _parse(X.index, mv[index_start:index_end], f"{where}: index")
        if any(ix.padding):
            raise XzError(f"{where}: index padding is not null")
        if not _crc_ok(mv[index_start:index_end - 4], ix.crc32):
            raise XzError(f"{where}: index CRC32 mismatch")
        blocks = 0
        for r in ix.records:
            if r.unpadded_size < X.UNPADDED_SIZE_MIN + X.CHECK_SIZES[check]:
                raise XzError(f"{where}: index record with an unpadded size of {r.unpadded_size}")
            blocks += (r.unpadded_size + 3) & ~3
        start = index_start - blocks - X.STREAM_HEADER_SIZE
        if start < 0:
            raise XzError(f"{where}: the index's blocks ({blocks} bytes) run past the file's start (truncated?)")
        head = _parse(X.stream_header, mv[start:start + 12], f"stream at byte {start}: stream header")
        if not _crc_ok(head.flags, head.crc32):
            raise XzError(f"stream at byte {start}: stream header CRC32 mismatch")
        if head.flags != foot.flags:
            raise XzError(f"stream at byte {start}: header and footer flags differ")
        out.append((start, end - start, sum(r.uncompressed_size for r in ix.records)))
        end = start
    if not out or out[-1][0] != 0:
        raise XzError("no .xz stream" if not out else "bytes before the first stream header")
    return out[::-1]


def _padding_start(mv, end: int) -> int:
    """Where the run of null bytes that ends at `end` starts: read backwards
    in doubling steps, so a file's padding is read about once in all."""
    step = 64
    while end > 0:
        start = max(0, end - step)
        kept = bytes(mv[start:end]).rstrip(b"\0")
        if kept:
            return start + len(kept)
        end, step = start, step * 2
    return 0


def _parse(layout, data, what):
    try:
        return layout.parse(data)
    except c.ConstructError as exc:
        field = (exc.path or "").rpartition(" -> ")[2]
        raise XzError(f"{what}{' ' + field if field else ''}: {str(exc).splitlines()[-1]}") from None


def _check_id(flags: bytes, what: str) -> int:
    f = _parse(X.stream_flags, flags, f"{what} flags")
    if f.check > 0x0F:
        raise XzError(f"{what} flags: reserved bits set ({flags.hex()})")
    return f.check


class XzImage:
    """The unpacked bytes of an .xz file: `buf` holds them from byte 0 on,
    as far as `need` has been asked to unpack."""

    def __init__(self, data: bytes):
        self._data = data
        self._streams = xz_streams(data)
        self.size = sum(s[2] for s in self._streams)
        if self.size > UNPACK_MAX:
            raise XzError(f"unpacks to {self.size} bytes; slofsim unpacks an .xz image in memory, "
                          f"up to {UNPACK_MAX} bytes: unxz it and boot the raw file")
        self.buf = bytearray()
        self._next = 0          # the next stream to start
        self._dec = None        # the stream being unpacked
        self._left = 0          # bytes its index still owes
        self.need(8)            # the first block's headers and filters checked now

    def need(self, end: int) -> None:
        """Unpack up to byte `end` (at most the image's size)."""
        end = min(end, self.size)
        buf = self.buf
        while len(buf) < end:
            if self._dec is None:
                off, n, self._left = self._streams[self._next]
                self._next += 1
                self._dec, self._in = lzma.LZMADecompressor(lzma.FORMAT_XZ), self._data[off:off + n]
            self._unpack(max(end - len(buf), UNPACK_STEP))

    def _unpack(self, want: int) -> None:
        dec = self._dec
        k = self._next - 1
        try:
            # One byte more than the index owes: a stream that makes more is caught.
            out = dec.decompress(self._in, max_length=min(want, self._left + 1))
        except lzma.LZMAError as exc:
            raise XzError(f"stream {k + 1}: data error after unpacked byte {len(self.buf)} ({exc})") from None
        self._in = b""
        self._left -= len(out)
        if self._left < 0:
            raise XzError(f"stream {k + 1}: unpacks to more than its index's "
                          f"{self._streams[k][2]} bytes")
        self.buf += out
        if dec.eof:
            if self._left or dec.unused_data:
                raise XzError(f"stream {k + 1}: ends other than its index and footer say")
            self._dec = None
        elif not out and dec.needs_input:
            raise XzError(f"stream {k + 1}: truncated after unpacked byte {len(self.buf)}")
