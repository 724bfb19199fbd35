"""ELF64 header and program header (elf.h), in either byte order."""

import functools

import construct as c

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_EXEC, ET_DYN = 2, 3
EM_PPC, EM_PPC64 = 0x14, 0x15
PT_LOAD = 1
EV_CURRENT = 1

e_ident = c.Struct(
    "magic" / c.Bytes(4),
    "ei_class" / c.Int8ub,
    "ei_data" / c.Int8ub,
    "ei_version" / c.Int8ub,
    "ei_osabi" / c.Int8ub,
    "ei_abiversion" / c.Int8ub,
    "pad" / c.Bytes(7),
)


@functools.cache
def elf64(big_endian: bool):
    """(Elf64_Ehdr, Elf64_Phdr, ELFv1 function descriptor) in one byte order."""
    u16, u32, u64 = (c.Int16ub, c.Int32ub, c.Int64ub) if big_endian else (c.Int16ul, c.Int32ul, c.Int64ul)
    ehdr = c.Struct(
        "e_ident" / e_ident,
        "e_type" / u16, "e_machine" / u16, "e_version" / u32,
        "e_entry" / u64, "e_phoff" / u64, "e_shoff" / u64, "e_flags" / u32,
        "e_ehsize" / u16, "e_phentsize" / u16, "e_phnum" / u16,
        "e_shentsize" / u16, "e_shnum" / u16, "e_shstrndx" / u16,
    )
    phdr = c.Struct(
        "p_type" / u32, "p_flags" / u32, "p_offset" / u64, "p_vaddr" / u64,
        "p_paddr" / u64, "p_filesz" / u64, "p_memsz" / u64, "p_align" / u64,
    )
    # ELFv1 ABI: e_entry points at {entry address, TOC, environment}.
    func_desc = c.Struct("entry" / u64, "toc" / u64, "env" / u64)
    return ehdr, phdr, func_desc
