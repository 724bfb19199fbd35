"""ELF32 and ELF64 headers, program and section headers (elf.h), in either byte order."""

import functools

import construct as c

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_EXEC, ET_DYN = 2, 3
EM_PPC, EM_PPC64 = 0x14, 0x15
PT_LOAD = 1
SHT_STRTAB = 3
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


@functools.cache
def elf32(big_endian: bool):
    """(Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr) in one byte order."""
    u16, u32 = (c.Int16ub, c.Int32ub) if big_endian else (c.Int16ul, c.Int32ul)
    ehdr = c.Struct(
        "e_ident" / e_ident,
        "e_type" / u16, "e_machine" / u16, "e_version" / u32,
        "e_entry" / u32, "e_phoff" / u32, "e_shoff" / u32, "e_flags" / u32,
        "e_ehsize" / u16, "e_phentsize" / u16, "e_phnum" / u16,
        "e_shentsize" / u16, "e_shnum" / u16, "e_shstrndx" / u16,
    )
    phdr = c.Struct(
        "p_type" / u32, "p_offset" / u32, "p_vaddr" / u32, "p_paddr" / u32,
        "p_filesz" / u32, "p_memsz" / u32, "p_flags" / u32, "p_align" / u32,
    )
    shdr = c.Struct(
        "sh_name" / u32, "sh_type" / u32, "sh_flags" / u32, "sh_addr" / u32, "sh_offset" / u32,
        "sh_size" / u32, "sh_link" / u32, "sh_info" / u32, "sh_addralign" / u32, "sh_entsize" / u32,
    )
    return ehdr, phdr, shdr


def headers(ei_class: int, big_endian: bool):
    """(Ehdr, Phdr) for an ELF class: the two layouts SLOF's elf32.c/elf64.c use."""
    return (elf32(big_endian) if ei_class == ELFCLASS32 else elf64(big_endian))[:2]
