"""SLOF's client interface (slof/fs/client.fs, IEEE 1275 ch. 6) for a client
program SLOF handed off to, as GRUB's powerpc-ieee1275 kernel calls it.

A real client calls through the entry point SLOF passes in r5 with an
argument array in RAM; the model calls these methods, one `cif_call` trace
event and one `slof_client_call` cost each. The disk methods are SLOF's own:
`open` of the disk node opens the PCI function (pci-device.fs: memory, I/O
and bus mastering on), a `close` turns them off again, and `read` is the
deblocker of that instance over SLOF's virtio-blk driver, so a client read
is a run of max-transfer (64-sector) requests with their H_LOGICAL_CI_STORE
notifies and their timeouts. `open` with ":0" (GRUB's ofdisk open_path) is
the whole disk: disk-label reads nothing for partition 0.
"""

from sim.cpu import TIMEBASE_FREQ
from firmware_model.slof.deblocker import Deblocker

DISK_ALIAS = "disk"      # SLOF's alias for the first block device it probed
CHOSEN = "/chosen"


class Instance:
    """One opened package instance: the disk node with its deblocker."""

    def __init__(self, dev: str, deblocker: Deblocker):
        self.dev = dev
        self.deblocker = deblocker
        self.pos = 0


class ClientInterface:
    def __init__(self, slof, boot_dev: str, scratch: int):
        self.slof = slof
        self.boot_dev = boot_dev         # /chosen/bootpath, set by do-load
        self.scratch = scratch           # `my-block` of the deblocker instances opened for the client
        self.trace = slof.trace
        self.instances: dict[int, Instance] = {}
        self._next = 0x7E000000          # ihandles are addresses in SLOF's heap; these are tokens

    async def _call(self, service: str, **args) -> None:
        self.trace.emit("guest", "cif_call", service=service, **args)
        await self.slof.cpu.compute(self.slof.costs.slof_client_call)

    def _resolve(self, path: str) -> tuple[str | None, str]:
        """(node path, args): an alias expands, ":args" split off."""
        node, _, args = path.partition(":")
        if node == DISK_ALIAS:
            node = self.boot_dev
        return (node if node in self.slof.disks else None), args

    async def finddevice(self, path: str) -> int:
        await self._call("finddevice", path=path)
        node, _ = self._resolve(path)
        return -1 if node is None and path != CHOSEN else 1

    async def getprop(self, path: str, name: str) -> bytes | None:
        await self._call("getprop", path=path, name=name)
        if path == CHOSEN and name == "bootpath":
            return self.boot_dev.encode() + b"\0"
        node, _ = self._resolve(path)
        if node is not None and name == "device_type":
            return b"block\0"
        return None

    async def open(self, path: str) -> int:
        """0 on failure, as IEEE 1275 `open` returns."""
        await self._call("open", path=path)
        node, args = self._resolve(path)
        if node is None or args not in ("", "0"):
            return 0
        fn, blk = await self.slof.open_disk(node)
        if blk is None or not blk.block_size:
            return 0
        self._next += 0x100
        self.instances[self._next] = Instance(node, Deblocker(blk, self.scratch))
        return self._next

    async def close(self, ihandle: int) -> None:
        await self._call("close", ihandle=ihandle)
        inst = self.instances.pop(ihandle, None)
        if inst is not None:
            fn, _ = self.slof.disks[inst.dev]
            await fn.disable()

    async def block_size(self, ihandle: int) -> int | None:
        """call-method "block-size": the virtio-blk node's block size."""
        await self._call("call-method", method="block-size", ihandle=ihandle)
        inst = self.instances.get(ihandle)
        return None if inst is None else inst.deblocker.dev.block_size

    async def seek(self, ihandle: int, pos: int) -> int:
        await self._call("seek", ihandle=ihandle, pos=pos)
        inst = self.instances.get(ihandle)
        if inst is None:
            return -1
        inst.pos = pos
        return 0

    async def read(self, ihandle: int, addr: int, length: int) -> int:
        """The deblocker's `read` at the instance position: length, or 0."""
        await self._call("read", ihandle=ihandle, addr=addr, length=length)
        inst = self.instances.get(ihandle)
        if inst is None:
            return -1
        got = await inst.deblocker.read(addr, inst.pos, length)
        inst.pos += got
        return got

    async def claim(self, addr: int, size: int) -> int:
        """`claim` at a given address: addr, or -1 when the range is not free
        RAM (SLOF's own memory begins at slof.claim_limit)."""
        await self._call("claim", addr=addr, size=size)
        return addr if 0 <= addr and addr + size <= self.slof.claim_limit else -1

    async def milliseconds(self) -> int:
        """`milliseconds`: get-msecs, the timebase in ms (as SLOF's timeouts use it)."""
        await self._call("milliseconds")
        return self.slof.cpu.mftb() * 1000 // TIMEBASE_FREQ

    async def write(self, text: str) -> None:
        """`write` on /chosen/stdout (the vty): the console."""
        await self.slof.print(text)
