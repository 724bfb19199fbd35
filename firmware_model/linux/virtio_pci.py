"""Linux's virtio_pci transports as a ppc64 kernel drives them.

virtio_pci_legacy.c (BAR 0 registers) and virtio_pci_modern.c (the virtio
1.0 capabilities). Accessors are ppc64's ioread*/iowrite*
(arch/powerpc/include/asm/io.h, in_le16/out_le32...): on a big-endian
kernel the 16/32-bit ones are the byte-reversed lhbrx/lwbrx/sthbrx/stwbrx,
on a little-endian (MSR[LE]) kernel plain lhz/lwz/sth/stw; either way the
device sees little-endian values. Every access is an MMU-on load or store
that traps to KVM's MMIO emulation.
"""

from sim.abi.virtio import (
    COMMON_CFG, VIRTIO_MSI_CONFIG_VECTOR, VIRTIO_MSI_QUEUE_VECTOR, VIRTIO_PCI_GUEST_FEATURES,
    VIRTIO_PCI_HOST_FEATURES, VIRTIO_PCI_ISR, VIRTIO_PCI_QUEUE_ADDR_SHIFT, VIRTIO_PCI_QUEUE_NOTIFY,
    VIRTIO_PCI_QUEUE_NUM, VIRTIO_PCI_QUEUE_PFN, VIRTIO_PCI_QUEUE_SEL, VIRTIO_PCI_STATUS, vring_addrs,
    vring_size,
)

VIRTIO_MSI_NO_VECTOR = 0xFFFF


class KernelIoError(Exception):
    """The kernel stage could not complete its I/O (probe failed, timed out)."""


class _Mmio:
    """ioread/iowrite on ppc64: byte accesses plain; wider ones
    byte-reversed on a big-endian kernel, plain on a little-endian one."""

    def __init__(self, cpu):
        self.cpu = cpu

    async def ioread(self, size: int, addr: int) -> int:
        return await self.cpu.load(addr, size, byte_reversed=size > 1 and not self.cpu.msr_le)

    async def iowrite(self, size: int, addr: int, value: int) -> None:
        await self.cpu.store(addr, size, value, byte_reversed=size > 1 and not self.cpu.msr_le)


class LegacyPci(_Mmio):
    """virtio_pci_legacy.c over BAR 0 (the I/O window, memory-mapped on spapr)."""
    modern = False

    def __init__(self, cpu, base: int, queue_sel_every_access: bool):
        super().__init__(cpu)
        self.base = base
        self.msix = False
        self.isr = base + VIRTIO_PCI_ISR
        self.sel_each = queue_sel_every_access

    async def get_status(self) -> int:
        return await self.ioread(1, self.base + VIRTIO_PCI_STATUS)

    async def set_status(self, status: int) -> None:
        await self.iowrite(1, self.base + VIRTIO_PCI_STATUS, status)

    async def reset(self) -> None:
        """vp_reset: write 0, read back to flush the write."""
        await self.set_status(0)
        await self.get_status()

    async def get_features(self) -> int:
        return await self.ioread(4, self.base + VIRTIO_PCI_HOST_FEATURES)

    async def finalize_features(self, features: int) -> None:
        await self.iowrite(4, self.base + VIRTIO_PCI_GUEST_FEATURES, features & 0xFFFFFFFF)

    async def config_vector(self, vector: int) -> int:
        await self.iowrite(2, self.base + VIRTIO_MSI_CONFIG_VECTOR, vector)
        return await self.ioread(2, self.base + VIRTIO_MSI_CONFIG_VECTOR)

    async def _sel(self, index: int, first: bool) -> None:
        """QUEUE_SEL: once per setup_vq (4.1), or before every queue
        register (the vp_legacy_* helpers of virtio_pci_legacy_dev.c)."""
        if first or self.sel_each:
            await self.iowrite(2, self.base + VIRTIO_PCI_QUEUE_SEL, index)

    async def setup_vq(self, index: int, alloc_ring, msix_vec: int):
        """setup_vq: (num, (desc, avail, used), notify address, vector) or
        None (-ENOENT). alloc_ring(num) places and zeroes the vring."""
        await self._sel(index, True)
        num = await self.ioread(2, self.base + VIRTIO_PCI_QUEUE_NUM)         # vp_legacy_get_queue_size
        await self._sel(index, False)
        if not num or await self.ioread(4, self.base + VIRTIO_PCI_QUEUE_PFN):  # vp_legacy_get_queue_enable
            return None
        ring = alloc_ring(num, vring_size(num))
        await self._sel(index, False)                                         # vp_legacy_set_queue_address
        await self.iowrite(4, self.base + VIRTIO_PCI_QUEUE_PFN, ring >> VIRTIO_PCI_QUEUE_ADDR_SHIFT)
        if msix_vec != VIRTIO_MSI_NO_VECTOR:                                  # vp_legacy_queue_vector
            await self._sel(index, False)
            await self.iowrite(2, self.base + VIRTIO_MSI_QUEUE_VECTOR, msix_vec)
            msix_vec = await self.ioread(2, self.base + VIRTIO_MSI_QUEUE_VECTOR)
        return num, vring_addrs(ring, num), self.base + VIRTIO_PCI_QUEUE_NOTIFY, msix_vec

    async def enable_vqs(self, index: int) -> None:
        """Legacy queues are live once QUEUE_PFN is set."""

    async def read_config(self, offset: int, size: int) -> bytes:
        """vp_get: byte by byte (ioread8) into memory; the caller's
        virtio_cread gives the bytes their order (the guest's own)."""
        off = self.base + (24 if self.msix else 20) + offset
        raw = bytearray()
        for i in range(size):
            raw.append(await self.ioread(1, off + i))
        return bytes(raw)


class ModernPci(_Mmio):
    """virtio_pci_modern.c over the four virtio 1.0 structures."""
    modern = True

    def __init__(self, cpu, common: int, isr: int, device: int, notify: int, notify_mult: int,
                 queue_sel_every_access: bool = False):
        super().__init__(cpu)
        self.common, self.isr, self.device = common, isr, device
        self.notify, self.notify_mult = notify, notify_mult
        self.sel_each = queue_sel_every_access

    def _c(self, field: str) -> int:
        return self.common + COMMON_CFG[field]

    async def get_status(self) -> int:
        return await self.ioread(1, self._c("device_status"))

    async def set_status(self, status: int) -> None:
        await self.iowrite(1, self._c("device_status"), status)

    async def reset(self) -> None:
        await self.set_status(0)
        await self.get_status()

    async def get_features(self) -> int:
        await self.iowrite(4, self._c("device_feature_select"), 0)
        lo = await self.ioread(4, self._c("device_feature"))
        await self.iowrite(4, self._c("device_feature_select"), 1)
        hi = await self.ioread(4, self._c("device_feature"))
        return hi << 32 | lo

    async def finalize_features(self, features: int) -> None:
        await self.iowrite(4, self._c("driver_feature_select"), 0)
        await self.iowrite(4, self._c("driver_feature"), features & 0xFFFFFFFF)
        await self.iowrite(4, self._c("driver_feature_select"), 1)
        await self.iowrite(4, self._c("driver_feature"), features >> 32)

    async def config_vector(self, vector: int) -> int:
        await self.iowrite(2, self._c("msix_config"), vector)
        return await self.ioread(2, self._c("msix_config"))

    async def _sel(self, index: int, first: bool) -> None:
        """queue_select: once per setup_vq (4.1), or inside every
        vp_modern_* queue helper (virtio_pci_modern_dev.c, 6.1)."""
        if first or self.sel_each:
            await self.iowrite(2, self._c("queue_select"), index)

    async def setup_vq(self, index: int, alloc_ring, msix_vec: int):
        """setup_vq: num_queues first, then (4.1) select, size, enable,
        notify_off, ring, vector; (6.1, vp_modern_*) size, enable, ring,
        notify_off, vector, each helper selecting the queue again."""
        if index >= await self.ioread(2, self._c("num_queues")):
            return None
        await self._sel(index, True)
        num = await self.ioread(2, self._c("queue_size"))
        await self._sel(index, False)
        if not num or await self.ioread(2, self._c("queue_enable")):
            return None
        if not self.sel_each:
            off = await self.ioread(2, self._c("queue_notify_off"))
        ring = alloc_ring(num, vring_size(num))
        desc, avail, used = vring_addrs(ring, num)
        await self._sel(index, False)
        await self.iowrite(2, self._c("queue_size"), num)
        await self._sel(index, False)
        for name, addr in (("desc", desc), ("avail", avail), ("used", used)):
            await self.iowrite(4, self._c(f"queue_{name}_lo"), addr & 0xFFFFFFFF)
            await self.iowrite(4, self._c(f"queue_{name}_hi"), addr >> 32)
        if self.sel_each:                                     # vp_modern_map_vq_notify
            await self._sel(index, False)
            off = await self.ioread(2, self._c("queue_notify_off"))
        if msix_vec != VIRTIO_MSI_NO_VECTOR:                  # vp_modern_queue_vector
            await self._sel(index, False)
            await self.iowrite(2, self._c("queue_msix_vector"), msix_vec)
            msix_vec = await self.ioread(2, self._c("queue_msix_vector"))
        return num, (desc, avail, used), self.notify + off * self.notify_mult, msix_vec

    async def enable_vqs(self, index: int) -> None:
        """vp_modern_find_vqs: select each queue and set queue_enable."""
        await self.iowrite(2, self._c("queue_select"), index)
        await self.iowrite(2, self._c("queue_enable"), 1)

    async def read_config(self, offset: int, size: int) -> bytes:
        """vp_get: ioread8/16/32 by size (64 as two 32s), little-endian;
        the 8-byte read inside a config_generation check (__virtio_cread_many)."""
        while True:
            gen = await self.ioread(1, self._c("config_generation")) if size == 8 else None
            if size == 8:
                value = await self.ioread(4, self.device + offset)
                value |= await self.ioread(4, self.device + offset + 4) << 32
            else:
                value = await self.ioread(size, self.device + offset)
            if gen is None or await self.ioread(1, self._c("config_generation")) == gen:
                return value.to_bytes(size, "little")
