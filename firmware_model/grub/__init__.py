"""GRUB 2.06 for powerpc-ieee1275, the client program distributions put in PReP.

`core_image` recognises GRUB's core image by its own contents, as GRUB
finds its modules (kern/main.c, include/grub/kernel.h FOR_MODULES): a
PT_LOAD segment that starts with struct grub_module_info32 ("gmim"), then
module headers: ELF objects (each names itself in its `.modname`
section), an optional embedded config and the prefix string, for example
`(ieee1275/disk,msdos2)/boot/grub`.
"""

import construct as c

from sim.abi import elf as E
from sim.abi.grub import (
    GRUB_MODULE_MAGIC, OBJ_TYPE_CONFIG, OBJ_TYPE_ELF, OBJ_TYPE_PREFIX, module_header, module_info32,
)

MAX_MODULES = 4096         # model limit on the module walk


class CoreImage:
    def __init__(self, modbase: int, prefix: str | None, modules: list[str], config: str | None):
        self.modbase = modbase
        self.prefix = prefix
        self.modules = modules
        self.config = config


def core_image(ram, segments) -> CoreImage | None:
    """The loaded program's module area, or None if it is not GRUB's."""
    for addr, size in segments:
        if size < module_info32.sizeof() or addr + size > ram.size:
            continue
        info = module_info32.parse(ram.read(addr, module_info32.sizeof()))
        if info.magic != GRUB_MODULE_MAGIC or info.size > size:
            continue
        return _walk(ram, addr, info)
    return None


def _walk(ram, base: int, info) -> CoreImage:
    prefix, config, modules = None, None, []
    pos, end = base + info.offset, base + info.size
    for _ in range(MAX_MODULES):
        if pos + module_header.sizeof() > end:
            break
        h = module_header.parse(ram.read(pos, module_header.sizeof()))
        if h.size < module_header.sizeof() or pos + h.size > end:
            break
        body = ram.read(pos + module_header.sizeof(), h.size - module_header.sizeof())
        if h.type == OBJ_TYPE_PREFIX:
            prefix = body.split(b"\0", 1)[0].decode("latin-1")
        elif h.type == OBJ_TYPE_CONFIG:
            config = body.split(b"\0", 1)[0].decode("latin-1")
        elif h.type == OBJ_TYPE_ELF:
            modules.append(modname(body) or "?")
        pos += (h.size + 3) & ~3
    return CoreImage(base, prefix, modules, config)


def modname(obj: bytes) -> str | None:
    """The `.modname` section of a module (a big-endian ELF32 relocatable)."""
    try:
        ehdr_t, _, shdr_t = E.elf32(True)
        eh = ehdr_t.parse(obj)
        if eh.e_ident.magic != E.ELFMAG or eh.e_shstrndx >= eh.e_shnum or eh.e_shnum > 256:
            return None
        shdrs = [shdr_t.parse(obj[eh.e_shoff + i * eh.e_shentsize:]) for i in range(eh.e_shnum)]
        names = shdrs[eh.e_shstrndx]
        for s in shdrs:
            n = obj[names.sh_offset + s.sh_name:].split(b"\0", 1)[0]
            if n == b".modname":
                return obj[s.sh_offset:s.sh_offset + s.sh_size].split(b"\0", 1)[0].decode("latin-1")
    except (c.ConstructError, IndexError, UnicodeDecodeError):
        return None
    return None
