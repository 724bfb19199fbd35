"""A bootable raw disk built in memory: MBR or GPT, one PReP partition, a tiny ELF.

It reproduces the shape of the reference disk (README of real-slof) so that
SLOF's disk-label `load` takes the DOS/MBR PReP route: partition type 0x41
with the boot flag 0x80, the partition read whole to load-base, an ELF64
big-endian image entered through its ELFv1 function descriptor. The code in
the image is real PowerPC64 machine code, so the guest prints its own marker
with H_PUT_TERM_CHAR instead of the simulator pretending it did.

With `gpt=True` the disk is GPT as sfdisk/gdisk write it: a protective MBR
(one entry, type 0xEE, LBA 1 to the end), the header at LBA 1, 128 entries
of 128 bytes from LBA 2, the backup entries and header at the end, both
CRC32s right. SLOF then takes its GPT route (the PReP type GUID).
"""

import mmap
import struct
import uuid

from sim.abi import elf as E
from sim.abi import gpt as G
from sim.abi import mbr as M

PAYLOAD_MARKER = "KERNEL-ENTRY-OK"
_CHUNKS = (b"\r\n", PAYLOAD_MARKER.encode(), b"\r\n")  # one H_PUT_TERM_CHAR each (<= 16 bytes)

H_PUT_TERM_CHAR = 0x58          # PAPR hcall number
VTY_REG = 0                     # QEMU spapr_vty's vty_lookup(): reg 0 means the default vty (early-debug hack)
SEG_OFFSET = 0x1000             # file offset of the PT_LOAD segment, as in the reference prog.elf
SEG_ALIGN = 0x1000              # keeps p_vaddr == p_offset (mod p_align), as the ELF spec asks
CODE_OFFSET = 0x20              # code follows the 24-byte descriptor, 32-byte aligned
BASE_REG = 31                   # PAPR: hcalls preserve r14-r31; r4-r12 are volatile
_CHS_LBA = b"\xfe\xff\xff"      # "use LBA" CHS placeholder, as the reference MBR has
_MIB = 1 << 20
# The image is built in host memory (zero pages stay untouched until
# written); its size is bounded so that a typo cannot exhaust the host.
MAX_SIZE_MIB = 4096


# --- Power ISA instruction encoders (Book I, big-endian words) -------------

def _d_form(op: int, rt: int, ra: int, imm: int) -> int:
    """D-form: OPCD | RT/RS | RA | D/SI/UI (16 bits)."""
    assert 0 <= rt < 32 and 0 <= ra < 32 and -0x8000 <= imm <= 0xFFFF
    return (op << 26) | (rt << 21) | (ra << 16) | (imm & 0xFFFF)


def _addi(rt: int, ra: int, si: int) -> int:
    """addi RT,RA,SI (opcode 14); RA=0 means the literal 0, so `li` is addi rt,0,si."""
    assert -0x8000 <= si < 0x8000
    return _d_form(14, rt, ra, si)


def _li(rt: int, si: int) -> int:
    return _addi(rt, 0, si)


def _addis(rt: int, ra: int, si: int) -> int:
    """addis RT,RA,SI (opcode 15); `lis` is addis rt,0,si. The result is sign-extended."""
    assert -0x8000 <= si < 0x10000
    return _d_form(15, rt, ra, si)


def _lis(rt: int, si: int) -> int:
    return _addis(rt, 0, si)


def _ori(ra: int, rs: int, ui: int) -> int:
    """ori RA,RS,UI (opcode 24): the RS field comes first in the word."""
    assert 0 <= ui <= 0xFFFF
    return _d_form(24, rs, ra, ui)


def _ld(rt: int, ds: int, ra: int) -> int:
    """ld RT,DS(RA) (DS-form, opcode 58, XO=0): the offset must be a multiple of 4."""
    assert ds % 4 == 0 and -0x8000 <= ds < 0x8000
    return _d_form(58, rt, ra, ds)  # low two bits (XO) stay 0


def _sc1() -> int:
    """sc LEV=1 (opcode 17, bit 30 set): a hypervisor call (PAPR hcall)."""
    return (17 << 26) | (1 << 5) | 2


def _b(offset: int) -> int:
    """b target (I-form, opcode 18, AA=0 LK=0), offset relative to this instruction."""
    assert offset % 4 == 0 and -(1 << 25) <= offset < (1 << 25)
    return (18 << 26) | (offset & 0x03FFFFFC)


# --- the ELF payload --------------------------------------------------------

def _code(table: int) -> list[int]:
    """Print each chunk with H_PUT_TERM_CHAR, then spin.

    H_PUT_TERM_CHAR (PAPR): r3 = 0x58, r4 = vty reg, r5 = length (<= 16),
    r6/r7 = the bytes, first one in the most significant byte of r6. r3-r12
    are volatile across the hcall, so r3/r4 are reloaded each time and the
    table base lives in r31.
    """
    words = [_lis(BASE_REG, table >> 16), _ori(BASE_REG, BASE_REG, table & 0xFFFF)]
    for i in range(len(_CHUNKS)):
        entry = 24 * i
        words += [
            _li(3, H_PUT_TERM_CHAR),
            _li(4, VTY_REG),
            _ld(5, entry, BASE_REG),
            _ld(6, entry + 8, BASE_REG),
            _ld(7, entry + 16, BASE_REG),
            _sc1(),
        ]
    words.append(_b(0))  # b . : the idle spin the simulator recognises as "kernel reached"
    return words


def build_payload(load_addr: int = 0x400000, descriptor: bool = True) -> bytes:
    """A big-endian ELF64 (ET_EXEC, EM_PPC64, ELFv1) with one PT_LOAD at load_addr.

    The segment holds the function descriptor e_entry points to, the code
    the descriptor points to, and the chunk table the code reads. With
    descriptor=False e_entry is the code itself, as in a vmlinux that GRUB
    enters by a plain branch (loader/powerpc/ieee1275/linux.c).
    """
    if not isinstance(load_addr, int) or isinstance(load_addr, bool):
        raise ValueError(f"load_addr must be an integer, not {load_addr!r}")
    if load_addr <= 0 or load_addr % SEG_ALIGN:
        raise ValueError(f"load_addr 0x{load_addr:x} must be positive and a multiple of 0x{SEG_ALIGN:x}")
    n_code = len(_code(0))
    table_off = (CODE_OFFSET + 4 * n_code + 7) & ~7
    seg_size = table_off + 24 * len(_CHUNKS)
    # lis sign-extends bit 31, so lis/ori only reach addresses below 2 GiB.
    if load_addr + seg_size > 0x8000_0000:
        raise ValueError(f"load_addr 0x{load_addr:x}: the segment must end below 0x80000000 (lis/ori addressing)")

    ehdr_t, phdr_t, desc_t = E.elf64(True)
    seg = bytearray(seg_size)
    seg[0:desc_t.sizeof()] = desc_t.build(dict(entry=load_addr + CODE_OFFSET, toc=0, env=0))
    seg[CODE_OFFSET:CODE_OFFSET + 4 * n_code] = b"".join(
        struct.pack(">I", w) for w in _code(load_addr + table_off))
    for i, chunk in enumerate(_CHUNKS):
        assert len(chunk) <= 16
        o = table_off + 24 * i
        seg[o:o + 24] = struct.pack(">Q", len(chunk)) + chunk.ljust(16, b"\0")

    ehdr = ehdr_t.build(dict(
        e_ident=dict(magic=E.ELFMAG, ei_class=E.ELFCLASS64, ei_data=E.ELFDATA2MSB,
                     ei_version=E.EV_CURRENT, ei_osabi=0, ei_abiversion=0, pad=bytes(7)),
        e_type=E.ET_EXEC, e_machine=E.EM_PPC64, e_version=E.EV_CURRENT,
        e_entry=load_addr if descriptor else load_addr + CODE_OFFSET, e_phoff=ehdr_t.sizeof(), e_shoff=0,
        e_flags=1,  # EF_PPC64_ABI 1: ELFv1 (function descriptors)
        e_ehsize=ehdr_t.sizeof(), e_phentsize=phdr_t.sizeof(), e_phnum=1,
        e_shentsize=0, e_shnum=0, e_shstrndx=0,
    ))
    phdr = phdr_t.build(dict(
        p_type=E.PT_LOAD, p_flags=7, p_offset=SEG_OFFSET, p_vaddr=load_addr, p_paddr=load_addr,
        p_filesz=seg_size, p_memsz=seg_size, p_align=SEG_ALIGN,
    ))
    # Zeros after the one phdr: SLOF's loop runs to i <= e_phnum and sees p_type 0 there.
    return (ehdr + phdr).ljust(SEG_OFFSET, b"\0") + bytes(seg)


# --- the disk ---------------------------------------------------------------

def _check_int(name: str, value, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} = {value} is out of range [{lo}, {hi}]")
    return value


def build_disk(*, size_mib: int = 16, part_start: int = 2048, part_sectors: int = 2048,
               active: bool = True, part_type: int = M.PART_TYPE_PREP, disk_id: int = 0x5EA5C0DE,
               payload: bytes | None = None, gpt: bool = False, gpt_type: str | None = None,
               layout: str = "prep"):
    """A raw image: one partition, the payload at its first sector.

    layout = "grub": a PReP partition with a GRUB-format core image and an
    ext2 partition with grub.cfg, the payload as kernel and an initrd
    (sim/mkdisk_grub.py); only size_mib, gpt and disk_id apply to it.

    MBR (default): one primary entry; with the defaults, sector 0 is
    byte-identical to the reference disk's. SLOF only boots it when the
    entry has type 0x41 and flag 0x80, so `active=False` or another
    `part_type` make the failure paths.
    GPT (`gpt=True`): one entry of type `gpt_type` (a GUID string, PReP by
    default); GUIDs are derived from disk_id, so the image is reproducible.
    """
    if layout == "grub":
        from sim.mkdisk_grub import build_grub_disk
        return build_grub_disk(size_mib=size_mib, gpt=gpt, disk_id=disk_id,
                               kernel=payload or build_payload(0x2000000, descriptor=False))
    if layout != "prep":
        raise ValueError(f"layout = {layout!r}: expected \"prep\" or \"grub\"")
    _check_int("size_mib", size_mib, 1, MAX_SIZE_MIB)
    _check_int("part_start", part_start, 1, 0xFFFF_FFFF)      # sector 0 is the MBR
    _check_int("part_sectors", part_sectors, 1, 0xFFFF_FFFF)
    _check_int("part_type", part_type, 0, 0xFF)
    _check_int("disk_id", disk_id, 0, 0xFFFF_FFFF)
    disk_sectors = size_mib * _MIB // M.SECTOR
    if gpt:
        if not active:
            raise ValueError("active=False: the boot flag is an MBR field; a GPT entry has none")
        if part_type != M.PART_TYPE_PREP:
            raise ValueError(f"part_type = 0x{part_type:x} is an MBR field; a GPT disk takes gpt_type")
        first, last = 2 + _GPT_ARRAY_SECTORS, disk_sectors - 2 - _GPT_ARRAY_SECTORS
        if part_start < first or part_start + part_sectors - 1 > last:
            raise ValueError(f"partition (sectors {part_start}..{part_start + part_sectors - 1}) is outside "
                             f"the GPT usable area {first}..{last} of a {size_mib} MiB disk")
    elif gpt_type is not None:
        raise ValueError("gpt_type needs gpt=True")
    if part_start + part_sectors > disk_sectors:
        raise ValueError(f"partition (sectors {part_start}..{part_start + part_sectors - 1}) "
                         f"does not fit in a {size_mib} MiB disk ({disk_sectors} sectors)")
    if payload is None:
        payload = build_payload()
    if len(payload) > part_sectors * M.SECTOR:
        raise ValueError(f"payload ({len(payload)} bytes) does not fit in the partition "
                         f"({part_sectors} sectors = {part_sectors * M.SECTOR} bytes)")

    img = _zeroed(disk_sectors * M.SECTOR)
    if gpt:
        _write_gpt(img, disk_sectors, part_start, part_sectors, disk_id, gpt_type)
    else:
        entry = dict(boot_indicator=M.BOOT_ACTIVE if active else 0, chs_start=_CHS_LBA, type=part_type,
                     chs_end=_CHS_LBA, lba_start=part_start, sectors=part_sectors)
        img[0:M.SECTOR] = _mbr(disk_id, entry)
    off = part_start * M.SECTOR
    img[off:off + len(payload)] = payload
    return img


def _zeroed(n: int):
    """n zero bytes whose pages the host backs only once written (an
    anonymous mapping, like a sparse file); a bytearray would touch them all."""
    return mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


_GPT_ARRAY_SECTORS = G.DEFAULT_ENTRIES * G.ENTRY_SIZE // M.SECTOR   # 32


def _mbr(disk_id: int, entry: dict) -> bytes:
    empty = dict(boot_indicator=0, chs_start=bytes(3), type=0, chs_end=bytes(3), lba_start=0, sectors=0)
    return M.mbr.build(dict(bootcode=bytes(440), disk_id=disk_id, reserved=bytes(2),
                            partitions=[entry, empty, empty, empty], signature=M.MBR_SIGNATURE))


def _guid(disk_id: int, what: str) -> bytes:
    """A reproducible GUID (name-based, RFC 4122 version 5) for this disk."""
    return uuid.uuid5(uuid.NAMESPACE_OID, f"slofsim.{disk_id:08x}.{what}").bytes_le


def _write_gpt(img: bytearray, disk_sectors: int, part_start: int, part_sectors: int, disk_id: int,
               gpt_type: str | None) -> None:
    """Protective MBR, primary header + array, backup array + header."""
    try:
        type_guid = G.PREP if gpt_type is None else G.guid(gpt_type)
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"gpt_type = {gpt_type!r} is not a GUID like \"9E1A2D38-C612-4316-AA26-8B49521E5A8B\"") \
            from None
    # The protective entry covers LBA 1..end (capped at 2^32-1), CHS 0/0/2..ff/ff/ff (UEFI 5.2.3).
    img[0:M.SECTOR] = _mbr(0, dict(boot_indicator=0, chs_start=b"\x00\x02\x00",
                                   type=M.PART_TYPE_GPT_PROTECTIVE, chs_end=b"\xff\xff\xff", lba_start=1,
                                   sectors=min(disk_sectors - 1, 0xFFFF_FFFF)))
    entries = bytearray(G.DEFAULT_ENTRIES * G.ENTRY_SIZE)
    entries[0:G.ENTRY_SIZE] = G.gpt_entry.build(dict(
        type_guid=type_guid, part_guid=_guid(disk_id, "part1"), first_lba=part_start,
        last_lba=part_start + part_sectors - 1, attributes=0,
        name="PReP".encode("utf-16-le").ljust(72, b"\0")))
    backup_array = disk_sectors - 1 - _GPT_ARRAY_SECTORS
    common = dict(signature=G.SIGNATURE, revision=G.REVISION_1_0, header_size=G.HEADER_SIZE, reserved=0,
                  first_usable_lba=2 + _GPT_ARRAY_SECTORS, last_usable_lba=backup_array - 1,
                  disk_guid=_guid(disk_id, "disk"), num_part_entries=G.DEFAULT_ENTRIES,
                  part_entry_size=G.ENTRY_SIZE, part_array_crc32=G.crc32(bytes(entries)))
    primary = G.build_header(**common, current_lba=1, backup_lba=disk_sectors - 1, part_entry_lba=2)
    backup = G.build_header(**common, current_lba=disk_sectors - 1, backup_lba=1, part_entry_lba=backup_array)
    img[M.SECTOR:M.SECTOR + len(primary)] = primary
    img[2 * M.SECTOR:2 * M.SECTOR + len(entries)] = entries
    img[backup_array * M.SECTOR:(backup_array + _GPT_ARRAY_SECTORS) * M.SECTOR] = entries
    img[(disk_sectors - 1) * M.SECTOR:(disk_sectors - 1) * M.SECTOR + len(backup)] = backup


SPARSE_CHUNK = 1 << 20


def write_disk(path, **kwargs) -> None:
    """build_disk(**kwargs) written to path (created or truncated), sparse:
    runs of zero MiB are holes, so an 8 GiB image costs its partitions."""
    img = memoryview(build_disk(**kwargs))
    zero = bytes(SPARSE_CHUNK)
    with open(path, "wb") as f:
        for off in range(0, len(img), SPARSE_CHUNK):
            chunk = img[off:off + SPARSE_CHUNK]
            if chunk != zero[:len(chunk)]:
                f.seek(off)
                f.write(chunk)
        f.truncate(len(img))
