"""GRUB's run from its entry to the kernel hand-off (or its prompt).

kern/main.c: "Welcome to GRUB!", the prefix from the module area sets
`root` and `prefix`, then `normal` (normal/main.c): read_lists opens
$prefix/command.lst, fs.lst, crypto.lst and terminal.lst (absent on a
grub-install'ed disk with modules embedded: each is still a disk open and
a path lookup), then $prefix/grub.cfg is read and run line by line. With no
menu entry GRUB ends at the `grub>` prompt.

grub.cfg commands: those of the core (kern/corecmd.c: set, unset, insmod)
and of the modules in the image (echo, linux/initrd, boot, ...); a command
of no module in the image is GRUB's "can't find command" error, reported
by name. `linux` loads an ELF kernel as loader/powerpc/ieee1275/linux.c
does (segments at their p_paddr with ELF64_LOADMASK cleared, entry
likewise); `initrd` claims the next 1 MiB boundary after the kernel;
`boot` sets /chosen/bootargs and enters the kernel with r3 = initrd
address, r4 = its size, r5 = the client-interface entry.
"""

import shlex

import construct as c

from sim.abi import elf as E
from sim.cpu import execute
from firmware_model.grub.disk import DiskError, OfDisk
from firmware_model.grub.ext2 import Ext2, FsError, NotModelled

# GRUB's heap (kern/ieee1275/init.c grub_claim_heap) ends at 32 MiB here: the real
# grub-linux run loaded vmlinux (p_paddr 0) at 0x2000000 ("Booting Linux via __start()
# @ 0x0000000002000000") and the initrd right after it (prom_init's alloc_bottom
# 0x4ca0000 = 0x4a00000 + 2740224 rounded up). ASSUMPTION: that end, and the 1 MiB read
# buffer inside the heap, hold for every RAM size.
HEAP_END = 0x2000000
GRUB_BUFFER = HEAP_END - 0x100000
ELF64_LOADMASK = 0xC000000000000000
LINUX_PAD = 0x100000               # grub_linux_load64: "the kernel scribbles over memory beyond"
CIF_ENTRY = 0x00000000_0E000000    # ASSUMPTION: r5, SLOF's client entry (the model calls it by name)
LISTS = ("command.lst", "fs.lst", "crypto.lst", "terminal.lst")
CORE_COMMANDS = {"set", "unset", "insmod", "ls"}
MODULE_COMMANDS = {"echo": {"echo"}, "linux": {"linux", "initrd"}, "boot": {"boot"},
                   "configfile": {"configfile", "source"}, "cat": {"cat"}, "sleep": {"sleep"},
                   "halt": {"halt"}, "normal": {"normal", "menuentry", "submenu"}}
MODELLED = {"set", "unset", "insmod", "echo", "linux", "initrd", "boot"}
# GRUB script syntax (script/parser.y, lexer): the model runs plain command lines only.
KEYWORDS = {"if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "until", "function",
            "{", "}", "[", "!", "menuentry", "submenu"}
MAX_CFG = 1 << 20                  # model limit on grub.cfg's size


# init/version.c linux_banner: every Linux image carries it.
LINUX_BANNER = b"Linux version "


class GrubError(Exception):
    pass


def split_prefix(prefix: str) -> tuple[str, str | None, str]:
    """"(ieee1275/disk,msdos2)/boot/grub" -> ("disk", "msdos2", "/boot/grub").
    The partition follows the first comma not escaped with a backslash
    (kern/disk.c find_part_sep); "\\," in the device is a comma of the OF
    path (ofdisk.c compute_dev_path)."""
    if not prefix or not prefix.startswith("(") or ")" not in prefix:
        raise GrubError(f"prefix `{prefix}' names no device")
    dev, path = prefix[1:].split(")", 1)
    if not dev.startswith("ieee1275/"):
        raise GrubError(f"device `{dev}' is not an ieee1275 disk")
    dev = dev[len("ieee1275/"):]
    name, part, i = "", None, 0
    while i < len(dev):
        if dev[i] == "\\" and i + 1 < len(dev):
            name += dev[i + 1]
            i += 2
            continue
        if dev[i] == ",":
            part = dev[i + 1:] or None
            break
        name += dev[i]
        i += 1
    return name, part, path or "/"


class Grub:
    def __init__(self, cpu, cif, image, trace, costs):
        self.cpu = cpu
        self.ram = cpu.ram
        self.cif = cif
        self.image = image
        self.trace = trace
        self.costs = costs
        self.of = OfDisk(cif, trace, costs, cpu, GRUB_BUFFER)
        self.env: dict[str, str] = {}
        self.commands = set(CORE_COMMANDS)
        for m in image.modules:
            self.commands |= MODULE_COMMANDS.get(m, set())
        self.autoload: dict[str, str] = {}          # command.lst: command -> module on disk
        self.followed: list[str] = []
        self.files: list[dict] = []
        self.kernel = None
        self.initrd = (0, 0)

    def phase(self, name: str, **fields) -> None:
        self.trace.emit("guest", "phase", name=name, **fields)

    async def print(self, text: str) -> None:
        await self.cif.write(text.replace("\n", "\r\n"))

    def summary(self, **more) -> dict:
        return dict(prefix=self.image.prefix, modules=len(self.image.modules), followed=self.followed,
                    files=self.files, requests=len(self.of.reads), **more)

    async def main(self) -> dict:
        try:
            return await self._main()
        except NotModelled as exc:
            return await self.prompt(str(exc))

    async def _main(self) -> dict:
        self.phase("grub", prefix=self.image.prefix, modules=len(self.image.modules))
        self.trace.emit("guest", "grub_start", prefix=self.image.prefix, modules=",".join(self.image.modules))
        await self.print("Welcome to GRUB!\n\n")
        try:
            _, _, path = split_prefix(self.image.prefix)
        except GrubError as exc:
            return await self.prompt(str(exc))
        self.env.update(root=self.image.prefix[1:].split(")", 1)[0], prefix=self.image.prefix)
        if "normal" not in self.image.modules:
            return await self.prompt("no normal module in the core image")
        self.phase("grub normal", config=f"{self.image.prefix}/grub.cfg")
        for lst in LISTS:                           # read_lists: absent files are ignored
            try:
                text = await self.read_file(f"{path.rstrip('/')}/{lst}")
            except (DiskError, FsError):
                continue
            if lst == "command.lst":                # "[*]name: module" per line (normal/autofs.c)
                for line in text.decode("latin-1").splitlines():
                    name, _, mod = line.partition(":")
                    if mod.strip():
                        self.autoload[name.lstrip("*").strip()] = mod.strip()
        try:
            cfg = await self.read_file(f"{path.rstrip('/')}/grub.cfg")
        except (DiskError, FsError) as exc:
            return await self.prompt(f"grub.cfg: {exc}")
        return await self.run_script(cfg.decode("latin-1"))

    # --- files --------------------------------------------------------------

    def _split(self, path: str) -> tuple[str, str | None, str]:
        """A path with its device, or relative to $root."""
        return split_prefix(path if path.startswith("(") else f"({self.env.get('root', '')}){path}")

    async def open_file(self, path: str):
        """grub_file_open: disk open (partition probe), ext2 mount, lookup."""
        name, part, fpath = self._split(path)
        disk = await self.of.open(name, part)
        try:
            fs = Ext2(disk)
            await fs.mount()
            node = await fs.lookup(fpath)
        except (DiskError, FsError):
            await self.of.close(disk)
            raise
        return disk, fs, node

    async def read_file(self, path: str, limit: int = MAX_CFG) -> bytes:
        """Open, read whole, close (read_lists, read_config_file)."""
        disk, fs, node = await self.open_file(path)
        try:
            size = node.size | (node.size_high << 32)
            if size > limit:
                raise FsError(f"{path}: {size} bytes, more than the model reads ({limit})")
            return await fs.read_file(node, 0, size)
        finally:
            await self.of.close(disk)

    # --- the script -----------------------------------------------------------

    def expand(self, word: str) -> str:
        for k in sorted(self.env, key=len, reverse=True):
            word = word.replace("${" + k + "}", self.env[k]).replace("$" + k, self.env[k])
        return word

    async def run_script(self, text: str) -> dict:
        self.phase("grub.cfg", lines=text.count("\n"))
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                words = [self.expand(w) for w in shlex.split(line)]
            except ValueError:
                await self.print(f"error: syntax error.\n")
                continue
            if not words:
                continue
            cmd, args = words[0], words[1:]
            if "=" in cmd and not args:             # name=value is `set`
                cmd, args = "set", [cmd]
            if cmd in KEYWORDS:
                self.trace.emit("guest", "grub_unmodelled_command", command=cmd)
                return await self.prompt(f"grub.cfg uses GRUB script `{cmd}', which is not modelled")
            if cmd not in self.commands and cmd in self.autoload:
                self.trace.emit("guest", "grub_unmodelled_command", command=cmd)
                return await self.prompt(f"grub.cfg command `{cmd}' needs module {self.autoload[cmd]} from "
                                         "the disk: loading modules is not modelled")
            if cmd not in self.commands:
                self.trace.emit("guest", "grub_unknown_command", command=cmd)
                await self.print(f"error: can't find command `{cmd}'.\n")
                continue
            if cmd not in MODELLED:
                self.trace.emit("guest", "grub_unmodelled_command", command=cmd)
                return await self.prompt(f"grub.cfg command `{cmd}' is not modelled")
            self.followed.append(line)
            self.trace.emit("guest", "grub_command", line=line)
            result = await getattr(self, "cmd_" + cmd)(args)
            if result is not None:
                return result
        return await self.prompt("grub.cfg ended without booting a kernel")

    async def cmd_set(self, args):
        for a in args:
            k, _, v = a.partition("=")
            self.env[k] = v

    async def cmd_unset(self, args):
        for a in args:
            self.env.pop(a, None)

    async def cmd_insmod(self, args):
        for m in args:
            if m not in self.image.modules:        # grub_dl_load: $prefix/powerpc-ieee1275/<m>.mod
                await self.print(f"error: file `{self.env['prefix']}/powerpc-ieee1275/{m}.mod' not found.\n")

    async def cmd_echo(self, args):
        await self.print(" ".join(args) + "\n")

    async def cmd_linux(self, args):
        if not args:
            await self.print("error: filename expected.\n")
            return
        try:
            self.kernel = await self.load_kernel(args[0])
        except (DiskError, FsError, GrubError) as exc:
            self.kernel = None
            await self.print(f"error: {exc}.\n")
            return
        self.env["bootargs"] = " ".join(["BOOT_IMAGE=" + args[0]] + args[1:])

    async def cmd_initrd(self, args):
        if self.kernel is None:
            await self.print("error: you need to load the kernel first.\n")
            return
        try:
            disk, fs, node = await self.open_file(args[0])   # grub_initrd_init keeps it open
        except (DiskError, FsError, GrubError) as exc:
            await self.print(f"error: {exc}.\n")
            return
        try:
            size = node.size | (node.size_high << 32)
            _, addr, length = self.kernel
            first = (addr + length + 0xFFFFF) & ~0xFFFFF      # claimmap_iterate(.., 0x100000)
            if await self.cif.claim(first, size) < 0:
                await self.print("error: couldn't claim memory.\n")
                return
            await self._load(fs, node, args[0], first, size)
            self.initrd = (first, size)
        finally:
            await self.of.close(disk)

    async def cmd_boot(self, args):
        if self.kernel is None:
            await self.print("error: you need to load the kernel first.\n")
            return
        entry, addr, size = self.kernel
        self.trace.emit("guest", "grub_boot", entry=entry, initrd=self.initrd[0], initrd_size=self.initrd[1],
                        bootargs=self.env.get("bootargs", ""))
        self.phase("kernel", entry=entry, via="grub")
        cpu = self.cpu
        cpu.gpr[3], cpu.gpr[4], cpu.gpr[5] = self.initrd[0], self.initrd[1], CIF_ENTRY
        # A real Linux image (its linux_banner, init/version.c, is in what GRUB
        # loaded) is not executed instruction by instruction: the kernel stage
        # models it from its entry on. Any other image runs as machine code.
        linux = LINUX_BANNER in self.cpu.ram.read(addr, size)
        # grub_linux_boot: the jump to the kernel (r3/r4 initrd, r5 the client interface)
        self.trace.emit("guest", "kernel_entry", e_entry=entry, nip=entry, toc=cpu.gpr[2], via="grub",
                        linux_banner=linux)
        if linux:
            return {"stage": "kernel", "entry": entry, "stop": "a Linux image: the kernel stage models it",
                    "grub": self.summary()}
        stop = await execute(cpu, entry)
        self.trace.emit("guest", "guest_stop", reason=stop, nip=cpu.nip)
        return {"stage": "kernel", "entry": entry, "stop": stop, "grub": self.summary()}

    # --- loading --------------------------------------------------------------

    async def _load(self, fs, node, path: str, dest: int, size: int, pos: int = 0) -> None:
        async def sink(off, data):
            self.ram.write(dest + off, data)
        await fs.read_file(node, pos, size, sink)
        self.files.append(dict(path=path, addr=dest, bytes=size))
        self.trace.emit("guest", "grub_file_loaded", path=path, addr=dest, bytes=size)

    async def load_kernel(self, path: str):
        """grub_cmd_linux on an ELF, one open: (entry, load address, size)."""
        disk, fs, node = await self.open_file(path)
        try:
            return await self._load_elf(fs, node, path)
        finally:
            await self.of.close(disk)

    async def _load_elf(self, fs, node, path: str):
        head = await fs.read_file(node, 0, 64)               # grub_elf_file: the ehdr union
        ident = E.e_ident.parse(head[:16]) if len(head) >= 16 else None
        if ident is None or ident.magic != E.ELFMAG or ident.ei_class not in (E.ELFCLASS32, E.ELFCLASS64):
            raise GrubError("invalid arch-independent ELF magic")
        big = ident.ei_data == E.ELFDATA2MSB
        ehdr_t, phdr_t = E.headers(ident.ei_class, big)
        try:
            eh = ehdr_t.parse(head)
        except c.ConstructError:
            raise GrubError("premature end of file") from None
        if eh.e_type not in (E.ET_EXEC, E.ET_DYN):
            raise GrubError("this ELF file is not of the right type")
        if eh.e_phnum > 256 or eh.e_phentsize != phdr_t.sizeof():
            raise GrubError("invalid program headers")
        table = await fs.read_file(node, eh.e_phoff, eh.e_phnum * eh.e_phentsize)
        loads = [p for p in (phdr_t.parse(table[i * phdr_t.sizeof():]) for i in range(len(table) // phdr_t.sizeof()))
                 if p.p_type == E.PT_LOAD]
        if not loads:
            raise GrubError("no loadable segments")
        mask = ELF64_LOADMASK if ident.ei_class == E.ELFCLASS64 else 0
        base = min(p.p_paddr for p in loads) & ~mask
        top = max((p.p_paddr & ~mask) + p.p_memsz for p in loads)
        align = max([p.p_align for p in loads if p.p_align] or [1])
        size = top - base + LINUX_PAD
        # grub_linux_claimmap_iterate: the first free range at or above base
        seg = base if base >= HEAP_END else (HEAP_END + align - 1) // align * align
        if await self.cif.claim(seg, size) < 0:
            raise GrubError("couldn't claim memory")
        for p in loads:                                      # grub_elf64_load: seek, read, zero the rest
            dest = seg - base + (p.p_paddr & ~mask)
            await self._load(fs, node, path, dest, p.p_filesz, pos=p.p_offset)
            self.ram.write(dest + p.p_filesz, bytes(max(0, p.p_memsz - p.p_filesz)))
        return seg + (eh.e_entry & ~mask) - base, seg, size

    async def prompt(self, reason: str) -> dict:
        self.phase("grub prompt", reason=reason)
        self.trace.emit("guest", "grub_prompt", reason=reason)
        await self.print("grub> ")
        return {"stage": "grub", "reason": reason, "grub": self.summary()}
