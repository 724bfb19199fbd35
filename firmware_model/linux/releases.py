"""The guest kernels the kernel stage models, one row per release.

Each row is what that release's drivers/virtio/virtio_pci_*.c,
virtio_ring.c, drivers/block/virtio_blk.c and drivers/pci/msi.c do to a
legacy or modern virtio-blk, read from the source at the tag (v4.1; v6.1 as
Debian 12 builds it, linux-source-6.1, whose virtio and MSI code is v6.1's)
and, for 6.1, checked access by access against the real trace
(shared/reference/real-grub/grub-linux_regs.csv, stage "linux").
"""

import dataclasses

from sim.abi.virtio import (
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SCSI, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX,
    VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
)

VIRTIO_BLK_F_MQ = 12
VIRTIO_BLK_F_SECURE_ERASE = 16

# virtblk_probe's config reads, in order: (virtio_blk_config field, offset,
# size, the feature that gates it or None for an unconditional virtio_cread).
# virtio_cread_feature reads nothing when the feature was not negotiated.
SEG_MAX_READ = ("seg_max", 12, 4, VIRTIO_BLK_F_SEG_MAX)   # before find_vqs: "how many segments"
MQ_READ = ("num_queues", 34, 2, VIRTIO_BLK_F_MQ)    # init_vq, before find_vqs (QEMU offers MQ only with num-queues > 1)
_WCE = ("wce", 32, 1, VIRTIO_BLK_F_CONFIG_WCE)     # virtblk_update_cache_mode
_CAPACITY = ("capacity", 0, 8, None)
_SIZE_MAX = ("size_max", 8, 4, VIRTIO_BLK_F_SIZE_MAX)
_BLK_SIZE = ("blk_size", 20, 4, VIRTIO_BLK_F_BLK_SIZE)
_TOPOLOGY = (("physical_block_exp", 24, 1, VIRTIO_BLK_F_TOPOLOGY), ("alignment_offset", 25, 1, VIRTIO_BLK_F_TOPOLOGY),
             ("min_io_size", 26, 2, VIRTIO_BLK_F_TOPOLOGY), ("opt_io_size", 28, 4, VIRTIO_BLK_F_TOPOLOGY))
_DISCARD = (("discard_sector_alignment", 44, 4, VIRTIO_BLK_F_DISCARD), ("max_discard_sectors", 36, 4, VIRTIO_BLK_F_DISCARD),
            ("max_discard_seg", 40, 4, VIRTIO_BLK_F_DISCARD))
_WRITE_ZEROES = ("max_write_zeroes_sectors", 48, 4, VIRTIO_BLK_F_WRITE_ZEROES)


@dataclasses.dataclass(frozen=True)
class GuestKernel:
    """One guest kernel release as its virtio-blk stack behaves."""
    name: str
    big_endian: bool        # ppc64 (BE) or ppc64le: MSR[LE], ring and legacy-config byte order
    # The page-cache page the partition scan reads (read_dev_sector): 64 KiB
    # with CONFIG_PPC_64K_PAGES, which ppc64/ppc64le distro kernels set
    # (RHEL 7, Fedora, Ubuntu, Debian); measured for 6.1: one 128-sector read.
    page_size: int
    features_legacy: tuple  # virtio_blk's feature_table_legacy (or its only table)
    features_modern: tuple  # feature_table
    ring_features: tuple    # vring_transport_features keeps these (plus VERSION_1)
    probe_reads: tuple      # virtblk_probe's config reads after find_vqs, in order
    # The vp_legacy_* helpers (virtio_pci_legacy_dev.c, 2021): QUEUE_SEL
    # before every queue register; before them (v4.1) setup_vq selected once.
    queue_sel_every_access: bool
    # MSI-X bring-up: "4.1" (v4.1 msix_capability_init: clear ENABLE, set
    # up, then MASKALL|ENABLE; rtas_setup_msi_irqs reads each message back;
    # ics_rtas_startup unmasks and flushes) or "6.1" (Enable|MaskAll first,
    # vector-control reads, msi domain alloc, late msix_mask_all;
    # request_irq unmasks without a flush).
    msix_flavour: str
    # virtqueue_disable_cb writes avail->flags even with EVENT_IDX (before
    # "virtio_ring: shadow available ring flags & index", 2016; after it an
    # EVENT_IDX ring writes used_event = 0 instead).
    disable_cb_sets_flags: bool
    # virtblk_update_capacity's "[vda] N 512-byte logical blocks (...)" at
    # probe: 6.1 (measured, grub-linux_console.txt); the 4.x probe reads
    # capacity with set_capacity and prints only on a resize
    # (virtblk_config_changed_work, "new size: ").
    prints_capacity_at_probe: bool
    source: str


# The two rows.
LINUX_4_1 = GuestKernel(
    name="4.1", big_endian=True, page_size=0x10000,
    # v4.1 drivers/block/virtio_blk.c features[] (WCE is FLUSH's old name).
    features_legacy=(VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_RO,
                     VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_SCSI, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_TOPOLOGY,
                     VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_MQ),
    features_modern=(VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_RO,
                     VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_CONFIG_WCE,
                     VIRTIO_BLK_F_MQ),
    ring_features=(VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX),
    # v4.1 virtblk_probe: seg_max, init_vq (MQ), update_cache_mode (wce),
    # capacity, size_max, blk_size, the four topology fields; then add_disk.
    probe_reads=(_WCE, _CAPACITY, _SIZE_MAX, _BLK_SIZE) + _TOPOLOGY,
    queue_sel_every_access=False, msix_flavour="4.1", disable_cb_sets_flags=True,
    prints_capacity_at_probe=False,
    source="torvalds/linux v4.1: virtio_pci_legacy.c setup_vq, virtio_blk.c virtblk_probe, pci/msi.c "
           "msix_capability_init, platforms/pseries/msi.c rtas_setup_msi_irqs, sysdev/xics/ics-rtas.c "
           "ics_rtas_startup")

LINUX_6_1 = GuestKernel(
    name="6.1", big_endian=False, page_size=0x10000,
    # v6.1 virtio_blk.c features_legacy[] == features[] (no SCSI passthrough any more).
    features_legacy=(VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_RO,
                     VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_CONFIG_WCE,
                     VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_F_SECURE_ERASE),
    features_modern=(VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_RO,
                     VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_CONFIG_WCE,
                     VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_F_SECURE_ERASE),
    ring_features=(VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX),
    # v6.1 virtblk_probe: seg_max, init_vq, update_cache_mode, size_max,
    # blk_size, topology, discard (alignment first), write zeroes, then
    # virtblk_update_capacity; measured in this order.
    probe_reads=(_WCE, _SIZE_MAX, _BLK_SIZE) + _TOPOLOGY + _DISCARD + (_WRITE_ZEROES, _CAPACITY),
    queue_sel_every_access=True, msix_flavour="6.1", disable_cb_sets_flags=False,
    prints_capacity_at_probe=True,
    source="torvalds/linux v6.1: virtio_pci_legacy.c/_legacy_dev.c, virtio_pci_common.c vp_find_vqs_msix, "
           "virtio_blk.c virtblk_probe, pci/msi/msi.c msix_capability_init, pseries/msi.c")

GUEST_KERNELS = {k.name: k for k in (LINUX_4_1, LINUX_6_1)}

# The guest a scenario gets when it names none: the kernel of the stack's
# era. The SLOF stall is a 2015 story: QEMU 2.2-2.4 on host kernels up to
# 4.1 ran big-endian 4.x guests (RHEL 7.1, Ubuntu 15.04 ppc64). A stack
# with QEMU or the host kernel older than the first releases after that
# (QEMU 2.5, December 2015; Linux 4.2, August 2015) is that era's; any
# newer stack is the little-endian distro era, whose guest today is 6.1
# (Debian 12, the real-grub reference).
ERA_2015_BEFORE = {"qemu": (2, 5), "host_kernel": (4, 2)}
ERA_GUEST = {"2015": "4.1", "today": "6.1"}


def default_guest(qemu_version: tuple[int, int], host_kernel: tuple[int, int]) -> str:
    """ERA_GUEST for the era ERA_2015_BEFORE puts the stack in."""
    old = qemu_version < ERA_2015_BEFORE["qemu"] or host_kernel < ERA_2015_BEFORE["host_kernel"]
    return ERA_GUEST["2015" if old else "today"]


def driver_features(kernel: GuestKernel, modern: bool) -> int:
    """The feature bits the driver accepts: its table, the ring features,
    VERSION_1 on the modern transport (virtio_dev_probe + vring_transport_features)."""
    bits = kernel.features_modern + (VIRTIO_F_VERSION_1,) if modern else kernel.features_legacy
    return sum(1 << b for b in bits + kernel.ring_features)

