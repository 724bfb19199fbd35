"""GRUB 2.06's module area (include/grub/kernel.h), as grub-mkimage writes it
for powerpc-ieee1275: big-endian, 32-bit (struct grub_module_info32)."""

import construct as c

GRUB_MODULE_MAGIC = b"gmim"      # 0x676d696d, "GRUB Module Info Magic"
# enum in kernel.h: OBJ_TYPE_ELF, MEMDISK, CONFIG, PREFIX, PUBKEY, DTB, DISABLE_SHIM_LOCK
OBJ_TYPE_ELF, OBJ_TYPE_MEMDISK, OBJ_TYPE_CONFIG, OBJ_TYPE_PREFIX = 0, 1, 2, 3

module_info32 = c.Struct(
    "magic" / c.Bytes(4),
    "offset" / c.Int32ub,        # of the first module header, from the info
    "size" / c.Int32ub,          # of all modules plus this header
)

module_header = c.Struct(
    "type" / c.Int32ub,
    "size" / c.Int32ub,          # including this header; the next one is 4-byte aligned (FOR_MODULES)
)
