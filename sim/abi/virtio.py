"""Virtio 0.9.5 / 1.0 layouts and numbers shared by driver and device.

Split virtqueue (virtio_ring.h), virtio-blk (virtio_blk.h), the legacy
virtio-pci BAR0 map and the virtio 1.0 ("modern") PCI capabilities and
common configuration (virtio_pci.h). Legacy rings and config use the
device's endianness (big for a big-endian SLOF), so each layout is declared
once as a function of the byte order; everything modern is little-endian.
"""

import functools

import construct as c

from sim.abi import packer

# Device status (virtio_config.h)
VIRTIO_CONFIG_S_ACKNOWLEDGE = 1
VIRTIO_CONFIG_S_DRIVER = 2
VIRTIO_CONFIG_S_DRIVER_OK = 4
VIRTIO_CONFIG_S_FEATURES_OK = 8
VIRTIO_CONFIG_S_NEEDS_RESET = 0x40
VIRTIO_CONFIG_S_FAILED = 0x80

# Legacy virtio-pci BAR0 (include/standard-headers/linux/virtio_pci.h)
VIRTIO_PCI_HOST_FEATURES = 0
VIRTIO_PCI_GUEST_FEATURES = 4
VIRTIO_PCI_QUEUE_PFN = 8
VIRTIO_PCI_QUEUE_NUM = 12
VIRTIO_PCI_QUEUE_SEL = 14
VIRTIO_PCI_QUEUE_NOTIFY = 16
VIRTIO_PCI_STATUS = 18
VIRTIO_PCI_ISR = 19
VIRTIO_MSI_CONFIG_VECTOR = 20
VIRTIO_MSI_QUEUE_VECTOR = 22
VIRTIO_PCI_CONFIG_OFF_NO_MSIX = 20
VIRTIO_PCI_QUEUE_ADDR_SHIFT = 12
VIRTIO_PCI_VRING_ALIGN = 4096
VIRTIO_PCI_QUEUE_MAX = 64  # QEMU 1.x-2.3 hw/virtio/virtio-pci.c
VIRTIO_PCI_ISR_CONFIG = 0x2

LEGACY_REGS = {
    VIRTIO_PCI_HOST_FEATURES: "HOST_FEATURES",
    VIRTIO_PCI_GUEST_FEATURES: "GUEST_FEATURES",
    VIRTIO_PCI_QUEUE_PFN: "QUEUE_PFN",
    VIRTIO_PCI_QUEUE_NUM: "QUEUE_NUM",
    VIRTIO_PCI_QUEUE_SEL: "QUEUE_SEL",
    VIRTIO_PCI_QUEUE_NOTIFY: "QUEUE_NOTIFY",
    VIRTIO_PCI_STATUS: "STATUS",
    VIRTIO_PCI_ISR: "ISR",
}


def _field_offsets(layout: c.Struct) -> dict[str, tuple[int, int]]:
    """name -> (offset, size) of each field of a flat layout."""
    out, off = {}, 0
    for sub in layout.subcons:
        n = sub.sizeof()
        out[sub.name] = (off, n)
        off += n
    return out


# Virtio 1.0 PCI capabilities (virtio_pci.h): a vendor capability (id 0x09)
# per structure, each naming a BAR, an offset in it and a length.
PCI_CAP_ID_VNDR = 0x09
VIRTIO_PCI_CAP_COMMON_CFG = 1
VIRTIO_PCI_CAP_NOTIFY_CFG = 2
VIRTIO_PCI_CAP_ISR_CFG = 3
VIRTIO_PCI_CAP_DEVICE_CFG = 4
VIRTIO_PCI_CAP_PCI_CFG = 5

# struct virtio_pci_cap; the notify capability appends notify_off_multiplier,
# the PCI-config-access capability appends pci_cfg_data[4].
virtio_pci_cap = c.Struct(
    "cap_vndr" / c.Int8ul, "cap_next" / c.Int8ul, "cap_len" / c.Int8ul, "cfg_type" / c.Int8ul,
    "bar" / c.Int8ul, "padding" / c.Padding(3), "offset" / c.Int32ul, "length" / c.Int32ul,
)
virtio_pci_notify_cap = c.Struct("cap" / virtio_pci_cap, "notify_off_multiplier" / c.Int32ul)
virtio_pci_cfg_cap = c.Struct("cap" / virtio_pci_cap, "pci_cfg_data" / c.Bytes(4))
CAP_FIELDS = {name: off for name, (off, _) in _field_offsets(virtio_pci_cap).items()}
VIRTIO_PCI_NOTIFY_CAP_MULT = _field_offsets(virtio_pci_notify_cap)["notify_off_multiplier"][0]

# struct virtio_pci_common_cfg (little-endian, in the modern memory BAR).
virtio_pci_common_cfg = c.Struct(
    "device_feature_select" / c.Int32ul, "device_feature" / c.Int32ul,
    "driver_feature_select" / c.Int32ul, "driver_feature" / c.Int32ul,
    "msix_config" / c.Int16ul, "num_queues" / c.Int16ul,
    "device_status" / c.Int8ul, "config_generation" / c.Int8ul,
    "queue_select" / c.Int16ul, "queue_size" / c.Int16ul, "queue_msix_vector" / c.Int16ul,
    "queue_enable" / c.Int16ul, "queue_notify_off" / c.Int16ul,
    "queue_desc_lo" / c.Int32ul, "queue_desc_hi" / c.Int32ul,
    "queue_avail_lo" / c.Int32ul, "queue_avail_hi" / c.Int32ul,
    "queue_used_lo" / c.Int32ul, "queue_used_hi" / c.Int32ul,
)
COMMON_CFG_FIELDS = _field_offsets(virtio_pci_common_cfg)
COMMON_CFG = {name: off for name, (off, _) in COMMON_CFG_FIELDS.items()}
COMMON_REGS = {off: name for name, off in COMMON_CFG.items()}

# QEMU's layout of the modern memory BAR (virtio_pci_realize): each region
# 0x1000 bytes, the notify region queue_mem_mult * VIRTIO_QUEUE_MAX.
VIRTIO_PCI_COMMON_OFF, VIRTIO_PCI_ISR_OFF, VIRTIO_PCI_DEVICE_OFF, VIRTIO_PCI_NOTIFY_OFF = \
    0x0, 0x1000, 0x2000, 0x3000
VIRTIO_PCI_REGION_SIZE = 0x1000
VIRTIO_QUEUE_MAX = 1024
QEMU_VIRTIO_PCI_QUEUE_MEM_MULT = 0x1000   # with page-per-vq; 4 without
VIRTIO_PCI_MODERN_MEM_BAR = 4             # modern_mem_bar_idx (BAR 4 + 5, 64-bit)

PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1AF4
PCI_DEVICE_ID_VIRTIO_BLOCK = 0x1001
VIRTIO_ID_BLOCK = 2
PCI_CLASS_STORAGE_SCSI = 0x0100

# Feature bits
VIRTIO_BLK_F_SIZE_MAX = 1
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_GEOMETRY = 4
VIRTIO_BLK_F_RO = 5
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_SCSI = 7
VIRTIO_BLK_F_FLUSH = 9
VIRTIO_BLK_F_TOPOLOGY = 10
VIRTIO_BLK_F_CONFIG_WCE = 11
VIRTIO_BLK_F_DISCARD = 13
VIRTIO_BLK_F_WRITE_ZEROES = 14
VIRTIO_F_NOTIFY_ON_EMPTY = 24
VIRTIO_F_ANY_LAYOUT = 27
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
VIRTIO_F_BAD_FEATURE = 30
VIRTIO_F_VERSION_1 = 32
VIRTIO_F_IOMMU_PLATFORM = 33
VIRTIO_F_RING_RESET = 40
# virtio.h VIRTIO_LEGACY_FEATURES: never offered through the modern interface
VIRTIO_LEGACY_FEATURES = (1 << VIRTIO_F_BAD_FEATURE) | (1 << VIRTIO_F_NOTIFY_ON_EMPTY) | (1 << VIRTIO_F_ANY_LAYOUT)

# Descriptor flags and avail/used flags (virtio_ring.h)
VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_AVAIL_F_NO_INTERRUPT = 1
VRING_USED_F_NO_NOTIFY = 1

# virtio-blk request types and status (virtio_blk.h)
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_SCSI_CMD = 2
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_T_BARRIER = 0x80000000
VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2
VIRTIO_BLK_ID_BYTES = 20
BLK_TYPE_NAMES = {VIRTIO_BLK_T_IN: "IN", VIRTIO_BLK_T_OUT: "OUT", VIRTIO_BLK_T_FLUSH: "FLUSH",
                  VIRTIO_BLK_T_GET_ID: "GET_ID", VIRTIO_BLK_T_SCSI_CMD: "SCSI_CMD"}


@functools.cache
def layouts(big_endian: bool):
    """The ring, request and config layouts in one byte order."""
    u8 = c.Int8ub
    u16, u32, u64 = (c.Int16ub, c.Int32ub, c.Int64ub) if big_endian else (c.Int16ul, c.Int32ul, c.Int64ul)
    desc = c.Struct("addr" / u64, "len" / u32, "flags" / u16, "next" / u16)
    avail_hdr = c.Struct("flags" / u16, "idx" / u16)
    used_hdr = c.Struct("flags" / u16, "idx" / u16)
    used_elem = c.Struct("id" / u32, "len" / u32)
    blk_outhdr = c.Struct("type" / u32, "ioprio" / u32, "sector" / u64)
    blk_config = c.Struct(
        "capacity" / u64, "size_max" / u32, "seg_max" / u32,
        "cylinders" / u16, "heads" / u8, "sectors" / u8,
        "blk_size" / u32, "physical_block_exp" / u8, "alignment_offset" / u8,
        "min_io_size" / u16, "opt_io_size" / u32, "wce" / u8, "unused0" / u8,
        "num_queues" / u16,
    )
    return _Layouts(desc, avail_hdr, used_hdr, used_elem, blk_outhdr, blk_config,
                    packer(desc), packer(used_elem), packer(blk_outhdr), u16, u32)


class _Layouts:
    __slots__ = ("desc", "avail_hdr", "used_hdr", "used_elem", "blk_outhdr", "blk_config",
                 "desc_fast", "used_elem_fast", "blk_outhdr_fast", "u16", "u32")

    def __init__(self, *fields):
        for name, value in zip(self.__slots__, fields):
            setattr(self, name, value)


def vring_size(num: int, align: int = VIRTIO_PCI_VRING_ALIGN) -> int:
    """Bytes of a legacy split ring as SLOF sizes it (virtio_vring_size)."""
    return _align(16 * num + 4 + 2 * num, align) + _align(4 + 8 * num, align)


def vring_addrs(base: int, num: int, align: int = VIRTIO_PCI_VRING_ALIGN) -> tuple[int, int, int]:
    """(desc, avail, used) of a legacy ring at base: the used ring starts at
    the first aligned address after avail.ring[num] (QEMU
    virtio_queue_update_rings; SLOF's VQ_ALIGN)."""
    avail = base + 16 * num
    used = _align(avail + 4 + 2 * num, align)
    return base, avail, used


def _align(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)
