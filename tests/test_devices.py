"""QEMU device models: split virtqueue, virtio-blk, legacy virtio-pci.

Expectations come from reference/qemu.md and QEMU's hw/virtio/virtio.c,
hw/block/virtio-blk.c and hw/virtio/virtio-pci.c, not from the model:

- a guest mistake in a ring is virtio_error(): the reason is logged, the
  device is broken (no queue is served until reset) and, for a VIRTIO 1.0
  device only, NEEDS_RESET (0x40) is set in status (QEMU checks
  VIRTIO_F_VERSION_1 first, so a legacy device's status is left alone);
- QEMU walks an INDIRECT descriptor whether or not VIRTIO_RING_F_INDIRECT_DESC
  was negotiated (virtqueue_split_pop has no feature check);
- virtio-blk answers IN/OUT/FLUSH/GET_ID, UNSUPP for anything else, IOERR
  for a range past the capacity and for a write to a read-only drive;
- BAR 0 is DEVICE_LITTLE_ENDIAN, its device config guest-endian.

Every test takes pytest-trio's autojump_clock: time is simulated, a 5 s wait
costs no wall time.
"""

import contextlib

import pytest
import trio

from sim.qemu import releases as qemu_releases
from devices.block import SECTOR, BlockBackend
from devices.virtio_blk import VirtIOBlock
from devices.virtio_pci import VirtIOPCIProxy
from devices.virtqueue import VirtioError, VirtQueue
from sim.abi.virtio import (
    PCI_DEVICE_ID_VIRTIO_BLOCK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VRING_AVAIL_F_NO_INTERRUPT,
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
)
from sim.costs import Costs
from sim.eventfd import FdTable
from sim.qemu.aio import AioContext
from sim.qemu.memory import AddressSpace, MemoryCore, MemoryRegion
from sim.ram import GuestRAM
from sim.trace import Trace
from tests.vring import BlkRequest, Vring, wait_used


RAM_SIZE = 4 << 20
RING = 0x10000
HDR = 0x20000
STATUS = 0x21000
DATA = 0x30000
TABLE = 0x40000   # an indirect descriptor table
NUM = 8
DISK_SECTORS = 16
DISK = bytes((i * 7 + (i >> 9) * 13) & 0xFF for i in range(DISK_SECTORS * SECTOR))

# Legacy BAR 0 offsets, written out rather than imported: the test pins them.
HOST_FEATURES, GUEST_FEATURES, QUEUE_PFN, QUEUE_NUM = 0, 4, 8, 12
QUEUE_SEL, QUEUE_NOTIFY, STATUS_REG, ISR, CONFIG = 14, 16, 18, 19, 20
S_ACK_DRIVER, S_DRIVER_OK = 0x3, 0x7
NEEDS_RESET = 0x40
BOGUS = "virtio: bogus descriptor or out of resources"


def bswap(value: int, size: int) -> int:
    return int.from_bytes(value.to_bytes(size, "little"), "big")


class Host:
    """The VMM services a transport uses: eventfds, the main loop, INTx."""

    def __init__(self, trace):
        self.fds = FdTable()
        self.main_ctx = AioContext("qemu-main", trace, Costs())
        self.irq_levels = []
        self.exits = []

    def event_notifier_init(self, label, active=False):
        return self.fds.eventfd(label, int(active))

    def pci_set_irq(self, dev, level):
        self.irq_levels.append(level)

    def cpu_virtio_is_big_endian(self):
        return None      # a reset with no vcpu behind it: the target's default (big)

    def bdrv_drain(self, actor, blk, why):
        assert not blk.in_flight, why      # these rigs never reset with a request in flight

    def qemu_exit(self, status, reason, actor):
        self.exits.append((status, reason))    # QEMU before 2.8: error_report(); exit(1)


class Rig:
    """virtio-blk-pci on 4 MiB of guest RAM with a 16-sector disk, driven
    through BAR 0 the way SLOF drives it (register values device-side)."""

    def __init__(self, *, writable=False, num=NUM, big=True, backend=None, qemu=(2, 3), **blk_kw):
        self.trace = Trace()
        self.ram = GuestRAM(RAM_SIZE)
        self.backend = backend or BlockBackend.from_bytes(DISK, "test-disk", writable=writable)
        self.host = Host(self.trace)
        self.blk = VirtIOBlock(self.backend, self.ram, self.trace, Costs(), release=qemu_releases.behaviour(qemu),
                               queue_size=num, **blk_kw)
        self.blk.main_ctx = self.host.main_ctx
        self.proxy = VirtIOPCIProxy(self.blk, PCI_DEVICE_ID_VIRTIO_BLOCK, ioeventfd=True, qemu=self.host)
        self.ring = Vring(self.ram, RING, num, big=big)

    def read(self, off, size):
        return self.proxy.legacy_read(off, size)

    def write(self, off, value, size):
        self.proxy.legacy_write(off, value, size)

    def setup(self, features=0):
        """SLOF's virtio_blk_init order: ACK|DRIVER, features, ring, DRIVER_OK."""
        self.write(STATUS_REG, 0, 1)
        self.write(STATUS_REG, S_ACK_DRIVER, 1)
        self.write(GUEST_FEATURES, features, 4)
        self.write(QUEUE_SEL, 0, 2)
        self.write(QUEUE_PFN, RING >> 12, 4)
        self.write(STATUS_REG, S_DRIVER_OK, 1)
        self.ring.restart()
        return self

    def kick(self):
        self.write(QUEUE_NOTIFY, 0, 2)

    def request(self, rtype, sector=0, data_len=0, payload=None, slot=0):
        return BlkRequest(self.ring, rtype, sector, hdr=HDR + 0x100 * slot, data=DATA + 0x2000 * slot,
                          data_len=data_len, status=STATUS + slot, payload=payload)

    def errors(self):
        return [e.fields["reason"] for e in self.trace.named("virtio_error")]

    def served(self):
        return len(self.trace.named("blk_request"))


@contextlib.asynccontextmanager
async def running(rig):
    """QEMU's main loop (and the block layer's AIO) for the test's duration."""
    async with trio.open_nursery() as nursery:
        rig.host.main_ctx.nursery = nursery
        nursery.start_soon(rig.host.main_ctx.run)
        yield
        nursery.cancel_scope.cancel()


async def do(rig, req, n=None):
    """Publish req, kick through QUEUE_NOTIFY, wait for used->idx."""
    req.publish()
    rig.kick()
    assert await wait_used(rig.ring, n if n is not None else rig.ring.avail_idx), "request not completed"
    return req


# == split virtqueue in guest RAM ==========================================

def _vq(num=NUM, big=True):
    ram = GuestRAM(RAM_SIZE)
    vq = VirtQueue(0, num, ram)
    vq.set_legacy_addr(RING)
    return vq, Vring(ram, RING, num, big=big)


@pytest.mark.parametrize("num, avail_off, used_off", [
    (8, 0x80, 0x1000), (128, 0x800, 0x1000), (256, 0x1000, 0x2000), (1024, 0x4000, 0x5000)])
async def test_legacy_ring_used_part_starts_on_the_next_4096_boundary(autojump_clock, num, avail_off, used_off):
    vq = VirtQueue(0, num, GuestRAM(RAM_SIZE))
    vq.set_legacy_addr(RING)
    assert (vq.desc, vq.avail, vq.used) == (RING, RING + avail_off, RING + used_off)
    assert (Vring(vq.ram, RING, num).avail, Vring(vq.ram, RING, num).used) == (vq.avail, vq.used)


@pytest.mark.parametrize("big", [True, False], ids=["big-endian", "little-endian"])
async def test_pop_follows_next_fields_not_table_order(autojump_clock, big):
    vq, ring = _vq(big=big)
    ring.write_desc(5, HDR, 16, VRING_DESC_F_NEXT, 2)
    ring.write_desc(2, DATA, 512, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 7)
    ring.write_desc(7, STATUS, 1, VRING_DESC_F_WRITE)
    ring.publish(5)
    elem = vq.pop(big)
    assert elem.index == 5
    assert elem.out_sg == [(HDR, 16)]
    assert elem.in_sg == [(DATA, 512), (STATUS, 1)]
    assert elem.in_size() == 513
    assert vq.last_avail_idx == 1
    assert vq.pop(big) is None


async def test_pop_takes_heads_in_avail_order(autojump_clock):
    vq, ring = _vq()
    for head in (3, 1, 6):
        ring.write_desc(head, DATA + head, 1)
        ring.publish(head)
    assert [vq.pop(True).index for _ in range(3)] == [3, 1, 6]
    assert vq.pop(True) is None


async def test_push_writes_used_element_then_used_idx(autojump_clock):
    vq, ring = _vq()
    for head in (4, 0):
        ring.write_desc(head, DATA, 8, VRING_DESC_F_WRITE)
        ring.publish(head)
    e1, e2 = vq.pop(True), vq.pop(True)
    assert vq.push(e1, 8, True) == 1
    assert ring.used_elem(0) == (4, 8) and ring.used_idx() == 1
    assert vq.ram.read(ring.used + 2, 2) == b"\x00\x01"            # big-endian ring
    assert vq.push(e2, 3, True) == 2
    assert ring.used_elem(1) == (0, 3) and ring.used_idx() == 2
    assert vq.ram.read(ring.used + 4, 8) == bytes([0, 0, 0, 4, 0, 0, 0, 8])


async def test_indexes_are_free_running_16_bit_counters(autojump_clock):
    vq, ring = _vq()
    vq.last_avail_idx = vq.used_idx = 0xFFFF
    ring.write_desc(2, DATA, 8)
    ring.put_avail(0xFFFF, 2)                # slot 0xFFFF % 8 == 7
    ring.set_avail_idx(0)
    elem = vq.pop(True)
    assert elem.index == 2 and vq.last_avail_idx == 0
    assert vq.push(elem, 0, True) == 0
    assert ring.used_elem(7) == (2, 0) and ring.used_idx() == 0


# -- every guest-supplied value is checked ----------------------------------

@pytest.mark.parametrize("head", [NUM, NUM + 1, 0xFFFF])
async def test_head_index_not_below_num(autojump_clock, head):
    vq, ring = _vq()
    ring.publish(head)
    with pytest.raises(VirtioError, match=f"^Guest says index {head} is available$"):
        vq.pop(True)


async def test_next_index_not_below_num(autojump_clock):
    vq, ring = _vq()
    ring.write_desc(0, HDR, 16, VRING_DESC_F_NEXT, NUM)
    ring.publish(0)
    with pytest.raises(VirtioError, match=f"^Desc next is {NUM}$"):
        vq.pop(True)


@pytest.mark.parametrize("links", [[(0, 1), (1, 0)], [(3, 3)], [(0, 1), (1, 2), (2, 1)]],
                         ids=["two-cycle", "self", "tail-cycle"])
async def test_descriptor_loop(autojump_clock, links):
    vq, ring = _vq()
    for i, nxt in links:
        ring.write_desc(i, DATA, 16, VRING_DESC_F_NEXT, nxt)
    ring.publish(links[0][0])
    with pytest.raises(VirtioError, match="^Looped descriptor$"):
        vq.pop(True)


async def test_chain_of_exactly_num_descriptors_is_accepted(autojump_clock):
    vq, ring = _vq()
    head = ring.add_chain([(DATA + 16 * i, 16, False) for i in range(NUM)])
    ring.publish(head)
    assert len(vq.pop(True).out_sg) == NUM


@pytest.mark.parametrize("addr, length", [
    (RAM_SIZE - 16, 17), (RAM_SIZE, 1), (RAM_SIZE + 0x1000, 512), ((1 << 64) - 16, 32), ((1 << 64) - 1, 1),
    (0, 0xFFFFFFFF)])
async def test_buffer_outside_guest_ram(autojump_clock, addr, length):
    vq, ring = _vq()
    ring.write_desc(0, HDR, 16, VRING_DESC_F_NEXT, 1)
    ring.write_desc(1, addr, length, VRING_DESC_F_WRITE)
    ring.publish(0)
    with pytest.raises(VirtioError, match=f"^{BOGUS}$"):
        vq.pop(True)


async def test_buffer_ending_at_the_last_byte_of_ram_is_accepted(autojump_clock):
    vq, ring = _vq()
    ring.write_desc(0, RAM_SIZE - 16, 16, VRING_DESC_F_WRITE)
    ring.publish(0)
    assert vq.pop(True).in_sg == [(RAM_SIZE - 16, 16)]


@pytest.mark.parametrize("start", [0, 0xFFF0])
async def test_avail_idx_moving_more_than_num(autojump_clock, start):
    vq, ring = _vq()
    vq.last_avail_idx = start
    new = (start + NUM + 1) & 0xFFFF
    ring.set_avail_idx(new)
    with pytest.raises(VirtioError, match=f"^Guest moved used index from {start} to {new}$"):
        vq.pop(True)


async def test_avail_idx_moving_exactly_num_is_accepted(autojump_clock):
    vq, ring = _vq()
    for head in range(NUM):
        ring.write_desc(head, DATA, 1)
        ring.publish(head)
    assert [vq.pop(True).index for _ in range(NUM)] == list(range(NUM))


async def test_zero_length_buffer(autojump_clock):
    vq, ring = _vq()
    ring.write_desc(0, DATA, 0)
    ring.publish(0)
    with pytest.raises(VirtioError, match="^virtio: zero sized buffers are not allowed$"):
        vq.pop(True)


async def test_readable_after_writable(autojump_clock):
    vq, ring = _vq()
    ring.write_desc(0, DATA, 1, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1)
    ring.write_desc(1, HDR, 16)
    ring.publish(0)
    with pytest.raises(VirtioError, match="^Incorrect order for descriptors$"):
        vq.pop(True)


async def test_indirect_table_is_walked_even_when_not_negotiated(autojump_clock):
    """virtqueue_split_pop has no VIRTIO_RING_F_INDIRECT_DESC check (a 2023
    proposal only added a LOG_GUEST_ERROR message), so QEMU walks it."""
    vq, ring = _vq()
    ring.write_desc(0, HDR, 16, VRING_DESC_F_NEXT, 2, table=TABLE)
    ring.write_desc(2, DATA, 512, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1, table=TABLE)
    ring.write_desc(1, STATUS, 1, VRING_DESC_F_WRITE, table=TABLE)
    ring.write_desc(6, TABLE, 3 * 16, VRING_DESC_F_INDIRECT)
    ring.publish(6)
    elem = vq.pop(True)
    assert elem.index == 6
    assert (elem.out_sg, elem.in_sg) == ([(HDR, 16)], [(DATA, 512), (STATUS, 1)])


@pytest.mark.parametrize("length", [0, 8, 20, 33])
async def test_indirect_table_size_not_a_multiple_of_16(autojump_clock, length):
    vq, ring = _vq()
    ring.write_desc(0, TABLE, length, VRING_DESC_F_INDIRECT)
    ring.publish(0)
    with pytest.raises(VirtioError, match="^Invalid size for indirect buffer table$"):
        vq.pop(True)


async def test_indirect_next_is_bounded_by_the_table_not_the_ring(autojump_clock):
    vq, ring = _vq()
    ring.write_desc(0, HDR, 16, VRING_DESC_F_NEXT, 3, table=TABLE)     # table has 3 entries
    ring.write_desc(0, TABLE, 3 * 16, VRING_DESC_F_INDIRECT)
    ring.publish(0)
    with pytest.raises(VirtioError, match="^Desc next is 3$"):
        vq.pop(True)


async def test_indirect_table_outside_ram(autojump_clock):
    vq, ring = _vq()
    ring.write_desc(0, RAM_SIZE - 32, 64, VRING_DESC_F_INDIRECT)
    ring.publish(0)
    with pytest.raises(VirtioError, match="^Cannot map indirect buffer$"):
        vq.pop(True)


# -- what the device does with a broken ring: virtio_error ------------------

def _head_too_big(ring):
    ring.publish(NUM)


def _next_too_big(ring):
    ring.write_desc(0, HDR, 16, VRING_DESC_F_NEXT, NUM + 3)
    ring.publish(0)


def _loop(ring):
    ring.write_desc(0, HDR, 16, VRING_DESC_F_NEXT, 1)
    ring.write_desc(1, DATA, 16, VRING_DESC_F_NEXT, 0)
    ring.publish(0)


def _outside_ram(ring):
    ring.write_desc(0, HDR, 16, VRING_DESC_F_NEXT, 1)
    ring.write_desc(1, RAM_SIZE - 8, 512, VRING_DESC_F_WRITE)
    ring.publish(0)


def _avail_jump(ring):
    ring.avail_idx = NUM + 1
    ring.set_avail_idx(NUM + 1)


BROKEN_RINGS = [
    (_head_too_big, f"Guest says index {NUM} is available"),
    (_next_too_big, f"Desc next is {NUM + 3}"),
    (_loop, "Looped descriptor"),
    (_outside_ram, BOGUS),
    (_avail_jump, f"Guest moved used index from 0 to {NUM + 1}"),
]


@pytest.mark.parametrize("corrupt, reason", BROKEN_RINGS, ids=[f.__name__.strip("_") for f, _ in BROKEN_RINGS])
async def test_broken_ring_is_virtio_error_and_the_queue_is_no_longer_served(autojump_clock, corrupt, reason):
    rig = Rig(qemu=(2, 8)).setup()
    async with running(rig):
        corrupt(rig.ring)
        rig.kick()
        await trio.sleep(0.1)
        assert rig.errors() == [reason]                    # logged, with QEMU's words
        assert rig.blk.broken
        assert rig.served() == 0 and rig.ring.used_idx() == 0
        # Legacy device: virtio_error sets NEEDS_RESET only under VERSION_1.
        assert rig.read(STATUS_REG, 1) == S_DRIVER_OK
        # A good request afterwards is not served (virtqueue_pop: broken -> NULL).
        rig.ring.restart()
        req = rig.request(VIRTIO_BLK_T_IN, 0, SECTOR).publish()
        rig.kick()
        assert not await wait_used(rig.ring, 1, timeout=0.5)
        assert req.status() == 0xEE and rig.served() == 0
        # Only a reset (STATUS 0) repairs the device.
        rig.setup()
        assert not rig.blk.broken
        req = await do(rig, rig.request(VIRTIO_BLK_T_IN, 1, SECTOR))
        assert req.status() == VIRTIO_BLK_S_OK and req.data() == DISK[SECTOR:2 * SECTOR]
        assert rig.errors() == [reason]


async def test_virtio_error_sets_needs_reset_on_a_virtio_1_device(autojump_clock):
    rig = Rig(big=False, qemu=(2, 8)).setup()
    rig.blk.guest_features |= 1 << 32         # VIRTIO_F_VERSION_1 (not reachable on the legacy BAR)
    async with running(rig):
        _head_too_big(rig.ring)
        rig.kick()
        await trio.sleep(0.1)
    assert rig.errors() == [f"Guest says index {NUM} is available"]
    assert rig.blk.broken and rig.blk.status == S_DRIVER_OK | NEEDS_RESET


async def test_ring_page_outside_ram_breaks_the_device_at_queue_pfn(autojump_clock):
    rig = Rig()
    rig.write(STATUS_REG, S_ACK_DRIVER, 1)
    rig.write(QUEUE_PFN, (RAM_SIZE >> 12) - 1, 4)    # desc fits, the used ring does not
    assert rig.errors() == ["Cannot map used"] and rig.blk.broken


# == virtio-blk =============================================================

async def test_in_reads_sectors_status_ok_used_len_is_data_plus_status(autojump_clock):
    rig = Rig().setup()
    async with running(rig):
        req = await do(rig, rig.request(VIRTIO_BLK_T_IN, 3, 2 * SECTOR))
    assert req.status() == VIRTIO_BLK_S_OK
    assert req.data() == DISK[3 * SECTOR:5 * SECTOR]
    assert rig.ring.used_elem(0) == (req.head, 2 * SECTOR + 1)


async def test_in_scatters_over_several_descriptors(autojump_clock):
    rig = Rig().setup()
    ring = rig.ring
    parts = [(DATA, 100), (DATA + 0x1000, 312), (DATA + 0x2000, 612)]
    rig.ram.write(HDR, ring.L.blk_outhdr.build(dict(type=VIRTIO_BLK_T_IN, ioprio=0, sector=6)))
    head = ring.add_chain([(HDR, 16, False)] + [(a, n, True) for a, n in parts] + [(STATUS, 1, True)])
    ring.publish(head)
    async with running(rig):
        rig.kick()
        assert await wait_used(ring, 1)
    got = b"".join(rig.ram.read(a, n) for a, n in parts)
    assert got == DISK[6 * SECTOR:8 * SECTOR] and rig.ram.read(STATUS, 1) == b"\0"
    assert ring.used_elem(0) == (head, 1025)


async def test_completion_raises_isr_which_a_read_clears(autojump_clock):
    rig = Rig().setup()
    async with running(rig):
        await do(rig, rig.request(VIRTIO_BLK_T_IN, 0, SECTOR))
    assert rig.host.irq_levels[-1] == 1
    assert rig.read(ISR, 1) == 1
    assert rig.read(ISR, 1) == 0 and rig.host.irq_levels[-1] == 0


async def test_no_interrupt_flag_suppresses_the_interrupt(autojump_clock):
    rig = Rig().setup()
    rig.ring.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT)
    async with running(rig):
        await do(rig, rig.request(VIRTIO_BLK_T_IN, 0, SECTOR))
    assert rig.host.irq_levels == [] and rig.read(ISR, 1) == 0


async def test_out_to_a_writable_drive_lands_and_reads_back(autojump_clock):
    rig = Rig(writable=True).setup()
    payload = bytes(range(256)) * 4
    async with running(rig):
        out = await do(rig, rig.request(VIRTIO_BLK_T_OUT, 9, payload=payload))
        back = await do(rig, rig.request(VIRTIO_BLK_T_IN, 9, 2 * SECTOR, slot=1))
    assert out.status() == VIRTIO_BLK_S_OK
    assert back.status() == VIRTIO_BLK_S_OK and back.data() == payload
    view = bytearray(2 * SECTOR)
    rig.backend.read_into(9, memoryview(view))
    assert bytes(view) == payload


async def test_out_to_a_read_only_drive_is_ioerr_and_changes_nothing(autojump_clock):
    rig = Rig(writable=False).setup()
    assert rig.read(HOST_FEATURES, 4) >> 5 & 1          # VIRTIO_BLK_F_RO offered
    async with running(rig):
        out = await do(rig, rig.request(VIRTIO_BLK_T_OUT, 2, payload=b"\x55" * SECTOR))
        back = await do(rig, rig.request(VIRTIO_BLK_T_IN, 2, SECTOR, slot=1))
    assert out.status() == VIRTIO_BLK_S_IOERR
    assert back.data() == DISK[2 * SECTOR:3 * SECTOR]


async def test_writable_drive_does_not_offer_ro(autojump_clock):
    assert not Rig(writable=True).read(HOST_FEATURES, 4) >> 5 & 1


async def test_flush_makes_persisted_writes_durable(autojump_clock, tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(DISK)
    backend = BlockBackend(str(image), writable=True, persist=True)
    try:
        rig = Rig(backend=backend).setup()
        async with running(rig):
            await do(rig, rig.request(VIRTIO_BLK_T_OUT, 4, payload=b"\xab" * SECTOR))
            assert image.read_bytes() == DISK                       # not durable yet
            flush = await do(rig, rig.request(VIRTIO_BLK_T_FLUSH, slot=1))
        assert flush.status() == VIRTIO_BLK_S_OK
        assert rig.ring.used_elem(1) == (flush.head, 1)
        assert image.read_bytes()[4 * SECTOR:5 * SECTOR] == b"\xab" * SECTOR
    finally:
        backend.close()


@pytest.mark.parametrize("serial, expect", [
    ("slofsim0", b"slofsim0" + b"\0" * 12),               # strncpy: NUL-padded to 20
    ("ABCDEFGHIJKLMNOPQRST", b"ABCDEFGHIJKLMNOPQRST"),    # exactly 20: no NUL
    ("ABCDEFGHIJKLMNOPQRSTUVWX", b"ABCDEFGHIJKLMNOPQRST"),  # longer: cut at 20
])
async def test_get_id_writes_at_most_20_bytes_of_serial(autojump_clock, serial, expect):
    """QEMU 2.2-2.4: strncpy(in_sg[0], serial, MIN(in_sg[0].iov_len, 20)),
    so a short serial is NUL-padded and a 20-byte one has no NUL. (Later
    QEMU writes only strlen + 1 bytes with iov_from_buf.)"""
    rig = Rig(serial=serial).setup()
    rig.ram.write(DATA, b"\xaa" * 32)
    async with running(rig):
        req = await do(rig, rig.request(VIRTIO_BLK_T_GET_ID, 0, 20))
    assert req.status() == VIRTIO_BLK_S_OK
    assert rig.ram.read(DATA, 20) == expect
    assert rig.ram.read(DATA + 20, 12) == b"\xaa" * 12


@pytest.mark.parametrize("serial, expect", [("ABCDEFGHIJKLMNOPQRSTUVWX", b"ABCDEFGHIJKLMNOPQRST"),
                                            ("slofsim0", b"slofsim0" + b"\0" * 12)])
async def test_get_id_into_a_larger_buffer_writes_only_20_bytes(autojump_clock, serial, expect):
    rig = Rig(serial=serial).setup()
    rig.ram.write(DATA, b"\xaa" * 64)
    async with running(rig):
        await do(rig, rig.request(VIRTIO_BLK_T_GET_ID, 0, 64))
    assert rig.ram.read(DATA, 64) == expect + b"\xaa" * 44


@pytest.mark.parametrize("rtype", [0x100, 0x7F00])
async def test_unknown_request_type_is_unsupp(autojump_clock, rtype):
    rig = Rig(writable=True).setup()
    async with running(rig):
        req = await do(rig, rig.request(rtype, 0, SECTOR))
    assert req.status() == VIRTIO_BLK_S_UNSUPP


@pytest.mark.parametrize("sector, length, status", [
    (DISK_SECTORS - 1, SECTOR, VIRTIO_BLK_S_OK),          # the last sector
    (DISK_SECTORS, SECTOR, VIRTIO_BLK_S_IOERR),           # one past the end
    (DISK_SECTORS - 1, 2 * SECTOR, VIRTIO_BLK_S_IOERR),   # runs past the end
    ((1 << 64) - 1, SECTOR, VIRTIO_BLK_S_IOERR),          # would wrap
    (0, SECTOR + 1, VIRTIO_BLK_S_IOERR),                  # not whole sectors
])
async def test_in_range_against_capacity(autojump_clock, sector, length, status):
    rig = Rig().setup()
    rig.ram.write(DATA, b"\xcc" * length)
    async with running(rig):
        req = await do(rig, rig.request(VIRTIO_BLK_T_IN, sector, length))
    assert req.status() == status
    if status == VIRTIO_BLK_S_OK:
        assert req.data() == DISK[sector * SECTOR:]
    else:
        assert req.data() == b"\xcc" * length       # nothing read into the buffer


async def test_out_past_capacity_is_ioerr_and_writes_nothing(autojump_clock):
    rig = Rig(writable=True).setup()
    async with running(rig):
        req = await do(rig, rig.request(VIRTIO_BLK_T_OUT, DISK_SECTORS, payload=b"\x11" * SECTOR))
    assert req.status() == VIRTIO_BLK_S_IOERR
    assert rig.backend.overlay == {}


async def test_request_without_status_descriptor_breaks_the_device(autojump_clock):
    rig = Rig(qemu=(2, 8)).setup()
    rig.ram.write(HDR, rig.ring.L.blk_outhdr.build(dict(type=VIRTIO_BLK_T_IN, ioprio=0, sector=0)))
    rig.ring.publish(rig.ring.add_chain([(HDR, 16, False)]))
    async with running(rig):
        rig.kick()
        await trio.sleep(0.1)
    assert rig.errors() == ["virtio-blk missing headers"] and rig.blk.broken


# -- device config, guest-endian on the legacy transport --------------------

def _guest_view(rig):
    """BAR 0 at 0x1000 of an address space, read with ld*_phys (BE native)."""
    root = MemoryRegion("root", 1 << 32)
    root.add_subregion(0x1000, rig.proxy.bar)
    space = AddressSpace("test", root)
    core = MemoryCore()
    core.address_spaces.append(space)
    core.commit()
    return lambda off, size: space.load(0x1000 + off, size)[0]


async def test_config_capacity_and_blk_size_are_big_endian_for_slof(autojump_clock):
    rig = Rig()
    cfg = rig.blk.get_config()
    assert cfg[0:8] == DISK_SECTORS.to_bytes(8, "big")
    assert cfg[20:24] == SECTOR.to_bytes(4, "big")
    load = _guest_view(rig)
    # A big-endian guest reads config values as they are, no swap...
    assert load(CONFIG + 0, 4) == 0 and load(CONFIG + 4, 4) == DISK_SECTORS
    assert load(CONFIG + 0, 8) == DISK_SECTORS
    assert load(CONFIG + 20, 4) == SECTOR
    assert [load(CONFIG + i, 1) for i in range(8)] == list(DISK_SECTORS.to_bytes(8, "big"))
    # ...but the legacy registers are little-endian: it must swap those.
    assert load(HOST_FEATURES, 4) == bswap(rig.blk.host_features & 0xFFFFFFFF, 4)
    assert load(QUEUE_NUM, 2) == bswap(NUM, 2)


async def test_config_is_little_endian_for_a_little_endian_guest(autojump_clock):
    rig = Rig()
    rig.blk.device_big_endian = False          # virtio_default_endian() of an LE guest
    load = _guest_view(rig)
    assert [load(CONFIG + i, 1) for i in range(8)] == list(DISK_SECTORS.to_bytes(8, "little"))
    assert [load(CONFIG + 20 + i, 1) for i in range(4)] == list(SECTOR.to_bytes(4, "little"))


async def test_config_read_past_its_end_is_all_ones(autojump_clock):
    rig = Rig()
    assert rig.read(CONFIG + rig.blk.config_len, 4) == 0xFFFFFFFF


# == legacy virtio-pci BAR 0 ================================================

async def test_bar0_is_registers_plus_config_rounded_to_a_power_of_two(autojump_clock):
    """virtio_pci_device_plugged: pow2ceil(24 + config_len), 24 being the
    register block with MSI-X present: 64 for 2015's 36-byte config, so a
    4.1 kernel's wce read at BAR0+56 (config at 24 once MSI-X is on) lands."""
    rig = Rig()
    assert rig.blk.config_len == 36 and rig.proxy.bar.size == 64
    rig.proxy.config_write(rig.proxy.msix_cap + 2, 0x8001, 2)       # MSI-X Enable: config moves to 24
    assert rig.read(24 + 32, 1) == 1                                  # wce
    assert rig.read(24 + 36, 1) == 0xFF                               # past config_len: all ones
    assert rig.proxy.bars[0].type & 1                 # an I/O BAR


async def test_host_and_guest_features_registers(autojump_clock):
    rig = Rig()
    assert rig.read(HOST_FEATURES, 4) == rig.blk.host_features & 0xFFFFFFFF
    rig.write(GUEST_FEATURES, 0xFFFFFFFF, 4)
    assert rig.read(GUEST_FEATURES, 4) == rig.blk.host_features & 0xFFFFFFFF   # only offered bits stick
    assert rig.blk.guest_features == rig.blk.host_features & 0xFFFFFFFF


async def test_queue_pfn_num_sel_registers(autojump_clock):
    rig = Rig()
    assert rig.read(QUEUE_SEL, 2) == 0 and rig.read(QUEUE_NUM, 2) == NUM
    rig.write(QUEUE_PFN, RING >> 12, 4)
    vq = rig.blk.vqs[0]
    assert rig.read(QUEUE_PFN, 4) == RING >> 12
    assert (vq.desc, vq.avail, vq.used) == (RING, RING + 16 * NUM, RING + 0x1000)
    rig.write(QUEUE_SEL, 1, 2)                        # no queue 1 on virtio-blk
    assert rig.read(QUEUE_SEL, 2) == 1 and rig.read(QUEUE_NUM, 2) == 0 and rig.read(QUEUE_PFN, 4) == 0
    rig.write(QUEUE_SEL, 64, 2)                       # >= VIRTIO_PCI_QUEUE_MAX: ignored
    assert rig.read(QUEUE_SEL, 2) == 1
    rig.write(QUEUE_SEL, 0, 2)
    rig.write(QUEUE_PFN, 0, 4)                        # PFN 0 resets the device
    assert rig.read(QUEUE_PFN, 4) == 0 and not vq.ready()


async def test_status_register_and_reset_by_zero(autojump_clock):
    rig = Rig().setup(features=1 << 9)
    assert rig.read(STATUS_REG, 1) == S_DRIVER_OK
    assert rig.read(GUEST_FEATURES, 4) == 1 << 9
    rig.write(STATUS_REG, 0, 1)
    assert rig.read(STATUS_REG, 1) == 0
    assert rig.read(GUEST_FEATURES, 4) == 0 and rig.read(QUEUE_PFN, 4) == 0
    assert rig.trace.named("virtio_reset")


async def test_queue_notify_at_16_serves_the_queue_in_the_vcpu_thread(autojump_clock):
    rig = Rig().setup()
    async with running(rig):
        rig.request(VIRTIO_BLK_T_IN, 0, SECTOR).publish()
        rig.write(QUEUE_NOTIFY, 0, 2)
        (req_ev,) = rig.trace.named("blk_request")     # popped before the write returned
        assert req_ev.actor == "qemu-vcpu"
        assert await wait_used(rig.ring, 1)


async def test_queue_notify_for_a_queue_that_does_not_exist_is_ignored(autojump_clock):
    rig = Rig().setup()
    async with running(rig):
        await trio.sleep(0.1)     # the main loop consumes the start-up signal of the host notifier
        rig.request(VIRTIO_BLK_T_IN, 0, SECTOR).publish()
        for q in (1, 63, 64, 0xFFFF):
            rig.write(QUEUE_NOTIFY, q, 2)
        await trio.sleep(0.1)
    assert rig.served() == 0 and not rig.blk.broken


async def test_driver_ok_assigns_host_notifier_on_queue_notify_and_its_signal_serves_the_queue(autojump_clock):
    rig = Rig()
    vq = rig.blk.vqs[0]
    rig.setup()
    efd = vq.host_notifier
    assert efd is not None
    # memory_region_add_eventfd(QUEUE_NOTIFY, 2, match, n): data kept in target order.
    assert rig.proxy.bar.ioeventfds == [(QUEUE_NOTIFY, 2, True, bswap(0, 2), efd)]
    async with running(rig):
        rig.request(VIRTIO_BLK_T_IN, 0, SECTOR).publish()
        efd.signal()                                   # what KVM does on an ioeventfd hit
        assert await wait_used(rig.ring, 1)
    (req_ev,) = rig.trace.named("blk_request")
    assert req_ev.actor == "qemu-main"
    rig.write(STATUS_REG, S_ACK_DRIVER, 1)            # DRIVER_OK cleared: ioeventfd stopped
    assert rig.proxy.bar.ioeventfds == [] and vq.host_notifier is None


@pytest.mark.parametrize("raw, kind", [
    (0, "IN"), (0x80000000, "IN"), (1, "OUT"), (0x80000001, "OUT"), (4, "FLUSH"), (8, "GET_ID"),
    (3, "SCSI_CMD"), (5, "FLUSH"), (6, "FLUSH"), (9, "GET_ID"), (12, "FLUSH"), (0x10, None), (0x40000000, None),
])
def test_request_type_dispatch_is_2015_qemus_flag_order(raw, kind):
    from devices.virtio_blk import request_kind
    from sim.abi.virtio import BLK_TYPE_NAMES
    got = request_kind(raw)
    assert (BLK_TYPE_NAMES[got] if got is not None else None) == kind
