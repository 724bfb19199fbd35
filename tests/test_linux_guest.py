"""The kernel stage as Linux really drives virtio-blk: little-endian 6.1
against the real driver's trace (tests/data/real-grub, copied from
shared/reference/real-grub: Debian's 6.1.0-50 ppc64le on QEMU 7.2, stage
"linux"), big-endian 4.1 against a table read from v4.1's source, the
event index and indirect descriptors on both sides, and the knob."""

import csv
import os

import pytest

from firmware_model.linux import releases
from firmware_model.linux import virtio_blk as linux_virtio_blk
from sim import machine, report
from sim.abi.virtio import VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_INDIRECT
from sim.qemu import releases as qemu_releases
from sim.scenario import ScenarioError, load
from tests.conftest import ROOT, SCENARIOS

REAL_GRUB = os.path.join(ROOT, "tests", "data", "real-grub")
MSIX_BAR_BUS = 0x80000000      # BAR 1 on the reference machine: the CSV's msix-table reg_off is absolute


def _csv(name):
    with open(os.path.join(REAL_GRUB, name)) as f:
        return [row for row in csv.DictReader(f) if row["stage"] == "linux"]


def _real_accesses():
    out = []
    for row in _csv("grub-linux_regs.csv"):
        off = int(row["bar_off"], 16) if row["region"] == "legacy" else int(row["reg_off"], 16) - MSIX_BAR_BUS
        out.append({"region": row["region"], "offset": off, "rw": row["rw"], "size": int(row["size"]),
                    "value": int(row["value"], 16)})
    return out


@pytest.fixture(scope="module")
def six():
    return machine.run(load(os.path.join(SCENARIOS, "guest-6.1-real-grub.toml")))


def _allocated(a):
    """QUEUE_PFN's value is where the kernel put the ring: the model's own allocation."""
    return a["region"] == "legacy" and a["offset"] == 8 and a["rw"] == "W"


def test_6_1_register_accesses_equal_the_real_driver(six):
    got, want = report.kernel_register_accesses(six), _real_accesses()
    assert len(want) == 82 and len(got) == len(want)             # 64 BAR 0 + 18 MSI-X table
    for i, (g, w) in enumerate(zip(got, want)):
        if _allocated(w):
            assert {**g, "value": None} == {**w, "value": None}, i
            assert g["value"] == linux_virtio_blk.RING >> 12
        else:
            assert g == w, i
    # Spelled out: the feature words, and the LE guest's byte-wise config.
    assert [a["value"] for a in got if a["offset"] in (0, 4) and a["region"] == "legacy"] == [0x71006EF4, 0x30006E74]
    cap = [a["value"] for a in got if a["region"] == "legacy" and 0x18 <= a["offset"] < 0x20]
    assert cap == [0, 0, 4, 0, 0, 0, 0, 0]                       # 262144 sectors, little-endian


def test_6_1_pci_config_rtas_and_first_io_equal_the_real_driver(six):
    ev = report.split_stages(six.trace)[1].events
    start = next(i for i, e in enumerate(ev) if e.name == "virtio_pci_probe")
    got = [("W" if e.name == "pci_cfg_write" else "R", e.fields["reg"], e.fields["value"])
           for e in ev[start:] if e.name in ("pci_cfg_read", "pci_cfg_write")]
    rows = _csv("grub-linux_pcicfg.csv")
    first = next(i for i, r in enumerate(rows) if r["rw"] == "W") - 1    # pci_enable_device's command read
    want = [(r["rw"], int(r["off"], 16), int(r["value"], 16)) for r in rows[first:]]
    # The reference's command register carries SERR (0x100), left by the real
    # SLOF's quiesce; the modelled SLOF leaves it clear. Everything else equal.
    def serr_off(a):
        return (a[0], a[1], a[2] & ~0x100 if a[1] == 0x4 else a[2])
    assert [serr_off(a) for a in got] == [serr_off(a) for a in want]
    assert len(want) == 19
    # RTAS: ibm,change-msi for 2 vectors (first irq 4864), one query per vector.
    setup = [e.fields for e in ev if e.name == "spapr_msi_setup"]
    assert setup == [{"device": "virtio-blk-pci", "vectors": 2, "irqs": [4864, 4865]}]
    queries = [(e.fields["ioa"], e.fields["irq"]) for e in ev if e.name == "spapr_pci_rtas_ibm_query_interrupt_source_number"]
    assert queries == [(0, 4864), (1, 4865)]
    # The first I/O: the partition scan, one 128-sector read at sector 0, one MSI.
    reqs = [(r["type"], int(r["sector"]), int(r["nsectors"])) for r in _csv("grub-linux_requests.csv")]
    got_reqs = [("read", e.fields["sector"], e.fields["count"]) for e in ev if e.name == "blk_request"]
    assert got_reqs == reqs == [("read", 0, 128)]
    assert len([e for e in ev if e.name == "spapr_msi_write"]) == 1
    # the console line, as the real one (grub-linux_console.txt)
    assert "virtio_blk virtio0: [vda] 262144 512-byte logical blocks (134 MB/128 MiB)" in six.console.text()


def test_6_1_is_little_endian_end_to_end(six):
    """MSR[LE] on: plain sth/lwz for iowrite16/ioread32; QEMU's device
    endianness follows the vcpu that reset it; the ring is little-endian
    and its one request goes through an indirect table."""
    ev = report.split_stages(six.trace)[1].events
    assert not any(e.fields.get("byte_reversed") for e in ev if e.name == "mmio_access")
    assert six.machine.blk.device_big_endian is False
    submit = next(e.fields for e in ev if e.name == "linux_blk_submit")
    assert submit["indirect"]
    desc = six.machine.ram.read(linux_virtio_blk.RING + 16 * submit["head"], 16)
    assert int.from_bytes(desc[12:14], "little") == VRING_DESC_F_INDIRECT
    assert int.from_bytes(desc[8:12], "little") == 48              # header, data, status


# -- 4.1: a table read from the v4.1 source ------------------------------------

# virtio_pci_legacy.c vp_get reads config with ioread8, one byte at a time;
# virtblk_probe's order: seg_max (before vp_find_vqs: config at BAR0+20),
# then with MSI-X on (config at +24): wce (virtblk_update_cache_mode),
# capacity, blk_size, physical_block_exp, alignment_offset, min_io_size,
# opt_io_size. size_max and MQ are not offered by QEMU 2.4, so not read.
V41_CONFIG_READS = ([20 + 12 + i for i in range(4)] + [24 + 32] + [24 + i for i in range(8)]
                    + [24 + 20 + i for i in range(4)] + [24 + 24, 24 + 25, 24 + 26, 24 + 27]
                    + [24 + 28 + i for i in range(4)])


def test_4_1_feature_word_and_config_reads():
    r = machine.run(load(os.path.join(SCENARIOS, "dataplane-fixed.toml")))    # QEMU 2.4: 4.1 BE by default
    assert r.scenario.guest_kernel == "4.1"
    acc = report.kernel_register_accesses(r)
    legacy = [a for a in acc if a["region"] == "legacy"]
    # QEMU 2.4 offers (read-only disk): SEG_MAX GEOMETRY RO BLK_SIZE SCSI FLUSH
    # TOPOLOGY CONFIG_WCE NOTIFY_ON_EMPTY ANY_LAYOUT INDIRECT EVENT_IDX BAD_FEATURE;
    # v4.1's features[] plus the ring features take all but the last four.
    assert [(a["rw"], a["value"]) for a in legacy if a["offset"] in (0, 4)] == [("R", 0x79000EF4),
                                                                              ("W", 0x30000EF4)]
    reads = [a for a in legacy if a["rw"] == "R" and a["offset"] >= 20 and a["offset"] not in (20, 22)
             or a["rw"] == "R" and a["offset"] in (20, 21, 22, 23) and a["size"] == 1]
    assert [a["offset"] for a in reads] == V41_CONFIG_READS
    assert all(a["size"] == 1 for a in reads)
    # Big-endian guest, big-endian device: capacity 32768 reads 00 .. 00 80 00.
    assert [a["value"] for a in reads[5:13]] == [0, 0, 0, 0, 0, 0, 0x80, 0]
    assert [a["value"] for a in reads[:4]] == [0, 0, 0, 126]            # seg_max = queue_size - 2
    # One QUEUE_SEL per setup_vq (the vp_legacy_* helpers that select before
    # every queue register are 2021's, virtio_pci_legacy_dev.c).
    assert [a["offset"] for a in legacy if a["offset"] == 14] == [14]


def test_the_rows_name_their_differences():
    v41, v61 = releases.GUEST_KERNELS["4.1"], releases.GUEST_KERNELS["6.1"]
    assert v41.big_endian and not v61.big_endian
    assert releases.driver_features(v61, False) & 0xFFFFFFFF == 0x30017E76   # incl. MQ, SECURE_ERASE
    assert releases.driver_features(v61, False) & 0x71006EF4 == 0x30006E74   # on QEMU 7.2's offer: measured


# -- the knob ---------------------------------------------------------------------


@pytest.mark.parametrize("qemu, host, guest", [("2.3", "4.0", "4.1"), ("2.4", "4.1", "4.1"), ("7.2", "4.0", "4.1"),
                                               ("2.5", "4.2", "6.1"), ("7.2", "6.1", "6.1")])
def test_default_guest_follows_the_era(scenario_file, qemu, host, guest):
    s = load(scenario_file(f'[kernel]\nversion = "{host}"\n[qemu]\nversion = "{qemu}"\n'))
    assert s.guest_kernel == guest


def test_guest_kernel_knob_errors(scenario_file):
    with pytest.raises(ScenarioError, match=r"\[guest\] kernel: expected one of 4.1, 6.1"):
        load(scenario_file('[guest]\nkernel = "5.4"\n'))
    assert load(scenario_file('[qemu]\nversion = "2.4"\n[guest]\nkernel = "6.1"\n')).guest_kernel == "6.1"


def test_le_guest_on_the_2015_stack_boots_through_the_dataplane(scenario_file):
    text = open(os.path.join(SCENARIOS, "dataplane-fixed.toml")).read().split("[expect]")[0]
    r = machine.run(load(scenario_file(text + '\n[guest]\nkernel = "6.1"\n')))
    assert report.outcome(r) == "booted" and r.guest_result["linux"]["kernel"] == "6.1"
    assert r.machine.blk.device_big_endian is False        # reset by an MSR[LE] vcpu


# -- the event index: interrupt suppression when the kernel batches --------------


def _batched(monkeypatch, features_mask=None):
    """The kernel stage reading 8 pages in one plugged batch (one kick)."""
    async def scan(self):
        await self.read_pages([128 * i for i in range(8)], 128)
    monkeypatch.setattr(linux_virtio_blk.LinuxVirtioBlk, "scan_partitions", scan)
    if features_mask is not None:
        real = releases.driver_features
        monkeypatch.setattr(linux_virtio_blk, "driver_features", lambda k, m: real(k, m) & features_mask)
    return machine.run(load(os.path.join(SCENARIOS, "dataplane-fixed.toml")))


def test_event_idx_gives_fewer_interrupts_than_requests(monkeypatch):
    r = _batched(monkeypatch)
    s = report.summary(r)
    ev = report.split_stages(r.trace)[1].events
    assert s["kernel_requests_completed"] == 8 and s["kernel_notifies"] == 1
    assert 1 <= s["kernel_interrupts"] < 8 and 1 <= s["kernel_irqfd_interrupts"] < 8
    assert [e for e in ev if e.name == "virtio_notify_suppressed" and e.fields["event_idx"]]
    assert sum(e.fields["buffers"] for e in ev if e.name == "linux_vring_interrupt") == 8


def test_without_event_idx_every_completion_interrupts(monkeypatch):
    """The device raises one interrupt per completion (8 irqfd signals; the
    guest may take them as fewer external interrupts, XICS coalescing the
    pending source); with EVENT_IDX the device itself holds them back."""
    with_idx = report.summary(_batched(monkeypatch))
    r = _batched(monkeypatch, features_mask=~(1 << VIRTIO_RING_F_EVENT_IDX))
    s = report.summary(r)
    assert s["kernel_requests_completed"] == 8
    assert s["kernel_irqfd_interrupts"] == 8 and with_idx["kernel_irqfd_interrupts"] < 8
    assert not report.split_stages(r.trace)[1].named("virtio_notify_suppressed")


# -- the vring validation for what Linux now uses --------------------------------

from devices.virtqueue import VirtioError, VirtQueue  # noqa: E402
from sim.abi.virtio import VRING_DESC_F_NEXT, VRING_DESC_F_WRITE  # noqa: E402
from sim.ram import GuestRAM  # noqa: E402
from tests.vring import Vring  # noqa: E402

RAM, RING, TABLE, TABLE2, HDR, DATA, STATUS = 4 << 20, 0x10000, 0x40000, 0x41000, 0x20000, 0x30000, 0x21000


def _vq(num=8, event_idx=False):
    ram = GuestRAM(RAM)
    vq = VirtQueue(0, num, ram)
    vq.set_legacy_addr(RING)
    vq.event_idx = event_idx
    return vq, Vring(ram, RING, num, big=False)


def test_indirect_table_inside_an_indirect_table_breaks_the_device():
    """The 2015 dataplane's get_indirect (hw/virtio/dataplane/vring.c, 2.2-2.4):
    "Nested indirect descriptor"."""
    vq, ring = _vq()
    ring.write_desc(0, TABLE2, 32, VRING_DESC_F_INDIRECT, table=TABLE)
    ring.write_desc(0, TABLE, 16, VRING_DESC_F_INDIRECT)
    ring.publish(0)
    with pytest.raises(VirtioError, match="^Nested indirect descriptor$"):
        vq.pop(False)


@pytest.mark.parametrize("length", [8, 47, 49])
def test_indirect_table_length_not_a_multiple_of_16(length):
    vq, ring = _vq()
    ring.write_desc(0, TABLE, length, VRING_DESC_F_INDIRECT)
    ring.publish(0)
    with pytest.raises(VirtioError, match="^Invalid size for indirect buffer table$"):
        vq.pop(False)


def test_linux_style_indirect_request_pops_as_one_element():
    vq, ring = _vq()
    ring.write_desc(0, HDR, 16, VRING_DESC_F_NEXT, 1, table=TABLE)
    ring.write_desc(1, DATA, 0x10000, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2, table=TABLE)
    ring.write_desc(2, STATUS, 1, VRING_DESC_F_WRITE, table=TABLE)
    ring.write_desc(5, TABLE, 48, VRING_DESC_F_INDIRECT)
    ring.publish(5)
    elem = vq.pop(False)
    assert elem.index == 5 and elem.out_sg == [(HDR, 16)] and elem.in_sg == [(DATA, 0x10000), (STATUS, 1)]


def test_event_index_fields_past_ram_fail_the_ring_mapping():
    """With EVENT_IDX the avail ring ends 2 bytes later (used_event) and so
    does the used ring (avail_event): virtio_init_region_cache maps them with
    event_size, so a used ring ending exactly at the end of RAM maps without
    the feature and fails with it (7.2: "Cannot map used")."""
    vq, _ = _vq()
    vq.used = RAM - (4 + 8 * vq.num)
    assert vq.unmappable() is None
    vq.event_idx = True
    assert vq.unmappable() == "Cannot map used"


def test_pop_publishes_avail_event_and_used_event_past_the_ring_only_gates_interrupts():
    vq, ring = _vq(event_idx=True)
    for k in range(3):
        ring.write_desc(k, STATUS, 1, VRING_DESC_F_WRITE)
        ring.publish(k)
    for _ in range(3):
        vq.push(vq.pop(False), 1, False)
    assert int.from_bytes(ring.ram.read(vq.used + 4 + 8 * vq.num, 2), "little") == 3     # avail_event
    ram = ring.ram
    ram.write(vq.avail + 4 + 2 * vq.num, (0xFFF0).to_bytes(2, "little"))                # used_event far ahead
    vq.signalled_used_valid, vq.signalled_used = True, 2
    assert not vq.should_notify(False)            # vring_need_event(0xfff0, 3, 2): no interrupt
    ram.write(vq.avail + 4 + 2 * vq.num, (2).to_bytes(2, "little"))                     # the guest saw 2
    vq.signalled_used = 2
    assert vq.should_notify(False)                # event 2 crossed between 2 and 3


def test_gpt_partition_scan_reads_the_alternate_header_page(scenario_file):
    """efi_partition's find_valid_gpt: the primary header and entries are in
    the first 64 KiB page; the alternate header (the last LBA) is another
    page, read next. 16 MiB disk: sectors 32640..32767."""
    text = ('[qemu]\nversion = "7.2"\n[machine]\nkernel = "direct"\n[guest]\nkernel = "6.1"\n'
            '[disk]\nimage = "mkdisk"\ngpt = true\n')
    r = machine.run(load(scenario_file(text)))
    reads = r.guest_result["linux"]["reads"]
    assert [(q["sector"], q["count"]) for q in reads] == [(0, 128), (32768 - 128, 128)]
    assert " vda: vda1" in r.console.text()


def test_modern_kernel_notify_taken_by_the_ioeventfd_is_listed():
    """kernel_register_accesses: a store KVM hands to an ioeventfd never
    reaches QEMU; it is listed from the ioeventfd signal, in the notify region."""
    r = machine.run(load(os.path.join(SCENARIOS, "modern-fixed.toml")))
    acc = report.kernel_register_accesses(r)
    assert {a["region"] for a in acc} >= {"common", "device", "notify", "msix-table"}
    assert [a for a in acc if a["region"] == "notify"] == [{"region": "notify", "offset": 0, "rw": "W",
                                                             "size": 2, "value": 0}]


# -- the MSI-X table in BAR 1 (hw/pci/msix.c) -------------------------------------

async def test_msix_masked_vector_pends_and_fires_on_unmask(autojump_clock):
    from devices.block import BlockBackend
    from devices.virtio_blk import VirtIOBlock
    from devices.virtio_pci import VirtIOPCIProxy
    from sim.abi.virtio import PCI_DEVICE_ID_VIRTIO_BLOCK
    from sim.costs import Costs
    from sim.trace import Trace

    class Host:
        def __init__(self):
            self.sent = []

        def msi_send(self, address, data, actor):
            self.sent.append((address, data))

        def cpu_virtio_is_big_endian(self):
            return None

    trace, host = Trace(), Host()
    blk = VirtIOBlock(BlockBackend.from_bytes(bytes(512 * 16), "d", writable=False), GuestRAM(RAM), trace,
                      Costs(), release=qemu_releases.behaviour((7, 2)), queue_size=8)
    proxy = VirtIOPCIProxy(blk, PCI_DEVICE_ID_VIRTIO_BLOCK, ioeventfd=False, qemu=host)
    assert proxy.msix_mmio_read("msix-table", 0x1C, 4) == 1            # msix_init: every vector masked
    proxy.msix_set_message(1, 0x40000000000, 0x1301)                   # ibm,change-msi: message, unmasked
    assert [proxy.msix_mmio_read("msix-table", off, 4) for off in (0x10, 0x14, 0x18, 0x1C)] == [0, 0x400, 0x1301, 0]
    proxy.msix_mmio_write("msix-table", 0x1C, 1, 4)                    # the guest masks it (msix_mask_all)
    proxy.config_write(proxy.msix_cap + 2, 0x8001, 2)                  # Enable, vector 1 still masked
    proxy.msix_notify(1, "iothread")
    assert host.sent == [] and proxy.msix_mmio_read("msix-pba", 0, 4) == 0b10
    proxy.msix_mmio_write("msix-table", 0x1C, 0, 4)                    # pci_msix_unmask
    assert host.sent == [(0x40000000000, 0x1301)] and proxy.msix_mmio_read("msix-pba", 0, 4) == 0
    proxy.config_write(proxy.msix_cap + 2, 0xC001, 2)                  # MaskAll
    proxy.msix_notify(1, "iothread")
    proxy.config_write(proxy.msix_cap + 2, 0x8001, 2)                  # MaskAll off: the pending one fires
    assert host.sent == [(0x40000000000, 0x1301)] * 2


def test_4_1_msix_table_accesses_follow_v4_1():
    """v4.1 msix_capability_init on pseries: rtas_setup_msi_irqs reads each
    message back after its query; msix_program_entries reads each vector
    control (0: ibm,change-msi's msix_set_message unmasked it) and masks it;
    request_irq -> ics_rtas_startup unmasks and flushes with a read of the
    table's first word (config vector, then the queue's after setup_vq)."""
    r = machine.run(load(os.path.join(SCENARIOS, "dataplane-fixed.toml")))
    got = [(a["rw"], a["offset"], a["value"]) for a in report.kernel_register_accesses(r)
           if a["region"] == "msix-table"]
    assert got == [("R", 0x0, 0), ("R", 0x4, 0x400), ("R", 0x8, 0x1300),
                   ("R", 0x10, 0), ("R", 0x14, 0x400), ("R", 0x18, 0x1301),
                   ("R", 0xC, 0), ("W", 0xC, 1), ("R", 0x1C, 0), ("W", 0x1C, 1),
                   ("W", 0xC, 0), ("R", 0x0, 0), ("W", 0x1C, 0), ("R", 0x0, 0)]
