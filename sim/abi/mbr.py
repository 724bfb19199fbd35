"""The DOS/MBR partition table as SLOF's disk-label reads it."""

import construct as c

SECTOR = 512
MBR_SIGNATURE = 0xAA55  # bytes 55 AA at 0x1FE, read with w@-le
PART_TYPE_PREP = 0x41
PART_TYPE_GPT_PROTECTIVE = 0xEE
PART_TYPES_EXTENDED = (0x05, 0x0F, 0x85)
BOOT_ACTIVE = 0x80

partition_entry = c.Struct(
    "boot_indicator" / c.Int8ub,
    "chs_start" / c.Bytes(3),
    "type" / c.Int8ub,
    "chs_end" / c.Bytes(3),
    "lba_start" / c.Int32ul,
    "sectors" / c.Int32ul,
)

mbr = c.Struct(
    "bootcode" / c.Bytes(440),
    "disk_id" / c.Int32ul,
    "reserved" / c.Bytes(2),
    "partitions" / c.Array(4, partition_entry),
    "signature" / c.Int16ul,
)
assert mbr.sizeof() == SECTOR
