"""MSI-X as Linux brings it up on pseries: drivers/pci/msi.c (v4.1:
msi.c; v6.1: msi/msi.c) over RTAS (arch/powerpc/platforms/pseries/msi.c).

Config space goes through ibm,read/write-pci-config; the MSI-X table in
BAR 1 through MMIO loads and stores (the transport's ioread32/iowrite32);
the vectors' XICS irqs from ibm,change-msi and
ibm,query-interrupt-source-number. The order is the release's
(GuestKernel.msix_flavour); 6.1's is the measured one
(grub-linux_regs.csv, grub-linux_pcicfg.csv).
"""

from sim.abi import papr

PCI_CAP_ID_MSIX = 0x11
PCI_COMMAND = 0x04
PCI_COMMAND_INTX_DISABLE = 0x400
PCI_MSIX_FLAGS_ENABLE, PCI_MSIX_FLAGS_MASKALL = 0x8000, 0x4000
PCI_MSIX_FLAGS_QSIZE = 0x7FF
PCI_MSIX_ENTRY_SIZE, PCI_MSIX_ENTRY_VECTOR_CTRL, PCI_MSIX_ENTRY_CTRL_MASKBIT = 16, 12, 1
RTAS_CHANGE_MSIX_FN = papr.RTAS_CHANGE_MSIX_FN


class Msix:
    """One function's MSI-X: enable (msix_capability_init) and the
    per-vector start-up request_irq does."""

    def __init__(self, fn, hv, phb, mmio, flavour: str, resources: dict, on_enable=None):
        self.fn, self.hv, self.phb, self.mmio = fn, hv, phb, mmio
        self.six = flavour == "6.1"
        self.resources = resources          # the BARs enumeration read (pci_read_bases)
        self.on_enable = on_enable or (lambda on: None)
        self.table = None

    async def _table_read(self, vec: int, reg: int) -> int:
        return await self.mmio.ioread(4, self.table + PCI_MSIX_ENTRY_SIZE * vec + reg)

    async def _table_write(self, vec: int, reg: int, value: int) -> None:
        await self.mmio.iowrite(4, self.table + PCI_MSIX_ENTRY_SIZE * vec + reg, value)

    async def _ctrl(self, cap: int, clear: int, set_: int) -> None:
        """pci_msix_clear_and_set_ctrl: read, modify, write (always)."""
        ctrl = await self.fn.read(cap + 2, 2)
        await self.fn.write(cap + 2, 2, (ctrl & ~clear) | set_)

    async def _rtas_msi(self, nvec: int, read_back: bool) -> list[int] | None:
        """rtas_change_msi(RTAS_CHANGE_MSIX_FN, nvec), then
        ibm,query-interrupt-source-number for each vector; read_back: 4.1's
        rtas_setup_msi_irqs reads each message back right after its query
        ("Read config space back so we can restore after reset")."""
        fn, buid = self.fn, self.phb.buid
        rets = await self.hv.rtas(papr.RTAS_IBM_CHANGE_MSI, [fn.devfn << 8, buid >> 32, buid & 0xFFFFFFFF,
                                                              RTAS_CHANGE_MSIX_FN, nvec, 0], 4)
        if rets[0] != 0 or rets[1] != nvec:
            return None
        irqs = []
        for i in range(nvec):
            status, irq, _ = await self.hv.rtas(papr.RTAS_IBM_QUERY_INTERRUPT_SOURCE_NUMBER,
                                                [fn.devfn << 8, buid >> 32, buid & 0xFFFFFFFF, i], 3)
            if status != 0:
                return None
            irqs.append(irq)
            if read_back:
                await self._read_msi_msg(i)
        return irqs

    async def _read_msi_msg(self, vec: int) -> None:
        """__pci_read_msi_msg: address lo, hi, data of the entry the
        firmware (ibm,change-msi) wrote."""
        for reg in (0, 4, 8):
            await self._table_read(vec, reg)

    async def enable(self, cap: int, nvec: int) -> list[int] | None:
        """pci_alloc_irq_vectors / pci_enable_msix: msix_capability_init in
        the release's order (GuestKernel.msix_flavour)."""
        fn = self.fn
        control = await fn.read(cap + 2, 2)                       # pci_msix_vec_count
        if (control & PCI_MSIX_FLAGS_QSIZE) + 1 < nvec:
            return None
        six = self.six
        if six:
            await self._ctrl(cap, 0, PCI_MSIX_FLAGS_MASKALL | PCI_MSIX_FLAGS_ENABLE)
        else:
            await self._ctrl(cap, PCI_MSIX_FLAGS_ENABLE, 0)        # "Ensure MSI-X is disabled while it is set up"
        tsize = (await fn.read(cap + 2, 2) & PCI_MSIX_FLAGS_QSIZE) + 1
        table = await fn.read(cap + 4, 4)                          # msix_map_region
        self.table = self.phb.translate(self.resources[table & 7] & ~0xF, False) + (table & ~7)
        self.on_enable(six)                                        # the device sees Enable from here on
        if six:
            await fn.read(cap + 2, 2)                              # msix_setup_msi_descs: pci_msix_vec_count
            for vec in range(nvec):                                # desc.pci.msix_ctrl = readl(VECTOR_CTRL)
                await self._table_read(vec, PCI_MSIX_ENTRY_VECTOR_CTRL)
        irqs = await self._rtas_msi(nvec, read_back=not six)       # pci_msi_setup_msi_irqs
        if irqs is None:
            await self._ctrl(cap, PCI_MSIX_FLAGS_MASKALL | PCI_MSIX_FLAGS_ENABLE, 0)
            self.on_enable(False)
            return None
        if six:
            for vec in range(nvec):                                # msi domain activate: compose reads the message
                await self._read_msi_msg(vec)
        if not six:
            await self._ctrl(cap, 0, PCI_MSIX_FLAGS_MASKALL | PCI_MSIX_FLAGS_ENABLE)
            self.on_enable(True)
            for vec in range(nvec):                                # msix_program_entries: read, then mask
                ctrl = await self._table_read(vec, PCI_MSIX_ENTRY_VECTOR_CTRL)
                await self._table_write(vec, PCI_MSIX_ENTRY_VECTOR_CTRL, ctrl | PCI_MSIX_ENTRY_CTRL_MASKBIT)
        cmd = await fn.read(PCI_COMMAND, 2)                        # pci_intx_for_msi(dev, 0)
        if not cmd & PCI_COMMAND_INTX_DISABLE:
            await fn.write(PCI_COMMAND, 2, cmd | PCI_COMMAND_INTX_DISABLE)
        if six:
            for vec in range(tsize):                               # msix_mask_all
                await self._table_write(vec, PCI_MSIX_ENTRY_VECTOR_CTRL, PCI_MSIX_ENTRY_CTRL_MASKBIT)
        await self._ctrl(cap, PCI_MSIX_FLAGS_MASKALL, 0)
        return irqs

    async def irq_startup(self, vec: int, managed: bool) -> None:
        """request_irq -> irq_startup. 6.1: a managed irq (the queue's,
        PCI_IRQ_AFFINITY) gets its affinity (compose: the message read)
        then unmask; the config vector unmask then affinity; pci_msix_unmask
        writes without a flush. 4.1: ics_rtas_startup -> pci_msi_unmask_irq,
        whose msix write is flushed by a read of the table base."""
        if self.six:
            if managed:
                await self._read_msi_msg(vec)
            await self._table_write(vec, PCI_MSIX_ENTRY_VECTOR_CTRL, 0)
            if not managed:
                await self._read_msi_msg(vec)
        else:
            await self._table_write(vec, PCI_MSIX_ENTRY_VECTOR_CTRL, 0)
            await self.mmio.ioread(4, self.table)
