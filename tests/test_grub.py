"""GRUB in PReP (issue 10): the core image, the GRUB model behind SLOF's
client interface, the stage split, and -- where Debian's GRUB packages are
at hand -- a real core image whose block requests equal real QEMU's."""

import csv
import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_model.grub import core_image as find_core, modname
from firmware_model.slof.releases import release as slof_release
from sim import machine
from sim.mkdisk import build_payload
from sim.mkdisk_grub import GRUB_CFG, MODULES, build_grub_disk, core_image, module_object
from sim.ram import GuestRAM
from sim.report import outcome, phases, summary
from sim.scenario import load

HERE = Path(__file__).parent
SCENARIOS = HERE.parent / "scenarios"
DATA = HERE / "data" / "real-grub"
needs_mke2fs = pytest.mark.skipif(not (shutil.which("mke2fs") or os.path.exists("/sbin/mke2fs")),
                                  reason="mke2fs (e2fsprogs) not installed")


def boot(tmp_path, disk: bytes, scenario="dataplane-fixed", slof=None, **costs):
    path = tmp_path / "disk.img"
    path.write_bytes(disk)
    scn = load(str(SCENARIOS / f"{scenario}.toml"))
    scn.slof = slof or scn.slof
    if costs:
        scn.costs = dataclasses.replace(scn.costs, **costs)
    return machine.run(scn, str(path))


def requests(result):
    return [(e.fields["sector"], e.fields["count"]) for e in result.trace.named("virtio_blk_submit")]


def test_module_object_names_itself():
    assert modname(module_object("ext2")) == "ext2"
    assert modname(b"\x7fELF" + bytes(60)) is None


def test_core_image_recognised_by_module_area():
    img = core_image("(ieee1275/disk,msdos2)/boot/grub")
    ram = GuestRAM(8 << 20)
    # place the segments as SLOF's loader would (second PT_LOAD: the module area)
    from sim.abi import elf as E
    eh_t, ph_t, _ = E.elf32(True)
    eh = eh_t.parse(img)
    segs = []
    for i in range(eh.e_phnum):
        ph = ph_t.parse(img[eh.e_phoff + i * ph_t.sizeof():])
        ram.write(ph.p_paddr, img[ph.p_offset:ph.p_offset + ph.p_filesz])
        segs.append((ph.p_paddr, ph.p_memsz))
    core = find_core(ram, segs)
    assert core.prefix == "(ieee1275/disk,msdos2)/boot/grub"
    assert core.modules == list(MODULES)
    ram.write(segs[1][0], b"gmiX")              # no magic: not GRUB
    assert find_core(ram, segs) is None


@needs_mke2fs
@pytest.mark.parametrize("gpt", [False, True])
def test_grub_boots_a_built_disk(tmp_path, gpt):
    r = boot(tmp_path, build_grub_disk(size_mib=16, gpt=gpt, kernel=build_payload(0x2000000, descriptor=False)))
    s = summary(r)
    assert outcome(r) == "booted"
    g = s["grub"]
    assert g["prefix"] == f"(ieee1275/disk,{'gpt' if gpt else 'msdos'}2)/boot/grub"
    assert g["config_lines"] == [line for line in GRUB_CFG.splitlines()]
    assert [f["path"] for f in g["files"]] == ["/boot/vmlinux", "/boot/initrd.img"]
    assert g["ended"] == "kernel" and s["kernel_stage"] == "done"
    text = r.console.text()
    assert text.index("Successfully loaded") < text.index("Welcome to GRUB!") < text.index("GRUB-CFG-OK") \
        < text.index("KERNEL-ENTRY-OK")
    # the stage split: SLOF's load, the hand-off, GRUB, the kernel, its virtio-blk I/O
    names = [p["name"] for p in phases(r)]
    order = ["load prep partition", "elf load", "hand-off", "grub", "grub normal", "grub.cfg", "kernel",
             "kernel virtio-blk"]
    assert [n for n in names if n in order] == order
    # every GRUB read is SLOF's 64-sector request, and the initrd went to RAM intact
    grub_reqs = requests(r)[-g["disk_reads"]:]
    assert all(n == 64 for _, n in grub_reqs)
    from sim.mkdisk_grub import initrd_image
    f = g["files"][1]
    addr = next(e.fields["addr"] for e in r.trace.named("grub_file_loaded") if e.fields["path"] == f["path"])
    assert r.machine.ram.read(addr, f["bytes"]) == initrd_image()


@needs_mke2fs
def test_unknown_command_reported_by_name_and_prompt_is_failed(tmp_path):
    cfg = "echo before\nsearch --set=root --label root\necho after\n"
    r = boot(tmp_path, build_grub_disk(size_mib=16, grub_cfg=cfg, kernel=build_payload(0x2000000, descriptor=False)))
    s = summary(r)
    assert s["grub"]["unknown_commands"] == ["search"]
    assert "error: can't find command `search'." in r.console.text()
    assert s["grub"]["config_lines"] == ["echo before", "echo after"]
    assert outcome(r) == "failed"
    assert s["grub_ended"] == "prompt: grub.cfg ended without booting a kernel"
    assert s["kernel_stage"] == "not reached"
    assert r.console.text().endswith("grub> ")


@needs_mke2fs
def test_missing_kernel_file_is_grubs_error(tmp_path):
    cfg = "linux /boot/nope\nboot\n"
    r = boot(tmp_path, build_grub_disk(size_mib=16, grub_cfg=cfg, kernel=build_payload(0x2000000, descriptor=False)))
    assert "error: file `/boot/nope' not found." in r.console.text()
    assert "error: you need to load the kernel first." in r.console.text()
    assert outcome(r) == "failed"


@needs_mke2fs
def test_cache_timeout_rereads_sector_0(tmp_path):
    """grub_disk_open compares `milliseconds` with grub_last_time (0 at
    start) *after* the first partition probe: a SLOF that ran > 2 s drops
    that chunk, and the next open reads sector 0 again."""
    disk = build_grub_disk(size_mib=16, kernel=build_payload(0x2000000, descriptor=False))
    fast = boot(tmp_path, disk)
    slow = boot(tmp_path, disk, slof_startup=12.0)
    assert len(slow.trace.named("grub_cache_invalidate")) == 1
    assert not fast.trace.named("grub_cache_invalidate")
    f, s = summary(fast)["grub_disk_reads"], summary(slow)["grub_disk_reads"]
    assert s == f + 1
    g = requests(slow)[-s:]
    assert g[0] == (0, 64) and g[1:].count((0, 64)) == 1


@needs_mke2fs
def test_grub_reads_exit_to_qemu_on_an_old_kernel(tmp_path):
    """Old kernel, no iothread: GRUB's reads are notifies through QEMU."""
    r = boot(tmp_path, build_grub_disk(size_mib=16, kernel=build_payload(0x2000000, descriptor=False)),
             scenario="grub-no-iothread-old-kernel")
    s = summary(r)
    assert s["grub_disk_reads"] > 0 and s["notifies_in_kernel"] == 0 and outcome(r) == "booted"


# --- real GRUB (Debian's grub-mkimage) ----------------------------------------

DEBS = ("grub-common_2.06-13+deb12u2_amd64.deb", "grub-ieee1275-bin_2.06-13+deb12u2_ppc64el.deb")
GRUB_MODULES = ["part_msdos", "part_gpt", "ext2", "normal", "linux", "echo", "configfile", "boot", "ls", "cat",
                "sleep", "halt"]
REF_CFG = "set timeout=0\nset pager=0\necho GRUB-CFG-OK\n"


def _deb_dir():
    for d in (os.environ.get("SLOFSIM_DEBS"), "/var/cache/apt/archives"):
        if d and all((Path(d) / n).exists() for n in DEBS):
            return Path(d)
    return None


@pytest.fixture(scope="module")
def real_core(tmp_path_factory):
    d = _deb_dir()
    if d is None or not shutil.which("dpkg-deb") or not (shutil.which("mke2fs") or os.path.exists("/sbin/mke2fs")):
        pytest.skip("Debian's grub-common and grub-ieee1275-bin 2.06-13+deb12u2 .debs not found "
                    "(set SLOFSIM_DEBS; see README), or dpkg-deb/mke2fs missing")
    work = tmp_path_factory.mktemp("grub")
    for n in DEBS:
        subprocess.run(["dpkg-deb", "-x", str(d / n), str(work / n.split("_")[0])], check=True)
    mkimage = work / "grub-common" / "usr/bin/grub-mkimage"
    moddir = work / "grub-ieee1275-bin" / "usr/lib/grub/powerpc-ieee1275"

    def build(label):
        out = work / f"core-{label}.elf"
        subprocess.run([str(mkimage), "-O", "powerpc-ieee1275", "-d", str(moddir), "-o", str(out),
                        "-p", f"(ieee1275/disk,{label}2)/boot/grub", *GRUB_MODULES], check=True)
        return out.read_bytes()
    return {"msdos": build("msdos"), "gpt": build("gpt")}


@pytest.mark.parametrize("name", ["grub-mbr", "grub-gpt"])
def test_real_grub_requests_equal_the_reference(tmp_path, real_core, name):
    """real-grub/: the same disk on QEMU 7.2 TCG + SLOF 20220719. SLOF had run
    12.9 s (TCG) when GRUB first opened the disk, so the model runs with
    slof_startup = 12 s: the cache timeout then fires as it did there."""
    gpt = name == "grub-gpt"
    disk = build_grub_disk(size_mib=32, gpt=gpt, core=real_core["gpt" if gpt else "msdos"], prep_sectors=16384,
                           files={"boot/grub/grub.cfg": REF_CFG.encode()})
    r = boot(tmp_path, disk, slof="20220719", slof_startup=12.0)     # the reference's SLOF
    ref = [(int(x["sector"]), int(x["nsectors"])) for x in csv.DictReader(open(DATA / f"{name}_requests.csv"))
           if x["stage"] in ("slof", "loaded")]
    assert requests(r) == ref
    core = summary(r)["grub"]
    assert core["config_lines"] == REF_CFG.splitlines() and core["ended"].startswith("prompt")
    assert "GRUB-CFG-OK" in r.console.text()
    # GRUB's opens and closes of the disk node: pci-device enable (E) / disable (D), as measured
    assert _pattern(r) == _ref_pattern(name)
    assert " ".join(x[0] for x in _pattern(r)) == "D E D E R R R R D E D E R D E D E D E"


@needs_mke2fs
def test_explain_one_grub_read(tmp_path):
    """explain --grub: GRUB's cache miss, the client-interface read, SLOF's
    request and notify, the in-kernel H_LOGICAL_CI_STORE and the ioeventfd."""
    from sim.diagnosis import diagnose
    r = boot(tmp_path, build_grub_disk(size_mib=16, kernel=build_payload(0x2000000, descriptor=False)))
    steps = diagnose(r, grub=True)
    funcs = [s["function"] for s in steps]
    fn = slof_release(r.scenario.slof).transfer_fn       # virtioblk_read before 2645539
    assert funcs[:4] == ["grub_disk_read_small", "grub_ieee1275_read", fn, "virtio_queue_notify"]
    assert "ioeventfd_write" in funcs and funcs[-1] == "virtio_blk_req_complete"
    assert "read sector 0 x64" in steps[2]["text"]


def _pattern(result):
    """From SLOF's load on: pci-device enable (E) / disable (D) and requests (R<sector>)."""
    seq, on = [], False
    for e in result.trace.events:
        on = on or (e.name == "phase" and e.fields.get("name") == "elf load")
        if on and e.name == "pci_cfg_write" and (e.fields["reg"] & 0xFF) == 4 and e.fields["value"] & 0xFF in (0, 4):
            seq.append("D" if e.fields["value"] & 0xFF == 0 else "E")
        elif on and e.name == "virtio_blk_submit":
            seq.append(f"R{e.fields['sector']}")
    return seq


def _ref_pattern(name):
    ev = [(float(r["t_s"]), {"0x100100": "D", "0x100104": "E"}.get(r["value"], ""))
          for r in csv.DictReader(open(DATA / f"{name}_pcicfg.csv")) if r["stage"] == "loaded" and r["rw"] == "W"]
    ev += [(float(r["t_s"]), "R" + r["sector"]) for r in csv.DictReader(open(DATA / f"{name}_requests.csv"))
           if r["stage"] == "loaded"]
    return [e for _, e in sorted(ev) if e]


def test_real_grub_linux_disk_equals_the_reference(tmp_path):
    """grub-linux (Debian's GRUB, vmlinux 6.1 and an initrd), rebuilt byte for
    byte by the reference's own tool: SLOF's and GRUB's 1073 requests and
    GRUB's opens/closes of the disk node equal real QEMU's, the 40 MB kernel
    and its evictions from the 1021-slot cache included."""
    import hashlib
    import importlib.util
    d = os.environ.get("SLOFSIM_DEBS")
    spec = importlib.util.spec_from_file_location("build_disks", DATA / "build_disks.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    if not d or not all((Path(d) / n).exists() for n in tool.PACKAGES) or not shutil.which("dpkg-deb"):
        pytest.skip("the four .debs of real-grub/README.md not in SLOFSIM_DEBS")
    tool.build("grub-linux", tool.unpack(d, str(tmp_path)), str(tmp_path))
    img = (tmp_path / "grub-linux.img").read_bytes()
    want = next(line.split()[0] for line in (DATA / "SHA256SUMS.images").read_text().splitlines()
                if line.endswith("grub-linux.img"))
    assert hashlib.sha256(img).hexdigest() == want
    r = boot(tmp_path, img, slof_startup=12.0)
    ref = [(int(x["sector"]), int(x["nsectors"])) for x in csv.DictReader(open(DATA / "grub-linux_requests.csv"))
           if x["stage"] in ("slof", "loaded")]
    assert requests(r) == ref
    assert _pattern(r) == _ref_pattern("grub-linux")
    g = summary(r)["grub"]
    assert [f["path"] for f in g["files"]] == ["/boot/vmlinux", "/boot/initrd.img"]
    assert g["ended"] == "kernel" and r.guest_result["entry"] == 0x2000000


@needs_mke2fs
def test_script_keywords_and_disk_modules_stop_honestly(tmp_path):
    """GRUB script syntax and commands whose module GRUB would load from the
    disk (command.lst) end the run at the prompt, named, never as a
    made-up GRUB error."""
    from sim.mkdisk_grub import initrd_image
    kernel = build_payload(0x2000000, descriptor=False)
    files = {"boot/grub/grub.cfg": b"if [ -s $prefix/grubenv ]; then\n  load_env\nfi\n",
             "boot/vmlinux": kernel, "boot/initrd.img": initrd_image(4096)}
    r = boot(tmp_path, build_grub_disk(size_mib=16, files=files))
    assert summary(r)["grub_ended"] == "prompt: grub.cfg uses GRUB script `if', which is not modelled"
    files["boot/grub/grub.cfg"] = b"search --no-floppy --set=root --fs-uuid 1234\n"
    files["boot/grub/command.lst"] = b"*search: search\necho: echo\n"
    r = boot(tmp_path, build_grub_disk(size_mib=16, files=files))
    assert summary(r)["grub_ended"].startswith("prompt: grub.cfg command `search' needs module search")
    assert "can't find command" not in r.console.text()


@needs_mke2fs
def test_corrupted_grub_disks_end_without_host_exceptions(tmp_path):
    """Seeded corruption of the partition table, the core image's module
    area and the ext2 metadata: every run ends with an outcome."""
    import random
    base = bytes(build_grub_disk(size_mib=8, kernel=build_payload(0x2000000, descriptor=False)))
    fs = (2048 + 2048) * 512
    regions = [(0x1BE, 0x40), (2048 * 512 + 52, 0x200), (fs + 1024, 0x100), (fs + 4096, 0x40),
               (fs + 5 * 4096, 0x800)]
    rnd = random.Random(10)
    for case in range(10):
        img = bytearray(base)
        start, n = regions[case % len(regions)]
        for _ in range(8):
            img[start + rnd.randrange(n)] = rnd.randrange(256)
        r = boot(tmp_path, bytes(img))
        assert outcome(r) in ("booted", "failed", "stalled")


@pytest.mark.parametrize("name", ["grub-mbr", "grub-gpt"])
def test_real_grub_register_accesses_equal_the_reference(tmp_path, real_core, name):
    """QEMU 7.2's settings without ioeventfd (as measured): every BAR access of
    SLOF and of GRUB's reads through it (1071 / 1099), values included."""
    from tests.conftest import QEMU72
    from tests.test_reference import _meant
    gpt = name == "grub-gpt"
    disk = tmp_path / "disk.img"
    disk.write_bytes(build_grub_disk(size_mib=32, gpt=gpt, core=real_core["gpt" if gpt else "msdos"],
                                     prep_sectors=16384, files={"boot/grub/grub.cfg": REF_CFG.encode()}))
    text = QEMU72.format(kernel="4.1", qemu_extra="", iothread="false", ioeventfd="false", image=str(disk))
    scn = tmp_path / "s.toml"
    scn.write_text(text.replace("writable = true", "writable = false") + "[costs]\nslof_startup = 12.0\n")
    r = machine.run(load(str(scn)))
    want = [_meant(row) for row in csv.DictReader(open(DATA / f"{name}_regs.csv")) if row["stage"] in ("slof", "loaded")]
    from sim.report import register_accesses
    assert register_accesses(r) == want


def test_prefix_device_and_partition():
    from firmware_model.grub.main import GrubError, split_prefix
    assert split_prefix("(ieee1275/disk,msdos2)/boot/grub") == ("disk", "msdos2", "/boot/grub")
    assert split_prefix("(ieee1275//vdevice/v-scsi@30000002/disk@8100\\,1,gpt2)/grub") == \
        ("/vdevice/v-scsi@30000002/disk@8100,1", "gpt2", "/grub")
    with pytest.raises(GrubError):
        split_prefix("(hd0,msdos1)/boot/grub")


@needs_mke2fs
def test_ext4_disk_boots_through_extents(tmp_path):
    """mke2fs -t ext4: extents, 64-bit group descriptors, 256-byte inodes."""
    r = boot(tmp_path, build_grub_disk(size_mib=16, fs_type="ext4",
                                       kernel=build_payload(0x2000000, descriptor=False)))
    assert outcome(r) == "booted" and summary(r)["grub_bytes_loaded"] == 204992


def test_ext2_refuses_what_grub_refuses():
    import trio
    from firmware_model.grub.ext2 import Ext2, FsError
    from sim.abi import ext2 as X

    class Disk:
        async def read(self, sector, offset, size):
            sb = dict(X.superblock.parse(bytes(X.superblock.sizeof())))
            sb.pop("_io", None)
            sb.update(magic=X.EXT2_MAGIC, inodes_per_group=8, rev_level=1, inode_size=128,
                      feature_incompat=X.INCOMPAT_FILETYPE | 0x2000)        # metadata_csum_seed
            return X.superblock.build(sb)[offset:offset + size]

    async def main():
        with pytest.raises(FsError, match="unsupported incompatible features"):
            await Ext2(Disk()).mount()
    trio.run(main)
