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

The flow follows a ~4.1 kernel (drivers/virtio/virtio.c, virtio_pci_common.c,
virtio_pci_legacy.c, virtio_pci_modern.c, drivers/block/virtio_blk.c):

- virtio_pci_probe: pci_enable_device + pci_set_master (command register
  through ibm,write-pci-config), then the modern driver if the virtio 1.0
  capabilities are there (transitional device), else legacy BAR 0.
- register_virtio_device: reset (status 0, read back to flush),
  ACKNOWLEDGE; virtio_dev_probe: DRIVER, features, finalize (modern:
  FEATURES_OK and its check).
- virtblk_probe -> init_vq -> vp_find_vqs: MSI-X first, one vector for
  config changes and one per queue (pseries: ibm,change-msi and
  ibm,query-interrupt-source-number, then the MSI-X Enable bit), the
  config vector, setup_vq (legacy: QUEUE_SEL, QUEUE_NUM, QUEUE_PFN,
  MSI_QUEUE_VECTOR; modern: queue_select ... queue_enable); capacity and
  blk_size from device config; virtio_device_ready: DRIVER_OK.
- add_disk: the partition scan reads the first page of the disk, then of
  the first partition; each request is a 3-descriptor chain (header, data,
  status), a kick (iowrite16 of the queue index to its notify address),
  and an idle wait: H_CEDE until the completion interrupt, whose handler
  takes it with H_XIRR, reads the used ring (vring_interrupt; with INTx,
  vp_interrupt reads ISR first) and ends it with H_EOI.

The transports and their ppc64 accessors are in virtio_pci.py beside it.

Deviations, on purpose: the driver does not negotiate EVENT_IDX or
INDIRECT_DESC (the device model implements neither; with one request in
flight the kicks and interrupts are the same in number), requests go one at
a time, the MSI-X table's per-vector masks (MMIO to BAR 1) and the XICS
source set-up (ibm,set-xive) are not modelled.
"""

import hashlib

from sim import vtime
from sim.abi import gpt as G
from sim.abi import mbr as M
from sim.abi import papr
from sim.abi.virtio import (
    CAP_FIELDS, PCI_CAP_ID_VNDR, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SCSI, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_T_IN, VIRTIO_CONFIG_S_ACKNOWLEDGE,
    VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG,
    VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_CAP_MULT, VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY, layouts,
)
from sim.trace import KERNEL_STAGE_PHASE
from firmware_model.hvcall import HvCalls
from firmware_model.linux.virtio_pci import VIRTIO_MSI_NO_VECTOR, KernelIoError, LegacyPci, ModernPci
from firmware_model.rtas_pci import PCI_COMMAND_IO, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, Phb, PciFunction

PCI_CAP_ID_MSIX = 0x11
PCI_MSIX_FLAGS_ENABLE, PCI_MSIX_FLAGS_MASKALL = 0x8000, 0x4000
RTAS_CHANGE_MSIX_FN = papr.RTAS_CHANGE_MSIX_FN

# virtio_blk's feature table (legacy; the modern one drops SCSI), plus the
# transport's VERSION_1. EVENT_IDX and INDIRECT_DESC: see the docstring.
DRIVER_FEATURES = [VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_RO,
                   VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_CONFIG_WCE]
LEGACY_ONLY_FEATURES = [VIRTIO_BLK_F_SCSI]

# Where this kernel keeps its data (any free guest RAM would do; below
# 64 MiB, the smallest machine a scenario may have).
KDATA = 0x3000000
RTAS_ARGS = KDATA                # rtas_args (the kernel's rtas.args)
RING = KDATA + 0x10000           # the virtqueue (alloc_pages_exact)
REQ = KDATA + 0x8000             # struct virtblk_req: out header, status byte
BUFFERS = KDATA + 0x100000       # page-cache pages the reads land in
PAGE = 4096
HUNG_TASK_TIMEOUT_S = 120        # CONFIG_DEFAULT_HUNG_TASK_TIMEOUT


class LinuxVirtioBlk:
    """One virtio-blk disk brought up and read by the guest kernel."""

    def __init__(self, cpu, device_tree: dict, trace, costs, *, devfn: int = 0):
        self.cpu = cpu
        self.ram = cpu.ram
        self.trace = trace
        self.costs = costs
        self.hv = HvCalls(cpu, rtas_args_addr=RTAS_ARGS)
        self.phb = Phb(device_tree["phb"])
        self.fn = PciFunction(self.hv, self.phb, devfn)
        self.t = None
        self.irq = None          # the XICS irq of the queue's interrupt
        self.intx = False
        self.reads: list[dict] = []

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
        self.emit("mmu_on", msr_dr=True)
        await cpu.compute(self.costs.linux_boot_to_probe)
        try:
            await self.probe()
            for sector in self.scan_plan():
                await self.read(sector, PAGE // 512)
                if sector == 0:
                    await self.check_label()
        except KernelIoError as exc:
            self.emit("kernel_stage_failed", reason=str(exc))
            return {"ok": False, "reason": str(exc), "reads": self.reads}
        self.emit("kernel_stage_done", reads=len(self.reads))
        return {"ok": True, "transport": "modern" if self.t.modern else "legacy",
                "interrupts": "INTx" if self.intx else "MSI-X", "reads": self.reads}

    def scan_plan(self):
        """Sector 0's page first; the partition's pages once it is known."""
        yield 0
        for sector in self._partition_pages:
            yield sector

    # -- virtio_pci_probe ----------------------------------------------------

    async def probe(self) -> None:
        fn = self.fn
        ids = await fn.read(0x00, 4)
        if ids & 0xFFFF != 0x1AF4:
            raise KernelIoError(f"no virtio device at devfn {fn.devfn} (ids 0x{ids:08x})")
        await fn.command(set_bits=PCI_COMMAND_IO | PCI_COMMAND_MEMORY)    # pci_enable_device
        await fn.command(set_bits=PCI_COMMAND_MASTER)                      # pci_set_master
        caps = await self._capabilities()
        self.t = await self._modern(caps) or LegacyPci(self.cpu, await self._bar(0))
        self.emit("virtio_pci_probe", transport="modern" if self.t.modern else "legacy")
        t = self.t
        # register_virtio_device, virtio_dev_probe
        await t.reset()
        await self._add_status(VIRTIO_CONFIG_S_ACKNOWLEDGE)
        await self._add_status(VIRTIO_CONFIG_S_DRIVER)
        offered = await t.get_features()
        wanted = sum(1 << b for b in DRIVER_FEATURES)
        wanted |= (1 << VIRTIO_F_VERSION_1) if t.modern else sum(1 << b for b in LEGACY_ONLY_FEATURES)
        self.features = offered & wanted
        await t.finalize_features(self.features)
        if t.modern:
            await self._add_status(VIRTIO_CONFIG_S_FEATURES_OK)
            if not await t.get_status() & VIRTIO_CONFIG_S_FEATURES_OK:
                await self._add_status(VIRTIO_CONFIG_S_FAILED)
                raise KernelIoError("virtio: device refuses features")
        self.emit("virtio_features", offered=offered, negotiated=self.features)
        # virtblk_probe: init_vq -> find_vqs
        await self._find_vqs(caps)
        self.capacity = await t.read_config(0, 8)
        self.blk_size = 512
        if self.features >> VIRTIO_BLK_F_BLK_SIZE & 1:
            self.blk_size = await t.read_config(20, 4)
        await self._add_status(VIRTIO_CONFIG_S_DRIVER_OK)          # virtio_device_ready
        mb, mib = self.capacity * 512 / 1e6, self.capacity * 512 / (1 << 20)
        await self.printk(f"virtio_blk virtio0: [vda] {self.capacity} 512-byte logical blocks "
                          f"({mb:.1f} MB/{mib:.1f} MiB)\n")
        self._partition_pages = []

    async def _add_status(self, bits: int) -> None:
        await self.t.set_status(await self.t.get_status() | bits)

    async def _capabilities(self) -> list[tuple[int, int]]:
        caps, ptr = [], await self.fn.read(0x34, 1)
        while ptr and len(caps) < 48:
            caps.append((ptr, await self.fn.read(ptr, 1)))
            ptr = await self.fn.read(ptr + 1, 1)
        return caps

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

    async def _modern(self, caps):
        """virtio_pci_modern_probe: the four structures, or None (-ENODEV)."""
        found = {}
        for ptr, cap_id in caps:
            if cap_id != PCI_CAP_ID_VNDR:
                continue
            cfg_type = await self.fn.read(ptr + CAP_FIELDS["cfg_type"], 1)
            if cfg_type in found or cfg_type not in (VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG,
                                                      VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_DEVICE_CFG):
                continue
            bar = await self.fn.read(ptr + CAP_FIELDS["bar"], 1)
            offset = await self.fn.read(ptr + CAP_FIELDS["offset"], 4)
            mult = await self.fn.read(ptr + VIRTIO_PCI_NOTIFY_CAP_MULT, 4) \
                if cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG else 0
            found[cfg_type] = (bar, offset, mult)
        if VIRTIO_PCI_CAP_COMMON_CFG not in found or len(found) < 4:
            return None
        base = {}
        for cfg_type, (bar, offset, _) in found.items():
            base[cfg_type] = await self._bar(bar) + offset
        return ModernPci(self.cpu, base[VIRTIO_PCI_CAP_COMMON_CFG], base[VIRTIO_PCI_CAP_ISR_CFG],
                         base[VIRTIO_PCI_CAP_DEVICE_CFG], base[VIRTIO_PCI_CAP_NOTIFY_CFG],
                         found[VIRTIO_PCI_CAP_NOTIFY_CFG][2])

    async def _find_vqs(self, caps) -> None:
        """vp_find_vqs: per-vq MSI-X vectors if the function has MSI-X
        (vector 0 config, 1 the queue), else INTx."""
        t = self.t
        msix = next((ptr for ptr, cap_id in caps if cap_id == PCI_CAP_ID_MSIX), None)
        vector = VIRTIO_MSI_NO_VECTOR
        if msix is not None and await self._enable_msix(msix, 2):
            if await t.config_vector(0) == VIRTIO_MSI_NO_VECTOR:
                raise KernelIoError("virtio_pci: config vector refused")
            vector = 1
        else:
            self.intx = True
            self.irq = 0x1000 + self.fn.devfn // 8       # the LSI the device tree names
        vq = await t.setup_vq(0, RING, vector)
        if vq is None:
            raise KernelIoError("virtio_blk: queue 0 not available")
        self.num, (self.desc, self.avail, self.used), self.notify_addr, got = vq
        if not self.intx and got == VIRTIO_MSI_NO_VECTOR:
            raise KernelIoError("virtio_pci: queue vector refused")
        await t.enable_vqs(0)
        self.L = layouts(not t.modern)     # legacy rings follow the (big-endian) guest
        self.order = "big" if not t.modern else "little"
        self.last_used = 0
        self.avail_idx = 0
        self.emit("virtio_find_vqs", num=self.num, notify=self.notify_addr,
                  interrupt="INTx" if self.intx else "MSI-X", irq=self.irq)

    async def _enable_msix(self, cap: int, nvec: int) -> bool:
        """pci_enable_msix_range on pseries: Enable|MaskAll, ibm,change-msi,
        the irq number of each vector, then MaskAll off."""
        fn = self.fn
        ctrl = await fn.read(cap + 2, 2)
        await fn.write(cap + 2, 2, ctrl | PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL)
        rets = await self.hv.rtas(papr.RTAS_IBM_CHANGE_MSI, [fn.devfn << 8, self.phb.buid >> 32,
                                                              self.phb.buid & 0xFFFFFFFF, RTAS_CHANGE_MSIX_FN,
                                                              nvec, 0], 4)
        if rets[0] != 0 or rets[1] != nvec:
            await fn.write(cap + 2, 2, ctrl & ~(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL))
            return False
        irqs = []
        for i in range(nvec):
            status, irq, _ = await self.hv.rtas(papr.RTAS_IBM_QUERY_INTERRUPT_SOURCE_NUMBER,
                                                [fn.devfn << 8, self.phb.buid >> 32,
                                                 self.phb.buid & 0xFFFFFFFF, i], 3)
            if status != 0:
                return False
            irqs.append(irq)
        await fn.write(cap + 2, 2, (ctrl | PCI_MSIX_FLAGS_ENABLE) & ~PCI_MSIX_FLAGS_MASKALL)
        if isinstance(self.t, LegacyPci):
            self.t.msix = True
        self.irq = irqs[1]
        self.emit("msix_enabled", irqs=irqs)
        return True

    # -- one request: virtio_queue_rq, the kick, the interrupt ---------------

    async def read(self, sector: int, count: int) -> bytes:
        cpu, ram, L = self.cpu, self.ram, self.L
        await cpu.compute(self.costs.linux_per_request)
        buf = BUFFERS + PAGE * len(self.reads)
        hdr, status = REQ, REQ + 16
        ram.write(hdr, L.blk_outhdr_fast.pack(VIRTIO_BLK_T_IN, 0, sector))
        ram.write(status, b"\xff")
        q = self.num
        d = (3 * self.avail_idx) % q
        pack = L.desc_fast.pack
        ram.write(self.desc + 16 * d, pack(hdr, 16, VRING_DESC_F_NEXT, (d + 1) % q))
        ram.write(self.desc + 16 * ((d + 1) % q),
                  pack(buf, count * 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, (d + 2) % q))
        ram.write(self.desc + 16 * ((d + 2) % q), pack(status, 1, VRING_DESC_F_WRITE, 0))
        ram.write(self.avail + 4 + 2 * (self.avail_idx % q), d.to_bytes(2, self.order))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        ram.write(self.avail + 2, self.avail_idx.to_bytes(2, self.order))    # after a write barrier
        self.emit("linux_blk_submit", sector=sector, count=count, avail_idx=self.avail_idx)
        # virtqueue_kick_prepare (no EVENT_IDX): kick unless the device said NO_NOTIFY
        if not int.from_bytes(ram.read(self.used, 2), self.order) & VRING_USED_F_NO_NOTIFY:
            self.emit("linux_virtqueue_notify", addr=self.notify_addr, queue=0)
            await self.t.iowrite(2, self.notify_addr, 0)                       # vp_notify
        await self._wait_for_completion(sector)
        data = ram.read(buf, count * 512)
        st = ram.read(status, 1)[0]
        self.reads.append({"sector": sector, "count": count, "status": st,
                           "sha256": hashlib.sha256(data).hexdigest()})
        self.emit("linux_blk_done", sector=sector, count=count, status=st,
                  sha256=self.reads[-1]["sha256"])
        if st != 0:
            await self.printk(f"blk_update_request: I/O error, dev vda, sector {sector}\n")
            raise KernelIoError(f"I/O error, dev vda, sector {sector} (status {st})")
        return data

    async def _wait_for_completion(self, sector: int) -> None:
        """The task sleeps in io_schedule; the idle loop cedes the vcpu
        (H_CEDE) with the decrementer set for the next timer, here the
        hung-task check. The completion arrives as an external interrupt."""
        cpu = self.cpu
        deadline = vtime.now() + HUNG_TASK_TIMEOUT_S
        while not self._used_moved():
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
        self.last_used = (self.last_used + 1) & 0xFFFF

    def _used_moved(self) -> bool:
        return int.from_bytes(self.ram.read(self.used + 2, 2), self.order) != self.last_used

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
            used = int.from_bytes(self.ram.read(self.used + 2, 2), self.order)
            self.emit("linux_vring_interrupt", irq=irq, isr=isr, used_idx=used)
        else:
            self.emit("linux_spurious_interrupt", irq=irq)
        await cpu.hcall(papr.H_EOI, xirr)

    # -- the partition scan --------------------------------------------------

    async def check_label(self) -> None:
        """msdos/efi partition parsing on the first page: the data is what a
        disk label looks like, and names the pages to read next."""
        page = self.ram.read(BUFFERS, PAGE)
        mbr = M.mbr.parse(page[:512])
        if mbr.signature != M.MBR_SIGNATURE:
            await self.printk(" vda: unknown partition table\n")
            return
        parts = [p for p in mbr.partitions if p.type]
        if parts and parts[0].type == M.PART_TYPE_GPT_PROTECTIVE:
            hdr = G.gpt_header.parse(page[512:512 + G.gpt_header.sizeof()])
            if hdr.signature != G.SIGNATURE:
                raise KernelIoError("GPT: protective MBR without a GPT header")
            lba = hdr.part_entry_lba
            if lba >= self.capacity:
                raise KernelIoError(f"GPT: partition entry array at LBA {lba} is beyond the end of the disk")
            if 512 * lba + G.ENTRY_SIZE > len(page):     # the array is past the first page: read its page
                first = lba & ~(PAGE // 512 - 1)
                page = await self.read(first, PAGE // 512)
                lba -= first
            entry = G.gpt_entry.parse(page[512 * lba:512 * lba + G.ENTRY_SIZE])
            start = entry.first_lba
        elif parts:
            start = parts[0].lba_start
        else:
            await self.printk(" vda:\n")
            return
        if start >= self.capacity:      # block/partitions/core.c: "p%d start %llu is beyond EOD"
            await self.printk(f" vda: vda1\n vda: p1 start {start} is beyond EOD, truncated\n")
            return
        await self.printk(" vda: vda1\n")
        self._partition_pages = [start, start + PAGE // 512]
        self.emit("linux_partition", start=start)
