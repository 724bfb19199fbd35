"""QEMU core: the spapr hcall table, the address space, the KVM memory
listener, and the 2015 virtio-blk dataplane.

The machine is the real SpaprMachine over a stand-in for the KVM VM that
only records the ioctls QEMU issues, so what is checked is QEMU's side of
the interface (reference/qemu.md §1, §4, §5 and "Model implications"):

- H_LOGICAL_CI_LOAD/STORE: size = r4, addr = r5, val = r6, result in r4;
  sizes other than 1/2/4/8 are H_PARAMETER; ld/st*_phys are big-endian, so
  the little-endian legacy BAR sees bswapN of the register value;
- DRIVER_OK turns the QUEUE_NOTIFY host notifier into KVM_IOEVENTFD at
  io_win + BAR0 + 16, len 2, DATAMATCH, no PIO flag, datamatch = queue
  index in host byte order;
- with an iothread, the first kick that reaches QEMU only starts the
  dataplane (whose start-time self-kick serves the ring); later userspace
  kicks are dropped; only the eventfd wakes the IOThread.

Every test takes pytest-trio's autojump_clock (simulated time).
"""

import contextlib

import pytest
import trio

from devices.block import SECTOR, BlockBackend
from sim.abi import papr
from sim.abi.kvm import (
    KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_IOEVENTFD_FLAG_PIO, kvm_enable_cap,
    kvm_ioeventfd,
)
from sim.abi.virtio import VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN
from sim.eventfd import FdTable
from sim.qemu.memory import MemoryRegion
from sim.board.spapr import SPAPR_PCI_BASE_BUID, Console, SpaprMachine, rtas_pci_cfgaddr
from sim.ram import GuestRAM
from sim.scenario import Scenario
from sim.trace import Trace
from tests.vring import BlkRequest, Vring, wait_used


RAM_SIZE = 16 << 20
RING, HDR, STATUS, DATA = 0x10000, 0x20000, 0x21000, 0x30000
NUM = 8
DISK_SECTORS = 32
DISK = bytes((i * 5 + (i >> 9)) & 0xFF for i in range(DISK_SECTORS * SECTOR))
BAR0 = 0x1000                      # where the test's "firmware" puts BAR 0 in PCI I/O space
QUEUE_PFN, QUEUE_NUM, QUEUE_SEL, QUEUE_NOTIFY, STATUS_REG, ISR, CONFIG = 8, 12, 14, 16, 18, 19, 20
H_CACHE_LOAD, H_CACHE_STORE = 0x44, 0x48


def bswap(value: int, size: int) -> int:
    return int.from_bytes(value.to_bytes(size, "little"), "big")


class FakeVm:
    """What SpaprMachine needs of KVM: the fd table and the VM ioctls. It
    decodes each KVM_IOEVENTFD argument with the ABI's own layout."""

    def __init__(self, host_byteorder="big"):
        self.fds = FdTable()
        self.host_byteorder = host_byteorder
        self.ioeventfd_calls = []
        self.enable_caps = []
        self.irqs = []

    def ioctl_ioeventfd(self, raw: bytes) -> int:
        self.ioeventfd_calls.append(kvm_ioeventfd.parse(raw))
        return 0

    def ioctl_check_extension(self, cap: int) -> int:
        return 0      # no optional capability (e.g. no any-length ioeventfds)

    def ioctl_enable_cap(self, raw: bytes) -> int:
        self.enable_caps.append(kvm_enable_cap.parse(raw))
        return 0

    def set_irq(self, gsi, level, source):
        self.irqs.append((gsi, level))

    def live_ioeventfds(self):
        """(addr, len, datamatch, fd) assigned and not deassigned since."""
        live = []
        for a in self.ioeventfd_calls:
            key = (a.addr, a.len, a.datamatch, a.fd)
            if a.flags & KVM_IOEVENTFD_FLAG_DEASSIGN:
                live.remove(key)
            else:
                live.append(key)
        return live


class Machine:
    """SpaprMachine with its BAR 0 mapped; hcalls as the vcpu thread makes them."""

    def __init__(self, *, host_byteorder="big", map_bar=True, **cfg):
        cfg.setdefault("queue_size", NUM)
        self.scn = Scenario(path="<test>", name="test", ram_mib=RAM_SIZE >> 20, **cfg)
        self.trace = Trace()
        self.ram = GuestRAM(RAM_SIZE)
        self.vm = FakeVm(host_byteorder)
        self.backend = BlockBackend.from_bytes(DISK, "test-disk")
        self.m = SpaprMachine(self.scn, self.vm, self.ram, self.backend, self.trace, self.scn.costs,
                              Console(self.trace))
        self.blk, self.proxy = self.m.blk, self.m.proxy
        self.ring = Vring(self.ram, RING, NUM)
        self.bar = self.m.io_win_addr + BAR0
        if map_bar:
            self.map_bar(BAR0)

    def map_bar(self, addr):
        self.proxy.config_write(0x10, addr | 1, 4)     # BAR 0 (I/O)
        self.proxy.config_write(0x04, 0x1 | 0x4, 2)    # COMMAND: IO | MASTER

    def hcall(self, nr, *regs):
        args = list(regs) + [0] * (9 - len(regs))
        ret = self.m.hcalls.spapr_hypercall(nr, args)
        return ret, args

    def load(self, size, addr):
        ret, args = self.hcall(papr.H_LOGICAL_CI_LOAD, size, addr)
        assert ret == papr.H_SUCCESS
        return args[0]

    def store(self, size, addr, val):
        assert self.hcall(papr.H_LOGICAL_CI_STORE, size, addr, val)[0] == papr.H_SUCCESS

    # SLOF's accessors: it byte-swaps the little-endian registers itself.
    def reg_store(self, off, val, size):
        self.store(size, self.bar + off, bswap(val, size))

    def reg_load(self, off, size):
        return bswap(self.load(size, self.bar + off), size)

    def virtio_init(self):
        self.reg_store(STATUS_REG, 0, 1)
        self.reg_store(STATUS_REG, 0x3, 1)
        self.reg_store(QUEUE_SEL, 0, 2)
        self.reg_store(QUEUE_PFN, RING >> 12, 4)
        self.reg_store(STATUS_REG, 0x7, 1)

    def kick(self):
        """SLOF's virtio_queue_notify through H_LOGICAL_CI_STORE (userspace)."""
        self.reg_store(QUEUE_NOTIFY, 0, 2)

    def request(self, sector, slot=0):
        return BlkRequest(self.ring, VIRTIO_BLK_T_IN, sector, hdr=HDR + 0x100 * slot,
                          data=DATA + 0x1000 * slot, data_len=SECTOR, status=STATUS + slot)

    def actors(self, name):
        return [e.actor for e in self.trace.named(name)]


@contextlib.asynccontextmanager
async def running(mach):
    """QEMU's main loop and, if configured, the IOThread."""
    async with trio.open_nursery() as nursery:
        for ctx in (mach.m.main_ctx, mach.m.iothread_ctx):
            if ctx is not None:
                ctx.nursery = nursery
                nursery.start_soon(ctx.run)
        yield
        nursery.cancel_scope.cancel()


# == h_logical_load / h_logical_store ======================================

BAD_SIZES = [0, 3, 5, 6, 7, 9, 16, 32, 1 << 32, (1 << 64) - 1]


@pytest.mark.parametrize("size", BAD_SIZES)
@pytest.mark.parametrize("nr", [papr.H_LOGICAL_CI_LOAD, H_CACHE_LOAD])
async def test_load_with_bad_size_is_h_parameter_and_leaves_r4(autojump_clock, nr, size):
    mach = Machine()
    mach.ram.write(0x1000, b"\x12" * 16)
    ret, args = mach.hcall(nr, size, 0x1000)
    assert ret == papr.H_PARAMETER == -4
    assert args[0] == size


@pytest.mark.parametrize("size", BAD_SIZES)
@pytest.mark.parametrize("nr", [papr.H_LOGICAL_CI_STORE, H_CACHE_STORE])
async def test_store_with_bad_size_is_h_parameter_and_writes_nothing(autojump_clock, nr, size):
    mach = Machine()
    ret, _ = mach.hcall(nr, size, 0x1000, 0xFFFFFFFFFFFFFFFF)
    assert ret == papr.H_PARAMETER
    assert mach.ram.read(0x1000, 16) == bytes(16)


@pytest.mark.parametrize("size", BAD_SIZES)
async def test_store_with_bad_size_never_reaches_the_device(autojump_clock, size):
    mach = Machine()
    ret, _ = mach.hcall(papr.H_LOGICAL_CI_STORE, size, mach.bar + STATUS_REG, 7)
    assert ret == papr.H_PARAMETER and mach.blk.status == 0
    assert not mach.trace.named("virtio_pci_access")


@pytest.mark.parametrize("size, value", [(1, 0x01), (2, 0x0102), (4, 0x01020304), (8, 0x0102030405060708)])
async def test_load_from_ram_is_big_endian_into_r4(autojump_clock, size, value):
    mach = Machine()
    mach.ram.write(0x2000, bytes(range(1, 9)))
    assert mach.load(size, 0x2000) == value


@pytest.mark.parametrize("size, val, expect", [
    (1, 0xAB, b"\xab"), (2, 0x1234, b"\x12\x34"), (4, 0x11223344, b"\x11\x22\x33\x44"),
    (8, 0x0102030405060708, bytes(range(1, 9))),
    (2, 0xDEADBEEF, b"\xbe\xef"),           # stw_phys stores the low 16 bits of r6
])
async def test_store_to_ram_is_big_endian_from_r6(autojump_clock, size, val, expect):
    mach = Machine()
    mach.ram.write(0x3000, b"\x77" * 8)
    mach.store(size, 0x3000, val)
    assert mach.ram.read(0x3000, 8) == expect + b"\x77" * (8 - size)


async def test_cache_variants_share_the_ci_handlers(autojump_clock):
    mach = Machine()
    assert mach.hcall(H_CACHE_STORE, 4, 0x4000, 0xCAFEF00D)[0] == papr.H_SUCCESS
    ret, args = mach.hcall(H_CACHE_LOAD, 4, 0x4000)
    assert (ret, args[0]) == (papr.H_SUCCESS, 0xCAFEF00D)


async def test_unassigned_address_store_is_dropped_and_load_reads_zero(autojump_clock):
    mach = Machine()
    hole = mach.m.io_win_addr + 0x10000 + 0x100       # just past the PHB's I/O window
    assert mach.hcall(papr.H_LOGICAL_CI_STORE, 4, hole, 1)[0] == papr.H_SUCCESS
    assert mach.trace.named("unassigned_write")
    ret, args = mach.hcall(papr.H_LOGICAL_CI_LOAD, 4, hole)
    assert (ret, args[0]) == (papr.H_SUCCESS, 0)


@pytest.mark.parametrize("nr", [0x3E, 0x300, 0x31D, 0xF003, 0xFFFF, 1 << 40])
async def test_unimplemented_hcall_is_h_function(autojump_clock, nr):
    assert Machine().hcall(nr, 1, 0x1000)[0] == papr.H_FUNCTION == -2


# -- reaching the device through the PHB's I/O window ------------------------

async def test_register_loads_arrive_byte_swapped(autojump_clock):
    mach = Machine()
    feats = mach.blk.host_features & 0xFFFFFFFF
    assert mach.load(4, mach.bar + 0) == bswap(feats, 4)      # HOST_FEATURES
    assert mach.load(2, mach.bar + QUEUE_NUM) == bswap(NUM, 2) == 0x0800
    mach.blk.status = 0x83
    assert mach.load(1, mach.bar + STATUS_REG) == 0x83          # bytes are never swapped


async def test_register_stores_arrive_byte_swapped(autojump_clock):
    mach = Machine()
    mach.store(1, mach.bar + STATUS_REG, 0x3)
    assert mach.blk.status == 0x3
    mach.store(4, mach.bar + QUEUE_PFN, bswap(RING >> 12, 4))
    assert mach.blk.vqs[0].desc == RING
    accesses = [(e.fields["offset"], e.fields["size"], e.fields["value"])
                for e in mach.trace.named("virtio_pci_access")]
    assert accesses == [(STATUS_REG, 1, 0x3), (QUEUE_PFN, 4, RING >> 12)]


async def test_config_loads_are_guest_native(autojump_clock):
    mach = Machine()
    assert mach.load(4, mach.bar + CONFIG + 4) == DISK_SECTORS     # capacity, low word
    assert mach.load(8, mach.bar + CONFIG) == DISK_SECTORS
    assert mach.load(4, mach.bar + CONFIG + 20) == SECTOR          # blk_size


async def test_isr_load_clears_it(autojump_clock):
    mach = Machine()
    mach.blk.isr = 1
    assert mach.load(1, mach.bar + ISR) == 1
    assert mach.load(1, mach.bar + ISR) == 0


async def test_bar_not_reachable_until_io_decoding_is_enabled(autojump_clock):
    mach = Machine(map_bar=False)
    mach.proxy.config_write(0x10, BAR0 | 1, 4)
    assert mach.load(4, mach.bar + 0) == 0                    # unassigned
    mach.proxy.config_write(0x04, 0x1, 2)
    assert mach.load(4, mach.bar + 0) == bswap(mach.blk.host_features & 0xFFFFFFFF, 4)


# == host notifier -> memory listener -> KVM_IOEVENTFD ======================

@pytest.mark.parametrize("host", ["big", "little"])
async def test_driver_ok_registers_the_notify_ioeventfd(autojump_clock, host):
    mach = Machine(host_byteorder=host)
    assert mach.vm.ioeventfd_calls == []
    mach.virtio_init()
    (call,) = mach.vm.ioeventfd_calls
    assert call.addr == mach.m.io_win_addr + BAR0 + 16
    assert call.len == 2
    assert call.flags == KVM_IOEVENTFD_FLAG_DATAMATCH            # no PIO flag: KVM_MMIO_BUS
    assert not call.flags & KVM_IOEVENTFD_FLAG_PIO
    assert call.datamatch == 0                                   # queue 0
    assert call.fd == mach.blk.vqs[0].host_notifier.fd


@pytest.mark.parametrize("host, datamatch", [("big", 0x0100), ("little", 0x0001)])
async def test_datamatch_is_the_queue_index_in_host_byte_order(autojump_clock, host, datamatch):
    """A second queue makes the index visible: adjust_ioeventfd_endianness
    swaps the target-order value only when host and target differ."""
    mach = Machine(host_byteorder=host)
    mach.blk.add_queue(NUM, mach.blk.handle_output)
    mach.virtio_init()
    got = sorted((c.datamatch, c.fd) for c in mach.vm.ioeventfd_calls)
    assert got == sorted([(0, mach.blk.vqs[0].host_notifier.fd), (datamatch, mach.blk.vqs[1].host_notifier.fd)])
    assert {c.addr for c in mach.vm.ioeventfd_calls} == {mach.bar + QUEUE_NOTIFY}


async def test_clearing_driver_ok_deassigns_the_ioeventfd(autojump_clock):
    mach = Machine()
    mach.virtio_init()
    fd = mach.blk.vqs[0].host_notifier.fd
    mach.reg_store(STATUS_REG, 0, 1)
    add, rm = mach.vm.ioeventfd_calls
    assert rm.flags == KVM_IOEVENTFD_FLAG_DATAMATCH | KVM_IOEVENTFD_FLAG_DEASSIGN
    assert (rm.addr, rm.len, rm.datamatch, rm.fd) == (add.addr, 2, 0, fd)
    assert mach.vm.live_ioeventfds() == []


async def test_moving_bar0_moves_the_ioeventfd(autojump_clock):
    mach = Machine()
    mach.virtio_init()
    mach.proxy.config_write(0x10, 0x2000 | 1, 4)
    fd = mach.blk.vqs[0].host_notifier.fd
    assert mach.vm.live_ioeventfds() == [(mach.m.io_win_addr + 0x2000 + 16, 2, 0, fd)]


async def test_ioeventfd_waits_for_the_bar_to_be_mapped(autojump_clock):
    mach = Machine(map_bar=False)
    mach.blk.vqs[0].set_legacy_addr(RING)
    mach.proxy.legacy_write(STATUS_REG, 0x7, 1)       # DRIVER_OK with BAR 0 unmapped
    assert mach.vm.ioeventfd_calls == []
    mach.map_bar(BAR0)
    assert mach.vm.live_ioeventfds() == [(mach.bar + QUEUE_NOTIFY, 2, 0, mach.blk.vqs[0].host_notifier.fd)]


async def test_qemu_2_4_enables_the_in_kernel_logical_ci_hcalls(autojump_clock):
    mach = Machine(qemu_version=(2, 4), enable_logical_ci=True)
    assert [(c.cap, list(c.args)) for c in mach.vm.enable_caps] == [
        (104, [papr.H_LOGICAL_CI_LOAD, 1, 0, 0]), (104, [papr.H_LOGICAL_CI_STORE, 1, 0, 0])]
    assert Machine().vm.enable_caps == []


# == virtio-blk through the userspace hcall path ============================

async def test_without_iothread_a_userspace_kick_is_served_in_the_vcpu_thread(autojump_clock):
    mach = Machine()
    mach.virtio_init()
    async with running(mach):
        req = mach.request(2).publish()
        mach.kick()
        assert mach.actors("blk_request") == ["qemu-vcpu"]       # popped inside the hcall
        assert await wait_used(mach.ring, 1)
    assert req.status() == VIRTIO_BLK_S_OK and req.data() == DISK[2 * SECTOR:3 * SECTOR]


async def test_main_loop_first_the_start_up_notifier_starts_the_dataplane_and_drops_the_first_kick(autojump_clock):
    """2.1-2.4: DRIVER_OK creates the host notifier already signalled; when
    the main loop runs before the guest's first kick, its handler starts the
    dataplane on an empty ring and that first kick is dropped."""
    mach = Machine(iothread=True)
    mach.virtio_init()
    (init,) = [e for e in mach.trace.named("host_notifier_init") if e.fields["handler"] == "main loop"]
    assert init.fields["signalled"] == 1
    async with running(mach):
        await trio.sleep(0.001)                                  # the main loop wakes, takes the BQL
        (dp,) = mach.trace.named("dataplane_start")
        assert dp.actor == "qemu-main" and dp.fields["by"] == "start-up notifier"
        req = mach.request(1).publish()
        mach.kick()
        ho = mach.trace.named("virtio_blk_handle_output")[-1]
        assert ho.fields["dataplane"] == "already started: kick dropped"
        assert not await wait_used(mach.ring, 1, timeout=5.0)
    assert req.status() == 0xEE


async def test_first_userspace_kick_only_starts_the_dataplane_whose_self_kick_serves_the_ring(autojump_clock):
    """The vcpu's kick before the main loop ran: handle_output starts the
    dataplane; deassigning the main-loop notifier tests and clears its
    start-up signal and runs handle_output again, which returns (starting)."""
    mach = Machine(iothread=True)
    mach.virtio_init()
    main_fd = mach.blk.vqs[0].host_notifier.fd
    async with running(mach):
        reqs = [mach.request(s, slot=s).publish() for s in (1, 2)]   # both in the ring before the kick
        mach.kick()
        # handle_output did not process the queue in the vcpu thread...
        inner, ho = mach.trace.named("virtio_blk_handle_output")
        assert ho.fields["processed"] is False and ho.fields["dataplane"] == "started dataplane"
        assert inner.fields["via"] == "start-up notifier" and inner.fields["dataplane"] == "starting: returns"
        assert mach.trace.named("blk_request") == [] and mach.ring.used_idx() == 0
        assert mach.blk.dataplane.started
        # ...it moved the ioeventfd from the main loop to the dataplane's notifier.
        dp_fd = mach.blk.dataplane.host_notifier.fd
        assert dp_fd != main_fd
        assert mach.vm.live_ioeventfds() == [(mach.bar + QUEUE_NOTIFY, 2, 0, dp_fd)]
        assert mach.blk.dataplane.host_notifier not in mach.m.main_ctx._handlers
        # The start-time self-kick wakes the IOThread, which drains the ring.
        assert await wait_used(mach.ring, 2)
    assert mach.actors("blk_request") == ["iothread", "iothread"]
    assert [r.status() for r in reqs] == [VIRTIO_BLK_S_OK] * 2
    assert [r.data() for r in reqs] == [DISK[SECTOR:2 * SECTOR], DISK[2 * SECTOR:3 * SECTOR]]


async def test_later_userspace_kick_is_dropped_only_the_eventfd_wakes_the_iothread(autojump_clock):
    mach = Machine(iothread=True)
    mach.virtio_init()
    async with running(mach):
        mach.request(1).publish()
        mach.kick()
        assert await wait_used(mach.ring, 1)
        second = mach.request(3, slot=1).publish()
        mach.kick()                                           # h_logical_store -> handle_output
        ho = mach.trace.named("virtio_blk_handle_output")[-1]
        assert ho.fields == dict(queue=0, dataplane="already started: kick dropped", processed=False,
                                 via="userspace")
        assert not await wait_used(mach.ring, 2, timeout=5.0)  # the 2015 stall
        assert second.status() == 0xEE
        mach.blk.dataplane.host_notifier.signal()             # what an in-kernel ioeventfd hit does
        assert await wait_used(mach.ring, 2)
    assert second.status() == VIRTIO_BLK_S_OK
    assert mach.actors("blk_request") == ["iothread", "iothread"]


async def test_forwarding_qemu_hands_a_userspace_kick_to_the_iothread(autojump_clock):
    mach = Machine(iothread=True, forward_userspace_kick=True, qemu_version=(4, 2))
    mach.virtio_init()
    async with running(mach):
        for n in (1, 2):
            mach.request(n, slot=n).publish()
            mach.kick()
            assert await wait_used(mach.ring, n)
    assert mach.actors("blk_request") == ["iothread", "iothread"]


async def test_reset_stops_the_dataplane_and_its_ioeventfd(autojump_clock):
    mach = Machine(iothread=True)
    mach.virtio_init()
    async with running(mach):
        mach.request(1).publish()
        mach.kick()
        assert await wait_used(mach.ring, 1)
        mach.reg_store(STATUS_REG, 0, 1)
    assert not mach.blk.dataplane.started
    assert mach.trace.named("dataplane_stop")
    assert mach.vm.live_ioeventfds() == []


async def test_userspace_kick_before_driver_ok_also_starts_the_dataplane(autojump_clock):
    """'Some guests kick before setting VIRTIO_CONFIG_S_DRIVER_OK so start
    dataplane here instead of waiting for .set_status()'."""
    mach = Machine(iothread=True)
    mach.reg_store(STATUS_REG, 0x3, 1)
    mach.reg_store(QUEUE_PFN, RING >> 12, 4)
    assert mach.vm.ioeventfd_calls == []
    async with running(mach):
        mach.request(4).publish()
        mach.kick()
        assert mach.blk.dataplane.started
        assert await wait_used(mach.ring, 1)
    assert mach.actors("blk_request") == ["iothread"]


async def test_a_16_bit_notify_store_is_what_reaches_queue_notify(autojump_clock):
    """SLOF's notify: H_LOGICAL_CI_STORE(size=2, BAR0+16, r6=bswap16(0));
    the transport sees a 2-byte write of queue index 0 at offset 16."""
    mach = Machine()
    mach.virtio_init()
    async with running(mach):
        mach.request(1).publish()
        mach.store(2, mach.bar + QUEUE_NOTIFY, bswap(0, 2))
        assert await wait_used(mach.ring, 1)
    (notify,) = [e for e in mach.trace.named("virtio_pci_access") if e.fields["offset"] == QUEUE_NOTIFY]
    assert (notify.fields["size"], notify.fields["value"], notify.fields["rw"]) == (2, 0, "W")


async def test_region_lookup_uses_the_io_window_alias(autojump_clock):
    mach = Machine()
    r = mach.m.address_space.lookup(mach.bar + QUEUE_NOTIFY)
    assert r is not None and r.mr is mach.proxy.bar
    assert isinstance(r.mr, MemoryRegion) and r.mr.ops.endianness == "little"


# == RTAS config access: rtas_pci_cfgaddr and spapr_pci_find_dev ============

@pytest.mark.parametrize("arg, reg", [(0x0000_0004, 0x004), (0x0000_08FC, 0x0FC), (0x1000_0010, 0x110),
                                      (0xF000_00FF, 0xFFF), (0x0F00_00FF, 0x0FF), (0xF0FF_FF00, 0xF00)])
def test_rtas_pci_cfgaddr_takes_the_extended_register_bits_from_31_28(arg, reg):
    assert rtas_pci_cfgaddr(arg) == reg


async def test_rtas_config_access_decodes_bus_devfn_and_register(autojump_clock):
    mach = Machine()
    buid = (SPAPR_PCI_BASE_BUID >> 32, SPAPR_PCI_BASE_BUID & 0xFFFFFFFF)
    read = lambda addr, size=2: mach.m.rtas_call(papr.RTAS_IBM_READ_PCI_CONFIG, [addr, *buid, size], 2)
    assert read(0x0000_0000) == [0, 0x1AF4]                  # bus 0, devfn 0, vendor id
    assert read(0x0001_0000)[0] == 0xFFFFFFFF                # bus 1: no such device
    assert read(0x0000_0800)[0] == 0xFFFFFFFF                # devfn 8 (slot 1): empty
    assert read(0x1000_0000)[0] == 0xFFFFFFFF                # register 0x100: past conventional config space
    assert read(0x0000_0001)[0] == 0xFFFFFFFF                # misaligned


async def test_kvm_exit_unknown_stops_the_vm_with_qemus_message(autojump_clock):
    """kvm_cpu_exec, case KVM_EXIT_UNKNOWN: "KVM: unknown exit, hardware
    reason %" PRIx64, then vm_stop(RUN_STATE_INTERNAL_ERROR)."""
    from sim.abi.kvm import KVM_EXIT_UNKNOWN
    from sim.kvm.vcpu import KvmRun
    mach = Machine()
    run = KvmRun()
    run.exit_reason = KVM_EXIT_UNKNOWN
    assert mach.m._handle_exit(run)["run_state"] == "internal-error"
    (stop,) = mach.trace.named("vm_stop")
    assert stop.fields["why"] == "KVM: unknown exit, hardware reason 0"
