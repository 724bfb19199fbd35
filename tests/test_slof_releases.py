"""SLOF releases: the table, the scenario knob, and SLOF 20150429 (QEMU
2.4.0's image) against the real one run on QEMU 7.2 (tests/data/real-slof-2015)."""

import csv
import os
import re

import pytest

from firmware_model.slof.releases import RELEASES, UnknownRelease, release
from sim import machine, report
from sim.scenario import ScenarioError, load
from tests.conftest import QEMU72, ROOT, SCENARIOS, real_slof_csv
from tests.test_reference import _meant

REAL_2015 = os.path.join(ROOT, "tests", "data", "real-slof-2015")


def _csv(name):
    with open(os.path.join(REAL_2015, name)) as f:
        return list(csv.DictReader(f))


def _boot(scenario_file, slof="20150429", iothread=False, image="mkdisk", extra=""):
    text = QEMU72.format(kernel="4.1", qemu_extra="", iothread=str(iothread).lower(),
                         ioeventfd=str(iothread).lower(), image=image) + f'[firmware]\nslof = "{slof}"\n' + extra
    return machine.run(load(scenario_file(text)))


def _requests(rows):
    return [{"type": r["type"], "sector": int(r["sector"]), "count": int(r["nsectors"])} for r in rows]


def _got_requests(r):
    return [{k: q[k] for k in ("type", "sector", "count")} for q in report.block_requests(r.trace)]


def _seen(r):
    """The accesses the device saw (with an ioeventfd the notifies never reach it)."""
    return [{k: e.fields[k] for k in ("bar", "region", "offset", "size", "rw", "value")}
            for e in report.firmware_trace(r.trace).named("virtio_pci_access")]


# The real console: QEMU's own timestamped lines, ANSI escapes and SLOF's
# checkpoint codes (C0000...) removed; the model prints neither.
_NOISE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[0-9A-Za-z])|C[0-9A-F]{4}\x08{0,5}")


def _real_console(name, folder=REAL_2015):
    with open(os.path.join(folder, name), encoding="latin-1") as f:
        lines = [ln for ln in f.read().split("\n") if not re.match(r"\d{4}-\d\d-\d\dT", ln)]
    lines = [_NOISE.sub("", ln) for ln in lines]
    return lines[:-1] if lines[-1] == "" else lines   # the newline before QEMU's own last line


def _model_console(r, upto=None):
    lines = r.console.text().split("\n")
    return lines[:lines.index(upto) + 1] if upto else lines


# --- the table -----------------------------------------------------------------

def test_release_lookup_picks_the_newest_row_not_newer():
    assert release("20150429").tag == "20150429"
    assert release("qemu-slof-20151103").tag == "20150813"     # nothing modelled changed in between
    assert release("20241106").tag == "20220719"
    assert release("20141202").tag == "20150313"               # QEMU 2.2's era: no modelled change since
    assert [r.tag for r in RELEASES] == sorted(r.tag for r in RELEASES)
    assert all(len(r.commit) == 40 for r in RELEASES)


@pytest.mark.parametrize("tag", ["20140304", "2015", "20150430", "latest"])
def test_unknown_slof_is_a_scenario_error_listing_the_rows(scenario_file, tag):
    with pytest.raises(UnknownRelease):
        release(tag)
    with pytest.raises(ScenarioError, match=r"\[firmware\] slof: .*modelled rows: 20150313, 20150429"):
        load(scenario_file(f'[firmware]\nslof = "{tag}"\n'))


def test_default_slof_is_the_one_the_qemu_shipped(scenario_file):
    for qemu, slof in (("2.3", "20150313"), ("2.4", "20150429"), ("2.5", "20151103"), ("7.2", "20220719")):
        assert load(scenario_file(f'[qemu]\nversion = "{qemu}"\n')).slof == slof


def test_20150313_on_a_qemu_that_creates_pci_nodes_is_refused(scenario_file):
    with pytest.raises(ScenarioError, match="20150313 scans PCI itself"):
        load(scenario_file('[qemu]\nversion = "7.2"\n[firmware]\nslof = "20150313"\n'))


# --- 20150429 equals the real one -------------------------------------------------

def test_20150429_register_accesses_equal_real_slof(scenario_file):
    """661 accesses: 3 at PCI probe, 10 at open, 18 per request."""
    r = _boot(scenario_file)
    assert report.register_accesses(r) == [_meant(row) for row in _csv("s2015b-legacy_regs.csv")]


def test_20150429_with_an_iothread_the_device_sees_what_real_qemu_saw(scenario_file):
    r = _boot(scenario_file, iothread=True)
    want = [dict(_meant(row), value=int(row["value"], 16)) for row in _csv("s2015b-legacy-io_regs.csv")]
    assert _seen(r) == want


@pytest.mark.parametrize("iothread,name", [(False, "s2015b-legacy"), (True, "s2015b-legacy-io")])
def test_20150429_block_requests_and_console_equal_real_slof(scenario_file, iothread, name):
    r = _boot(scenario_file, iothread=iothread)
    assert _got_requests(r) == _requests(_csv(f"{name}_requests.csv"))
    assert report.summary(r)["bytes_loaded"] == 1052160
    assert _model_console(r, "KERNEL-ENTRY-OK") == _real_console(f"console-{name}.txt")


def test_20150429_makes_18_accesses_per_request(scenario_file):
    """capacity lo/hi, blk_size, 7 x (QUEUE_SEL + NUM or PFN), QUEUE_NOTIFY."""
    acc = report.register_accesses(_boot(scenario_file))[13:]
    assert len(acc) == 36 * 18
    per = [(a["offset"], a["rw"]) for a in acc[:18]]
    assert per == [(20, "R"), (24, "R"), (40, "R")] + [
        x for reg in (12, 8, 8, 12, 8, 12, 12) for x in ((14, "W"), (reg, "R"))] + [(16, "W")]
    assert all([(a["offset"], a["rw"]) for a in acc[i:i + 18]] == per for i in range(0, len(acc), 18))


def test_20150429_pci_probe_sets_up_the_queue_without_a_reset(scenario_file):
    acc = report.register_accesses(_boot(scenario_file))
    assert [(a["offset"], a["rw"]) for a in acc[:3]] == [(14, "W"), (12, "R"), (8, "W")]
    assert acc[2]["value"] == 0x3FE04                       # 1 GiB: the ring at 0x3fe04000
    assert not [a for a in acc if a["offset"] == 18 and a["rw"] == "W" and a["value"] == 0]


# Every read failing (e2015-eio-io) and every read hanging (h2015b-all-noio):
# tests/test_faults.py, with the blkdebug faults the real runs used.


# --- 20220719 unchanged -------------------------------------------------------------

def test_20220719_is_unchanged(scenario_file):
    r = _boot(scenario_file, slof="20220719")
    assert report.register_accesses(r) == [_meant(row) for row in real_slof_csv("tr-legacy-noioev_regs.csv")]
    # the console line by line; the banner's build lines are Debian's build in the real one
    real = _real_console("console-tr-legacy-noioev.txt", os.path.join(ROOT, "tests", "data", "real-slof"))
    model = _model_console(r, "KERNEL-ENTRY-OK")
    assert [m for m, x in zip(model, real) if m != x] == [" Build Date = slofsim",
                                                          " FW Version = slofsim model of SLOF 20220719"]
    assert len(model) == len(real)


def test_20150313_on_its_own_qemu_scans_pci_and_boots_like_20150429():
    """QEMU 2.3 (no PCI device nodes of its own): SLOF 20150313 enumerates
    bus 0 itself; its virtio and disk-label code is 20150429's."""
    r = machine.run(load(os.path.join(SCENARIOS, "no-iothread-old-kernel.toml")))
    assert r.scenario.slof == "20150313"
    text = r.console.text()
    assert " Adapters on 0800000020000000\n" in text and "from: disk ...   Successfully loaded" in text
    assert "Copyright (c) 2004, 2011" in text


# --- the 2015 disk-label (20150429 slof/fs/packages/disk-label.fs) ---------------------

ISO = [(64, 4)]


def _sectors(r):
    return [(q["sector"], q["count"]) for q in report.block_requests(r.trace)]


def test_2015_gpt_boot_tries_no_gpt_fat_and_says_no_dos_label():
    """gpt-boot (QEMU 2.4 -> 20150429): the CHRP open's try-dos-partition
    prints its message (:269) and try-partitions has no GPT step (:601-606);
    the GPT step reads the header, then entry 1 = PReP."""
    r = machine.run(load(os.path.join(SCENARIOS, "gpt-boot.toml")))
    assert r.scenario.slof == "20150429"
    assert _sectors(r) == ISO + [(0, 1), (0, 1), (0, 1), (1, 1), (2, 1)] + [
        (2048 + k, 64) for k in range(0, 2048, 64)]
    assert "No DOS disk-label found.\n" in r.console.text() and report.outcome(r) == "booted"


def test_2015_gpt_scan_skips_entries(scenario_file, tmp_path):
    """`seek-pos gpt-part-size i * + to seek-pos` (20150429 :406): after
    entry i the position moves i entries on, so entries 1, 2, 4, 7, 11...
    are read and a PReP entry in slot 3 is never seen. 0097e61 fixed it."""
    from sim import mkdisk
    disk = mkdisk.build_disk(gpt=True)
    first = 2 * 512                                     # the entry array at LBA 2
    disk[first + 2 * 128:first + 3 * 128] = disk[first:first + 128]
    disk[first:first + 128] = bytes(128)
    path = tmp_path / "gpt3.img"
    path.write_bytes(bytes(disk))
    r = _boot(scenario_file, image=str(path))
    assert report.outcome(r) == "failed"
    old = _sectors(r)
    assert old[:len(ISO) + 4] == ISO + [(0, 1), (0, 1), (0, 1), (1, 1)]
    scan = old[len(ISO) + 4:]
    assert scan == [(2 + 128 * (i * (i - 1) // 2) // 512, 1) for i in range(1, 129)]
    new = _boot(scenario_file, slof="20220719", image=str(path))
    assert report.outcome(new) == "booted"


def test_2015_gpt_disk_equals_real_slof(scenario_file, tmp_path):
    """slofsim mkdisk --gpt booted by the real 20150429 (g2015b-gpt_*):
    697 accesses, 38 requests, and `No DOS disk-label found.` before
    `Successfully loaded`."""
    import hashlib
    from sim import mkdisk
    path = tmp_path / "gpt.img"
    path.write_bytes(bytes(mkdisk.build_disk(gpt=True)))
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("9ff9522ce8604b59")   # the measured image
    r = _boot(scenario_file, image=str(path))
    assert report.register_accesses(r) == [_meant(row) for row in _csv("g2015b-gpt_regs.csv")]
    assert _got_requests(r) == _requests(_csv("g2015b-gpt_requests.csv"))
    assert "from: disk ... \nNo DOS disk-label found.\n  Successfully loaded" in r.console.text()


def test_2015_blank_disk_equals_real_slof(scenario_file, tmp_path):
    path = tmp_path / "blank.img"
    path.write_bytes(bytes(1 << 20))
    r = _boot(scenario_file, image=str(path))
    assert _got_requests(r) == _requests(_csv("b2015b-blank_requests.csv"))
    text = r.console.text()
    with open(os.path.join(REAL_2015, "console-b2015b-blank-tail.txt")) as f:   # from "Trying to load" on
        assert text[text.index("Trying to load"):] == f.read()


# --- the rows between (from their tags' source) ---------------------------------------

# tag, accesses at probe / at open / per request, reset at open, requests on a
# blank disk (the CHRP open's GPT FAT try from 0097e61), boot line, logo, copyright
P = "/pci@800000020000000/scsi@0"
ROWS = [
    ("20150429", 3, 10, 18, False, 4, "disk", True, "2011"),
    ("20150813", 3, 10, 18, False, 5, P, True, "2011"),      # 0097e61, 3a00f80
    ("20160223", 0, 25, 18, True, 5, P, True, "2011"),       # bcdf942, b5a692d
    ("20170724", 0, 25, 18, True, 5, P, False, "2017"),      # 2f1e6a7
    ("20191206", 0, 11, 4, True, 5, P, False, "2017"),       # 300384f
]


@pytest.mark.parametrize("tag,probe,init,per,reset,n,shown,logo,year", ROWS)
def test_each_row_changes_what_its_commit_changed(scenario_file, tmp_path, tag, probe, init, per, reset, n,
                                                  shown, logo, year):
    """A blank disk, then the failure screen: where the queue is set up, the
    init and per-request accesses (virtio_get_vring_* re-read the queue
    registers until 300384f), the boot line, the logo."""
    path = tmp_path / "blank.img"
    path.write_bytes(bytes(1 << 20))
    r = _boot(scenario_file, slof=tag, image=str(path))
    acc = report.register_accesses(r)
    assert len(report.block_requests(r.trace)) == n
    assert len(acc) == probe + init + n * per
    assert (acc[probe]["offset"], acc[probe]["value"] == 0) == (18, reset)     # STATUS <- 0 first?
    text = r.console.text()
    assert f"Trying to load:  from: {shown} ... " in text
    assert ("..`. .." in text) == logo and f"Copyright (c) 2004, {year} IBM" in text


def test_the_failed_read_line_follows_2645539(scenario_file):
    eio = '[[faults]]\nkind = "io_error"\n'
    assert "virtioblk_read failed! status = 1\n" in _boot(scenario_file, slof="20161019", extra=eio).console.text()
    assert "virtioblk_transfer failed! type=0, status = 1\n" in _boot(scenario_file, slof="20170303",
                                                                        extra=eio).console.text()


def test_20150429_a_bad_executable_prints_what_the_real_one_printed(tmp_path):
    """The kernel-prep case on SLOF 20150429 (measured): the VirtAddr line in
    upper-case hex (libc before da3bd7a), E3403 with no reason, E3406, no
    E3407, and the banner twice (boot.fs before 06e1e07)."""
    from sim.abi import elf as E
    from sim.mkdisk import build_disk
    from tests.test_elf_loader import image
    vm = image(bits=64, big=False, e_machine=E.EM_PPC64, e_entry=0xC000000000000000,
               phdrs=[dict(p_vaddr=0xC000000000000000, p_paddr=0, p_filesz=4, p_memsz=4)], body=b"WXYZ")
    disk = tmp_path / "kernel-prep.img"
    disk.write_bytes(bytes(build_disk(payload=vm)))
    scn = load(os.path.join(SCENARIOS, "dataplane-fixed.toml"))
    assert scn.slof == "20150429"
    got = machine.run(scn, str(disk)).console.text()
    got = got[got.index("Trying to load"):]
    ref = open(os.path.join(REAL_2015, "console-k2015b-kernel-prep.txt")).read()
    assert [ln.rstrip() for ln in got.split("\n")] == [ln.rstrip() for ln in ref.rstrip("\n").split("\n")]
