"""SLOF's libvirtio PCI transport (lib/libvirtio/virtio.c): legacy and modern.

virtio_setup_vd walks the capability list at probe time: if all four
virtio 1.0 structures (common, notify, ISR, device) are there the device
is driven through them ("modern", dev->features = VERSION_1), otherwise
through legacy BAR 0. Every register access is an H_LOGICAL_CI_LOAD/STORE;
16/32-bit values pass through cpu_to_le/le_to_cpu, except legacy device
config, which is guest-endian. The two classes offer the same operations,
so the virtio-blk driver (virtio_blk.py beside it) is written once.

Before e3a2816 (SLOF 20160223) there is no capability walk: virtio-setup-vd
(board-qemu/slof/virtio.fs) takes BAR 0 and the device is always legacy.
Until 300384f (20191206) the vring addresses are not kept but re-read from
the queue registers on each use (virtio_get_vring_desc/avail/used).
"""

from collections.abc import Awaitable

from sim.abi.virtio import (
    CAP_FIELDS, COMMON_CFG, PCI_CAP_ID_VNDR, VIRTIO_F_IOMMU_PLATFORM, VIRTIO_F_VERSION_1,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_CAP_ISR_CFG,
    VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_CONFIG_OFF_NO_MSIX, VIRTIO_PCI_GUEST_FEATURES,
    VIRTIO_PCI_HOST_FEATURES, VIRTIO_PCI_NOTIFY_CAP_MULT, VIRTIO_PCI_QUEUE_NOTIFY, VIRTIO_PCI_QUEUE_NUM,
    VIRTIO_PCI_QUEUE_PFN, VIRTIO_PCI_QUEUE_SEL, VIRTIO_PCI_STATUS,
)

C = COMMON_CFG
MODERN_CAPS = (VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_CAP_ISR_CFG,
               VIRTIO_PCI_CAP_DEVICE_CFG)


async def setup_vd(fn, modern_virtio: bool = True):
    """virtio_setup_vd: the transport of the function, from its config space.

    Without modern_virtio (SLOF before e3a2816): `10 config-l@
    translate-my-address 3 not AND` (virtio.fs), BAR 0 only. Per vendor capability: cfg_type (+3), bar (+4), offset (+8), for the
    notify capability notify_off_multiplier (+16), then for the four known
    types the BAR itself (both dwords of a 64-bit memory BAR). With no
    modern set, legacy BAR 0 is read instead."""
    if not modern_virtio:
        return LegacyTransport(fn.hv, await _bar_base(fn, 0))
    found = {}
    ptr = await fn.read(0x34, 1)
    seen = 0
    while ptr and seen < 48:
        seen += 1
        if await fn.read(ptr, 1) == PCI_CAP_ID_VNDR:
            cfg_type = await fn.read(ptr + CAP_FIELDS["cfg_type"], 1)
            bar = await fn.read(ptr + CAP_FIELDS["bar"], 1)
            offset = await fn.read(ptr + CAP_FIELDS["offset"], 4)
            mult = 0
            if cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG:
                mult = await fn.read(ptr + VIRTIO_PCI_NOTIFY_CAP_MULT, 4)
            if cfg_type in MODERN_CAPS and bar < 6:
                found[cfg_type] = (await _bar_base(fn, bar) + offset, mult)
        ptr = await fn.read(ptr + 1, 1)
    if all(t in found for t in MODERN_CAPS):
        return ModernTransport(fn.hv, found[VIRTIO_PCI_CAP_COMMON_CFG][0], found[VIRTIO_PCI_CAP_NOTIFY_CFG][0],
                               found[VIRTIO_PCI_CAP_NOTIFY_CFG][1], found[VIRTIO_PCI_CAP_ISR_CFG][0],
                               found[VIRTIO_PCI_CAP_DEVICE_CFG][0])
    return LegacyTransport(fn.hv, await _bar_base(fn, 0))


async def _bar_base(fn, bar: int) -> int:
    """virtio_cap_set_base_addr: the BAR as read now, translated to a CPU
    real address (translate-my-address)."""
    lo = await fn.read(0x10 + 4 * bar, 4)
    if lo & 1:
        return fn.phb.translate(lo & ~0x3, True)
    addr = lo & ~0xF
    if lo & 0x6 == 0x4:
        addr |= await fn.read(0x10 + 4 * bar + 4, 4) << 32
    return fn.phb.translate(addr, False)


VQ_ALIGN = 4096
SIZEOF_VRING_DESC = 16
SIZEOF_VRING_AVAIL = 4     # flags, idx; ring[] is a flexible array (virtio.h)


def _align(addr: int) -> int:
    return (addr + VQ_ALIGN - 1) & ~(VQ_ALIGN - 1)


class _VringFromRegisters:
    """virtio_get_vring_avail/used (virtio.c, 20150429:58-70): derived from
    the descriptor table and the queue size, both read again each time;
    used = VQ_ALIGN(avail + qsize * sizeof(struct vring_avail))."""

    async def vring_avail(self, queue: int) -> int:
        return await self.vring_desc(queue) + await self.get_qsize(queue) * SIZEOF_VRING_DESC

    async def vring_used(self, queue: int) -> int:
        return _align(await self.vring_avail(queue) + await self.get_qsize(queue) * SIZEOF_VRING_AVAIL)


def _le(value: int, size: int) -> int:
    """cpu_to_le16/32 and le*_to_cpu on a big-endian CPU."""
    return int.from_bytes(value.to_bytes(size, "little"), "big") if size > 1 else value


class LegacyTransport(_VringFromRegisters):
    """Virtio 0.9.5 on BAR 0; rings and device config big-endian."""
    modern = False
    big_endian = True

    def __init__(self, hv, base: int):
        self.hv = hv
        self.base = base   # legacy.addr: BAR 0 as a CPU real address

    async def set_status(self, status: int) -> None:
        await self.hv.ci_write(1, self.base + VIRTIO_PCI_STATUS, status)

    async def get_status(self) -> int:
        return await self.hv.ci_read(1, self.base + VIRTIO_PCI_STATUS)

    async def get_host_features(self) -> int:
        return await self.hv.ci_read_le(4, self.base + VIRTIO_PCI_HOST_FEATURES)

    async def set_guest_features(self, features: int) -> None:
        await self.hv.ci_write_le(4, self.base + VIRTIO_PCI_GUEST_FEATURES, features & 0xFFFFFFFF)

    async def get_qsize(self, queue: int) -> int:
        await self.hv.ci_write_le(2, self.base + VIRTIO_PCI_QUEUE_SEL, queue)
        return await self.hv.ci_read_le(2, self.base + VIRTIO_PCI_QUEUE_NUM)

    async def set_qaddr(self, queue: int, desc: int, avail: int, used: int) -> None:
        await self.hv.ci_write_le(2, self.base + VIRTIO_PCI_QUEUE_SEL, queue)
        await self.hv.ci_write_le(4, self.base + VIRTIO_PCI_QUEUE_PFN, desc >> 12)

    async def store_pfn(self, pfn: int) -> None:
        """`queue-addr c rshift virtiodev vd>base @ 8 + rl!-le`
        (pci-device_1af4_1001.fs:29-32): no QUEUE_SEL of its own."""
        await self.hv.ci_write_le(4, self.base + VIRTIO_PCI_QUEUE_PFN, pfn)

    async def vring_desc(self, queue: int) -> int:
        """virtio_get_vring_desc (virtio.c, 20150429:42-55): QUEUE_SEL, then
        4096 * QUEUE_PFN."""
        await self.hv.ci_write_le(2, self.base + VIRTIO_PCI_QUEUE_SEL, queue)
        return 4096 * await self.hv.ci_read_le(4, self.base + VIRTIO_PCI_QUEUE_PFN)

    # get_config32 and queue_notify, called for every block request, are
    # plain defs returning the hcall's coroutine (awaited by the caller
    # all the same): one coroutine frame fewer for every trap and resume
    # to pass through.
    def get_config32(self, offset: int) -> Awaitable[int]:
        """Legacy config is guest-endian: no swap."""
        return self.hv.ci_read(4, self.base + VIRTIO_PCI_CONFIG_OFF_NO_MSIX + offset)

    def queue_notify(self, queue: int) -> Awaitable[int]:
        return self.hv.ci_write_le(2, self.base + VIRTIO_PCI_QUEUE_NOTIFY, queue)


class ModernTransport:
    """Virtio 1.0 through the capabilities' structures; all little-endian."""
    modern = True
    big_endian = False

    def __init__(self, hv, common: int, notify: int, notify_off_mul: int, isr: int, device: int):
        self.hv = hv
        self.common, self.notify, self.notify_off_mul = common, notify, notify_off_mul
        self.isr, self.device = isr, device

    async def _w(self, size: int, field: str, value: int) -> None:
        await self.hv.ci_write(size, self.common + C[field], _le(value, size))

    async def _r(self, size: int, field: str) -> int:
        return _le(await self.hv.ci_read(size, self.common + C[field]), size)

    async def set_status(self, status: int) -> None:
        await self._w(1, "device_status", status)

    async def get_status(self) -> int:
        return await self._r(1, "device_status")

    async def get_host_features(self) -> int:
        await self._w(4, "device_feature_select", 1)
        hi = await self._r(4, "device_feature")
        await self._w(4, "device_feature_select", 0)
        lo = await self._r(4, "device_feature")
        return (hi << 32) | lo

    async def set_guest_features(self, features: int) -> None:
        await self._w(4, "driver_feature_select", 1)
        await self._w(4, "driver_feature", features >> 32)
        await self._w(4, "driver_feature_select", 0)
        await self._w(4, "driver_feature", features & 0xFFFFFFFF)

    async def negotiate(self, features: int, print_, iommu_platform: bool = True) -> bool:
        """virtio_negotiate_guest_features: offer, check the echo, then
        FEATURES_OK with a read-back. IOMMU_PLATFORM is accepted from
        7477a17 (SLOF 20191206) on."""
        host = await self.get_host_features()
        if not host >> VIRTIO_F_VERSION_1 & 1:
            await print_(f"Device does not support virtio 1.0 {host:x}\r\n")
            return False
        if iommu_platform and host >> VIRTIO_F_IOMMU_PLATFORM & 1:
            features |= 1 << VIRTIO_F_IOMMU_PLATFORM
        await self.set_guest_features(features)
        host = await self.get_host_features()
        if host & features != features:
            await print_(f"Features error {features:x}\r\n")
            return False
        status = await self.get_status()
        await self.set_status(status | VIRTIO_CONFIG_S_FEATURES_OK)
        return bool(await self.get_status() & VIRTIO_CONFIG_S_FEATURES_OK)

    async def get_qsize(self, queue: int) -> int:
        await self._w(2, "queue_select", queue)
        return await self._r(2, "queue_size")

    async def set_qaddr(self, queue: int, desc: int, avail: int, used: int) -> None:
        """virtio_set_qaddr, modern: the size is queried again, then the
        three addresses as lo/hi pairs, then queue_enable."""
        await self.get_qsize(queue)
        for name, addr in (("desc", desc), ("avail", avail), ("used", used)):
            await self._w(4, f"queue_{name}_lo", addr & 0xFFFFFFFF)
            await self._w(4, f"queue_{name}_hi", addr >> 32)
        await self._w(2, "queue_enable", 1)

    async def get_config32(self, offset: int) -> int:
        return _le(await self.hv.ci_read(4, self.device + offset), 4)

    async def _read64(self, field: str) -> int:
        """virtio_pci_read64 (virtio.c, 20160223:101-108): lo, then hi."""
        lo = await self._r(4, f"{field}_lo")
        return (await self._r(4, f"{field}_hi") << 32) | lo

    async def vring_desc(self, queue: int) -> int:
        """virtio_get_vring_desc, modern (20160223..300384f)."""
        await self._w(2, "queue_select", queue)
        return await self._read64("queue_desc")

    async def vring_avail(self, queue: int) -> int:
        await self._w(2, "queue_select", queue)
        return await self._read64("queue_avail")

    async def vring_used(self, queue: int) -> int:
        await self._w(2, "queue_select", queue)
        return await self._read64("queue_used")

    async def queue_notify(self, queue: int) -> None:
        """queue_select, read queue_notify_off, write the queue's notify
        address (cap offset + notify_off * notify_off_multiplier)."""
        await self._w(2, "queue_select", queue)
        off = await self._r(2, "queue_notify_off")
        await self.hv.ci_write(2, self.notify + off * self.notify_off_mul, _le(queue, 2))
