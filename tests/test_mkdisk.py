"""The built-in bootable image: MBR fields, the ELF payload and its machine code."""

import lzma
import os
import struct

import pytest

from sim import mkdisk
from sim.abi import elf as E
from sim.abi import mbr as M
from sim.cpu import SC1, PowerCPU, execute
from sim.ram import GuestRAM

REF_DISK = "/work/shared/reference/real-slof/disk.img.xz"


def _words(data: bytes) -> list[int]:
    return [w for (w,) in struct.iter_unpack(">I", data)]


def _parse_payload(payload: bytes):
    ehdr_t, phdr_t, desc_t = E.elf64(True)
    ehdr = ehdr_t.parse(payload)
    phdr = phdr_t.parse(payload[ehdr.e_phoff:])
    seg = payload[phdr.p_offset:phdr.p_offset + phdr.p_filesz]
    return ehdr, phdr, desc_t.parse(seg), seg


# --- encoders against known Power ISA encodings ------------------------------

@pytest.mark.parametrize("word, expected", [
    (mkdisk._sc1(), 0x44000022),                 # sc 1
    (mkdisk._b(0), 0x48000000),                  # b .
    (mkdisk._b(-8), 0x4BFFFFF8),                 # b .-8
    (mkdisk._li(3, 0x58), 0x38600058),           # li r3,0x58
    (mkdisk._addi(1, 1, -16), 0x3821FFF0),       # addi r1,r1,-16
    (mkdisk._lis(9, 0x40), 0x3D200040),          # lis r9,0x40
    (mkdisk._addis(2, 12, 2), 0x3C4C0002),       # addis r2,r12,2
    (mkdisk._ori(9, 9, 0x100), 0x61290100),      # ori r9,r9,0x100
    (mkdisk._ld(5, 0, 9), 0xE8A90000),           # ld r5,0(r9)
    (mkdisk._ld(7, 0x10, 9), 0xE8E90010),        # ld r7,16(r9)
])
def test_encoders(word, expected):
    assert word == expected


# --- the payload ----------------------------------------------------------------

def test_payload_elf_header_and_segment():
    payload = mkdisk.build_payload()
    ehdr, phdr, desc, seg = _parse_payload(payload)
    assert ehdr.e_ident.magic == E.ELFMAG
    assert (ehdr.e_ident.ei_class, ehdr.e_ident.ei_data) == (E.ELFCLASS64, E.ELFDATA2MSB)
    assert (ehdr.e_type, ehdr.e_machine, ehdr.e_flags, ehdr.e_phnum) == (E.ET_EXEC, E.EM_PPC64, 1, 1)
    assert ehdr.e_entry == 0x400000
    assert phdr.p_type == E.PT_LOAD and phdr.p_offset == 0x1000 and phdr.p_flags == 7
    assert phdr.p_vaddr == phdr.p_paddr == 0x400000
    assert phdr.p_filesz == phdr.p_memsz == len(seg) == len(payload) - 0x1000
    assert phdr.p_vaddr % phdr.p_align == phdr.p_offset % phdr.p_align
    # the descriptor sits at e_entry and points into the segment
    assert desc.entry == 0x400020 and desc.toc == 0 and desc.env == 0
    assert phdr.p_vaddr <= desc.entry < phdr.p_vaddr + phdr.p_memsz


def test_payload_code_prints_and_spins():
    _, phdr, desc, seg = _parse_payload(mkdisk.build_payload())
    code = _words(seg[desc.entry - phdr.p_vaddr:])
    end = code.index(0x48000000)
    assert code[:end].count(0x44000022) == 3     # one sc 1 per chunk
    assert code[:end].count(0x38600058) == 3     # li r3,H_PUT_TERM_CHAR before each
    assert mkdisk.PAYLOAD_MARKER.encode() in seg


@pytest.mark.parametrize("addr", [0x1230000, 0x7FFFF000])   # the last one: highest lis/ori reaches
def test_payload_other_load_addr(addr):
    ehdr, phdr, desc, _ = _parse_payload(mkdisk.build_payload(addr))
    assert ehdr.e_entry == phdr.p_vaddr == phdr.p_paddr == addr
    assert desc.entry == addr + 0x20


@pytest.mark.parametrize("addr", [0, -0x1000, 0x400008, 0x80000000, 0x7FFFFF00, 1 << 40, True, "0x400000"])
def test_payload_bad_load_addr(addr):
    with pytest.raises(ValueError):
        mkdisk.build_payload(addr)


def _run(payload: bytes, load_addr: int):
    """Load the ELF the way SLOF does and run its code on the simulated CPU,
    answering each sc 1 as QEMU's H_PUT_TERM_CHAR would."""
    from firmware_model.slof import elf as loader
    ram = GuestRAM(0x2000000)
    ram.write(0x4000, payload)                   # load-base
    image = loader.load(ram, 0x4000, len(payload), ram.size)
    nip, _toc = loader.entry_point(ram, image.kind, image.entry)
    cpu = PowerCPU(ram)
    console, calls = bytearray(), []
    coro = execute(cpu, nip)
    try:
        trap = coro.send(None)
        while True:
            assert trap is SC1
            g = cpu.gpr
            calls.append((g[3], g[4], g[5]))
            console += (g[6].to_bytes(8, "big") + g[7].to_bytes(8, "big"))[:g[5]]
            g[3] = 0                               # H_SUCCESS
            for r in range(4, 13):                 # hcalls may clobber the volatile registers
                g[r] = 0xDEADBEEF
            trap = coro.send(None)
    except StopIteration as stop:
        return stop.value, bytes(console), calls, cpu


@pytest.mark.parametrize("load_addr", [0x400000, 0x1230000])
def test_payload_runs_on_simulated_cpu(load_addr):
    stop, console, calls, cpu = _run(mkdisk.build_payload(load_addr), load_addr)
    assert stop == "idle: branch to self"
    assert console == b"\r\nKERNEL-ENTRY-OK\r\n"
    assert [c[:2] for c in calls] == [(0x58, 0)] * 3
    assert all(c[2] <= 16 for c in calls)
    assert load_addr < cpu.nip < load_addr + 0x1000


def test_pyelftools_reads_payload(tmp_path):
    elffile = pytest.importorskip("elftools.elf.elffile")
    p = tmp_path / "prog.elf"
    p.write_bytes(mkdisk.build_payload())
    with open(p, "rb") as f:
        ef = elffile.ELFFile(f)
        assert ef.elfclass == 64 and not ef.little_endian
        assert ef["e_machine"] == "EM_PPC64" and ef["e_entry"] == 0x400000
        segs = list(ef.iter_segments())
        assert len(segs) == 1 and segs[0]["p_type"] == "PT_LOAD"


# --- the disk -------------------------------------------------------------------

def test_disk_mbr_fields():
    img = mkdisk.build_disk()
    assert len(img) == 16 << 20
    m = M.mbr.parse(bytes(img[:512]))
    assert m.signature == M.MBR_SIGNATURE and m.disk_id == 0x5EA5C0DE
    assert m.bootcode == bytes(440)
    p = m.partitions[0]
    assert (p.boot_indicator, p.type, p.lba_start, p.sectors) == (0x80, 0x41, 2048, 2048)
    assert p.chs_start == p.chs_end == b"\xfe\xff\xff"
    assert all(q.type == 0 and q.sectors == 0 for q in m.partitions[1:])
    payload = mkdisk.build_payload()
    assert bytes(img[2048 * 512:2048 * 512 + len(payload)]) == payload


def test_disk_sector0_matches_reference():
    if not os.path.exists(REF_DISK):
        pytest.skip("reference disk not present")
    with lzma.open(REF_DISK) as f:
        ref0 = f.read(512)
    assert bytes(mkdisk.build_disk()[:512]) == ref0


def test_disk_not_active_and_options():
    img = mkdisk.build_disk(active=False, part_start=63, part_sectors=100, part_type=0x83,
                            disk_id=1, size_mib=1)
    p = M.mbr.parse(bytes(img[:512])).partitions[0]
    assert (p.boot_indicator, p.type, p.lba_start, p.sectors) == (0, 0x83, 63, 100)
    assert len(img) == 1 << 20
    assert img[63 * 512:63 * 512 + 4] == b"\x7fELF"


def test_disk_custom_payload():
    img = mkdisk.build_disk(payload=b"\\ forth", part_sectors=1)
    assert img[2048 * 512:2048 * 512 + 8] == b"\\ forth\0"


@pytest.mark.parametrize("kwargs, msg", [
    (dict(size_mib=0), "size_mib"),
    (dict(size_mib=-1), "size_mib"),
    (dict(part_start=0), "part_start"),
    (dict(part_sectors=0), "part_sectors"),
    (dict(part_sectors=-5), "part_sectors"),
    (dict(part_start=32767), "does not fit"),              # 16 MiB = 32768 sectors
    (dict(part_sectors=32768), "does not fit"),
    (dict(part_sectors=1), "payload"),                     # the ELF is larger than 512 bytes
    (dict(payload=bytes(2049 * 512)), "payload"),
    (dict(part_type=0x100), "part_type"),
    (dict(disk_id=1 << 32), "disk_id"),
    (dict(part_start="2048"), "integer"),
    (dict(size_mib=1.5), "integer"),
])
def test_disk_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        mkdisk.build_disk(**kwargs)


def test_write_disk(tmp_path):
    p = tmp_path / "d.img"
    p.write_bytes(b"x" * (3 << 20))                        # truncated, not overwritten in place
    mkdisk.write_disk(p, size_mib=2, part_sectors=64)
    data = p.read_bytes()
    assert data == bytes(mkdisk.build_disk(size_mib=2, part_sectors=64))
    assert len(data) == 2 << 20


def test_mkdisk_writes_a_sparse_file_with_the_built_bytes(tmp_path):
    """Zero MiB runs are holes: a 256 MiB image takes about its partition on disk."""
    from sim.mkdisk import build_disk, write_disk
    path = tmp_path / "big.img"
    write_disk(str(path), size_mib=256)
    st = path.stat()
    assert st.st_size == 256 << 20 and st.st_blocks * 512 < 8 << 20
    assert path.read_bytes() == bytes(build_disk(size_mib=256))
