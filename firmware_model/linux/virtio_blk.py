"""The guest kernel after the hand-off: Linux's virtio_pci and virtio_blk.

Guest software, like the SLOF model: it reaches the machine only through
hcalls (RTAS for PCI config space and MSI setup, H_CEDE, the in-kernel
XICS's H_XIRR/H_EOI, the hvc console), MMIO loads and stores, and guest
RAM. Unlike SLOF it runs with the MMU on (MSR[DR]=1), so a device
register is an ordinary load or store to the BAR: the CPU takes an HDSI,
and KVM emulates the access, trying KVM_MMIO_BUS first
(kvmppc_handle_load/store). A QUEUE_NOTIFY therefore hits the ioeventfd in
the kernel even on a 4.0 host without the in-kernel H_LOGICAL_CI_*: the
2015 bug lives only in real mode.

The flow follows the release the scenario names (firmware_model/linux/
releases.py: 4.1 big-endian or 6.1 little-endian; drivers/virtio/virtio.c,
virtio_pci_common.c, virtio_pci_legacy.c, virtio_pci_modern.c,
virtio_ring.c, drivers/block/virtio_blk.c, drivers/pci/msi.c):

- PCI enumeration (before any driver): ids, BARs, capabilities.
- virtio_pci_probe: pci_enable_device (command, interrupt pin), the modern
  driver if the virtio 1.0 capabilities are there (transitional device:
  each found by its cfg_type, then mapped), else legacy BAR 0;
  pci_set_master.
- register_virtio_device: reset (status 0, read back to flush),
  ACKNOWLEDGE; virtio_dev_probe: DRIVER, features, finalize (modern:
  FEATURES_OK and its check).
- virtblk_probe: seg_max, then init_vq -> vp_find_vqs: MSI-X first, one
  vector for config changes and one per queue (pseries: ibm,change-msi
  and ibm,query-interrupt-source-number; the MSI-X table and its
  per-vector masks in BAR 1), the config vector, setup_vq (legacy:
  QUEUE_SEL, QUEUE_NUM, QUEUE_PFN, MSI_QUEUE_VECTOR; modern:
  queue_select ... queue_enable); the device config fields of the
  release's probe, byte by byte on a legacy device, in the guest's byte
  order; virtio_device_ready: DRIVER_OK.
- add_disk: the partition scan reads the disk through the page cache, one
  64 KiB page (ppc64 CONFIG_PPC_64K_PAGES) per read, the first page and
  any other page the label parser asks for (GPT's alternate header). Each
  request is an indirect descriptor (header, data, status) when
  INDIRECT_DESC was negotiated, a kick unless the device's avail_event
  says not (EVENT_IDX), and an idle wait: H_CEDE until the completion
  interrupt, whose handler takes it with H_XIRR, runs virtblk_done
  (vring_interrupt; with INTx, vp_interrupt reads ISR first) and ends it
  with H_EOI.

The transports and their ppc64 accessors are in virtio_pci.py beside it.

Deviations, on purpose: the XICS source set-up (ibm,set-xive/int-on of
ics_rtas_startup) is not modelled; a modern ring keeps the legacy
4096-byte layout (Linux aligns a modern used ring to SMP_CACHE_BYTES: an
address the driver chooses).
"""

import hashlib

from sim import vtime
from sim.abi import gpt as G
from sim.abi import mbr as M
from sim.abi import papr
from sim.abi.virtio import (
    CAP_FIELDS, PCI_CAP_ID_VNDR, VIRTIO_BLK_T_IN, VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG,
    VIRTIO_PCI_NOTIFY_CAP_MULT, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, layouts,
)
from sim.trace import KERNEL_STAGE_PHASE
from firmware_model.hvcall import HvCalls
from firmware_model.linux.msi import PCI_CAP_ID_MSIX, PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, Msix
from firmware_model.linux.releases import LINUX_4_1, MQ_READ, SEG_MAX_READ, driver_features
from firmware_model.linux.virtio_pci import VIRTIO_MSI_NO_VECTOR, KernelIoError, LegacyPci, ModernPci
from firmware_model.linux.virtio_ring import SplitVirtqueue
from firmware_model.rtas_pci import PCI_COMMAND_IO, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, Phb, PciFunction

PCI_STATUS, PCI_INTERRUPT_PIN, PCI_CAPABILITY_LIST = 0x06, 0x3D, 0x34
PCI_STATUS_CAP_LIST = 0x10

# Where this kernel keeps its data (any free guest RAM would do; below
# 64 MiB, the smallest machine a scenario may have). Addresses the model
# allocates: QUEUE_PFN and the descriptors' addresses follow from them.
KDATA = 0x3000000
RTAS_ARGS = KDATA                # rtas_args (the kernel's rtas.args)
REQ = KDATA + 0x8000             # struct virtblk_req: out header, status byte (32 bytes each)
RING = KDATA + 0x10000           # the virtqueue (alloc_pages_exact)
INDIRECT = KDATA + 0x40000       # kmalloc'd indirect tables (alloc_indirect_split)
BUFFERS = KDATA + 0x100000       # page-cache pages the reads land in
HUNG_TASK_TIMEOUT_S = 120        # CONFIG_DEFAULT_HUNG_TASK_TIMEOUT


def string_get_size(size: int, base: int, units: str, suffix: str) -> str:
    """lib/string_helpers.c string_get_size: three significant digits,
    rounded ("134 MB", "16.8 MB", "128 MiB", "16.0 MiB")."""
    unit, value = "", float(size)
    for u in units:
        if value < base:
            break
        value, unit = value / base, u
    decimals = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{decimals}f} {unit}{suffix}" if unit else f"{size} B"


class LinuxVirtioBlk:
    """One virtio-blk disk brought up and read by the guest kernel."""

    def __init__(self, cpu, device_tree: dict, trace, costs, *, devfn: int = 0, kernel=LINUX_4_1):
        self.cpu = cpu
        self.ram = cpu.ram
        self.trace = trace
        self.costs = costs
        self.kernel = kernel
        self.hv = HvCalls(cpu, rtas_args_addr=RTAS_ARGS)
        self.phb = Phb(device_tree["phb"])
        self.fn = PciFunction(self.hv, self.phb, devfn)
        self.t = None
        self.irq = None          # the XICS irq of the queue's interrupt
        self.intx = False
        self.reads: list[dict] = []
        self.pages: dict[int, int] = {}      # page-cache page index -> RAM address
        self.done: dict[int, int] = {}       # request head -> completions seen

    def emit(self, name: str, **fields) -> None:
        self.trace.emit("guest", name, **fields)

    async def printk(self, text: str) -> None:
        """hvc_vio: H_PUT_TERM_CHAR, up to 16 bytes per call (r6/r7)."""
        data = text.replace("\n", "\r\n").encode("latin-1", "replace")
        for i in range(0, len(data), 16):
            chunk = data[i:i + 16].ljust(16, b"\0")
            await self.cpu.hcall(papr.H_PUT_TERM_CHAR, 0, min(16, len(data) - i),
                                 int.from_bytes(chunk[:8], "big"), int.from_bytes(chunk[8:], "big"))

    # -- the stage ---------------------------------------------------------

    async def run(self) -> dict:
        cpu = self.cpu
        self.trace.emit("guest", "phase", name=KERNEL_STAGE_PHASE)
        cpu.msr_dr = True          # the kernel runs translated (MMU on)
        cpu.msr_le = not self.kernel.big_endian     # a ppc64le kernel runs with MSR[LE]
        self.emit("mmu_on", msr_dr=True, msr_le=cpu.msr_le, kernel=self.kernel.name)
        await cpu.compute(self.costs.linux_boot_to_probe)
        try:
            await self.probe()
            await self.scan_partitions()
            # virtio_dev_probe: "If probe didn't do it, mark device DRIVER_OK ourselves."
            if not await self.t.get_status() & VIRTIO_CONFIG_S_DRIVER_OK:
                await self._add_status(VIRTIO_CONFIG_S_DRIVER_OK)
        except KernelIoError as exc:
            self.emit("kernel_stage_failed", reason=str(exc))
            return {"ok": False, "reason": str(exc), "reads": self.reads}
        self.emit("kernel_stage_done", reads=len(self.reads))
        return {"ok": True, "transport": "modern" if self.t.modern else "legacy", "kernel": self.kernel.name,
                "interrupts": "INTx" if self.intx else "MSI-X", "reads": self.reads}

    # -- PCI enumeration, then virtio_pci_probe --------------------------------

    async def probe(self) -> None:
        fn = self.fn
        ids = await fn.read(0x00, 4)          # pci_scan_device (enumeration, before any driver)
        if ids & 0xFFFF != 0x1AF4:
            raise KernelIoError(f"no virtio device at devfn {fn.devfn} (ids 0x{ids:08x})")
        caps = await self._capabilities()
        self.resources = {i: await self.fn.read(0x10 + 4 * i, 4) for i in range(6)}   # pci_read_bases
        bar0 = await self._bar(0)
        self.emit("virtio_pci_probe", kernel=self.kernel.name)
        await self._enable_device()
        modern = await self._modern_probe()
        if modern is not None:
            self.t = ModernPci(self.cpu, *modern, self.kernel.queue_sel_every_access)
        else:
            self.t = LegacyPci(self.cpu, bar0, self.kernel.queue_sel_every_access)
        await self._set_master()
        self.emit("virtio_pci_transport", transport="modern" if self.t.modern else "legacy")
        t = self.t
        # register_virtio_device, virtio_dev_probe
        await t.reset()
        await self._add_status(VIRTIO_CONFIG_S_ACKNOWLEDGE)
        await self._add_status(VIRTIO_CONFIG_S_DRIVER)
        offered = await t.get_features()
        self.features = offered & driver_features(self.kernel, t.modern)
        await t.finalize_features(self.features)
        if t.modern:
            await self._add_status(VIRTIO_CONFIG_S_FEATURES_OK)
            if not await t.get_status() & VIRTIO_CONFIG_S_FEATURES_OK:
                await self._add_status(VIRTIO_CONFIG_S_FAILED)
                raise KernelIoError("virtio: device refuses features")
        self.emit("virtio_features", offered=offered, negotiated=self.features)
        # virtblk_probe: "We need to know how many segments before we allocate."
        self.config = {}
        await self._cread(SEG_MAX_READ)
        await self._cread(MQ_READ)                  # init_vq
        await self._find_vqs(caps)
        for field in self.kernel.probe_reads:
            await self._cread(field)
        self.capacity = self.config["capacity"]
        await self._add_status(VIRTIO_CONFIG_S_DRIVER_OK)          # virtio_device_ready
        size = self.capacity * 512
        if self.kernel.prints_capacity_at_probe:
            await self.printk(f"virtio_blk virtio0: [vda] {self.capacity} 512-byte logical blocks "
                              f"({string_get_size(size, 1000, 'kMGTPEZY', 'B')}/"
                              f"{string_get_size(size, 1024, 'KMGTPEZY', 'iB')})\n")

    def _little(self) -> bool:
        """virtio_is_little_endian: VERSION_1, or a little-endian guest."""
        return self.t.modern or not self.kernel.big_endian

    async def _cread(self, field) -> None:
        """virtio_cread_feature / virtio_cread: nothing when the feature is
        off; the bytes as vp_get reads them, in virtio_is_little_endian's order."""
        name, offset, size, feature = field
        if feature is not None and not self.features >> feature & 1:
            return
        raw = await self.t.read_config(offset, size)
        self.config[name] = int.from_bytes(raw, "little" if self._little() else "big")

    async def _add_status(self, bits: int) -> None:
        await self.t.set_status(await self.t.get_status() | bits)

    async def _capabilities(self) -> list[tuple[int, int]]:
        caps, ptr = [], await self.fn.read(PCI_CAPABILITY_LIST, 1)
        while ptr and len(caps) < 48:
            caps.append((ptr, await self.fn.read(ptr, 1)))
            ptr = await self.fn.read(ptr + 1, 1)
        return caps

    async def _enable_device(self) -> None:
        """pci_enable_device: pci_enable_resources (command |= IO|MEM), then
        do_pci_enable_device's interrupt pin check (INTx left enabled)."""
        fn = self.fn
        cmd = await fn.read(PCI_COMMAND, 2)
        if cmd | PCI_COMMAND_IO | PCI_COMMAND_MEMORY != cmd:
            await fn.write(PCI_COMMAND, 2, cmd | PCI_COMMAND_IO | PCI_COMMAND_MEMORY)
        if await fn.read(PCI_INTERRUPT_PIN, 1):
            cmd = await fn.read(PCI_COMMAND, 2)
            if cmd & PCI_COMMAND_INTX_DISABLE:
                await fn.write(PCI_COMMAND, 2, cmd & ~PCI_COMMAND_INTX_DISABLE)

    async def _set_master(self) -> None:
        """pci_set_master (__pci_set_master)."""
        cmd = await self.fn.read(PCI_COMMAND, 2)
        if cmd | PCI_COMMAND_MASTER != cmd:
            await self.fn.write(PCI_COMMAND, 2, cmd | PCI_COMMAND_MASTER)

    async def _find_next_cap(self, pos: int, cap_id: int) -> int:
        """__pci_find_next_cap_ttl: the pointer byte at pos, then each
        capability as a word (id, next) until cap_id (0: none)."""
        pos = await self.fn.read(pos, 1)
        for _ in range(48):
            if pos < 0x40:
                return 0
            pos &= ~3
            ent = await self.fn.read(pos, 2)
            if ent & 0xFF == 0xFF:
                return 0
            if ent & 0xFF == cap_id:
                return pos
            pos = ent >> 8
        return 0

    async def _vndr_caps(self):
        """pci_find_capability(PCI_CAP_ID_VNDR) (status word, the list
        pointer, the walk), then pci_find_next_capability from each."""
        if not await self.fn.read(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST:
            return
        pos = await self._find_next_cap(PCI_CAPABILITY_LIST, PCI_CAP_ID_VNDR)
        while pos:
            yield pos
            pos = await self._find_next_cap(pos + 1, PCI_CAP_ID_VNDR)

    async def _find_virtio_cap(self, cfg_type: int) -> int:
        """virtio_pci_find_capability: each vendor capability's cfg_type and
        bar bytes until one of cfg_type on a BAR the device has."""
        async for pos in self._vndr_caps():
            ctype = await self.fn.read(pos + CAP_FIELDS["cfg_type"], 1)
            bar = await self.fn.read(pos + CAP_FIELDS["bar"], 1)
            if bar < 6 and ctype == cfg_type and self.resources.get(bar):
                return pos
        return 0

    async def _map_cap(self, pos: int) -> int:
        """vp_modern_map_capability: bar, offset, length; the CPU address."""
        bar = await self.fn.read(pos + CAP_FIELDS["bar"], 1)
        offset = await self.fn.read(pos + CAP_FIELDS["offset"], 4)
        await self.fn.read(pos + CAP_FIELDS["length"], 4)
        lo = self.resources[bar]
        if lo & 1:
            return self.phb.translate(lo & ~0x3, True) + offset
        addr = lo & ~0xF
        if lo & 0x6 == 0x4:
            addr |= self.resources[bar + 1] << 32
        return self.phb.translate(addr, False) + offset

    async def _modern_probe(self):
        """virtio_pci_modern_probe (vp_modern_probe in 6.1): common config,
        ISR and notify capabilities (else -ENODEV: the legacy driver), the
        device config one, then each mapped; notify_off_multiplier, the
        notify length and offset read before the notify area is mapped."""
        common = await self._find_virtio_cap(VIRTIO_PCI_CAP_COMMON_CFG)
        if not common:
            return None                                  # "leaving for legacy driver"
        isr = await self._find_virtio_cap(VIRTIO_PCI_CAP_ISR_CFG)
        notify = await self._find_virtio_cap(VIRTIO_PCI_CAP_NOTIFY_CFG)
        device = await self._find_virtio_cap(VIRTIO_PCI_CAP_DEVICE_CFG)
        if not isr or not notify or not device:
            raise KernelIoError(f"virtio_pci: missing capabilities {common}/{isr}/{notify}")
        common_addr = await self._map_cap(common)
        isr_addr = await self._map_cap(isr)
        mult = await self.fn.read(notify + VIRTIO_PCI_NOTIFY_CAP_MULT, 4)
        await self.fn.read(notify + CAP_FIELDS["length"], 4)
        await self.fn.read(notify + CAP_FIELDS["offset"], 4)
        notify_addr = await self._map_cap(notify)
        device_addr = await self._map_cap(device)
        return common_addr, isr_addr, device_addr, notify_addr, mult

    async def _bar(self, idx: int) -> int:
        """The BAR's CPU address through the PHB's windows (the kernel has
        the firmware's assignment: linux,pci-probe-only)."""
        lo = await self.fn.read(0x10 + 4 * idx, 4)
        if lo & 1:
            return self.phb.translate(lo & ~0x3, True)
        addr = lo & ~0xF
        if lo & 0x6 == 0x4:
            addr |= await self.fn.read(0x14 + 4 * idx, 4) << 32
        return self.phb.translate(addr, False)

    # -- init_vq -> vp_find_vqs -------------------------------------------------

    async def _find_vqs(self, caps) -> None:
        """vp_find_vqs: per-vq MSI-X vectors if the function has MSI-X
        (vector 0 config, 1 the queue), else INTx."""
        t = self.t
        msix = next((ptr for ptr, cap_id in caps if cap_id == PCI_CAP_ID_MSIX), None)
        vector = VIRTIO_MSI_NO_VECTOR
        if msix is not None and await self._enable_msix(msix, 2):
            await self._irq_startup(0, managed=False)          # request_irq(config vector)
            if await t.config_vector(0) == VIRTIO_MSI_NO_VECTOR:
                raise KernelIoError("virtio_pci: config vector refused")
            vector = 1
        else:
            self.intx = True
            self.irq = 0x1000 + self.fn.devfn // 8       # the LSI the device tree names
        vq = await t.setup_vq(0, self._alloc_ring, vector)
        if vq is None:
            raise KernelIoError("virtio_blk: queue 0 not available")
        self.num, addrs, self.notify_addr, got = vq
        if not self.intx:
            if got == VIRTIO_MSI_NO_VECTOR:
                raise KernelIoError("virtio_pci: queue vector refused")
            await self._irq_startup(1, managed=True)           # request_irq(vring_interrupt)
        await t.enable_vqs(0)
        big = self.kernel.big_endian and not t.modern
        self.L = layouts(big)
        self.vq = SplitVirtqueue(self.ram, self.num, addrs, big_endian=big,
                                 event_idx=bool(self.features >> VIRTIO_RING_F_EVENT_IDX & 1),
                                 indirect=bool(self.features >> VIRTIO_RING_F_INDIRECT_DESC & 1),
                                 indirect_pool=INDIRECT,
                                 disable_cb_sets_flags=self.kernel.disable_cb_sets_flags)
        self.emit("virtio_find_vqs", num=self.num, notify=self.notify_addr,
                  interrupt="INTx" if self.intx else "MSI-X", irq=self.irq,
                  event_idx=self.vq.event, indirect=self.vq.indirect)

    def _alloc_ring(self, num: int, size: int) -> int:
        """vring_create_virtqueue / alloc_pages_exact: zeroed pages."""
        self.ram.write(RING, bytes(size))
        return RING

    # -- MSI-X (firmware_model/linux/msi.py) ---------------------------------

    async def _enable_msix(self, cap: int, nvec: int) -> bool:
        """pci_alloc_irq_vectors(PCI_IRQ_MSIX): the queue's irq is vector 1's."""
        def moved(on: bool) -> None:          # VIRTIO_PCI_CONFIG: config moves to 24 under MSI-X
            if isinstance(self.t, LegacyPci):
                self.t.msix = on
        self.msix = Msix(self.fn, self.hv, self.phb, self.t, self.kernel.msix_flavour, self.resources, moved)
        irqs = await self.msix.enable(cap, nvec)
        if irqs is None:
            return False
        self.irq = irqs[1]
        self.emit("msix_enabled", irqs=irqs)
        return True

    async def _irq_startup(self, vec: int, managed: bool) -> None:
        await self.msix.irq_startup(vec, managed)

    # -- requests: virtio_queue_rq, the kick, virtblk_done --------------------

    async def read_pages(self, sectors: list[int], count: int) -> None:
        """Submit one read per sector start (a plugged batch: blk-mq's last
        request kicks once), then sleep until every one completed."""
        ram, L = self.ram, self.L
        heads = []
        for sector in sectors:
            await self.cpu.compute(self.costs.linux_per_request)
            n = len(self.reads) + len(heads)
            buf = BUFFERS + count * 512 * n
            hdr, status = REQ + 32 * n, REQ + 32 * n + 16
            ram.write(hdr, L.blk_outhdr_fast.pack(VIRTIO_BLK_T_IN, 0, sector))
            ram.write(status, b"\xff")
            head = self.vq.add_sgs([(hdr, 16)], [(buf, count * 512), (status, 1)])
            if head is None:
                raise KernelIoError("virtio_blk: queue full")
            heads.append((head, sector, buf, status))
            self.emit("linux_blk_submit", sector=sector, count=count, head=head,
                      avail_idx=self.vq.avail_idx_shadow, indirect=self.vq.indirect)
        if self.vq.kick_prepare():
            self.emit("linux_virtqueue_notify", addr=self.notify_addr, queue=0)
            await self.t.iowrite(2, self.notify_addr, 0)                       # vp_notify
        else:
            self.emit("linux_kick_suppressed", avail_event=True)
        await self._wait_for_completion([h for h, *_ in heads], sectors[0])
        for head, sector, buf, status in heads:
            data = ram.read(buf, count * 512)
            st = ram.read(status, 1)[0]
            self.reads.append({"sector": sector, "count": count, "status": st,
                               "sha256": hashlib.sha256(data).hexdigest()})
            self.emit("linux_blk_done", sector=sector, count=count, status=st, sha256=self.reads[-1]["sha256"])
            if st != 0:
                await self.printk(f"blk_update_request: I/O error, dev vda, sector {sector}\n")
                raise KernelIoError(f"I/O error, dev vda, sector {sector} (status {st})")
            self.pages[sector * 512 // self.kernel.page_size] = buf

    async def _wait_for_completion(self, heads: list[int], sector: int) -> None:
        """The task sleeps in io_schedule; the idle loop cedes the vcpu
        (H_CEDE) with the decrementer set for the next timer, here the
        hung-task check. Completions arrive as external interrupts."""
        cpu = self.cpu
        deadline = vtime.now() + HUNG_TASK_TIMEOUT_S
        while not all(h in self.done for h in heads):
            cpu.dec_expiry = deadline
            await cpu.hcall(papr.H_CEDE)
            vec = cpu.take_exception()
            if vec == 0x500:
                await self._external_interrupt()
            elif vtime.now() >= deadline:
                await self.printk(f"INFO: task swapper/0:1 blocked for more than {HUNG_TASK_TIMEOUT_S} "
                                  "seconds.\n")
                self.emit("linux_hung_task", sector=sector, seconds=HUNG_TASK_TIMEOUT_S)
                raise KernelIoError(f"read of sector {sector} never completed")
        cpu.dec_expiry = None
        for h in heads:
            self.done.pop(h)

    def _virtblk_done(self) -> int:
        """virtblk_done: disable callbacks, take every used buffer, re-enable
        (and go round again if more arrived meanwhile)."""
        got = 0
        while True:
            self.vq.disable_cb()
            while (buf := self.vq.get_buf()) is not None:
                self.done[buf[0]] = buf[1]
                got += 1
            if self.vq.enable_cb():
                return got

    async def _external_interrupt(self) -> None:
        """do_IRQ -> xics_get_irq (H_XIRR) -> the handler -> H_EOI."""
        cpu = self.cpu
        await cpu.hcall(papr.H_XIRR)
        xirr = cpu.gpr[4]
        irq = xirr & 0xFFFFFF
        isr = None
        if irq and irq == self.irq:
            if self.intx:
                isr = await self.t.ioread(1, self.t.isr)       # vp_interrupt: reading ISR acks it
            got = self._virtblk_done() if self.vq.more_used() else 0   # vring_interrupt
            self.emit("linux_vring_interrupt", irq=irq, isr=isr, used_idx=self.vq.last_used_idx, buffers=got)
        else:
            self.emit("linux_spurious_interrupt", irq=irq)
        await cpu.hcall(papr.H_EOI, xirr)

    # -- the partition scan (block/partitions through the page cache) --------

    async def read_sector(self, lba: int) -> bytes:
        """read_dev_sector: the page holding lba, read once (read_mapping_page)."""
        page = self.kernel.page_size
        idx = lba * 512 // page
        if idx not in self.pages:
            await self.read_pages([idx * page // 512], page // 512)
        off = lba * 512 - idx * page
        return self.ram.read(self.pages[idx] + off, 512)

    async def scan_partitions(self) -> None:
        """check_partition on the first page: an MBR names its partitions;
        a protective MBR hands over to efi_partition, which reads the
        primary header, then the alternate one it names (find_valid_gpt)."""
        sector0 = await self.read_sector(0)
        mbr = M.mbr.parse(sector0)
        if mbr.signature != M.MBR_SIGNATURE:
            await self.printk(" vda: unknown partition table\n")
            return
        parts = [p for p in mbr.partitions if p.type]
        if parts and parts[0].type == M.PART_TYPE_GPT_PROTECTIVE:
            hdr = G.gpt_header.parse(await self.read_sector(1))
            if hdr.signature != G.SIGNATURE:
                raise KernelIoError("GPT: protective MBR without a GPT header")
            if hdr.backup_lba < self.capacity:
                await self.read_sector(hdr.backup_lba)
            n = 1
        else:
            n = len(parts)
        names = " ".join(f"vda{i + 1}" for i in range(n))
        await self.printk(f" vda: {names}\n" if n else " vda:\n")
        self.emit("linux_partitions", count=n)
