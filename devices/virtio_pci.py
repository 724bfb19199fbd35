"""virtio-pci, legacy (0.9.5) interface on I/O BAR 0 (hw/virtio/virtio-pci.c).

BAR 0 is DEVICE_LITTLE_ENDIAN with 1..4-byte accesses: HOST_FEATURES 0,
GUEST_FEATURES 4, QUEUE_PFN 8, QUEUE_NUM 12, QUEUE_SEL 14, QUEUE_NOTIFY 16,
STATUS 18, ISR 19, device config from 20 (MSI-X stays disabled under SLOF).
Device config is guest-endian: "Virtio-PCI is odd. Ioports are LE but
config space is target native endian."
"""

from sim.abi.virtio import (
    LEGACY_REGS, PCI_CLASS_STORAGE_SCSI, PCI_VENDOR_ID_REDHAT_QUMRANET, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_PCI_CONFIG_OFF_NO_MSIX, VIRTIO_PCI_GUEST_FEATURES, VIRTIO_PCI_HOST_FEATURES,
    VIRTIO_PCI_ISR, VIRTIO_PCI_QUEUE_ADDR_SHIFT, VIRTIO_PCI_QUEUE_MAX, VIRTIO_PCI_QUEUE_NOTIFY,
    VIRTIO_PCI_QUEUE_NUM, VIRTIO_PCI_QUEUE_PFN, VIRTIO_PCI_QUEUE_SEL, VIRTIO_PCI_STATUS,
)
from devices.pci import (
    PCI_BASE_ADDRESS_SPACE_IO, PCI_BASE_ADDRESS_SPACE_MEMORY, PCI_CAP_ID_MSIX, PCI_SUBSYSTEM_VENDOR_ID,
    PCIDevice,
)
from sim.qemu.memory import DEVICE_LITTLE_ENDIAN, MemoryRegion, MemoryRegionOps, bswap


class _LegacyOps(MemoryRegionOps):
    endianness = DEVICE_LITTLE_ENDIAN
    impl_min, impl_max = 1, 4

    def __init__(self, proxy):
        self.proxy = proxy

    def read(self, offset, size):
        return self.proxy.legacy_read(offset, size)

    def write(self, offset, value, size):
        self.proxy.legacy_write(offset, value, size)


class _MsixOps(MemoryRegionOps):
    endianness = DEVICE_LITTLE_ENDIAN


class VirtIOPCIProxy(PCIDevice):
    """The PCI side of a virtio device; owns its host and guest notifiers."""

    def __init__(self, vdev, pci_device_id: int, *, ioeventfd: bool, qemu):
        super().__init__(PCI_VENDOR_ID_REDHAT_QUMRANET, pci_device_id, PCI_CLASS_STORAGE_SCSI)
        self.vdev = vdev
        self.name = f"{vdev.name}-pci"
        vdev.transport = self
        self.qemu = qemu            # the VMM services: eventfds, main loop, irq
        self.trace = vdev.trace
        self._set(PCI_SUBSYSTEM_VENDOR_ID, 2, PCI_VENDOR_ID_REDHAT_QUMRANET)
        self._set(PCI_SUBSYSTEM_VENDOR_ID + 2, 2, vdev.device_id)
        self.use_ioeventfd = ioeventfd   # VIRTIO_PCI_FLAG_USE_IOEVENTFD
        self.ioeventfd_disabled = False
        self.ioeventfd_started = False
        self.config_off = VIRTIO_PCI_CONFIG_OFF_NO_MSIX
        self.bar = MemoryRegion("virtio-pci", 20 + vdev.config_len, ops=_LegacyOps(self))
        self.register_bar(0, PCI_BASE_ADDRESS_SPACE_IO, self.bar)
        # MSI-X (vectors=2) in exclusive BAR 1; SLOF never enables it.
        self.register_bar(1, PCI_BASE_ADDRESS_SPACE_MEMORY, MemoryRegion("virtio-pci-msix", 0x1000, ops=_MsixOps()))
        self.add_capability(PCI_CAP_ID_MSIX, 12)

    # -- BAR 0 ------------------------------------------------------------

    def legacy_read(self, addr: int, size: int) -> int:
        vdev = self.vdev
        if addr >= self.config_off:
            value = self._config_read(addr - self.config_off, size)
        else:
            value = self._ioport_read(addr)
        self.trace.emit("qemu-vcpu", "virtio_pci_access", bar=0, offset=addr, size=size, rw="R",
                        value=value, reg=self.reg_name(addr))
        return value

    def legacy_write(self, addr: int, value: int, size: int) -> None:
        self.trace.emit("qemu-vcpu", "virtio_pci_access", bar=0, offset=addr, size=size, rw="W",
                        value=value, reg=self.reg_name(addr))
        if addr >= self.config_off:
            return  # virtio-blk's config is read-only to the legacy driver (wce aside)
        self._ioport_write(addr, value)

    def reg_name(self, addr: int) -> str:
        if addr >= self.config_off:
            return f"cfg+{addr - self.config_off}"
        return LEGACY_REGS.get(addr, f"0x{addr:x}")

    def _config_read(self, off: int, size: int) -> int:
        """virtio_config_read{b,w,l} (target-order load), then the legacy
        swap when the device is big-endian, so the LE region swaps it back."""
        cfg = self.vdev.get_config()
        if off + size > len(cfg):
            return (1 << (8 * size)) - 1
        value = int.from_bytes(cfg[off:off + size], "big")
        return bswap(value, size) if self.vdev.is_big_endian() else value

    def _ioport_read(self, addr: int) -> int:
        vdev = self.vdev
        vq = vdev.vqs[vdev.queue_sel] if vdev.queue_sel < len(vdev.vqs) else None
        if addr == VIRTIO_PCI_HOST_FEATURES:
            return vdev.host_features & 0xFFFFFFFF
        if addr == VIRTIO_PCI_GUEST_FEATURES:
            return vdev.guest_features & 0xFFFFFFFF
        if addr == VIRTIO_PCI_QUEUE_PFN:
            return (vq.desc >> VIRTIO_PCI_QUEUE_ADDR_SHIFT) if vq else 0
        if addr == VIRTIO_PCI_QUEUE_NUM:
            return vq.num if vq else 0
        if addr == VIRTIO_PCI_QUEUE_SEL:
            return vdev.queue_sel
        if addr == VIRTIO_PCI_STATUS:
            return vdev.status
        if addr == VIRTIO_PCI_ISR:
            value, vdev.isr = vdev.isr, 0   # reading ISR clears it and lowers INTx
            self.qemu.pci_set_irq(self, 0)
            return value
        return 0xFFFFFFFF

    def _ioport_write(self, addr: int, val: int) -> None:
        """virtio_ioport_write."""
        vdev = self.vdev
        if addr == VIRTIO_PCI_GUEST_FEATURES:
            vdev.guest_features = val & vdev.host_features
        elif addr == VIRTIO_PCI_QUEUE_PFN:
            pa = val << VIRTIO_PCI_QUEUE_ADDR_SHIFT
            if pa == 0:
                self.stop_ioeventfd()
                self.device_reset()
            elif vdev.queue_sel < len(vdev.vqs):
                vdev.vqs[vdev.queue_sel].set_legacy_addr(pa)
        elif addr == VIRTIO_PCI_QUEUE_SEL:
            if val < VIRTIO_PCI_QUEUE_MAX:
                vdev.queue_sel = val
        elif addr == VIRTIO_PCI_QUEUE_NOTIFY:
            if val < VIRTIO_PCI_QUEUE_MAX:
                self.trace.emit("qemu-vcpu", "virtio_queue_notify", device=vdev.name, queue=val,
                                via="userspace")
                vdev.queue_notify(val, "qemu-vcpu")
        elif addr == VIRTIO_PCI_STATUS:
            if not val & VIRTIO_CONFIG_S_DRIVER_OK:
                self.stop_ioeventfd()
            vdev.set_status(val & 0xFF)
            if val & VIRTIO_CONFIG_S_DRIVER_OK:
                self.start_ioeventfd()
            if vdev.status == 0:
                self.device_reset()

    def device_reset(self) -> None:
        self.vdev.reset()
        self.trace.emit("qemu-vcpu", "virtio_reset", device=self.vdev.name)

    # -- host notifiers (the ioeventfd on QUEUE_NOTIFY) -------------------

    def _set_host_notifier_internal(self, n: int, assign: bool, set_handler: bool) -> None:
        """virtio_pci_set_host_notifier_internal."""
        vq = self.vdev.vqs[n]
        if assign:
            owner = "main loop" if set_handler else "dataplane"
            vq.host_notifier = self.qemu.event_notifier_init(f"{self.vdev.name} vq{n} host notifier ({owner})")
            if set_handler:  # main loop: virtio_queue_host_notifier_read
                self.qemu.main_ctx.set_event_notifier(vq.host_notifier, lambda _vq=vq: self._host_notifier_read(_vq))
            self.bar.add_eventfd(VIRTIO_PCI_QUEUE_NOTIFY, 2, True, n, vq.host_notifier)
        else:
            self.bar.del_eventfd(VIRTIO_PCI_QUEUE_NOTIFY, 2, True, n, vq.host_notifier)
            self.qemu.main_ctx.set_event_notifier(vq.host_notifier, None)
            vq.host_notifier = None

    def _host_notifier_read(self, vq) -> None:
        vq.host_notifier.test_and_clear()
        self.trace.emit("qemu-main", "virtio_queue_notify", device=self.vdev.name, queue=vq.index,
                        via="ioeventfd")
        vq.handle_output(vq, "qemu-main")

    def start_ioeventfd(self) -> None:
        if not self.use_ioeventfd or self.ioeventfd_disabled or self.ioeventfd_started:
            return
        for vq in self.vdev.vqs:
            if vq.num:
                self._set_host_notifier_internal(vq.index, True, True)
        self.ioeventfd_started = True

    def stop_ioeventfd(self) -> None:
        if not self.ioeventfd_started:
            return
        for vq in self.vdev.vqs:
            if vq.host_notifier is not None:
                self._set_host_notifier_internal(vq.index, False, False)
        self.ioeventfd_started = False

    def set_host_notifier(self, n: int, assign: bool) -> None:
        """virtio_pci_set_host_notifier, the hook dataplane uses: "Stop using
        ioeventfd for virtqueue kick if the device starts using host
        notifiers."""
        self.ioeventfd_disabled = assign
        if assign:
            self.stop_ioeventfd()
        self._set_host_notifier_internal(n, assign, False)

    # -- guest notifiers --------------------------------------------------

    def set_guest_notifiers(self, n: int, assign: bool) -> None:
        """virtio_pci_set_guest_notifiers: irqfd only with MSI-X enabled;
        otherwise a main-loop handler raises INTx (SLOF's case)."""
        vq = self.vdev.vqs[n]
        if assign:
            vq.guest_notifier = self.qemu.event_notifier_init(f"{self.vdev.name} vq{n} guest notifier")
            self.qemu.main_ctx.set_event_notifier(vq.guest_notifier, lambda: self._guest_notifier_read(vq))
        elif vq.guest_notifier is not None:
            self.qemu.main_ctx.set_event_notifier(vq.guest_notifier, None)
            vq.guest_notifier = None

    def _guest_notifier_read(self, vq) -> None:
        if vq.guest_notifier.test_and_clear():
            self.virtio_irq("qemu-main")

    def notify_guest(self, vq, actor: str) -> None:
        if vq.guest_notifier is not None:
            vq.guest_notifier.signal()
        else:
            self.virtio_irq(actor)

    def virtio_irq(self, actor: str) -> None:
        self.vdev.isr |= 1
        self.qemu.pci_set_irq(self, 1)
