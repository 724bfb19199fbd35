"""The GUID Partition Table as SLOF's disk-label reads it and tools write it.

UEFI spec 2.x, chapter 5.3: a protective MBR (one entry, type 0xEE) at LBA
0, the header at LBA 1, the entry array after it, and a backup array and
header at the end of the disk. All integers are little-endian. SLOF's
disk-label.fs declares the same header and entry (`gpt>` and
`gpt-part-entry>` fields) and reads them with `x@-le` / `l@-le`.
"""

import zlib

import construct as c

SIGNATURE = b"EFI PART"        # SLOF compares x@ (big-endian) with 4546492050415254
REVISION_1_0 = 0x00010000
HEADER_SIZE = 92               # bytes covered by header_crc32
ENTRY_SIZE = 128               # SLOF accepts any size up to its 4096-byte block buffer
DEFAULT_ENTRIES = 128          # the usual array: 128 x 128 B = 32 sectors

gpt_header = c.Struct(
    "signature" / c.Bytes(8),
    "revision" / c.Int32ul,
    "header_size" / c.Int32ul,
    "header_crc32" / c.Int32ul,
    "reserved" / c.Int32ul,
    "current_lba" / c.Int64ul,
    "backup_lba" / c.Int64ul,
    "first_usable_lba" / c.Int64ul,
    "last_usable_lba" / c.Int64ul,
    "disk_guid" / c.Bytes(16),
    "part_entry_lba" / c.Int64ul,
    "num_part_entries" / c.Int32ul,
    "part_entry_size" / c.Int32ul,
    "part_array_crc32" / c.Int32ul,
)
assert gpt_header.sizeof() == HEADER_SIZE

gpt_entry = c.Struct(
    "type_guid" / c.Bytes(16),
    "part_guid" / c.Bytes(16),
    "first_lba" / c.Int64ul,
    "last_lba" / c.Int64ul,
    "attributes" / c.Int64ul,
    "name" / c.Bytes(72),          # UTF-16LE, NUL padded
)
assert gpt_entry.sizeof() == ENTRY_SIZE


def guid(text: str) -> bytes:
    """A GUID's on-disk bytes: the first three groups little-endian (what
    SLOF's `uuid!` stores with l!-le / w!-le / w!-le / x!)."""
    import uuid     # here, not at import: 0.5 ms of every start, for mkdisk's gpt_type only
    return uuid.UUID(text).bytes_le


def _guid(text: str) -> bytes:
    """guid() of a GUID written 8-4-4-4-12, without the uuid module."""
    b = bytes.fromhex(text.replace("-", ""))
    return b[3::-1] + b[5:3:-1] + b[7:5:-1] + b[8:]


PREP = _guid("9E1A2D38-C612-4316-AA26-8B49521E5A8B")         # PowerPC PReP boot
BASIC_DATA = _guid("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")   # Microsoft basic data (FAT)
LINUX_FS = _guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4")     # Linux filesystem data


def crc32(data: bytes) -> int:
    """The CRC32 the UEFI spec uses (IEEE 802.3, as zlib computes it)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def build_header(**fields) -> bytes:
    """The 92-byte header with header_crc32 computed over it (field zeroed)."""
    raw = gpt_header.build(dict(fields, header_crc32=0))
    return gpt_header.build(dict(fields, header_crc32=crc32(raw)))
