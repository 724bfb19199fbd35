"""SLOF releases as data: one row per behaviour change the model follows.

Each row is the first qemu-slof-* tag (aik/SLOF) that has the change, the
commit that made it, and the whole behaviour from that tag on. A scenario
names a tag; `release(tag)` gives the newest row not newer than it. The
code reads the row's fields and never compares tags itself.

Measured: 20150429 (../shared/reference/real-slof-2015, QEMU 2.4.0's
image) and 20220719 (../shared/reference/real-slof). The other rows come
from the source at their tag, cited per field.
"""

import dataclasses

# The copyright line and the failure screen's help lines changed together
# in 2f1e6a7 (slof/fs/banner.fs, board-qemu/slof/copyright-oss.fs).
HELP_2011 = ("  Type 'boot'  and press return  to  continue  booting  the system.\r\n"
             "  Type 'reset-all'  and  press  return  to   reboot   the   system.\r\n")
HELP_2017 = ("  Type 'boot' and press return to continue booting the system.\r\n"
             "  Type 'reset-all' and press return to reboot the system.\r\n")
# slof/fs/slof-logo.fs as SLOF 20150429 printed it after E3407
# (real-slof-2015/console/console-e2015-eio-io.txt); removed by 2f1e6a7.
LOGO = ("        ..`. ..     .......  ..           ......      .......\r\n"
        "    ..`...`''.`'. .''``````..''.       .`''```''`.  `''``````\r\n"
        "       .`` .:' ': `''.....  .''.       ''`     .''..''.......\r\n"
        "         ``.':.';. ``````''`.''.      .''.      ''``''`````'`\r\n"
        "         ``.':':`   .....`''.`'`...... `'`.....`''.`'`       \r\n"
        "        .`.`'``   .'`'`````.  ``''''''  ``''`'''`. `'`       \r\n")


@dataclasses.dataclass(frozen=True)
class SlofRelease:
    tag: str                  # "20150429" for qemu-slof-20150429
    commit: str               # the commit that made this row's change
    title: str                # its title
    # Banner (board-qemu/slof/OF.fs): the image QEMU shipped, when known;
    # None prints the model's placeholders.
    build_date: str | None
    fw_version: str | None
    copyright_years: str      # "2004, 2011" until 2f1e6a7, then "2004, 2017"
    help_lines: str           # slof/fs/banner.fs `banner`
    logo: bool                # .slof-logo before the help lines (until 2f1e6a7)
    # `boot` printed .banner again once (go-and-catch) and load-next were
    # done (boot.fs), so a failed go shows the banner twice; until 06e1e07.
    banner_after_go: bool
    # lib/libc vsnprintf printed hex digits upper case ("%lx" -> C000...)
    # until da3bd7a "libc: Port vsnprintf back from skiboot".
    hex_upper: bool
    # PCI: be9b2fa "pci: Use QEMU created PCI device nodes" (20150429).
    # Without it SLOF scans bus 0 itself (slof/fs/pci-scan.fs).
    reads_qemu_pci_nodes: bool
    # Virtio transport: e3a2816 "virtio: make all virtio apis 1.0 aware"
    # (20160223) added the capability walk and the modern interface.
    modern_virtio: bool
    # bcdf942 (20160223): the queue is set up by virtio_queue_init_vq at
    # open; before, pci-device_1af4_1001.fs did it in Forth at probe.
    queue_setup_at_open: bool
    # b5a692d (20160223): virtioblk_init resets the device first.
    reset_at_init: bool
    # Until 300384f (20191206) virtio_get_vring_desc/avail/used re-read the
    # queue registers on every call: 14 extra accesses per request.
    vring_from_registers: bool
    # 7477a17 "virtio: Enable IOMMU" (20191206): accept VIRTIO_F_IOMMU_PLATFORM when offered.
    iommu_platform: bool
    # 2645539 (20170303): virtioblk_read became virtioblk_transfer.
    transfer_fn: str          # "virtioblk_read" | "virtioblk_transfer"
    # 3a00f80 (20150813) de-aliases each boot-device entry before do-load.
    boot_line_full_path: bool
    # 0097e61 (20150813), slof/fs/packages/disk-label.fs:
    no_dos_label_message: bool   # try-dos-partition prints "No DOS disk-label found."
    gpt_checks_mbr_magic: bool   # no-gpt? also wants aa55
    gpt_header_checked: bool     # get-gpt-partition: 64-bit entry LBA, size cap, "EFI PART"
    gpt_seek_per_entry_bug: bool  # seek-pos += gpt-part-size * i (before the fix)
    chrp_tries_gpt_fat: bool     # try-partitions also tries try-gpt-dos-partition

    def failed_line(self, rtype: int, status: int) -> str:
        """The line a failed request prints (virtio-blk.c)."""
        if self.transfer_fn == "virtioblk_read":
            return f"virtioblk_read failed! status = {status}\r\n"
        return f"virtioblk_transfer failed! type={rtype}, status = {status}\r\n"


def _row(base: SlofRelease | None, **changes) -> SlofRelease:
    return dataclasses.replace(base, **changes) if base else SlofRelease(**changes)


# qemu-slof-20150313 (c89b0df): QEMU 2.3.0's SLOF (roms/SLOF at v2.3.0).
# Source-modelled: up to 20150429 only be9b2fa, 893ebad (bridge limits),
# cb4e9e9 (64-bit translation), d5c4b47 (USB) and non-disk fixes changed.
# On QEMU 2.3, which creates no PCI device nodes, it enumerates bus 0
# itself and then boots as 20150429 does (virtio, disk-label and boot code
# identical). On QEMU 7.2 the real one probes the disk (3 accesses) but
# never opens it: E3404 with no request (real-slof-2015 s2015-legacy);
# sim/scenario.py refuses that pairing.
S20150313 = _row(
    None, tag="20150313", commit="c89b0df661c0a6bfa9ff0ed4a371f631f5ee38b0",
    title="qemu-slof-20150313 (QEMU 2.3.0's roms/SLOF)",
    build_date="Mar 13 2015 22:37:28", fw_version="git-c89b0df661c0a6bf",   # real-slof-2015 README
    copyright_years="2004, 2011", help_lines=HELP_2011, logo=True, banner_after_go=True, hex_upper=True,
    reads_qemu_pci_nodes=False, modern_virtio=False, queue_setup_at_open=False, reset_at_init=False,
    vring_from_registers=True, iommu_platform=False, transfer_fn="virtioblk_read", boot_line_full_path=False,
    no_dos_label_message=True, gpt_checks_mbr_magic=False, gpt_header_checked=False,
    gpt_seek_per_entry_bug=True, chrp_tries_gpt_fat=False)
# QEMU 2.4.0's SLOF; measured (real-slof-2015).
S20150429 = _row(
    S20150313, tag="20150429", commit="be9b2fa44c73201518aec2431137b4b2d4924945",
    title="pci: Use QEMU created PCI device nodes",
    build_date="May  7 2015 17:07:10", fw_version="git-7d766a3ac9b2474f", reads_qemu_pci_nodes=True)
S20150813 = _row(
    S20150429, tag="20150813", commit="0097e61aa565802cb2add2ee7ba9b5921dfb31e4",
    title="disk-label: add support for booting from GPT FAT partition "
          "(+ 3a00f80 boot: bootpath should be complete device path)",
    build_date=None, fw_version=None, boot_line_full_path=True, no_dos_label_message=False,
    gpt_checks_mbr_magic=True, gpt_header_checked=True, gpt_seek_per_entry_bug=False,
    chrp_tries_gpt_fat=True)
S20160223 = _row(
    S20150813, tag="20160223", commit="e3a281624b47c98dacd63572ed7ce0ed8dc61391",
    title="virtio: make all virtio apis 1.0 aware (+ bcdf942 queue init at open, b5a692d device reset, "
          "da3bd7a libc: Port vsnprintf back from skiboot)",
    modern_virtio=True, queue_setup_at_open=True, reset_at_init=True, hex_upper=False)
S20170303 = _row(
    S20160223, tag="20170303", commit="264553932ba3cee4b7472838daaecfaaa61c91da",
    title="virtio: Implement block write support", transfer_fn="virtioblk_transfer")
S20170724 = _row(
    S20170303, tag="20170724", commit="2f1e6a73f2090bcd87eb4185763c744a290c13ad",
    title="logo: Update the logo (+ 06e1e07 Rework the printing of the banner during boot)",
    copyright_years="2004, 2017", help_lines=HELP_2017, logo=False, banner_after_go=False)
S20191206 = _row(
    S20170724, tag="20191206", commit="300384f3dc68588a051f5737aee3b5eab4dd19e4",
    title="virtio: Store queue descriptors in virtio_device (+ 7477a17 virtio: Enable IOMMU)",
    vring_from_registers=False, iommu_platform=True)
# QEMU 7.1+'s SLOF; measured (real-slof). No modelled behaviour changed
# after 20191206; the row names the measured release.
S20220719 = _row(
    S20191206, tag="20220719", commit="6b6c16b4b40763507cf1f518096f3c3883c5cf2d",
    title="qemu-slof-20220719 (measured in real-slof)")

RELEASES = (S20150313, S20150429, S20150813, S20160223, S20170303, S20170724, S20191206, S20220719)


# Every qemu-slof-* tag of aik/SLOF the table covers (`git tag`). From
# 20140630 to 20150313 the modelled files changed only by b931c7b (PCI scan:
# header types 0 and 1 only), 112cdf9 (64-bit BAR ranges) and 750aec6
# (virtio_vring_size: the same sizes for 128 and 256 entries), so the
# first row holds for them; none after 20220719 changed a modelled behaviour.
TAGS = ("20140630", "20140722", "20140827", "20140905", "20141017", "20141029", "20141125", "20141202",
        "20150313", "20150317", "20150429", "20150601", "20150716", "20150813", "20151103", "20160223",
        "20161019", "20170303", "20170724", "20171214", "20171412", "20180621", "20180702", "20190114",
        "20190703", "20190719", "20190827", "20190911", "20191022", "20191206", "20191209", "20191217",
        "20200217", "20200221", "20200312", "20200317", "20200327", "20200513", "20200717", "20210217",
        "20210711", "20211112", "20220110", "20220719", "20230918", "20231121", "20241106")


class UnknownRelease(ValueError):
    """Not a qemu-slof tag the table covers."""


def release(tag: str) -> SlofRelease:
    """The newest modelled row not newer than `tag` ("20150429" or
    "qemu-slof-20150429")."""
    key = tag.removeprefix("qemu-slof-")
    if key not in TAGS:
        raise UnknownRelease(f"expected a qemu-slof tag from {TAGS[0]} on; modelled rows: "
                             f"{', '.join(r.tag for r in RELEASES)}; got {tag!r}")
    return ([r for r in RELEASES if r.tag <= key] or [RELEASES[0]])[-1]
