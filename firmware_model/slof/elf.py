"""SLOF's ELF loader (lib/libelf/elf.c, elf32.c, elf64.c; slof/fs/elf.fs)
for the image at load-base, as `load-elf-init` (slof/fs/boot.fs) calls it.

- elf_check_file: the magic (-1), e_type ET_EXEC/ET_DYN (-3), e_machine
  EM_PPC or EM_PPC64 (-4); otherwise the type is ei_class (1 or 2).
- elf_load_segments32/64: the program-header loop runs i = 0..e_phnum
  *inclusive* (`i <= ehdr->e_phnum`), stepping e_phentsize. A PT_LOAD whose
  p_paddr != p_vaddr prints "ELFnn: VirtAddr(..) != PhysAddr(..) not
  supported, aborting" and the entry becomes 0. Otherwise elf-claim-segment
  claims [p_paddr, +p_memsz), p_filesz bytes are moved from the file and the
  rest of p_memsz (the bss) is zeroed.
- elf_load_file: entry 0 makes the type 0, and load-elf-init then leaves
  `go` as no-go: at go time SLOF prints "E3403: Bad executable:   " with an
  empty abort string, then E3406 (the kernel-prep console in real-grub/).

Every path that gives type 0 raises BadExecutable. A claim outside free
RAM (past the end of RAM, over SLOF's own memory, a huge p_memsz) raises
ClaimFailed: elf-claim-segment prints "Memory for ELF file is already in
use!", the ABORT reaches init-program's CATCH as E3402 and nothing counts as
loaded (measured on QEMU 7.2 + SLOF 20220719, tests/data/real-grub/elf-*).
A segment source past the end of RAM reads as zeros (QEMU's unassigned
memory), as a program header outside RAM gives type 0: model choices, named
in the trace. Bounds: e_phnum and e_phentsize are 16-bit, so at most 65536
headers are read; every copy and bss lies inside a claim that ends at or
below claim_limit, so no guest field can make the host allocate more than
guest RAM.
"""

from sim.abi.elf import (
    ELFCLASS32, ELFCLASS64, ELFDATA2MSB, ELFMAG, EM_PPC, EM_PPC64, ET_DYN, ET_EXEC, PT_LOAD, e_ident, elf64, headers,
)

# load-elf-init's CASE (boot.fs): elf type -> the go word.
GO_WORDS = {1: "go-32-be", 2: "go-64-be", 3: "go-64-lev1", 4: "go-64-lev2", 5: "go-32-lev1"}


class BadExecutable(Exception):
    """elf_load_file gave type 0 (or a negative check code): no-go, E3403.

    `console` is what SLOF printed on the way (the VirtAddr line), `reason`
    is the model's one-line account for the trace."""

    def __init__(self, reason: str, console: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.console = console


class ClaimFailed(Exception):
    """elf-claim-segment's claim threw: E3402, then the next boot device."""

    CONSOLE = "Memory for ELF file is already in use!\r\nE3402: Aborting boot, internal error"


class Loaded:
    """What load-elf-init keeps: the go word's type, the entry and the claims."""

    def __init__(self, kind: int, entry: int, segments: list[tuple[int, int]], copied: int):
        self.kind = kind
        self.entry = entry
        self.segments = segments     # the claim list: (p_paddr, p_memsz) per PT_LOAD
        self.copied = copied


def load(ram, base: int, size: int, claim_limit: int, hex_upper: bool = False) -> Loaded:
    """elf_load_file on the size bytes at base, with elf_forth_claim; claims must end at or below
    claim_limit (SLOF's own memory lies above it). hex_upper: SLOF's libc
    printed %lx in upper case (before da3bd7a)."""
    x = "X" if hex_upper else "x"
    if base + 16 > ram.size:
        raise BadExecutable("header outside RAM")
    ident = e_ident.parse(ram.read(base, 16))
    if ident.magic != ELFMAG:
        raise BadExecutable("elf_check_file: -1 (no ELF magic)")
    big = ident.ei_data == ELFDATA2MSB      # elf_byteswap_header*: any other value is "other endian"
    if ident.ei_class not in (ELFCLASS32, ELFCLASS64):
        # elf_load_file's switch has no case: entry stays uninitialised in SLOF.
        raise BadExecutable(f"ei_class {ident.ei_class}: neither ELF32 nor ELF64 (model refuses)")
    ehdr_t, phdr_t = headers(ident.ei_class, big)
    ehdr = ehdr_t.parse(ram.read(base, ehdr_t.sizeof()))
    if ehdr.e_type not in (ET_EXEC, ET_DYN):
        raise BadExecutable(f"elf_check_file: -3 (e_type {ehdr.e_type})")
    if ehdr.e_machine not in (EM_PPC, EM_PPC64):
        raise BadExecutable(f"elf_check_file: -4 (e_machine 0x{ehdr.e_machine:x})")
    bits = 32 if ident.ei_class == ELFCLASS32 else 64
    segments, copied = [], 0
    phdr_size = phdr_t.sizeof()
    for i in range(ehdr.e_phnum + 1):                      # i <= e_phnum
        off = base + ehdr.e_phoff + i * ehdr.e_phentsize
        if off + phdr_size > ram.size:
            raise BadExecutable(f"program header {i} at 0x{off:x} is outside RAM")
        ph = phdr_t.parse(ram.read(off, phdr_size))
        if ph.p_type != PT_LOAD:
            continue
        if ph.p_paddr != ph.p_vaddr:
            raise BadExecutable(f"PT_LOAD {i}: p_vaddr != p_paddr", f"ELF{bits}: VirtAddr({ph.p_vaddr:{x}}) != "
                                f"PhysAddr({ph.p_paddr:{x}}) not supported, aborting\r\n")
        end = ph.p_paddr + max(ph.p_memsz, ph.p_filesz)
        if end > claim_limit:                              # elf-claim-segment: claim throws
            raise ClaimFailed(f"PT_LOAD {i}: [0x{ph.p_paddr:x}, 0x{end:x}) is not free RAM (below 0x{claim_limit:x})")
        src = base + ph.p_offset
        inside = max(0, min(ph.p_filesz, ram.size - src))
        data = (ram.read(src, inside) if inside else b"") + bytes(ph.p_filesz - inside)   # memmove; past RAM: zeros
        ram.write(ph.p_paddr, data)
        ram.write(ph.p_paddr + ph.p_filesz, bytes(max(0, ph.p_memsz - ph.p_filesz)))  # clear bss
        segments.append((ph.p_paddr, ph.p_memsz))
        copied += ph.p_filesz
    if ehdr.e_entry == 0:
        raise BadExecutable("e_entry 0: elf_load_file type 0")
    if bits == 32:
        kind = 1 if big else 5
    else:
        kind = 2 if big else 3 + ((ehdr.e_flags & 3) == 2)
    return Loaded(kind, ehdr.e_entry, segments, copied)


def entry_point(ram, kind: int, e_entry: int) -> tuple[int, int] | None:
    """(nip, r2) as the go word computes them; go-64-be and go-64-lev1 read
    the ELFv1 function descriptor at e_entry. None: the descriptor is
    outside RAM (real SLOF would take a machine check there)."""
    if kind in (2, 3):
        _, _, desc_t = elf64(kind == 2)
        if e_entry + desc_t.sizeof() > ram.size:
            return None
        desc = desc_t.parse(ram.read(e_entry, desc_t.sizeof()))
        return desc.entry, desc.toc
    return e_entry, 0
