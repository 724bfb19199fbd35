"""mkdisk's "grub" layout: a disk laid out as a ppc64 distribution installs
itself (real-grub/README.md), built without any GRUB code.

- Partition 1, PReP (MBR type 0x41 with the boot flag, or the GPT PReP
  GUID), from LBA 2048: an ELF32 big-endian EM_PPC image in the format
  grub-mkimage -O powerpc-ieee1275 writes: a first PT_LOAD for the kernel
  (here one illegal instruction, so an image that is not recognised stops
  at once) and a second PT_LOAD holding the module area: struct
  grub_module_info32 ("gmim"), one ELF32 object per module carrying only
  its `.modname` section, and the prefix `(ieee1275/disk,msdos2)/boot/grub`
  (`gpt2` on GPT).
- Partition 2, Linux (0x83 / the Linux filesystem GUID), to the end of the
  disk: ext2 with /boot/grub/grub.cfg, /boot/vmlinux (mkdisk's payload ELF,
  entered at its code as GRUB enters a kernel) and /boot/initrd.img.

The ext2 filesystem is made by e2fsprogs' `mke2fs -d DIR` (present on
Debian; the reference disks are built the same way): a maintained tool that
writes real ext2, with the reference's options (4 KiB blocks, 128-byte
inodes, fixed UUID and hash seed, E2FSPROGS_FAKE_TIME) so the image is
reproducible except for inode ctimes, which no read depends on.
"""

import os
import shutil
import subprocess
import tempfile

from sim.abi import elf as E
from sim.abi import gpt as G
from sim.abi import mbr as M
from sim.abi.grub import GRUB_MODULE_MAGIC, OBJ_TYPE_ELF, OBJ_TYPE_PREFIX, module_header, module_info32

PREP_START = 2048
PREP_SECTORS = 2048                   # 1 MiB (distributions make 4-8 MiB)
CORE_ADDR = 0x200000                  # GRUB's link address on powerpc-ieee1275 (real core: 0x200000)
MODULES = ("part_msdos", "part_gpt", "fshelp", "ext2", "normal", "elf", "linux", "echo", "boot")
EPOCH = 1700000000
FS_UUID = "5e1f5e1f-0000-4000-8000-00000000e2f5"
GRUB_CFG = """set timeout=0
echo GRUB-CFG-OK
linux /boot/vmlinux console=hvc0
initrd /boot/initrd.img
boot
"""


def module_object(name: str) -> bytes:
    """An ELF32 BE relocatable with sections null, .shstrtab, .modname."""
    ehdr_t, _, shdr_t = E.elf32(True)
    strtab = b"\0.shstrtab\0.modname\0"
    modname = name.encode() + b"\0"
    data_off = ehdr_t.sizeof()
    sh_off = (data_off + len(strtab) + len(modname) + 3) & ~3
    ident = dict(magic=E.ELFMAG, ei_class=E.ELFCLASS32, ei_data=E.ELFDATA2MSB, ei_version=1,
                 ei_osabi=0, ei_abiversion=0, pad=bytes(7))
    eh = ehdr_t.build(dict(e_ident=ident, e_type=1, e_machine=E.EM_PPC, e_version=1, e_entry=0, e_phoff=0,
                           e_shoff=sh_off, e_flags=0, e_ehsize=ehdr_t.sizeof(), e_phentsize=0, e_phnum=0,
                           e_shentsize=shdr_t.sizeof(), e_shnum=3, e_shstrndx=1))
    zero = dict(sh_name=0, sh_type=0, sh_flags=0, sh_addr=0, sh_offset=0, sh_size=0, sh_link=0, sh_info=0,
                sh_addralign=0, sh_entsize=0)
    shdrs = [zero, dict(zero, sh_name=1, sh_type=E.SHT_STRTAB, sh_offset=data_off, sh_size=len(strtab)),
             dict(zero, sh_name=11, sh_type=1, sh_offset=data_off + len(strtab), sh_size=len(modname))]
    body = (eh + strtab + modname).ljust(sh_off, b"\0")
    return body + b"".join(shdr_t.build(s) for s in shdrs)


def _module(kind: int, body: bytes) -> bytes:
    size = module_header.sizeof() + len(body)
    return (module_header.build(dict(type=kind, size=size)) + body).ljust((size + 3) & ~3, b"\0")


def core_image(prefix: str, modules=MODULES) -> bytes:
    """A GRUB-format core image (grub-mkimage's layout, no GRUB code)."""
    ehdr_t, phdr_t, _ = E.elf32(True)
    mods = b"".join(_module(OBJ_TYPE_ELF, module_object(m)) for m in modules)
    mods += _module(OBJ_TYPE_PREFIX, prefix.encode() + b"\0")
    info = module_info32.build(dict(magic=GRUB_MODULE_MAGIC, offset=module_info32.sizeof(),
                                    size=module_info32.sizeof() + len(mods)))
    area = info + mods
    kernel = bytes(16)                         # 0x00000000: an illegal instruction at the entry
    k_off = ehdr_t.sizeof() + 2 * phdr_t.sizeof()
    m_off = k_off + len(kernel)
    mod_addr = (CORE_ADDR + len(kernel) + 0xFFF) & ~0xFFF
    ident = dict(magic=E.ELFMAG, ei_class=E.ELFCLASS32, ei_data=E.ELFDATA2MSB, ei_version=1,
                 ei_osabi=0, ei_abiversion=0, pad=bytes(7))
    eh = ehdr_t.build(dict(e_ident=ident, e_type=E.ET_EXEC, e_machine=E.EM_PPC, e_version=1, e_entry=CORE_ADDR,
                           e_phoff=ehdr_t.sizeof(), e_shoff=0, e_flags=0, e_ehsize=ehdr_t.sizeof(),
                           e_phentsize=phdr_t.sizeof(), e_phnum=2, e_shentsize=0, e_shnum=0, e_shstrndx=0))
    ph = [dict(p_type=E.PT_LOAD, p_offset=k_off, p_vaddr=CORE_ADDR, p_paddr=CORE_ADDR, p_filesz=len(kernel),
               p_memsz=len(kernel) + 0x1000, p_flags=7, p_align=0x10),
          dict(p_type=E.PT_LOAD, p_offset=m_off, p_vaddr=mod_addr, p_paddr=mod_addr, p_filesz=len(area),
               p_memsz=len(area), p_flags=7, p_align=4)]
    # SLOF's loop also reads header e_phnum (one past the end): the zeros after the image are PT_NULL.
    return eh + b"".join(phdr_t.build(p) for p in ph) + kernel + area + bytes(phdr_t.sizeof())


def initrd_image(size: int = 200 * 1024) -> bytes:
    """Deterministic bytes; > 12 blocks of 4 KiB so GRUB reads through an indirect block."""
    return bytes((i * 131 + (i >> 12)) & 0xFF for i in range(size))


def ext2_image(files: dict[str, bytes], size_mib: int, fs_type: str = "ext2") -> bytes:
    """mke2fs -d: an ext2 (or ext3/ext4, mke2fs's defaults) filesystem holding files {path: bytes}."""
    if fs_type not in ("ext2", "ext3", "ext4"):
        raise ValueError(f"fs_type = {fs_type!r}: expected ext2, ext3 or ext4")
    mke2fs = shutil.which("mke2fs") or next((p for p in ("/sbin/mke2fs", "/usr/sbin/mke2fs")
                                             if os.access(p, os.X_OK)), None)
    if mke2fs is None:
        raise ValueError("layout = \"grub\" needs mke2fs (e2fsprogs) to build its ext2 partition; "
                         "install it (apt-get install e2fsprogs)")
    with tempfile.TemporaryDirectory(prefix="slofsim-ext2-") as tmp:
        root = os.path.join(tmp, "root")
        for rel, data in files.items():
            p = os.path.join(root, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        for dp, dns, fns in os.walk(root, topdown=False):
            for n in dns + fns:
                os.utime(os.path.join(dp, n), (EPOCH, EPOCH))
        img = os.path.join(tmp, "fs.ext2")
        env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(EPOCH), SOURCE_DATE_EPOCH=str(EPOCH))
        cmd = [mke2fs, "-q", "-F", "-t", fs_type, "-b", "4096", *(["-I", "128"] if fs_type == "ext2" else []),
               "-m", "0", "-U", FS_UUID,
               "-E", f"hash_seed={FS_UUID},root_owner=0:0", "-d", root, img, f"{size_mib}M"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            raise ValueError(f"mke2fs failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
        with open(img, "rb") as f:
            return f.read()


def build_grub_disk(*, size_mib: int = 32, gpt: bool = False, disk_id: int = 0x5EA5C0DE,
                    grub_cfg: str = GRUB_CFG, kernel: bytes = b"", initrd: bytes | None = None,
                    files: dict[str, bytes] | None = None, core: bytes | None = None,
                    prep_sectors: int = PREP_SECTORS, fs_type: str = "ext2") -> bytearray:
    """The disk. kernel is /boot/vmlinux (sim.mkdisk passes its payload);
    files replaces the whole ext2 content, core the GRUB-format image (a
    test passes grub-mkimage's real one)."""
    if not isinstance(size_mib, int) or isinstance(size_mib, bool) or not 8 <= size_mib <= 4096:
        raise ValueError(f"size_mib = {size_mib!r}: the grub layout takes 8..4096 MiB")
    sectors = size_mib * 2048
    p2 = PREP_START + prep_sectors
    end = sectors - 34 if gpt else sectors                      # GPT: the backup array and header
    fs_sectors = (end - p2) // 8 * 8
    if files is None:
        files = {"boot/grub/grub.cfg": grub_cfg.encode(), "boot/vmlinux": kernel,
                 "boot/initrd.img": initrd_image() if initrd is None else initrd}
    fs = ext2_image(files, fs_sectors // 2048 or 1, fs_type)
    if len(fs) > fs_sectors * 512:
        raise ValueError(f"size_mib = {size_mib}: too small for the ext2 partition")
    if core is None:
        core = core_image(f"(ieee1275/disk,{'gpt' if gpt else 'msdos'}2)/boot/grub")
    if len(core) > prep_sectors * 512:
        raise ValueError(f"the core image ({len(core)} bytes) does not fit in the PReP partition")
    img = bytearray(sectors * 512)
    if gpt:
        _gpt(img, sectors, [(G.PREP, PREP_START, p2 - 1, "PReP"), (G.LINUX_FS, p2, p2 + fs_sectors - 1, "root")],
             disk_id)
    else:
        ent = [dict(boot_indicator=M.BOOT_ACTIVE, chs_start=b"\xfe\xff\xff", type=M.PART_TYPE_PREP,
                    chs_end=b"\xfe\xff\xff", lba_start=PREP_START, sectors=prep_sectors),
               dict(boot_indicator=0, chs_start=b"\xfe\xff\xff", type=0x83, chs_end=b"\xfe\xff\xff",
                    lba_start=p2, sectors=fs_sectors)]
        empty = dict(boot_indicator=0, chs_start=bytes(3), type=0, chs_end=bytes(3), lba_start=0, sectors=0)
        img[0:512] = M.mbr.build(dict(bootcode=bytes(440), disk_id=disk_id, reserved=bytes(2),
                                      partitions=ent + [empty, empty], signature=M.MBR_SIGNATURE))
    img[PREP_START * 512:PREP_START * 512 + len(core)] = core
    img[p2 * 512:p2 * 512 + len(fs)] = fs
    return img


def _gpt(img: bytearray, sectors: int, parts, disk_id: int) -> None:
    """Protective MBR, primary header and array, backup array and header."""
    import uuid
    n = G.DEFAULT_ENTRIES
    arr = bytearray(n * G.ENTRY_SIZE)
    for i, (tg, first, last, name) in enumerate(parts):
        arr[i * G.ENTRY_SIZE:(i + 1) * G.ENTRY_SIZE] = G.gpt_entry.build(dict(
            type_guid=tg, part_guid=uuid.uuid5(uuid.NAMESPACE_OID, f"slofsim.{disk_id:08x}.part{i + 1}").bytes_le,
            first_lba=first, last_lba=last, attributes=0, name=name.encode("utf-16-le").ljust(72, b"\0")))
    asec = n * G.ENTRY_SIZE // 512
    backup = sectors - 1 - asec
    empty = dict(boot_indicator=0, chs_start=bytes(3), type=0, chs_end=bytes(3), lba_start=0, sectors=0)
    img[0:512] = M.mbr.build(dict(bootcode=bytes(440), disk_id=0, reserved=bytes(2), signature=M.MBR_SIGNATURE,
                                  partitions=[dict(boot_indicator=0, chs_start=b"\x00\x02\x00",
                                                   type=M.PART_TYPE_GPT_PROTECTIVE, chs_end=b"\xff\xff\xff",
                                                   lba_start=1, sectors=min(sectors - 1, 0xFFFFFFFF))]
                                  + [empty] * 3))
    common = dict(signature=G.SIGNATURE, revision=G.REVISION_1_0, header_size=G.HEADER_SIZE, reserved=0,
                  first_usable_lba=2 + asec, last_usable_lba=backup - 1,
                  disk_guid=uuid.uuid5(uuid.NAMESPACE_OID, f"slofsim.{disk_id:08x}.disk").bytes_le,
                  num_part_entries=n, part_entry_size=G.ENTRY_SIZE, part_array_crc32=G.crc32(bytes(arr)))
    prim = G.build_header(**common, current_lba=1, backup_lba=sectors - 1, part_entry_lba=2)
    back = G.build_header(**common, current_lba=sectors - 1, backup_lba=1, part_entry_lba=backup)
    img[512:512 + len(prim)] = prim
    img[1024:1024 + len(arr)] = arr
    img[backup * 512:(backup + asec) * 512] = arr
    img[(sectors - 1) * 512:(sectors - 1) * 512 + len(back)] = back
