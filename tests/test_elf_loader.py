"""SLOF's ELF loader (firmware_model/slof/elf.py) on its own, and its console
against real SLOF 20220719 (tests/data/real-grub/)."""

from pathlib import Path

import pytest

from firmware_model.slof import elf as loader
from sim.abi import elf as E
from sim.ram import GuestRAM

DATA = Path(__file__).parent / "data" / "real-grub"
BASE = 0x4000
RAM = 0x1000000
LIMIT = 0xF00000


def image(bits=32, big=True, phdrs=(), e_entry=0x200000, e_type=E.ET_EXEC, e_machine=E.EM_PPC,
          magic=E.ELFMAG, phentsize=None, phnum=None, body=b""):
    """An ELF image: headers, program headers, then body at file offset 0x100."""
    ehdr_t, phdr_t = E.headers(E.ELFCLASS32 if bits == 32 else E.ELFCLASS64, big)
    ident = dict(magic=magic, ei_class=1 if bits == 32 else 2, ei_data=2 if big else 1,
                 ei_version=1, ei_osabi=0, ei_abiversion=0, pad=bytes(7))
    ph = b"".join(phdr_t.build(dict(dict(p_type=E.PT_LOAD, p_offset=0x100, p_flags=7, p_align=4), **p))
                  for p in phdrs)
    eh = ehdr_t.build(dict(e_ident=ident, e_type=e_type, e_machine=e_machine, e_version=1, e_entry=e_entry,
                           e_phoff=ehdr_t.sizeof(), e_shoff=0, e_flags=0, e_ehsize=ehdr_t.sizeof(),
                           e_phentsize=phdr_t.sizeof() if phentsize is None else phentsize,
                           e_phnum=len(phdrs) if phnum is None else phnum,
                           e_shentsize=0, e_shnum=0, e_shstrndx=0))
    return (eh + ph).ljust(0x100, b"\0") + body


def seg(addr, filesz, memsz=None, **kw):
    return dict(p_vaddr=addr, p_paddr=addr, p_filesz=filesz, p_memsz=filesz if memsz is None else memsz, **kw)


def load(data, ram=None):
    ram = ram or GuestRAM(RAM)
    ram.write(BASE, data)
    return ram, loader.load(ram, BASE, len(data), LIMIT)


def test_elf32_segments_entry_and_go_word():
    ram, img = load(image(phdrs=[seg(0x200000, 8, 16)], body=b"ABCDEFGH"))
    assert (img.kind, img.entry, img.segments, img.copied) == (1, 0x200000, [(0x200000, 16)], 8)
    assert loader.GO_WORDS[img.kind] == "go-32-be"
    assert loader.entry_point(ram, img.kind, img.entry) == (0x200000, 0)
    _, le = load(image(big=False, phdrs=[seg(0x200000, 8)], body=b"ABCDEFGH"))
    assert le.kind == 5


def test_bss_is_zeroed_and_file_bytes_copied():
    ram = GuestRAM(RAM)
    ram.write(0x200000, b"\xee" * 64)                 # stale bytes where the bss lands
    _, img = load(image(phdrs=[seg(0x200000, 8, 40)], body=b"ABCDEFGH"), ram)
    assert ram.read(0x200000, 8) == b"ABCDEFGH"
    assert ram.read(0x200008, 32) == bytes(32)
    assert ram.read(0x200028, 8) == b"\xee" * 8       # nothing past p_memsz


def test_phdr_loop_runs_to_e_phnum_inclusive_with_e_phentsize():
    # e_phnum = 1 but a second PT_LOAD follows: SLOF's `i <= e_phnum` loads it too.
    data = image(phdrs=[seg(0x200000, 4), seg(0x300000, 4)], phnum=1, body=b"WXYZ")
    ram, img = load(data)
    assert img.segments == [(0x200000, 4), (0x300000, 4)]
    assert ram.read(0x300000, 4) == b"WXYZ"
    # ... and not one further: a third header is not read.
    data = image(phdrs=[seg(0x200000, 4), seg(0x300000, 4), seg(0x380000, 4)], phnum=1, body=b"WXYZ")
    _, img = load(data)
    assert len(img.segments) == 2
    # the stride is e_phentsize, not sizeof(Elf32_Phdr): 64 skips every other 32-byte header
    data = image(phdrs=[seg(0x200000, 4), seg(0x300000, 4), seg(0x380000, 4)], phnum=1, phentsize=64,
                 body=b"WXYZ")
    _, img = load(data)
    assert img.segments == [(0x200000, 4), (0x380000, 4)]


@pytest.mark.parametrize("bits", [32, 64])
def test_vaddr_ne_paddr_aborts_with_slofs_line(bits):
    data = image(bits=bits, e_machine=E.EM_PPC if bits == 32 else E.EM_PPC64,
                 phdrs=[dict(p_vaddr=0xC0000000, p_paddr=0x200000, p_filesz=4, p_memsz=4)], body=b"WXYZ")
    with pytest.raises(loader.BadExecutable) as exc:
        load(data)
    assert exc.value.console == f"ELF{bits}: VirtAddr(c0000000) != PhysAddr(200000) not supported, aborting\r\n"


@pytest.mark.parametrize("kw, why", [
    (dict(magic=b"\x7fELG"), "-1"),
    (dict(e_type=1), "-3"),
    (dict(e_machine=0x3E), "-4"),
    (dict(e_entry=0), "e_entry 0"),
])
def test_each_type0_path_is_bad_executable(kw, why):
    with pytest.raises(loader.BadExecutable) as exc:
        load(image(phdrs=[seg(0x200000, 4)], body=b"WXYZ", **kw))
    assert why in exc.value.reason
    assert exc.value.console == ""          # E3403 carries no reason text


def test_phdr_outside_ram_is_type0_not_a_crash():
    data = image(phdrs=[seg(0x200000, 4)], body=b"WXYZ")
    ram = GuestRAM(RAM)
    ram.write(BASE, data)
    ehdr_t, _ = E.headers(1, True)
    eh = dict(ehdr_t.parse(data[:52]))
    eh.pop("_io", None)
    eh["e_phoff"] = RAM
    ram.write(BASE, ehdr_t.build(eh))
    with pytest.raises(loader.BadExecutable, match="outside RAM"):
        loader.load(ram, BASE, len(data), LIMIT)


@pytest.mark.parametrize("s", [
    seg(0x2000000, 4),                 # past the end of RAM
    seg(0x200000, 4, 1 << 31),         # huge p_memsz
    seg(LIMIT - 2, 4),                 # reaches SLOF's own memory
    seg(0x200000, 0xFFFFFFFF, 4),      # huge p_filesz
])
def test_claim_failure(s):
    with pytest.raises(loader.ClaimFailed):
        load(image(phdrs=[s], body=b"WXYZ"))


def test_claim_up_to_the_limit_is_fine():
    _, img = load(image(phdrs=[seg(LIMIT - 4, 4)], body=b"WXYZ"))
    assert img.segments == [(LIMIT - 4, 4)]


def test_source_past_ram_reads_zeros():
    ram, img = load(image(phdrs=[seg(0x200000, 8, p_offset=RAM - BASE - 4)]))
    assert ram.read(0x200004, 4) == bytes(4) and img.copied == 8


@pytest.mark.parametrize("past", [0, 0x1000])
def test_source_wholly_past_ram_reads_zeros(past):
    """p_offset puts the segment's bytes at or past the end of RAM (found by
    slofsim fuzz --seed 4: a zero-length read at the end of RAM raised)."""
    ram, img = load(image(phdrs=[seg(0x200000, 8, p_offset=RAM - BASE + past)]))
    assert ram.read(0x200000, 8) == bytes(8) and img.copied == 8


def test_elf64_descriptor_outside_ram():
    ram, img = load(image(bits=64, e_machine=E.EM_PPC64, phdrs=[seg(0x200000, 4)], e_entry=0x90000000,
                          body=b"WXYZ"))
    assert img.kind == 2 and loader.entry_point(ram, img.kind, img.entry) is None


def test_consoles_match_real_slof():
    """The model's console strings are the bytes real SLOF printed."""
    from firmware_model.slof.boot import NO_GO, prompt
    from firmware_model.slof.releases import release
    real = (DATA / "kernel-prep_console.txt").read_text()
    assert "E3403: Bad executable:\n" in real and "E3407" not in real
    for name in ("paddr-out", "memsz-huge", "onslof", "filesz-out"):
        text = (DATA / f"elf-{name}.txt").read_bytes().decode()
        assert ("scsi@0 ... " + loader.ClaimFailed.CONSOLE + "\r\nTrying to load:  from: cdrom") in text
        assert "E3403" not in text and "E3407: Load failed" in text
    assert NO_GO.startswith("\r\nE3403: Bad executable:   \r\n\r\nE3406: ")
    assert "E3407" not in prompt(release("20220719"), e3407=False)


def test_kernel_prep_console_matches_real_slof(tmp_path):
    """A raw ppc64le vmlinux in PReP (p_vaddr 0xc000000000000000, p_paddr 0):
    real SLOF's console from `Trying to load` to the prompt, line for line
    (kernel-prep_console.txt keeps no trailing blanks)."""
    from sim import machine
    from sim.mkdisk import build_disk
    from sim.scenario import load as load_scn
    vm = image(bits=64, big=False, e_machine=E.EM_PPC64, e_entry=0xC000000000000000,
               phdrs=[dict(p_vaddr=0xC000000000000000, p_paddr=0, p_filesz=4, p_memsz=4)], body=b"WXYZ")
    path = tmp_path / "kernel-prep.img"
    path.write_bytes(build_disk(payload=vm))
    scn = load_scn(str(Path(__file__).parent.parent / "scenarios" / "dataplane-fixed.toml"))
    scn.slof = "20220719"                 # the SLOF of the real measurement
    r = machine.run(scn, str(path))
    got = r.console.text()
    got = got[got.index("Trying to load"):].split("\n")
    ref = (DATA / "kernel-prep_console.txt").read_text().splitlines()
    ref = [line[10:] for line in ref]                   # "%9.3f " time column
    ref = ref[next(i for i, line in enumerate(ref) if line.startswith("Trying to load")):]
    ref = ref[:next(i for i, line in enumerate(ref) if line.startswith("0 >")) + 1]
    ref[-1] = "0 > "
    assert [line.rstrip() for line in got] == [line.rstrip() for line in ref]
    assert "E3407" not in r.console.text()
    assert r.guest_result["stage"] == "prompt"


@pytest.mark.parametrize("addr, claimed", [(0x3DAEF000, True), (0x3DAF0000, False)])
def test_claim_boundary_is_real_slofs(tmp_path, addr, claimed):
    """With 1 GiB, SLOF 20220719 lets a segment end at 0x3daf0000 and no
    further (elf-claim-bisect.txt)."""
    from sim import machine
    from sim.mkdisk import build_disk
    from sim.scenario import load as load_scn
    data = image(bits=64, e_machine=E.EM_PPC64, e_entry=addr, phdrs=[seg(addr, 0x100, 0x1000)],
                 body=bytes(0x100))
    path = tmp_path / "d.img"
    path.write_bytes(build_disk(payload=data))
    scn = load_scn(str(Path(__file__).parent.parent / "scenarios" / "dataplane-fixed.toml"))
    assert scn.ram_mib == 1024
    r = machine.run(scn, str(path))
    text = r.console.text()
    assert ("Successfully loaded" in text) == claimed
    assert ("Memory for ELF file is already in use!\nE3402: Aborting boot, internal error" in text) != claimed
