"""Transitional virtio-pci (disable-modern=off) and SLOF's virtio 1.0 path,
against the real SLOF measured on real QEMU 7.2 (tests/data/real-slof,
tr-modern-*): the capabilities, every register access of init and of each
request, the block requests, and the notify through the ioeventfd."""

import os

import pytest

from firmware_model.slof.releases import release as slof_release
from sim import machine, report
from sim.abi import papr
from sim.abi.kvm import KVM_IOEVENTFD_FLAG_DATAMATCH
from sim.abi.virtio import (
    PCI_CAP_ID_VNDR, VIRTIO_PCI_CAP_PCI_CFG, VIRTIO_PCI_MODERN_MEM_BAR, VIRTIO_PCI_NOTIFY_OFF, virtio_pci_cap,
    virtio_pci_notify_cap,
)
from sim.scenario import ScenarioError, load
from tests.conftest import QEMU72, SCENARIOS, real_slof_csv, reference_disks

BAR4 = VIRTIO_PCI_MODERN_MEM_BAR




def _row(row):
    """A CSV access: modern registers and config are all little-endian, so
    the bus value QEMU saw is the value meant."""
    return {"bar": int(row["bar"]), "offset": int(row["bar_off"], 16), "size": int(row["size"]),
            "rw": row["rw"], "value": int(row["value"], 16)}


def _boot(scenario_file, image="mkdisk", iothread=False, kernel="4.1"):
    text = QEMU72.format(kernel=kernel, qemu_extra="disable_modern = false", iothread=str(iothread).lower(),
                         ioeventfd=str(iothread).lower(), image=image)
    return machine.run(load(scenario_file(text)))


def _device_accesses(r):
    """What QEMU's MemoryRegionOps saw (the CSV is QEMU's own trace)."""
    return [{k: e.fields[k] for k in ("bar", "offset", "size", "rw", "value")}
            for e in report.firmware_trace(r.trace).named("virtio_pci_access")]


def _bar4_cpu(r):
    """BAR 4 as a CPU address: its bus address through the PHB window."""
    bus = next(e.fields["addr"] for e in r.trace.named("pci_bar_map")
               if e.fields["bar"] == BAR4 and e.fields["addr"] is not None)
    node = r.machine.phb_node
    for win in (node.get("mem64_window"), node["mem_window"]):
        if win is not None and win[0] <= bus < win[0] + win[2]:
            return win[1] + bus - win[0], r.machine.proxy.bars[BAR4].size
    raise AssertionError("BAR 4 outside the PHB windows")



@pytest.mark.parametrize("image", reference_disks())
def test_modern_register_accesses_equal_real_slof(scenario_file, image):
    """Init (36 accesses: VERSION_1 negotiation, FEATURES_OK with read-backs,
    queue setup, queue_enable, DRIVER_OK) and every request (capacity,
    blk_size, queue_select, queue_notify_off, notify), access by access."""
    r = _boot(scenario_file, image)
    want = [_row(row) for row in real_slof_csv("tr-modern-noioev_regs.csv")]
    assert len(want) == 252
    assert _device_accesses(r) == want
    # SLOF's side: the hcalls, values as meant, each named by its region
    assert [{k: v for k, v in a.items() if k != "region"} for a in report.register_accesses(r)] == want
    assert {a["region"] for a in report.register_accesses(r)} <= {"common", "isr", "device", "notify"}
    assert report.outcome(r) == "booted"


@pytest.mark.parametrize("image", reference_disks())
def test_modern_block_requests_equal_real_slof(scenario_file, image):
    r = _boot(scenario_file, image)
    want = [{"type": row["type"], "sector": int(row["sector"]), "count": int(row["nsectors"])}
            for row in real_slof_csv("tr-modern-noioev_requests.csv")]
    got = [{k: q[k] for k in ("type", "sector", "count")} for q in report.block_requests(r.trace)]
    assert got == want
    assert report.summary(r)["bytes_loaded"] == 1052160


def test_with_iothread_the_device_sees_what_real_qemu_saw(scenario_file):
    """The notify stores hit the ioeventfd in the kernel and never reach the
    device: QEMU's own trace (216 accesses) is what remains."""
    r = _boot(scenario_file, iothread=True)
    want = [_row(row) for row in real_slof_csv("tr-modern-io_regs.csv")]
    assert _device_accesses(r) == want
    assert not [e for e in r.trace.named("virtio_queue_notify") if e.fields["via"] == "userspace"]


def test_capabilities_and_bar4_are_qemu_72s(scenario_file):
    """The vendor capabilities SLOF walked on real QEMU (pcicfg CSV): their
    chain, type, BAR, offset and notify_off_multiplier; BAR 4 is a 64-bit
    prefetchable 16 KiB BAR placed in the 64-bit window."""
    rows = [row for row in real_slof_csv("tr-modern-noioev_pcicfg.csv") if row["rw"] == "R"]
    seen = {}
    for row in rows:
        seen[int(row["off"], 16)] = int(row["value"], 16)
    want, ptr = [], seen[0x34]
    while ptr:
        entry = {"at": ptr, "id": seen[ptr]}
        if seen[ptr] == PCI_CAP_ID_VNDR:
            entry.update(cfg_type=seen[ptr + 3], bar=seen[ptr + 4], offset=seen[ptr + 8],
                         mult=seen.get(ptr + 16) if seen[ptr + 3] == 2 else None)
        want.append(entry)
        ptr = seen[ptr + 1]
    assert [w["at"] for w in want] == [0x98, 0x84, 0x70, 0x60, 0x50, 0x40]

    r = _boot(scenario_file)
    cfg = bytes(r.machine.proxy.config)
    got, ptr = [], cfg[0x34]
    while ptr:
        entry = {"at": ptr, "id": cfg[ptr]}
        if cfg[ptr] == PCI_CAP_ID_VNDR:
            cap = virtio_pci_cap.parse(cfg[ptr:])
            mult = virtio_pci_notify_cap.parse(cfg[ptr:]).notify_off_multiplier if cap.cfg_type == 2 else None
            assert cap.cap_len == (16 if cap.cfg_type not in (2, VIRTIO_PCI_CAP_PCI_CFG) else 20)
            entry.update(cfg_type=cap.cfg_type, bar=cap.bar, offset=cap.offset, mult=mult)
        got.append(entry)
        ptr = cfg[ptr + 1]
    assert got == want
    bar4 = r.machine.proxy.bars[BAR4]
    assert (bar4.size, bar4.type) == (0x4000, 0xC)        # ffffc00c read back after all-ones
    maps = [e.fields["addr"] for e in r.trace.named("pci_bar_map") if e.fields["bar"] == BAR4]
    assert maps[0] == 0x2100 << 32                          # W 0x24 0x2100 in the CSV


def test_transitional_dataplane_fixed_boots_through_the_ioeventfd():
    scn = load(os.path.join(SCENARIOS, "modern-fixed.toml"))
    r = machine.run(scn)
    s = report.summary(r)
    assert s["outcome"] == "booted" and s["notifies_in_kernel"] == 36 and s["ioeventfd_signals"] == 36
    base, _ = _bar4_cpu(r)
    notify = base + VIRTIO_PCI_NOTIFY_OFF                    # queue 0: notify_off 0
    stores = [c for c, _ in report.hcall_pairs(r.trace) if c.fields["nr"] == papr.H_LOGICAL_CI_STORE
              and c.fields["r5"] == notify]
    assert len(stores) == 36
    # Each one taken in the kernel by the modern ioeventfd (no datamatch).
    writes = [e.fields for e in report.firmware_trace(r.trace).named("io_bus_write")   # SLOF's stage
              if e.fields["addr"] == notify]
    assert len(writes) == 36 and all(f["ret"] == "0" and "any data" in f["device"] for f in writes)
    ioctls = [e.fields for e in r.trace.named("ioeventfd_ioctl") if e.fields["addr"] == notify]
    assert ioctls and all(not f["flags"] & KVM_IOEVENTFD_FLAG_DATAMATCH for f in ioctls)
    # QEMU 2.7: page-per-vq, so BAR 4 carries a 4 MiB notify area; the
    # other stores (init, queue_select) still exit to QEMU.
    assert r.machine.proxy.queue_mem_mult == 0x1000
    assert not [e for e in r.trace.named("virtio_queue_notify") if e.fields["via"] == "userspace"]
    console = r.console.text()
    assert "Successfully loaded" in console and "KERNEL-ENTRY-OK" in console


def test_transitional_stall_is_the_legacy_stall():
    r = machine.run(load(os.path.join(SCENARIOS, "modern-stall.toml")))
    reqs = report.block_requests(r.trace)
    assert not any(q["completed"] for q in reqs)
    drops = [e for e in r.trace.named("virtio_blk_handle_output")
             if e.fields["dataplane"] == "already started: kick dropped"]
    assert len(drops) == len(reqs)
    assert [e.fields["kind"] for e in r.trace.named("virtio_transport")] == ["modern"]
    assert slof_release(r.scenario.slof).failed_line(0, 255).rstrip() in r.console.text()   # the message of the SLOF QEMU shipped


def test_any_length_ioeventfd_on_a_newer_kernel(scenario_file):
    """With KVM_CAP_IOEVENTFD_ANY_LENGTH QEMU registers the modern notify
    with length 0 and no datamatch; SLOF's 2-byte store still hits it."""
    r = _boot(scenario_file, iothread=True, kernel="4.4")
    base, _ = _bar4_cpu(r)
    notify = base + VIRTIO_PCI_NOTIFY_OFF
    ioctls = [e.fields for e in r.trace.named("ioeventfd_ioctl") if e.fields["addr"] == notify]
    assert ioctls and {f["len"] for f in ioctls} == {0}
    assert all(not f["flags"] & KVM_IOEVENTFD_FLAG_DATAMATCH for f in ioctls)
    writes = [e.fields for e in report.firmware_trace(r.trace).named("io_bus_write")   # SLOF's stage
              if e.fields["addr"] == notify]
    assert len(writes) == 36
    assert all(f["ret"] == "0" and f["len"] == 2 and " len 0 any data" in f["device"] for f in writes)
    s = report.summary(r)
    assert s["outcome"] == "booted" and s["notifies_in_kernel"] == 36


def test_legacy_stays_the_default(scenario_file):
    r = machine.run(load(scenario_file('[qemu]\nversion = "7.2"\n')))
    assert [e.fields["kind"] for e in r.trace.named("virtio_transport")] == ["legacy"]
    # BAR 0, and BAR 1 for the kernel stage's MSI-X table: never the modern BAR 4
    assert {e.fields["bar"] for e in r.trace.named("virtio_pci_access")} == {0, 1}
    assert BAR4 not in r.machine.proxy.bars


def test_disable_modern_knob_errors(scenario_file):
    with pytest.raises(ScenarioError, match=r"\[qemu\] disable_modern: QEMU 2.3 has no virtio 1.0"):
        load(scenario_file('[qemu]\nversion = "2.3"\ndisable_modern = false\n'))
    with pytest.raises(ScenarioError, match="given twice"):
        load(scenario_file('[qemu]\nversion = "2.7"\ndisable_modern = false\n"disable-modern" = false\n'))
    with pytest.raises(ScenarioError, match=r"disable_modern: expected true or false"):
        load(scenario_file('[qemu]\nversion = "2.7"\ndisable_modern = "off"\n'))
    assert load(scenario_file('[qemu]\nversion = "2.7"\n"disable-modern" = false\n')).disable_modern is False
