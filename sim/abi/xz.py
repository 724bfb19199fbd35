""".xz container framing: what devices/block.py reads to size an .img.xz
without unpacking it (The .xz File Format 1.0.4, tukaani.org/xz/xz-file-format.txt).

A file is streams, each optionally followed by stream padding (null bytes,
a multiple of 4: section 2.2). A stream is header, blocks, index, footer
(section 2.1); the footer's backward size locates the index, whose records
give each block's unpadded and uncompressed size (section 4).
"""

import construct as c

HEADER_MAGIC = b"\xfd7zXZ\x00"       # 2.1.1.1 Header Magic Bytes
FOOTER_MAGIC = b"YZ"                 # 2.1.2.4 Footer Magic Bytes
STREAM_HEADER_SIZE = 12              # 2.1.1 and 2.1.2: header and footer alike
VLI_MAX_BYTES = 9                    # 1.2: a multibyte integer is at most 9 bytes (63 bits)
UNPADDED_SIZE_MIN = 5                # 4.3.1: block header (>= 8) + data (>= 1) + check, less the padding: liblzma's UNPADDED_SIZE_MIN
# 2.1.1.2: the check ID (low 4 bits of the second flags byte) -> the size of each block's check
CHECK_SIZES = (0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64)


class _Vli(c.Construct):
    """1.2 Multibyte Integers: 7 bits a byte, least significant first, the
    high bit set on every byte but the last; at most 9 bytes, and no
    needless trailing zero byte (liblzma's lzma_vli_decode refuses both)."""

    def _parse(self, stream, context, path):
        value = 0
        for i in range(VLI_MAX_BYTES):
            byte = c.stream_read(stream, 1, path)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i:
                    raise c.ValidationError("multibyte integer with a needless zero byte", path=path)
                return value
        raise c.ValidationError(f"multibyte integer longer than {VLI_MAX_BYTES} bytes", path=path)

    def _build(self, obj, stream, context, path):
        if not 0 <= obj < 1 << (7 * VLI_MAX_BYTES):
            raise c.ValidationError(f"{obj} does not fit a multibyte integer", path=path)
        out = bytearray()
        while obj >= 0x80:
            out.append(obj & 0x7F | 0x80)
            obj >>= 7
        out.append(obj)
        c.stream_write(stream, bytes(out), len(out), path)
        return obj


vli = _Vli()

# 2.1.1.2 / 2.1.2.3: first byte null, second the check ID (its high nibble reserved, zero)
stream_flags = c.Struct("reserved" / c.Const(b"\0"), "check" / c.Int8ub)

# 2.1.1 Stream Header: crc32 over the flags
stream_header = c.Struct(
    "magic" / c.Const(HEADER_MAGIC),
    "flags" / c.Bytes(2),
    "crc32" / c.Int32ul,
)

# 2.1.2 Stream Footer: crc32 over backward_size and flags; the index is
# (backward_size + 1) * 4 bytes (2.1.2.2)
stream_footer = c.Struct(
    "crc32" / c.Int32ul,
    "backward_size" / c.Int32ul,
    "flags" / c.Bytes(2),
    "magic" / c.Const(FOOTER_MAGIC),
)
assert stream_header.sizeof() == stream_footer.sizeof() == STREAM_HEADER_SIZE

# 4.3 List of Records: one per block
index_record = c.Struct("unpadded_size" / vli, "uncompressed_size" / vli)

# 4. Index: indicator, records, null padding to a multiple of 4, crc32 over all before it
index = c.Struct(
    "indicator" / c.Const(b"\0"),
    "count" / vli,
    "records" / c.Array(c.this.count, index_record),
    "_records_end" / c.Tell,
    "padding" / c.Bytes(lambda this: -this._records_end % 4),
    "crc32" / c.Int32ul,
    c.Terminated,
)


def backward_bytes(backward_size: int) -> int:
    """2.1.2.2: the index's size in bytes from the stored field."""
    return (backward_size + 1) * 4
