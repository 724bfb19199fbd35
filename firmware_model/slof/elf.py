"""SLOF's ELF loader (lib/libelf/elf.c, elf64.c) for the image at load-base.

Checks the magic, the type (ET_EXEC/ET_DYN) and the machine (EM_PPC or
EM_PPC64), copies PT_LOAD segments to p_paddr and zeroes their bss. The
program-header loop runs to e_phnum inclusive, as elf64.c's `i <= e_phnum`
does. A 64-bit big-endian image is entered through its ELFv1 descriptor.
"""

import construct as c

from sim.abi.elf import (
    ELFCLASS64, ELFDATA2MSB, ELFMAG, EM_PPC, EM_PPC64, ET_DYN, ET_EXEC, PT_LOAD, e_ident, elf64,
)


class ElfError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def load(ram, base: int, size: int) -> tuple[int, int, int]:
    """elf_load_file: (type, entry, bytes copied); ElfError on -1/-3/-4."""
    ident = e_ident.parse(ram.read(base, 16))
    if ident.magic != ELFMAG:
        raise ElfError(-1, "no ELF magic")
    if ident.ei_class != ELFCLASS64:
        raise ElfError(-1, "only ELF64 is modelled")
    big = ident.ei_data == ELFDATA2MSB
    ehdr_t, phdr_t, _ = elf64(big)
    ehdr = ehdr_t.parse(ram.read(base, ehdr_t.sizeof()))
    if ehdr.e_type not in (ET_EXEC, ET_DYN):
        raise ElfError(-3, f"e_type {ehdr.e_type}")
    if ehdr.e_machine not in (EM_PPC, EM_PPC64):
        raise ElfError(-4, f"e_machine 0x{ehdr.e_machine:x}")
    copied = 0
    for i in range(ehdr.e_phnum + 1):
        off = base + ehdr.e_phoff + i * phdr_t.sizeof()
        try:
            ph = phdr_t.parse(ram.read(off, phdr_t.sizeof()))
        except (c.ConstructError, Exception):
            break
        if ph.p_type != PT_LOAD:
            continue
        if ph.p_paddr != ph.p_vaddr:
            raise ElfError(0, f"ELF64: VirtAddr({ph.p_vaddr:x}) != PhysAddr({ph.p_paddr:x}) not supported, aborting")
        data = ram.read(base + ph.p_offset, ph.p_filesz)   # memmove from the load buffer
        ram.write(ph.p_paddr, data)
        if ph.p_memsz > ph.p_filesz:
            ram.write(ph.p_paddr + ph.p_filesz, bytes(ph.p_memsz - ph.p_filesz))
        copied += ph.p_filesz
    kind = 2 if big else 3 + ((ehdr.e_flags & 3) == 2)   # go-64-be / LE ABIv1 / ABIv2
    return kind, ehdr.e_entry, copied


def entry_point(ram, kind: int, e_entry: int) -> tuple[int, int]:
    """(nip, toc): go-64-be dereferences the ELFv1 function descriptor."""
    if kind == 2:
        _, _, desc_t = elf64(True)
        desc = desc_t.parse(ram.read(e_entry, desc_t.sizeof()))
        return desc.entry, desc.toc
    return e_entry, 0
