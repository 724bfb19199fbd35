"""The disk labels SLOF handles, read for read (slof/fs/packages/disk-label.fs).

Every expected request list below is derived from SLOF's Forth, not from
the model: `no-mbr?` / `no-gpt?` read sector 0 each time they run,
`find-dos-partition` runs `no-mbr?` again for every partition tried, the
CHRP try opens partition 1 and probes it, every GPT entry is its own read,
and the deblocker moves at most 64 sectors per request. The lists are
SLOF 20220719's unless a test says otherwise (the 2015 disk-label:
tests/test_slof_releases.py).
"""

import json
import os
import shutil
import subprocess

import pytest
import trio

from firmware_model.slof.deblocker import Deblocker
from sim import machine, mkdisk, report
from sim.abi import gpt as G
from sim.abi import mbr as M
from sim.cli import main
from sim.scenario import load
from tests.conftest import SCENARIOS

ISO = [(64, 4)]                       # has-iso9660-filesystem: 0x800 bytes at byte 0x8000


def _chunks(start: int, sectors: int) -> list[tuple[int, int]]:
    """The deblocker's whole-block runs: 64 sectors (max-transfer 0x8000), the last one shorter."""
    return [(start + k, min(64, sectors - k)) for k in range(0, sectors, 64)]


def _gpt_entries(n: int = 128, lba: int = 2) -> list[tuple[int, int]]:
    """One 128-byte read per entry: four per sector."""
    return [(lba + i * G.ENTRY_SIZE // 512, 1) for i in range(n)]


SCENARIO = """
[kernel]
version = "4.1"
[qemu]
version = "2.4"
[device]
iothread = true
[disk]
image = "{image}"
{disk}
[firmware]
max_prep_partition_blocks = {cap}
slof = "20220719"
"""


def _boot(scenario_file, disk: str = "", image: str = "mkdisk", cap: int = 65536):
    return machine.run(load(scenario_file(SCENARIO.format(image=image, disk=disk, cap=cap))))


def _image(tmp_path, img: bytes) -> str:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(img))
    return str(path)


def _requests(r) -> list[tuple[int, int]]:
    reqs = report.block_requests(r.trace)
    assert all(q["type"] == "read" and q["completed"] for q in reqs)
    return [(q["sector"], q["count"]) for q in reqs]


def _assert_failed_over(r):
    """E3404 on the disk, then cdrom and net (E3405), then E3407: outcome failed."""
    s = report.summary(r)
    assert s["outcome"] == "failed" and s["timeouts"] == 0
    text = r.console.text()
    order = [text.index(m) for m in ("E3404: Not a bootable device!", "from: cdrom ...", "from: net ...",
                                     "E3407: Load failed")]
    assert order == sorted(order)
    assert text.count("E3405: No such device") == 2
    assert "Successfully loaded" not in text


# --- MBR ------------------------------------------------------------------------

MBR_CHRP_PROBE = [(0, 1)] * 3 + [(2048, 1), (2050, 1), (2112, 4)]   # try-dos-partition, try-files in part 1


def test_mbr_boot_reads_sector0_three_times_then_the_whole_partition(scenario_file):
    r = _boot(scenario_file)
    assert _requests(r) == ISO + [(0, 1)] * 3 + _chunks(2048, 2048)
    assert report.outcome(r) == "booted"


def test_mbr_not_active_fails_over_after_slofs_reads():
    r = machine.run(load(os.path.join(SCENARIOS, "mbr-not-active.toml")))
    # DOS: no-mbr?, count-dos-logical-partitions, find-dos-partition 1..4 (each re-reads sector 0);
    # CHRP: open "1,\ppc\bootinfo.txt" probes partition 1 (no FAT/ext2/ISO9660); GPT: no-gpt?
    assert _requests(r) == ISO + [(0, 1)] * 6 + MBR_CHRP_PROBE + [(0, 1)]
    _assert_failed_over(r)


@pytest.mark.parametrize("kwargs", [dict(part_type=0x83), dict(part_type=0x83, active=False)])
def test_mbr_wrong_type_is_not_bootable_either(scenario_file, tmp_path, kwargs):
    r = _boot(scenario_file, image=_image(tmp_path, mkdisk.build_disk(**kwargs)))
    assert _requests(r) == ISO + [(0, 1)] * 6 + MBR_CHRP_PROBE + [(0, 1)]
    _assert_failed_over(r)


def test_max_prep_partition_blocks_caps_the_read_and_the_last_request_is_short(scenario_file):
    r = _boot(scenario_file, cap=100)
    assert _requests(r)[4:] == [(2048, 64), (2112, 36)]
    assert report.outcome(r) == "booted"        # the ELF fits in the first 100 sectors


def test_partition_not_a_multiple_of_64_ends_with_a_short_request(scenario_file):
    r = _boot(scenario_file, "part_sectors = 1000")
    assert _requests(r)[4:] == _chunks(2048, 1000) and _requests(r)[-1] == (2048 + 960, 40)


def test_default_cap_is_65536_blocks(scenario_file):
    r = _boot(scenario_file, "size_mib = 40\npart_sectors = 70000")
    prep = _requests(r)[4:]
    assert prep == _chunks(2048, 65536) and len(prep) == 1024
    assert report.summary(r)["bytes_loaded"] == 2048 + 3 * 512 + 65536 * 512


def _ebr(disk_id: int, first: dict, nxt: dict | None) -> bytes:
    empty = dict(boot_indicator=0, chs_start=bytes(3), type=0, chs_end=bytes(3), lba_start=0, sectors=0)
    return M.mbr.build(dict(bootcode=bytes(440), disk_id=disk_id, reserved=bytes(2),
                            partitions=[first, nxt or empty, empty, empty], signature=M.MBR_SIGNATURE))


def _entry(ptype: int, start: int, sectors: int, active: bool = False) -> dict:
    return dict(boot_indicator=0x80 if active else 0, chs_start=b"\xfe\xff\xff", type=ptype,
                chs_end=b"\xfe\xff\xff", lba_start=start, sectors=sectors)


def test_prep_in_a_logical_partition_walks_the_ebr_chain_each_time(scenario_file, tmp_path):
    """Extended partition at 100; EBR 100 holds a Linux partition (101), EBR 300
    (100 + 200, relative to the first EBR) holds the active PReP (304)."""
    img = mkdisk.build_disk(part_start=304, part_sectors=100)
    img[0:512] = _ebr(1, _entry(0x05, 100, 20000), None)
    img[100 * 512:101 * 512] = _ebr(0, _entry(0x83, 1, 50), _entry(0x05, 200, 1000))
    img[300 * 512:301 * 512] = _ebr(0, _entry(0x41, 4, 100, active=True), None)
    r = _boot(scenario_file, image=_image(tmp_path, img))
    assert _requests(r) == ISO + [
        (0, 1),                                   # no-mbr?
        (0, 1), (100, 1), (300, 1),               # count-dos-logical-partitions: 2 logical
        (0, 1), (0, 1), (0, 1), (0, 1),           # find-dos-partition 1..4
        (0, 1), (100, 1),                         # 5: the first logical (0x83)
        (0, 1), (100, 1), (300, 1),               # 6: the second: PReP, active
    ] + _chunks(304, 100)
    assert report.outcome(r) == "booted"


def test_active_prep_of_zero_sectors_falls_through_to_chrp_and_gpt(scenario_file, tmp_path):
    img = mkdisk.build_disk()
    img[0:512] = _ebr(0x5EA5C0DE, _entry(0x41, 2048, 0, active=True), None)
    r = _boot(scenario_file, image=_image(tmp_path, img))
    # find-dos-partition 1 hits: a zero-length read issues no request, and size 0 goes on to
    # CHRP and GPT. load-from-dos-boot-partition has already set part-offset (:369), so
    # no-gpt?'s `0 read-sector` reads the partition's first sector, not the disk's.
    assert _requests(r) == ISO + [(0, 1)] * 3 + MBR_CHRP_PROBE + [(2048, 1)]
    _assert_failed_over(r)


# --- GPT ------------------------------------------------------------------------

def test_gpt_boot_scans_for_the_prep_guid(scenario_file):
    r = _boot(scenario_file, "gpt = true")
    assert _requests(r) == ISO + [
        (0, 1),                                   # DOS: no-mbr? sees the protective 0xEE entry
        (0, 1), (0, 1), (1, 1),                   # CHRP open: try-dos-partition, no-gpt?, header
    ] + _gpt_entries() + [                        # ... no basic-data/Linux entry in 128
        (0, 1), (1, 1), (2, 1),                   # GPT: no-gpt?, header, entry 1 = PReP
    ] + _chunks(2048, 2048)
    assert report.outcome(r) == "booted"
    assert "Successfully loaded" in r.console.text() and "KERNEL-ENTRY-OK" in r.console.text()


def test_gpt_prep_partition_is_not_capped(scenario_file):
    r = _boot(scenario_file, "gpt = true\nsize_mib = 40\npart_sectors = 70000")
    prep = _requests(r)[1 + 1 + 3 + 128 + 3:]
    assert prep == _chunks(2048, 70000) and prep[-1] == (2048 + 69952, 48)


def test_gpt_linux_partition_is_probed_by_chrp_then_not_bootable(scenario_file):
    disk = 'gpt = true\ngpt_type = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"'
    r = _boot(scenario_file, disk)
    assert _requests(r) == ISO + [(0, 1), (0, 1), (0, 1), (1, 1), (2, 1),
                                  (2048, 1),      # try-gpt-dos-partition: fat-bootblock? of the Linux entry
                                  (0, 1), (1, 1)] + _gpt_entries()
    _assert_failed_over(r)


def test_blank_disk(scenario_file, tmp_path):
    """All zeros (as real-slof's blank-disk run): no-mbr? for DOS, CHRP's
    try-dos-partition and try-gpt-dos-partition, then no-gpt? for GPT."""
    r = _boot(scenario_file, image=_image(tmp_path, bytes(1 << 20)))
    assert _requests(r) == ISO + [(0, 1)] * 4
    _assert_failed_over(r)


# --- the images -----------------------------------------------------------------

def test_gpt_image_layout_and_crcs():
    img = mkdisk.build_disk(gpt=True)
    n = len(img) // 512
    pmbr = M.mbr.parse(bytes(img[:512]))
    p0 = pmbr.partitions[0]
    assert (p0.type, p0.boot_indicator, p0.lba_start, p0.sectors) == (0xEE, 0, 1, n - 1)
    assert pmbr.signature == M.MBR_SIGNATURE
    for lba, other in ((1, n - 1), (n - 1, 1)):
        raw = bytes(img[lba * 512:lba * 512 + G.HEADER_SIZE])
        h = G.gpt_header.parse(raw)
        assert h.signature == b"EFI PART" and h.revision == 0x10000 and h.header_size == 92
        assert (h.current_lba, h.backup_lba) == (lba, other)
        assert h.header_crc32 == G.crc32(raw[:16] + bytes(4) + raw[20:])
        array = bytes(img[h.part_entry_lba * 512:h.part_entry_lba * 512 + h.num_part_entries * h.part_entry_size])
        assert h.part_array_crc32 == G.crc32(array)
        assert (h.first_usable_lba, h.last_usable_lba) == (34, n - 34)
        e = G.gpt_entry.parse(array[:128])
        assert (e.type_guid, e.first_lba, e.last_lba) == (G.PREP, 2048, 4095)
        assert array[128:] == bytes(len(array) - 128)
    assert G.PREP == bytes.fromhex("382D1A9E12C61643AA268B49521E5A8B")   # disk-label.fs uuid! order
    assert bytes(img[2048 * 512:2048 * 512 + 4]) == b"\x7fELF"


@pytest.mark.parametrize("kwargs, msg", [
    (dict(gpt=True, active=False), "boot flag"),
    (dict(gpt=True, part_type=0x83), "part_type"),
    (dict(gpt=True, part_start=33), "usable"),
    (dict(gpt=True, size_mib=1, part_start=34, part_sectors=2048 - 34 - 33 + 1), "usable"),
    (dict(gpt_type=str(G.PREP)), "gpt=True"),
    (dict(gpt=True, gpt_type="not-a-guid"), "not a GUID"),
    (dict(gpt=True, gpt_type=5), "not a GUID"),
])
def test_gpt_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        mkdisk.build_disk(**kwargs)


def test_cli_mkdisk_gpt_and_no_active(tmp_path):
    g, m = tmp_path / "g.img", tmp_path / "m.img"
    assert main(["mkdisk", str(g), "--gpt", "--part-start", "34", "--part-sectors", "100", "--size-mib", "1"]) == 0
    assert g.read_bytes() == bytes(mkdisk.build_disk(gpt=True, part_start=34, part_sectors=100, size_mib=1))
    assert main(["mkdisk", str(m), "--no-active", "--part-start", "63", "--part-sectors", "64"]) == 0
    p = M.mbr.parse(m.read_bytes()[:512]).partitions[0]
    assert (p.boot_indicator, p.type, p.lba_start, p.sectors) == (0, 0x41, 63, 64)
    assert main(["mkdisk", str(g), "--gpt", "--no-active"]) == 2


SFDISK = shutil.which("sfdisk")


@pytest.mark.skipif(SFDISK is None, reason="sfdisk is not on PATH")
@pytest.mark.parametrize("kwargs, label, ptype", [
    (dict(gpt=True), "gpt", "9E1A2D38-C612-4316-AA26-8B49521E5A8B"),
    (dict(gpt=True, size_mib=3, part_start=34, part_sectors=100), "gpt", "9E1A2D38-C612-4316-AA26-8B49521E5A8B"),
    (dict(active=False), "dos", "41"),
    (dict(), "dos", "41"),
])
def test_sfdisk_reads_the_images(tmp_path, kwargs, label, ptype):
    path = tmp_path / "d.img"
    path.write_bytes(mkdisk.build_disk(**kwargs))
    verify = subprocess.run([SFDISK, "--verify", str(path)], capture_output=True, text=True)
    assert verify.returncode == 0 and "No errors detected" in verify.stdout, verify.stdout + verify.stderr
    assert "corrupt" not in (verify.stdout + verify.stderr).lower()
    dump = subprocess.run([SFDISK, "--json", str(path)], capture_output=True, text=True, check=True)
    assert "corrupt" not in dump.stderr.lower()
    table = json.loads(dump.stdout)["partitiontable"]
    assert table["label"] == label
    (part,) = table["partitions"]
    assert (part["start"], part["size"], part["type"].upper()) == (
        kwargs.get("part_start", 2048), kwargs.get("part_sectors", 2048), ptype)
    if label == "dos":
        assert part.get("bootable", False) == kwargs.get("active", True)


@pytest.mark.skipif(SFDISK is None, reason="sfdisk is not on PATH")
def test_sfdisk_notices_a_bad_backup_header(tmp_path):
    """The check above has teeth: a wrong CRC in the backup header is reported."""
    img = mkdisk.build_disk(gpt=True)
    img[-512 + 16] ^= 0xFF
    path = tmp_path / "d.img"
    path.write_bytes(img)
    out = subprocess.run([SFDISK, "--verify", str(path)], capture_output=True, text=True)
    assert out.returncode != 0 or "corrupt" in (out.stdout + out.stderr).lower()


# --- the deblocker ------------------------------------------------------------------

class _Dev:
    """read-blocks that fail for the listed blocks (0 returned) and log each call."""

    def __init__(self, fail=()):
        from sim.ram import GuestRAM
        self.ram, self.block_size, self.fail, self.calls = GuestRAM(1 << 20), 512, set(fail), []

    async def transfer(self, dest, block, count):
        self.calls.append((block, count))
        if block in self.fail:
            return 0
        for i in range(count):
            self.ram.write(dest + 512 * i, bytes([block + i]) * 512)
        return count


def _read(dev, pos, length):
    return trio.run(Deblocker(dev, 0x80000).read, 0x1000, pos, length)


def test_deblocker_partial_blocks_are_read_once_and_not_checked():
    dev = _Dev(fail={2})
    assert _read(dev, 2 * 512 + 128, 128) == 128           # a GPT entry read on a failing block
    assert dev.calls == [(2, 1)]
    dev = _Dev()
    assert _read(dev, 100, 3 * 512) == 3 * 512             # head, 2 whole blocks, tail
    assert dev.calls == [(0, 1), (1, 2), (3, 1)]
    assert dev.ram.read(0x1000, 3 * 512) == b"\0" * 412 + b"\1" * 512 + b"\2" * 512 + b"\3" * 100


def test_deblocker_whole_runs_retry_five_times_then_return_0():
    dev = _Dev(fail={0})
    assert _read(dev, 0, 512) == 0
    assert dev.calls == [(0, 1)] * 5
    dev = _Dev()
    assert _read(dev, 0, 200 * 512) == 200 * 512
    assert dev.calls == _chunks(0, 200)
