"""SLOF's boot, from start-up to the hand-off (or to the Forth prompt).

The phases mirror real SLOF on QEMU: start-up, the PCI probe under
/pci@800000020000000 (qemu,phb-enumerated), then `boot` over the boot list:
open the disk (virtio-blk init on first open), disk-label load, ELF load,
close-dev, and a jump to the image's entry. Console text is real SLOF's,
minus the checkpoint codes and ANSI escapes.
"""

from sim.abi.virtio import PCI_DEVICE_ID_VIRTIO_BLOCK, PCI_VENDOR_ID_REDHAT_QUMRANET, vring_size
from sim.cpu import execute
from firmware_model.slof.deblocker import Deblocker
from firmware_model.slof.disk_label import DiskLabel
from firmware_model.slof.elf import GO_WORDS, BadExecutable, ClaimFailed, entry_point, load as elf_load
from firmware_model.hvcall import HvCalls
from firmware_model.rtas_pci import Phb, PciFunction
from firmware_model.slof.releases import LOGO
from firmware_model.slof.virtio import setup_vd
from firmware_model.slof.virtio_blk import VirtioBlk

LOAD_BASE = 0x4000                # default-load-base (board-qemu/slof/OF.fs)
RING_BELOW_TOP = 0x1C8C000        # the ring landed at 0x3e374000 with 1 GiB (real-slof)
# 2015: `1000 CLAIM VALUE queue-addr` at probe (pci-device_1af4_1001.fs:26-27)
# gave 0x3fe04000 with 1 GiB (real-slof-2015, QUEUE_PFN 0x3fe04); other RAM
# sizes: the same distance from the top (ASSUMPTION, as RING_BELOW_TOP).
RING_BELOW_TOP_PROBE = 0x1FC000
# No qemu,boot-device and no boot-device in NVRAM: the default list
# (board-qemu/slof/qemu-bootlist.fs:37-44).
BOOT_DEVICE = ("disk", "cdrom", "net")


def banner(rel) -> str:
    """The start-up banner (board-qemu/slof/OF.fs) of release row `rel`."""
    return ("\r\n\r\nSLOF " + "*" * 70 + "\r\nQEMU Starting\r\n"
            f" Build Date = {rel.build_date or 'slofsim'}\r\n"
            f" FW Version = {rel.fw_version or 'slofsim model of SLOF ' + rel.tag}\r\n"
            ' Press "s" to enter Open Firmware.\r\n\r\n'
            "Populating /vdevice methods\r\nPopulating /vdevice/vty@71000000\r\n"
            "Populating /vdevice/nvram@71000001\r\n")


def welcome(rel) -> str:
    """Console set-up and the copyright text (board-qemu/slof/copyright-oss.fs)."""
    return ("No NVRAM common partition, re-initializing...\r\nScanning USB \r\n"
            "Using default console: /vdevice/vty@71000000\r\n     \r\n"
            "  Welcome to Open Firmware\r\n\r\n"
            f"  Copyright (c) {rel.copyright_years} IBM Corporation All rights reserved.\r\n"
            "  This program and the accompanying materials are made available\r\n"
            "  under the terms of the BSD License available at\r\n"
            "  http://www.opensource.org/licenses/bsd-license.php\r\n\r\n")


def prompt(rel, e3407: bool = True) -> str:
    """E3407, then (until 2f1e6a7) the logo, the help lines, the prompt.
    `boot` (boot.fs) prints E3407 only when no device loaded anything; after
    a loaded image failed at go time (E3403/E3406) load-next just runs out,
    and until 06e1e07 `boot` then printed the banner once more itself."""
    banner = (LOGO if rel.logo else "") + rel.help_lines
    again = banner + "\r\n\r\n" if rel.banner_after_go and not e3407 else ""
    return (("\r\n\r\nE3407: Load failed\r\n\r\n" if e3407 else "\r\n\r\n") + again + banner
            + "\r\n\r\nReady! \r\n0 > ")

# SLOF's own memory (image, heap, FDT) below the top of RAM: an ELF segment
# (elf-claim-segment) or a client `claim` reaching above it fails. Measured
# with 1 GiB: [0x3daef000,+4 KiB) claimed, [0x3daf0000,+4 KiB) "already in use"
# (tests/data/real-grub/elf-claim-bisect.txt). ASSUMPTION: the same distance
# from the top for other RAM sizes, as RING_BELOW_TOP.
CLAIM_BELOW_TOP = 0x40000000 - 0x3DAF0000   # SLOF 20220719 with 1 GiB: claims end at 0x3daf0000

NO_GO = "\r\nE3403: Bad executable:   \r\n\r\nE3406: Client application returned an error.\r\n"


class Slof:
    def __init__(self, cpu, device_tree: dict, trace, costs, *, timeout_ms: int, max_prep_blocks: int, release):
        self.cpu = cpu
        self.rel = release          # the SLOF release row (firmware_model/slof/releases.py)
        self.dt = device_tree
        self.trace = trace
        self.costs = costs
        self.timeout_ms = timeout_ms
        self.max_prep_blocks = max_prep_blocks
        top = device_tree["memory"]
        self.ring = top - RING_BELOW_TOP
        data = self.ring - 0x10000     # SLOF's own buffers, below its heap
        self.hv = HvCalls(cpu, rtas_args_addr=data)
        self.hdr, self.status, self.block, self.scratch = data + 0x100, data + 0x200, data + 0x1000, data + 0x2000
        self.chrp_block, self.chrp_scratch = data + 0x4000, data + 0x5000   # a second disk-label instance
        self.data = data
        self.claim_limit = top - CLAIM_BELOW_TOP
        self.phb = Phb(device_tree["phb"])
        self.disks: dict[str, tuple] = {}
        self.client_program = None   # async (slof, kind, entry, segments, dev) -> result or None
        self.transports: dict[str, object] = {}
        self.aliases: dict[str, str] = {}

    def phase(self, name: str, **fields) -> None:
        self.trace.emit("guest", "phase", name=name, **fields)

    async def print(self, text: str) -> None:
        await self.hv.put_term_char(text)

    async def main(self) -> dict:
        self.phase("slof start-up")
        await self.cpu.compute(self.costs.slof_startup)
        await self.print(banner(self.rel))
        await self.probe_pci()
        await self.print(welcome(self.rel))
        return await self.boot()

    async def probe_pci(self) -> None:
        self.phase("pci probe")
        await self.print(f"Populating {self.phb.path}\r\n")
        if self.rel.reads_qemu_pci_nodes:
            devfns = self.dt["phb"]["children"]      # phb-pci-walk-bridge over QEMU's nodes (be9b2fa)
        else:
            devfns = await self.scan_bus()
        for devfn in devfns:
            fn = PciFunction(self.hv, self.phb, devfn)
            await fn.disable()
            ids = await fn.read(0x00, 4)
            vendor, device = ids & 0xFFFF, ids >> 16
            await self.print(" " * 21 + f"00 {devfn << 8:04x} (D) : {vendor:04x} {device:04x}    ")
            if (vendor, device) != (PCI_VENDOR_ID_REDHAT_QUMRANET, PCI_DEVICE_ID_VIRTIO_BLOCK):
                await self.print("\r\n")
                continue
            await self.print("virtio [ block ]\r\n")
            await fn.assign_bars()
            await fn.enable()
            # virtio-setup-vd: from e3a2816 a capability walk (the four virtio
            # 1.0 structures -> modern); before it, and otherwise, legacy BAR 0
            transport = await setup_vd(fn, self.rel.modern_virtio)
            self.trace.emit("guest", "virtio_transport", devfn=devfn,
                            kind="modern" if transport.modern else "legacy")
            if not self.rel.queue_setup_at_open:
                await self.setup_queue_at_probe(transport)
            await fn.disable()
            path = f"{self.phb.path}/scsi@{devfn >> 3:x}"
            self.disks[path] = (fn, None)
            self.transports[path] = transport
            # (set-alias): `s" disk" get-next-alias` (virtio-block.fs): disk, disk1, ...
            self.aliases[f"disk{len(self.aliases) or ''}"] = path

    async def scan_bus(self) -> list[int]:
        """Before be9b2fa SLOF enumerates bus 0 itself (20150313
        slof/fs/pci-scan.fs): pci-probe-bus reads each slot's vendor ID
        (pci-vendor@, config-l@ 0); for a present one pci-setup-device reads
        the header type (multifunction?), the function's vendor ID again,
        and pci-add-device the header type again (0: pci-device-setup)."""
        await self.print(f"\r Adapters on {self.phb.buid:016x}\r\n")
        found = []
        for slot in range(32):
            fn = PciFunction(self.hv, self.phb, slot << 3)
            if await fn.read(0x00, 4) & 0xFFFF == 0xFFFF:          # pci-probe-device (:266-274)
                continue
            functions = 8 if await fn.read(0x0E, 1) & 0x80 else 1  # pci-setup-device (:247-262)
            for f in range(functions):
                func = PciFunction(self.hv, self.phb, (slot << 3) | f)
                if await func.read(0x00, 4) & 0xFFFF == 0xFFFF:
                    continue
                if await func.read(0x0E, 1) & 0x7F == 0:             # pci-add-device (:231-243): a device
                    found.append((slot << 3) | f)
        return found

    async def setup_queue_at_probe(self, transport) -> None:
        """pci-device_1af4_1001.fs:25-32 (until bcdf942): the queue size,
        a claimed ring, its page number stored straight to QUEUE_PFN."""
        qsize = await transport.get_qsize(0)
        ring = self.dt["memory"] - RING_BELOW_TOP_PROBE   # CLAIM does not erase it
        self.trace.emit("guest", "vring_claimed", addr=ring, size=vring_size(qsize))
        await transport.store_pfn(ring >> 12)

    async def boot(self) -> dict:
        self.phase("boot")
        kernel = self.dt.get("chosen", {}).get("qemu,boot-kernel")
        if kernel is not None:
            return await self.boot_from_memory(*kernel)
        loaded = False
        for entry in BOOT_DEVICE:
            dev = self.aliases.get(entry, entry)      # de-alias
            shown = dev if self.rel.boot_line_full_path else entry     # 3a00f80
            await self.print(f"\r\nTrying to load:  from: {shown} ... ")
            if dev not in self.disks:
                await self.print("\r\nE3405: No such device")
                continue
            result = await self.load_from_disk(dev)
            if result == "no-go":
                loaded = True
                continue
            if result is not None:
                return result
        await self.print(prompt(self.rel, e3407=not loaded))
        self.phase("forth prompt")
        return {"stage": "prompt"}

    async def open_disk(self, dev: str):
        fn, blk = self.disks[dev]
        await fn.enable()                 # device open: master/mem/io on
        if blk is None:                   # virtio-block init runs on first open only
            self.phase("virtio init")
            blk = VirtioBlk(self.hv, self.trace, self.transports[dev], self.ring, self.hdr, self.status,
                            self.costs, self.timeout_ms, release=self.rel)
            if not await blk.init():
                await self.print("virtioblk_init: failed\r\n")
            self.disks[dev] = (fn, blk)
        return fn, blk

    def _label(self, blk, block: int, scratch: int, open_chrp=None) -> DiskLabel:
        return DiskLabel(Deblocker(blk, scratch), block, self.trace, self.max_prep_blocks,
                         open_chrp=open_chrp, print=self.print, load_limit=self.data, release=self.rel)

    async def load_from_disk(self, dev: str):
        fn, blk = await self.open_disk(dev)

        async def open_chrp():
            """open-dev "<dev>:1,\\ppc\\bootinfo.txt": the node's open
            (pci-device.fs:35, enable again), then a new deblocker and a new
            disk-label whose init-block erases its buffer."""
            await fn.enable()
            self.cpu.ram.write(self.chrp_block, bytes(4096))
            return self._label(blk, self.chrp_block, self.chrp_scratch)

        label = self._label(blk, self.block, self.scratch, open_chrp)
        size = await label.load(LOAD_BASE)
        if not size:
            await self.print("\r\nE3404: Not a bootable device!")
            await fn.disable()            # close-dev
            return None
        self.phase("elf load", bytes=size)
        try:
            image = elf_load(self.cpu.ram, LOAD_BASE, size, self.claim_limit, hex_upper=self.rel.hex_upper)
        except BadExecutable as exc:
            # load-elf-init leaves `go` as no-go; close-dev, then (go-and-catch).
            self.trace.emit("guest", "elf_error", reason=exc.reason)
            await self.print(exc.console)
            await fn.disable()            # close-dev
            await self.print(NO_GO)
            self.phase("no-go", reason=exc.reason)
            return "no-go"
        except ClaimFailed as exc:
            self.trace.emit("guest", "elf_error", reason=f"claim failed: {exc}")
            await self.print(ClaimFailed.CONSOLE)
            await fn.disable()            # close-dev
            return None
        await self.cpu.compute(self.costs.slof_copy_per_byte * image.copied)
        self.trace.emit("guest", "elf_loaded", go=GO_WORDS[image.kind], entry=image.entry,
                        segments=len(image.segments), bytes=image.copied)
        await self.print("  Successfully loaded\r\n")
        await fn.disable()                # close-dev
        return await self.start_kernel(image.kind, image.entry, image.segments, dev)

    async def boot_from_memory(self, addr: int, size: int) -> dict:
        """QEMU -kernel: /chosen/qemu,boot-kernel = <addr size> names the
        image QEMU already loaded; SLOF starts it without opening any boot
        device, so the disk is never touched in real mode. (The console
        line is the model's; real SLOF's wording was not checked.)"""
        self.trace.emit("guest", "boot_from_memory", addr=addr, size=size)
        await self.print(f"\r\nBooting from memory (qemu,boot-kernel 0x{addr:x}, {size} bytes)\r\n")
        # go-64 on a big-endian ELFv1 image: through its function descriptor
        return await self.start_kernel(2, addr)

    async def start_kernel(self, kind: int, e_entry: int, segments=(), dev=None) -> dict:
        """The hand-off: r2 = TOC, r3-r5 = 0, jump to the entry. A loaded
        program the machine models itself (GRUB) runs through `client_program`
        with SLOF's client interface on the boot device."""
        if self.client_program is not None and dev is not None:
            result = await self.client_program(self, kind, e_entry, segments, dev)
            if result is not None:
                return result
        target = entry_point(self.cpu.ram, kind, e_entry)
        if target is None:
            stop = f"data access outside RAM at 0x{e_entry:x} (function descriptor)"
            self.trace.emit("guest", "guest_stop", reason=stop, nip=e_entry)
            return {"stage": "kernel", "entry": e_entry, "stop": stop}
        nip, toc = target
        self.phase("kernel", entry=nip)
        self.trace.emit("guest", "kernel_entry", e_entry=e_entry, nip=nip, toc=toc)
        cpu = self.cpu
        cpu.gpr[2] = toc
        cpu.gpr[3] = cpu.gpr[4] = cpu.gpr[5] = 0
        stop = await execute(cpu, nip)
        self.trace.emit("guest", "guest_stop", reason=stop, nip=cpu.nip)
        return {"stage": "kernel", "entry": nip, "stop": stop}
