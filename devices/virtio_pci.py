"""virtio-pci (hw/virtio/virtio-pci.c): the legacy (0.9.5) interface on I/O
BAR 0 and, unless disable-modern, the virtio 1.0 interface in memory BAR 4.

BAR 0 is DEVICE_LITTLE_ENDIAN with 1..4-byte accesses: HOST_FEATURES 0,
GUEST_FEATURES 4, QUEUE_PFN 8, QUEUE_NUM 12, QUEUE_SEL 14, QUEUE_NOTIFY 16,
STATUS 18, ISR 19, device config from 20 (MSI-X stays disabled under SLOF).
Device config is guest-endian: "Virtio-PCI is odd. Ioports are LE but
config space is target native endian."

A transitional device (disable-modern=off) keeps BAR 0 and adds four vendor
capabilities pointing into the 64-bit prefetchable BAR 4 (+5): common
config at 0x0, ISR at 0x1000, device config at 0x2000 and the notify area
at 0x3000 (queue n at n * notify_off_multiplier; the multiplier is 4, or
0x1000 with page-per-vq), plus the PCI-config-access capability. All of it
is little-endian, device config included. The host notifier of a queue is
an ioeventfd on both notify addresses: the modern one with no datamatch
(length 0 when KVM offers any-length ioeventfds, else 2) and the legacy one
(length 2, datamatch = queue index) -- virtio_pci_ioeventfd_assign.
"""

from sim.abi.virtio import (
    COMMON_CFG, COMMON_REGS, PCI_CAP_ID_VNDR, QEMU_VIRTIO_PCI_QUEUE_MEM_MULT, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_F_VERSION_1, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG,
    VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_CAP_PCI_CFG, VIRTIO_PCI_COMMON_OFF,
    VIRTIO_PCI_DEVICE_OFF, VIRTIO_PCI_ISR_OFF, VIRTIO_PCI_MODERN_MEM_BAR, VIRTIO_PCI_NOTIFY_OFF,
    VIRTIO_PCI_REGION_SIZE, VIRTIO_QUEUE_MAX, virtio_pci_cap, virtio_pci_cfg_cap, virtio_pci_notify_cap,
    LEGACY_REGS, PCI_CLASS_STORAGE_SCSI, PCI_VENDOR_ID_REDHAT_QUMRANET, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_PCI_CONFIG_OFF_NO_MSIX, VIRTIO_PCI_GUEST_FEATURES, VIRTIO_PCI_HOST_FEATURES,
    VIRTIO_PCI_ISR, VIRTIO_PCI_QUEUE_ADDR_SHIFT, VIRTIO_PCI_QUEUE_MAX, VIRTIO_PCI_QUEUE_NOTIFY,
    VIRTIO_PCI_QUEUE_NUM, VIRTIO_PCI_QUEUE_PFN, VIRTIO_PCI_QUEUE_SEL, VIRTIO_PCI_STATUS,
    VIRTIO_MSI_CONFIG_VECTOR, VIRTIO_MSI_QUEUE_VECTOR,
)
from devices.pci import (
    PCI_BASE_ADDRESS_MEM_PREFETCH, PCI_BASE_ADDRESS_MEM_TYPE_64, PCI_BASE_ADDRESS_SPACE_IO,
    PCI_BASE_ADDRESS_SPACE_MEMORY, PCI_CAP_ID_MSIX, PCI_COMMAND, PCI_COMMAND_MASTER, PCI_SUBSYSTEM_VENDOR_ID,
    PCIDevice,
)
from sim.qemu.memory import DEVICE_LITTLE_ENDIAN, MemoryRegion, MemoryRegionOps, bswap
from sim.trace import fields_builder

MSIX_VECTORS = 2                  # virtio-blk-pci's "vectors" default (DEV_NVECTORS_UNSPECIFIED -> 2)
MSIX_PBA_OFFSET = 0x800           # msix_init_exclusive_bar: the PBA in the BAR's second half
PCI_MSIX_ENTRY_SIZE, PCI_MSIX_ENTRY_VECTOR_CTRL, PCI_MSIX_ENTRY_CTRL_MASKBIT = 16, 12, 1
VIRTIO_NO_VECTOR = 0xFFFF
PCI_MSIX_FLAGS_ENABLE, PCI_MSIX_FLAGS_MASKALL = 0x8000, 0x4000
_MSIX_ENABLE_HI = PCI_MSIX_FLAGS_ENABLE >> 8   # the Enable bit in Message Control's high byte


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
    """msix_table_mmio_ops / msix_pba_mmio_ops (hw/pci/msix.c): 4-byte
    little-endian accesses to the table or the pending-bit array."""
    endianness = DEVICE_LITTLE_ENDIAN
    impl_min, impl_max = 4, 4

    def __init__(self, proxy, region: str):
        self.proxy, self.region = proxy, region

    def read(self, offset, size):
        return self.proxy.msix_mmio_read(self.region, offset, size)

    def write(self, offset, value, size):
        self.proxy.msix_mmio_write(self.region, offset, value, size)


class _ModernOps(MemoryRegionOps):
    """One region of the modern BAR (common_ops, isr_ops, device_ops,
    notify_ops): little-endian, 1..4-byte accesses."""
    endianness = DEVICE_LITTLE_ENDIAN
    impl_min, impl_max = 1, 4

    def __init__(self, proxy, region: str, base: int):
        self.proxy, self.region, self.base = proxy, region, base

    def read(self, offset, size):
        return self.proxy.modern_read(self.region, self.base, offset, size)

    def write(self, offset, value, size):
        self.proxy.modern_write(self.region, self.base, offset, value, size)


class _ModernQueue:
    """VirtIOPCIQueue: what the driver wrote through common config for one
    queue; the rings are handed to the core only on queue_enable = 1."""
    __slots__ = ("num", "enabled", "msix_vector", "desc", "avail", "used")

    def __init__(self):
        self.num, self.enabled, self.msix_vector = 0, 0, 0xFFFF
        self.desc, self.avail, self.used = [0, 0], [0, 0], [0, 0]


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


class VirtIOPCIProxy(PCIDevice):
    """The PCI side of a virtio device; owns its host and guest notifiers."""

    def __init__(self, vdev, pci_device_id: int, *, ioeventfd: bool, qemu, modern: bool = False,
                 page_per_vq: bool = False, fast_mmio: bool = False):
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
        self.modern = modern        # !disable-modern: a transitional device
        self.fast_mmio = fast_mmio  # kvm_ioeventfd_any_length_enabled()
        self.queue_mem_mult = QEMU_VIRTIO_PCI_QUEUE_MEM_MULT if page_per_vq else 4
        # virtio_pci_device_plugged: pow2ceil(VIRTIO_PCI_REGION_SIZE + config_len),
        # the region size counting the MSI-X vectors (24: MSI-X is present).
        self.bar = MemoryRegion("virtio-pci", _pow2(VIRTIO_PCI_CONFIG_OFF_NO_MSIX + 4 + vdev.config_len),
                                ops=_LegacyOps(self))
        self.register_bar(0, PCI_BASE_ADDRESS_SPACE_IO, self.bar)
        if modern:
            self._modern_init()
        # MSI-X (vectors=2) in exclusive BAR 1 (msix_init_exclusive_bar:
        # table at 0, PBA at 0x800); SLOF never enables it, Linux does.
        self.msix_nvectors = MSIX_VECTORS
        msix_bar = MemoryRegion("msix", 0x1000)
        msix_bar.add_subregion(0, MemoryRegion("msix-table", PCI_MSIX_ENTRY_SIZE * MSIX_VECTORS,
                                               ops=_MsixOps(self, "msix-table")))
        msix_bar.add_subregion(MSIX_PBA_OFFSET, MemoryRegion("msix-pba", 8, ops=_MsixOps(self, "msix-pba")))
        self.register_bar(1, PCI_BASE_ADDRESS_SPACE_MEMORY, msix_bar)
        # msix_init: every vector masked (msix_mask_all), nothing pending.
        self.msix_entries = bytearray(PCI_MSIX_ENTRY_SIZE * MSIX_VECTORS)
        for v in range(MSIX_VECTORS):
            self.msix_entries[PCI_MSIX_ENTRY_SIZE * v + PCI_MSIX_ENTRY_VECTOR_CTRL] = PCI_MSIX_ENTRY_CTRL_MASKBIT
        self.msix_pending = 0
        self.msix_cap = self.add_capability(PCI_CAP_ID_MSIX, 12)
        self._set(self.msix_cap + 2, 2, self.msix_nvectors - 1)     # Message Control: table size - 1
        self._set(self.msix_cap + 4, 4, 1)                          # table: BIR 1, offset 0
        self._set(self.msix_cap + 8, 4, 0x800 | 1)                  # PBA: BIR 1, offset 0x800
        self.wmask[self.msix_cap + 3] = (PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) >> 8
        self.config_vector = VIRTIO_NO_VECTOR
        self.queue_vectors: dict[int, int] = {}
        self.irqfds: dict[int, int] = {}                              # queue -> gsi of its irqfd

    # -- MSI-X (hw/pci/msix.c) ---------------------------------------------

    def msix_enabled(self) -> bool:
        """msix_enabled: the Enable bit of Message Control (its high byte;
        config space is little-endian)."""
        return bool(self.config[self.msix_cap + 3] & _MSIX_ENABLE_HI)

    @property
    def config_off(self) -> int:
        """VIRTIO_PCI_CONFIG: device config moves to 24 while MSI-X is on."""
        return VIRTIO_PCI_CONFIG_OFF_NO_MSIX + (4 if self.msix_enabled() else 0)

    def msix_set_message(self, vector: int, address: int, data: int) -> None:
        """msix_set_message, "Special API for POWER to configure the vectors
        through a side channel" (spapr's ibm,change-msi): address and data
        into the entry, and its mask bit cleared."""
        e = PCI_MSIX_ENTRY_SIZE * vector
        self.msix_entries[e:e + 12] = (address.to_bytes(8, "little") + data.to_bytes(4, "little"))
        self.msix_entries[e + PCI_MSIX_ENTRY_VECTOR_CTRL] &= ~PCI_MSIX_ENTRY_CTRL_MASKBIT

    @property
    def msix_table(self) -> dict[int, tuple[int, int]]:
        """vector -> (address, data) of every entry the platform set."""
        out = {}
        for v in range(self.msix_nvectors):
            e = PCI_MSIX_ENTRY_SIZE * v
            addr = int.from_bytes(self.msix_entries[e:e + 8], "little")
            if addr:
                out[v] = (addr, int.from_bytes(self.msix_entries[e + 8:e + 12], "little"))
        return out

    def msix_is_masked(self, vector: int) -> bool:
        """msix_is_masked: off, function-masked, or the vector's mask bit."""
        ctrl = self._get(self.msix_cap + 2, 2)
        e = PCI_MSIX_ENTRY_SIZE * vector + PCI_MSIX_ENTRY_VECTOR_CTRL
        return (not ctrl & PCI_MSIX_FLAGS_ENABLE or bool(ctrl & PCI_MSIX_FLAGS_MASKALL)
                or bool(self.msix_entries[e] & PCI_MSIX_ENTRY_CTRL_MASKBIT))

    def msix_mmio_read(self, region: str, addr: int, size: int) -> int:
        """msix_table_mmio_read / msix_pba_mmio_read (pci_get_long)."""
        if region == "msix-table":
            inside = addr + 4 <= len(self.msix_entries)
            value = int.from_bytes(self.msix_entries[addr:addr + 4], "little") if inside else 0
        else:
            value = (self.msix_pending >> (8 * addr)) & 0xFFFFFFFF
        self.trace.emit("qemu-vcpu", "virtio_pci_access", bar=1,
                        offset=addr + (MSIX_PBA_OFFSET if region == "msix-pba" else 0),
                        region=region, region_offset=addr, size=size, rw="R", value=value, reg=region)
        return value

    def msix_mmio_write(self, region: str, addr: int, value: int, size: int) -> None:
        """msix_table_mmio_write: store, then msix_handle_mask_update (a
        vector unmasked with its pending bit set fires now); the PBA is
        read-only."""
        self.trace.emit("qemu-vcpu", "virtio_pci_access", bar=1,
                        offset=addr + (MSIX_PBA_OFFSET if region == "msix-pba" else 0),
                        region=region, region_offset=addr, size=size, rw="W", value=value, reg=region)
        if region != "msix-table" or addr + 4 > len(self.msix_entries):
            return
        vector = addr // PCI_MSIX_ENTRY_SIZE
        was = self.msix_is_masked(vector)
        self.msix_entries[addr:addr + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
        if was and not self.msix_is_masked(vector):
            self._msix_fire_pending(vector, "qemu-vcpu")

    def _msix_fire_pending(self, vector: int, actor: str) -> None:
        if self.msix_pending >> vector & 1 and vector in self.msix_table:
            self.msix_pending &= ~(1 << vector)
            self.qemu.msi_send(*self.msix_table[vector], actor)

    def msix_notify(self, vector: int, actor: str) -> None:
        """msix_notify: a masked vector only sets its pending bit."""
        if vector >= self.msix_nvectors:
            return
        if self.msix_is_masked(vector):
            self.msix_pending |= 1 << vector
            self.trace.emit(actor, "msix_pending", device=self.name, vector=vector)
            return
        if vector in self.msix_table:
            self.qemu.msi_send(*self.msix_table[vector], actor)

    def config_write(self, addr: int, value: int, size: int) -> None:
        """virtio_write_config: a write that leaves bus mastering off stops
        the ioeventfds and drops DRIVER_OK (as in 2.4 and 7.2). Not
        modelled: 2015's VIRTIO_PCI_FLAG_BUS_MASTER_BUG exemption (a driver
        that set DRIVER_OK with mastering off, Linux < 2.6.34; SLOF enables
        mastering first) and later QEMU's virtio_set_disabled."""
        was = self.msix_enabled()
        masked = [self.msix_is_masked(v) for v in range(self.msix_nvectors)]
        super().config_write(addr, value, size)
        if self.msix_enabled() != was:
            self.trace.emit("qemu-vcpu", "msix_enable", device=self.name, enabled=self.msix_enabled())
        for v in range(self.msix_nvectors):      # msix_write_config -> msix_handle_mask_update
            if masked[v] and not self.msix_is_masked(v):
                self._msix_fire_pending(v, "qemu-vcpu")
        if addr <= PCI_COMMAND < addr + size and not self.config[PCI_COMMAND] & PCI_COMMAND_MASTER:
            self.trace.emit("qemu-vcpu", "bus_master_cleared", device=self.name, status=self.vdev.status)
            self.stop_ioeventfd()
            self.vdev.set_status(self.vdev.status & ~VIRTIO_CONFIG_S_DRIVER_OK)

    def _vector_use(self, val: int) -> int:
        """msix_vector_use: a vector past the table is refused (NO_VECTOR)."""
        return val if val < self.msix_nvectors else VIRTIO_NO_VECTOR

    # -- the modern interface: capabilities and BAR 4 ---------------------

    def _modern_init(self) -> None:
        """virtio_pci_pre_plugged / virtio_pci_device_plugged, modern part."""
        self.vdev.host_features |= 1 << VIRTIO_F_VERSION_1
        self.vdev.transport_modern()
        self.dfselect = self.gfselect = 0
        self.modern_guest_features = [0, 0]
        self.config_generation = 0
        self.mqs = [_ModernQueue() for _ in self.vdev.vqs]
        notify_size = self.queue_mem_mult * VIRTIO_QUEUE_MAX
        self.modern_bar = MemoryRegion("virtio-pci", _pow2(VIRTIO_PCI_NOTIFY_OFF + notify_size))
        regions = (("common", VIRTIO_PCI_COMMON_OFF, VIRTIO_PCI_REGION_SIZE, VIRTIO_PCI_CAP_COMMON_CFG),
                   ("isr", VIRTIO_PCI_ISR_OFF, VIRTIO_PCI_REGION_SIZE, VIRTIO_PCI_CAP_ISR_CFG),
                   ("device", VIRTIO_PCI_DEVICE_OFF, VIRTIO_PCI_REGION_SIZE, VIRTIO_PCI_CAP_DEVICE_CFG),
                   ("notify", VIRTIO_PCI_NOTIFY_OFF, notify_size, VIRTIO_PCI_CAP_NOTIFY_CFG))
        for name, off, size, cfg_type in regions:
            mr = MemoryRegion(f"virtio-pci-{name}", size, ops=_ModernOps(self, name, off))
            self.modern_bar.add_subregion(off, mr)
            if name == "notify":
                self.notify_mr = mr
            cap = dict(cap_vndr=PCI_CAP_ID_VNDR, cap_next=0, cap_len=0, cfg_type=cfg_type,
                       bar=VIRTIO_PCI_MODERN_MEM_BAR, padding=None, offset=off, length=size)
            if name == "notify":
                self._add_vendor_cap(virtio_pci_notify_cap, dict(cap=cap, notify_off_multiplier=self.queue_mem_mult))
            else:
                self._add_vendor_cap(virtio_pci_cap, cap)
        self.register_bar(VIRTIO_PCI_MODERN_MEM_BAR, PCI_BASE_ADDRESS_SPACE_MEMORY | PCI_BASE_ADDRESS_MEM_PREFETCH
                          | PCI_BASE_ADDRESS_MEM_TYPE_64, self.modern_bar)
        # The PCI-config-access capability (accesses through it are not modelled).
        self._add_vendor_cap(virtio_pci_cfg_cap, dict(
            cap=dict(cap_vndr=PCI_CAP_ID_VNDR, cap_next=0, cap_len=0, cfg_type=VIRTIO_PCI_CAP_PCI_CFG, bar=0,
                     padding=None, offset=0, length=0), pci_cfg_data=bytes(4)))

    def _add_vendor_cap(self, layout, fields) -> None:
        """virtio_pci_add_mem_cap: pci_add_capability, then the body after
        the id and next bytes that pci_add_capability wrote."""
        size = layout.sizeof()
        cap = fields.get("cap", fields)
        cap["cap_len"] = size
        off = self.add_capability(PCI_CAP_ID_VNDR, size)
        raw = layout.build(fields)
        self.config[off + 2:off + size] = raw[2:]

    def modern_read(self, region: str, base: int, addr: int, size: int) -> int:
        vdev = self.vdev
        if region == "common":
            value = self._common_read(addr)
        elif region == "isr":
            value, vdev.isr = vdev.isr, 0   # virtio_pci_isr_read: xchg, deassert INTx
            self.qemu.pci_set_irq(self, 0)
        elif region == "device":
            cfg = vdev.get_config()     # virtio_config_modern_read*: little-endian
            value = int.from_bytes(cfg[addr:addr + size], "little") if addr + size <= len(cfg) \
                else (1 << (8 * size)) - 1
        else:
            value = 0                   # virtio_pci_notify_read (notify_pio aside)
        value &= (1 << (8 * size)) - 1
        self.trace.emit("qemu-vcpu", "virtio_pci_access", bar=VIRTIO_PCI_MODERN_MEM_BAR, offset=base + addr,
                        region=region, region_offset=addr, size=size, rw="R", value=value,
                        reg=self._modern_reg(region, addr))
        return value

    def modern_write(self, region: str, base: int, addr: int, value: int, size: int) -> None:
        self.trace.emit("qemu-vcpu", "virtio_pci_access", bar=VIRTIO_PCI_MODERN_MEM_BAR, offset=base + addr,
                        region=region, region_offset=addr, size=size, rw="W", value=value,
                        reg=self._modern_reg(region, addr))
        if region == "common":
            self._common_write(addr, value)
        elif region == "notify":
            queue = addr // self.queue_mem_mult     # virtio_pci_notify_write: the value is ignored
            if queue < VIRTIO_QUEUE_MAX:
                self.trace.emit("qemu-vcpu", "virtio_queue_notify", device=self.vdev.name, queue=queue,
                                via="userspace")
                self.vdev.queue_notify(queue, "qemu-vcpu")
        # ISR writes are ignored; virtio-blk's config is read-only here (wce aside)

    def _modern_reg(self, region: str, addr: int) -> str:
        if region == "common":
            return COMMON_REGS.get(addr, f"common+0x{addr:x}")
        if region == "device":
            return f"cfg+{addr}"
        if region == "notify":
            return f"notify+0x{addr:x}"
        return "isr"

    def _common_read(self, addr: int) -> int:
        """virtio_pci_common_read."""
        vdev, sel = self.vdev, self.vdev.queue_sel
        vq = vdev.vqs[sel] if sel < len(vdev.vqs) else None
        mq = self.mqs[sel] if sel < len(self.mqs) else _ModernQueue()
        c = COMMON_CFG
        if addr == c["device_feature_select"]:
            return self.dfselect
        if addr == c["device_feature"]:
            if self.dfselect > 1:
                return 0
            return ((vdev.host_features & ~vdev.legacy_features) >> (32 * self.dfselect)) & 0xFFFFFFFF
        if addr == c["driver_feature_select"]:
            return self.gfselect
        if addr == c["driver_feature"]:
            return self.modern_guest_features[self.gfselect] if self.gfselect <= 1 else 0
        if addr == c["msix_config"]:
            return self.config_vector
        if addr == c["num_queues"]:
            return sum(1 for q in vdev.vqs if q.num)
        if addr == c["device_status"]:
            return vdev.status
        if addr == c["config_generation"]:
            return self.config_generation
        if addr == c["queue_select"]:
            return sel
        if addr == c["queue_size"]:
            return vq.num if vq else 0
        if addr == c["queue_msix_vector"]:
            return self.queue_vectors.get(sel, VIRTIO_NO_VECTOR)
        if addr == c["queue_enable"]:
            return mq.enabled
        if addr == c["queue_notify_off"]:
            return sel                  # "Simply map queues in order"
        for name, lst in (("desc", mq.desc), ("avail", mq.avail), ("used", mq.used)):
            if addr == c[f"queue_{name}_lo"]:
                return lst[0]
            if addr == c[f"queue_{name}_hi"]:
                return lst[1]
        return 0

    def _common_write(self, addr: int, val: int) -> None:
        """virtio_pci_common_write."""
        vdev, sel = self.vdev, self.vdev.queue_sel
        c = COMMON_CFG
        mq = self.mqs[sel] if sel < len(self.mqs) else None
        if addr == c["device_feature_select"]:
            self.dfselect = val
        elif addr == c["driver_feature_select"]:
            self.gfselect = val
        elif addr == c["driver_feature"]:
            if self.gfselect <= 1:
                self.modern_guest_features[self.gfselect] = val
                if not vdev.status & VIRTIO_CONFIG_S_FEATURES_OK:   # virtio_set_features
                    g = self.modern_guest_features
                    vdev.set_features((g[1] << 32) | g[0])
        elif addr == c["msix_config"]:
            self.config_vector = self._vector_use(val)
        elif addr == c["device_status"]:
            self._status_write(val)
        elif addr == c["queue_select"]:
            if val < VIRTIO_QUEUE_MAX:
                vdev.queue_sel = val
        elif mq is None:
            return
        elif addr == c["queue_size"]:
            mq.num = val
            self._set_num(vdev.vqs[sel], val)
        elif addr == c["queue_msix_vector"]:
            mq.msix_vector = self.queue_vectors[sel] = self._vector_use(val)
        elif addr == c["queue_enable"]:
            if val == 1:
                vq = vdev.vqs[sel]
                self._set_num(vq, mq.num)
                if vq.num:              # virtio_queue_set_rings
                    vq.desc, vq.avail, vq.used = ((lst[1] << 32) | lst[0] for lst in (mq.desc, mq.avail, mq.used))
                    why = vq.unmappable()
                    if why:
                        vdev.virtio_error(why, "qemu-vcpu")
                mq.enabled = 1
            else:
                vdev.virtio_error(f"wrong value for queue_enable {val:x}", "qemu-vcpu")
        else:
            for name in ("desc", "avail", "used"):
                for half in (0, 1):
                    if addr == c[f"queue_{name}_{('lo', 'hi')[half]}"]:
                        getattr(mq, name)[half] = val

    @staticmethod
    def _set_num(vq, num: int) -> None:
        """virtio_queue_set_num: a queue cannot be switched on or off this way."""
        if bool(num) == bool(vq.num) and 0 < num <= 1024:
            vq.num = num

    def _status_write(self, val: int) -> None:
        """The STATUS write of both interfaces (virtio_ioport_write and
        virtio_pci_common_write): ioeventfds follow DRIVER_OK; 0 resets."""
        vdev = self.vdev
        if not val & VIRTIO_CONFIG_S_DRIVER_OK:
            self.stop_ioeventfd()
        vdev.set_status(val & 0xFF)
        if val & VIRTIO_CONFIG_S_DRIVER_OK:
            self.start_ioeventfd()
        if vdev.status == 0:
            self.device_reset()

    # -- BAR 0 ------------------------------------------------------------

    def legacy_read(self, addr: int, size: int) -> int:
        # virtio_pci_config_read. config_off is read once: an ioport read
        # never changes the MSI-X Enable bit it depends on. (config_off,
        # inline: every legacy register access of SLOF comes here.)
        cfg = VIRTIO_PCI_CONFIG_OFF_NO_MSIX + (4 if self.config[self.msix_cap + 3] & _MSIX_ENABLE_HI else 0)
        if addr >= cfg:
            value = self._config_read(addr - cfg, size)
        else:
            value = self._ioport_read(addr)
        self.trace.record("qemu-vcpu", "virtio_pci_access", _legacy_access_fields, addr, size, "R", value, cfg)
        return value

    def legacy_write(self, addr: int, value: int, size: int) -> None:
        cfg = VIRTIO_PCI_CONFIG_OFF_NO_MSIX + (4 if self.config[self.msix_cap + 3] & _MSIX_ENABLE_HI else 0)
        self.trace.record("qemu-vcpu", "virtio_pci_access", _legacy_access_fields, addr, size, "W", value, cfg)
        if addr >= cfg:
            return  # virtio-blk's config is read-only to the legacy driver (wce aside)
        self._ioport_write(addr, value)

    def reg_name(self, addr: int) -> str:
        return _reg_name(addr, self.config_off)

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
        if addr == VIRTIO_MSI_CONFIG_VECTOR:
            return self.config_vector
        if addr == VIRTIO_MSI_QUEUE_VECTOR:
            return self.queue_vectors.get(vdev.queue_sel, VIRTIO_NO_VECTOR)
        return 0xFFFFFFFF

    def _ioport_write(self, addr: int, val: int) -> None:
        """virtio_ioport_write."""
        vdev = self.vdev
        if addr == VIRTIO_PCI_GUEST_FEATURES:
            vdev.set_features(val)
        elif addr == VIRTIO_PCI_QUEUE_PFN:
            pa = val << VIRTIO_PCI_QUEUE_ADDR_SHIFT
            if pa == 0:
                self.stop_ioeventfd()
                self.device_reset()
            elif vdev.queue_sel < len(vdev.vqs):
                vq = vdev.vqs[vdev.queue_sel]
                vq.set_legacy_addr(pa)
                why = vq.unmappable()  # virtio_queue_set_addr -> virtio_init_region_cache
                if why:
                    vdev.virtio_error(why, "qemu-vcpu")
        elif addr == VIRTIO_PCI_QUEUE_SEL:
            if val < VIRTIO_PCI_QUEUE_MAX:
                vdev.queue_sel = val
        elif addr == VIRTIO_PCI_QUEUE_NOTIFY:
            if val < VIRTIO_PCI_QUEUE_MAX:
                self.trace.emit("qemu-vcpu", "virtio_queue_notify", device=vdev.name, queue=val,
                                via="userspace")
                vdev.queue_notify(val, "qemu-vcpu")
        elif addr == VIRTIO_PCI_STATUS:
            self._status_write(val)
        elif addr == VIRTIO_MSI_CONFIG_VECTOR:
            self.config_vector = self._vector_use(val)
        elif addr == VIRTIO_MSI_QUEUE_VECTOR:
            if vdev.queue_sel < len(vdev.vqs):
                self.queue_vectors[vdev.queue_sel] = self._vector_use(val)

    def device_reset(self) -> None:
        """virtio_pci_reset: the core, then the transport's queue state."""
        self.vdev.reset(self.qemu.cpu_virtio_is_big_endian())
        self.config_vector = VIRTIO_NO_VECTOR       # virtio_reset: every vector back to NO_VECTOR
        self.queue_vectors = {}
        if self.modern:
            self.mqs = [_ModernQueue() for _ in self.vdev.vqs]
        self.trace.emit("qemu-vcpu", "virtio_reset", device=self.vdev.name)

    # -- host notifiers (the ioeventfd on QUEUE_NOTIFY) -------------------

    def _set_host_notifier_internal(self, n: int, assign: bool, set_handler: bool, actor: str = "qemu-vcpu") -> None:
        """virtio_pci_set_host_notifier_internal (2.1-2.4): assigning creates
        the notifier already signalled (event_notifier_init(notifier, 1)),
        so a main-loop handler runs once as soon as the main loop gets the
        BQL; deassigning removes the handler, then tests and clears the
        notifier and runs the queue if it was set
        (virtio_queue_set_host_notifier_fd_handler)."""
        vq = self.vdev.vqs[n]
        if assign:
            owner = "main loop" if set_handler else "dataplane"
            vq.host_notifier = self.qemu.event_notifier_init(f"{self.vdev.name} vq{n} host notifier ({owner})",
                                                             active=True)
            self.trace.emit(actor, "host_notifier_init", eventfd=vq.host_notifier.label, queue=n,
                            signalled=vq.host_notifier.count, handler="main loop" if set_handler else None)
            if set_handler:  # main loop: virtio_queue_host_notifier_read
                self.qemu.main_ctx.set_event_notifier(vq.host_notifier, lambda _vq=vq: self._host_notifier_read(_vq))
            self._ioeventfd_assign(n, vq.host_notifier, True)
        else:
            efd = vq.host_notifier
            self._ioeventfd_assign(n, efd, False)
            self.qemu.main_ctx.set_event_notifier(efd, None)
            if efd.count:   # "in case poll callback didn't have time to run"
                self._host_notifier_read(vq, actor)
            vq.host_notifier = None

    def _ioeventfd_assign(self, n: int, e, assign: bool) -> None:
        """virtio_pci_ioeventfd_assign: the modern notify address (no
        datamatch; length 0 if KVM has any-length ioeventfds), then the
        legacy QUEUE_NOTIFY (length 2, datamatch = n)."""
        if self.modern:
            length = 0 if self.fast_mmio else 2
            if assign:
                self.notify_mr.add_eventfd(self.queue_mem_mult * n, length, False, n, e)
            else:
                self.notify_mr.del_eventfd(self.queue_mem_mult * n, length, False, n, e)
        if assign:
            self.bar.add_eventfd(VIRTIO_PCI_QUEUE_NOTIFY, 2, True, n, e)
        else:
            self.bar.del_eventfd(VIRTIO_PCI_QUEUE_NOTIFY, 2, True, n, e)

    def _host_notifier_read(self, vq, actor: str = "qemu-main") -> None:
        """virtio_queue_host_notifier_read: test and clear, then
        virtio_queue_notify_vq. A notifier never signalled since it was
        created still holds its initial 1: no guest kick is behind it."""
        efd = vq.host_notifier
        startup = efd.signals == 0
        if not efd.test_and_clear():
            return
        self.trace.emit(actor, "virtio_queue_notify", device=self.vdev.name, queue=vq.index,
                        via="start-up notifier" if startup else "ioeventfd")
        vq.handle_output(vq, actor, "start-up notifier" if startup else "ioeventfd")

    def start_ioeventfd(self) -> None:
        if not self.use_ioeventfd or self.ioeventfd_disabled or self.ioeventfd_started:
            return
        if self.vdev.start_ioeventfd("qemu-vcpu"):
            return
        for vq in self.vdev.vqs:
            if vq.num:
                self._set_host_notifier_internal(vq.index, True, True)
        self.ioeventfd_started = True

    def stop_ioeventfd(self, actor: str = "qemu-vcpu") -> None:
        if self.vdev.stop_ioeventfd(actor):     # 2.8+: the device's own hook
            return
        if not self.ioeventfd_started:
            return
        for vq in self.vdev.vqs:
            if vq.host_notifier is not None:
                self._set_host_notifier_internal(vq.index, False, False, actor)
        self.ioeventfd_started = False

    def set_host_notifier(self, n: int, assign: bool, actor: str = "qemu-vcpu") -> None:
        """virtio_pci_set_host_notifier, the hook dataplane uses: "Stop using
        ioeventfd for virtqueue kick if the device starts using host
        notifiers."""
        self.ioeventfd_disabled = assign
        if assign:
            self.stop_ioeventfd(actor)
        self._set_host_notifier_internal(n, assign, False, actor)

    # -- guest notifiers --------------------------------------------------

    def set_guest_notifiers(self, n: int, assign: bool) -> None:
        """virtio_pci_set_guest_notifiers: with_irqfd = msix_enabled &&
        kvm_msi_via_irqfd_enabled(). With it, the queue's MSI-X message
        becomes a KVM MSI route (on spapr the GSI is the message data, the
        XICS irq: kvm_gsi_direct_mapping) and the eventfd a KVM_IRQFD, so
        a completion reaches the guest with no QEMU thread; without it a
        main-loop handler raises the interrupt (SLOF's case: INTx)."""
        vq = self.vdev.vqs[n]
        if assign:
            with_irqfd = self.msix_enabled() and self.qemu.kvm_msi_via_irqfd_enabled()
            vq.guest_notifier = self.qemu.event_notifier_init(f"{self.vdev.name} vq{n} guest notifier")
            vector = self.queue_vectors.get(n, VIRTIO_NO_VECTOR)
            if with_irqfd and vector in self.msix_table:
                gsi = self.msix_table[vector][1]     # kvm_irqchip_add_msi_route
                if self.qemu.kvm_irqfd(vq.guest_notifier, gsi, True) == 0:
                    self.irqfds[n] = gsi
                    return
            self.qemu.main_ctx.set_event_notifier(vq.guest_notifier, lambda: self._guest_notifier_read(vq))
        elif vq.guest_notifier is not None:
            if n in self.irqfds:
                self.qemu.kvm_irqfd(vq.guest_notifier, self.irqfds.pop(n), False)
            else:
                self.qemu.main_ctx.set_event_notifier(vq.guest_notifier, None)
            vq.guest_notifier = None

    def _guest_notifier_read(self, vq) -> None:
        if vq.guest_notifier.test_and_clear():
            self.virtio_irq("qemu-main", vq)

    def notify_guest(self, vq, actor: str) -> None:
        if vq.guest_notifier is not None:
            self.trace.emit(actor, "guest_notifier_set", eventfd=vq.guest_notifier.label,
                            irqfd=vq.index in self.irqfds)
            vq.guest_notifier.signal()
        else:
            self.virtio_irq(actor, vq)

    def virtio_irq(self, actor: str, vq=None) -> None:
        """virtio_irq -> virtio_pci_notify: an MSI-X message when MSI-X is
        on (msix_notify), else INTx from the ISR bit."""
        self.vdev.isr |= 1
        if self.msix_enabled():
            vector = self.queue_vectors.get(vq.index if vq is not None else 0, VIRTIO_NO_VECTOR)
            self.msix_notify(vector, actor)
            return
        self.qemu.pci_set_irq(self, 1)


def _reg_name(addr: int, config_off: int) -> str:
    """The legacy register at BAR 0 offset addr, device config from config_off."""
    if addr >= config_off:
        return f"cfg+{addr - config_off}"
    if addr == VIRTIO_MSI_CONFIG_VECTOR:      # only below config_off with MSI-X on
        return "MSI_CONFIG_VECTOR"
    if addr == VIRTIO_MSI_QUEUE_VECTOR:
        return "MSI_QUEUE_VECTOR"
    name = LEGACY_REGS.get(addr)
    return name if name is not None else f"0x{addr:x}"


@fields_builder
def _legacy_access_fields(addr: int, size: int, rw: str, value: int, config_off: int) -> dict:
    """A BAR 0 access's trace fields (Trace.record: built when read)."""
    return {"bar": 0, "offset": addr, "region": "legacy", "region_offset": addr, "size": size, "rw": rw,
            "value": value, "reg": _reg_name(addr, config_off)}
