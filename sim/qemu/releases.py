"""QEMU releases as data: what changed, in which release, by which commit.

Fields (what the model reads):
  enable_logical_ci  spapr calls KVM_ENABLE_CAP(PPC_ENABLE_HCALL) for H_LOGICAL_CI_*
  dataplane_start    how virtio-blk's dataplane starts: "main loop" (handle_output,
                     first reached by the main-loop handler of the host notifier
                     virtio-pci creates signalled at DRIVER_OK) or "start_ioeventfd"
                     (the device's start_ioeventfd hook, at DRIVER_OK)
  userspace_kick     what virtio_queue_notify does with a kick that reached QEMU:
                     "handle_output" (the dataplane drops it), "iothread" (forwarded
                     to the host notifier of a queue an AioContext handles,
                     handle_aio_output), "host notifier" (any assigned notifier)
  emulate_ioeventfd  memory_region_dispatch_write_eventfds exists (a no-op under KVM)
  modern             virtio 1.0 (disable-modern=off) can be asked for
  modern_default     disable-modern defaults to off (a transitional device)
  page_per_vq        the modern notify area has one page per queue
  any_length_notify  the modern notify ioeventfd uses length 0 when KVM offers it
  phb_placement      spapr_phb_placement (2.8 windows) instead of the 2.1 fixed layout
  blk_queue_size     virtio-blk's queue-size default
  blk_discard_wz     virtio-blk offers DISCARD/WRITE_ZEROES (config grows to 60 bytes)
  ring_reset         VIRTIO_F_RING_RESET ("queue_reset") is offered
  ring_error         what a guest error in the ring or a virtio-blk header does:
                     "exit" (error_report + exit(1): the QEMU process ends) or
                     "virtio_error" (the device is broken, NEEDS_RESET if VERSION_1)
  dataplane_pop      the virtio-blk dataplane's pop: "vring" (hw/virtio/dataplane/
                     vring.c vring_pop: errors set vring->broken, own messages) or
                     "virtqueue" (virtio.c's virtqueue_pop, as without a dataplane)
  slof               the SLOF tag pc-bios/slof.bin was built from (roms/SLOF)

source: "tag" = read at the release tag (or a tree of that release);
"reference" = ../shared/reference (qemu.md, real-slof-2015/README.md);
"inferred" = commit date against release dates, not checked at the tag.
"""

from sim.releases import Row, Table

RELEASES = tuple([(2, m) for m in range(1, 13)] + [(3, 0), (3, 1)] + [(4, m) for m in range(3)]
                 + [(5, m) for m in range(3)] + [(6, m) for m in range(3)] + [(7, m) for m in range(3)]
                 + [(8, m) for m in range(3)] + [(9, m) for m in range(3)] + [(10, 0), (10, 1)])

_ROWS = [
    Row((2, 1), "enable_logical_ci", False, "", "reference"),
    Row((2, 4), "enable_logical_ci", True,
        "026bfd89cb89 pseries: Enable in-kernel H_LOGICAL_CI_{LOAD, STORE} implementations", "reference"),
    Row((2, 1), "dataplane_start", "main loop",
        "virtio_pci_set_host_notifier_internal: event_notifier_init(notifier, 1) + main-loop handler; "
        "virtio_blk_handle_output starts the dataplane", "reference (qemu.md 4-5, v2.1-v2.4 blobs)"),
    Row((2, 8), "dataplane_start", "start_ioeventfd",
        "ff4c07df67f0 virtio: add start_ioeventfd and stop_ioeventfd (P. Bonzini; virtio-blk overrides them "
        "in the same series, commit not identified)", "inferred (git.synapseos.ru mirror pages)"),
    Row((2, 1), "userspace_kick", "handle_output",
        "virtio_queue_notify -> virtio_queue_notify_vq -> handle_output, which returns after "
        "virtio_blk_data_plane_start: the kick is dropped", "reference (v2.4.0-v2.7.0 read at the tags)"),
    Row((2, 9), "userspace_kick", "iothread",
        "virtio_queue_notify: if (vq->handle_aio_output) event_notifier_set(&vq->host_notifier) "
        "(commit not identified; also backported to the 2.8.1 stable release, which the table, "
        "keyed by minor release, does not model: 2.8 here is 2.8.0)",
        "tag (M4cr0v/qemu-2.9.0 and 0x88888888/qemu-2.8.1 have it; YellyYU/qemu-2.8.0 and "
        "xionghaiquan/qemu-2.8.0, VERSION 2.8.0, call virtio_queue_notify_vq, and "
        "virtio_blk_handle_output returns after virtio_device_start_ioeventfd: dropped)"),
    Row((4, 2), "userspace_kick", "host notifier",
        "virtio: notify virtqueue via host notifier when available (S. Hajnoczi, "
        "20191105140946.165584-1-stefanha@redhat.com): vq->host_notifier_enabled", "reference (qemu.md 6)"),
    Row((2, 1), "emulate_ioeventfd", False, "", "reference"),
    Row((2, 5), "emulate_ioeventfd", True, "8c56c1a592b5 memory: emulate ioeventfd", "reference (qemu.md 6)"),
    Row((2, 1), "modern", False, "", "reference"),
    Row((2, 4), "modern", True, "virtio-pci: virtio 1.0 support, disable-modern on by default (2.4 series)",
        "reference (qemu.md 3)"),
    Row((2, 1), "modern_default", False, "", "reference"),
    Row((2, 7), "modern_default", True, "virtio-pci: disable-modern defaults to off (2.7; commit not identified)",
        "reference (qemu.md 3: 'c. 2.7', unverified)"),
    Row((2, 1), "page_per_vq", True, "", "model (HW_COMPAT_2_7 keeps page-per-vq on)"),
    Row((2, 8), "page_per_vq", False, "virtio-pci: page-per-vq off for 2.8 machine types (HW_COMPAT_2_7)",
        "model (commit not identified)"),
    Row((2, 1), "any_length_notify", False, "", "model"),
    Row((2, 5), "any_length_notify", True,
        "virtio-pci: modern notify ioeventfd of length 0 if kvm_ioeventfd_any_length_enabled()",
        "model (commit not identified)"),
    Row((2, 1), "phb_placement", False, "", "reference (qemu.md 4: 2.1-2.7 fixed windows)"),
    Row((2, 8), "phb_placement", True, "spapr: spapr_phb_placement (pseries-2.8 machine types)",
        "reference (qemu.md 4; commit not identified)"),
    Row((2, 1), "blk_queue_size", 128, "s->vq = virtio_add_queue(vdev, 128, ...)", "reference (qemu.md 5)"),
    Row((5, 0), "blk_queue_size", 256, "virtio-blk: queue-size default 256 (5.0; commit not identified)",
        "model"),
    Row((2, 1), "blk_discard_wz", False, "", "model"),
    Row((4, 0), "blk_discard_wz", True, "virtio-blk: add DISCARD and WRITE_ZEROES features (4.0)",
        "model (real QEMU 7.2 offers them: real-slof/tr-legacy-*_regs.csv)"),
    Row((2, 1), "ring_error", "exit",
        "virtqueue_num_heads/virtqueue_get_head/virtqueue_pop, virtio_blk_handle_request: error_report(); exit(1)",
        "tag (lluwm/qemu-2.5.0 tree, VERSION 2.5.0: hw/virtio/virtio.c, hw/block/virtio-blk.c)"),
    Row((2, 8), "ring_error", "virtio_error",
        "virtio: introduce virtio_error, then the virtio.c/virtio-blk exit(1)s become virtio_error "
        "(2.8 series; commit not identified)",
        "tag (YellyYU/qemu-2.8.0 tree, VERSION 2.8.0: virtio_error in virtqueue_num_heads, "
        "virtqueue_get_head, virtio_blk_handle_request; 2.6/2.7 not read)"),
    Row((2, 1), "dataplane_pop", "vring",
        "hw/virtio/dataplane/vring.c vring_pop, get_desc, get_indirect (vring->broken)",
        "tag (qemu/qemu hw/virtio/dataplane/vring.c 0fdf9f756fff, a 2.4-era tree; the lluwm/qemu-2.5.0 "
        "tree's dataplane calls vring_pop)"),
    Row((2, 6), "dataplane_pop", "virtqueue",
        "virtio-blk: do not use vring in dataplane (P. Bonzini, 2.6 series; commit not identified)",
        "inferred (2.5.0 tree: vring_pop; 2.8.0 tree: virtio_blk_handle_vq, no vring.c; 2.6 not read)"),
    Row((2, 1), "ring_reset", False, "", "model"),
    Row((7, 2), "ring_reset", True, "virtio: queue_reset in DEFINE_VIRTIO_COMMON_FEATURES (7.2)",
        "tag (real QEMU 7.2: device_feature 0x101 in real-slof/tr-modern-*_regs.csv)"),
]

# The SLOF each release shipped (roms/SLOF, pc-bios/README "built from git tag ...").
_SLOF = [
    ((2, 1), "20140630", "inferred"), ((2, 2), "20141202", "inferred"),
    ((2, 3), "20150313", "tag (real-slof-2015/README.md: v2.3.0 roms/SLOF c89b0df661c0, 0d2f830255)"),
    ((2, 4), "20150429", "tag (real-slof-2015/README.md: v2.4.0 roms/SLOF 7d766a3ac9b2, 780184aae6)"),
    ((2, 5), "20151103", "tag (real-slof-2015/README.md: v2.5.0 roms/SLOF b4c93802a5b2)"),
    ((2, 6), "20160223", "inferred"), ((2, 8), "20161019", "inferred"), ((2, 9), "20170303", "inferred"),
    ((2, 10), "20170724", "inferred"), ((2, 11), "20171214", "inferred"), ((3, 0), "20180702", "inferred"),
    ((4, 0), "20190114", "inferred"), ((4, 1), "20190703", "inferred (pc-bios/README diff 20190114 -> 20190703)"),
    ((4, 2), "20191022", "inferred"), ((5, 0), "20200327", "inferred (pc-bios/README diff 20200317 -> 20200327)"),
    ((5, 1), "20200717", "inferred"), ((6, 0), "20210217", "inferred"), ((7, 0), "20220110", "inferred"),
    ((7, 1), "20220719", "tag for 7.2 (real-slof/: QEMU 7.2 ships 20220719); 7.1 inferred"),
    ((8, 2), "20230918", "inferred"), ((9, 2), "20241106", "inferred"),
]
_ROWS += [Row(v, "slof", tag, f"pseries: Update SLOF firmware image to qemu-slof-{tag}", src) for v, tag, src in _SLOF]

TABLE = Table("QEMU", RELEASES, tuple(_ROWS))


def parse(text: str) -> tuple[int, int]:
    return TABLE.parse(text)


def behaviour(version: tuple[int, int]):
    return TABLE.behaviour(version)


def shipped_slof(qemu_version: tuple[int, int]) -> str:
    """The SLOF tag date QEMU qemu_version shipped, e.g. "20150429" for 2.4."""
    return TABLE.behaviour(qemu_version).slof
