"""The kernel stage: after SLOF's hand-off the guest kernel (MMU on) resets
the virtio-blk device, drives it as Linux's virtio_pci + virtio_blk do and
reads a few pages. Its register accesses are loads and stores that KVM
emulates (KVM_MMIO_BUS first, else KVM_EXIT_MMIO to QEMU), so its
QUEUE_NOTIFY reaches the ioeventfd on any kernel: the 2015 bug lives only
in real mode. The layer-by-layer path is read off the trace."""

import hashlib
import os

import pytest

from sim import machine, report
from sim.abi import kvm as uapi
from sim.abi import papr
from sim.abi.kvm import KVM_EXIT_MMIO, KVM_MMIO_BUS
from sim.costs import Costs
from sim.cpu import PowerCPU, decode_loadstore, encode_loadstore
from sim.kvm.iobus import IoDevice
from sim.kvm.vcpu import SIM_GUEST_IDLE
from sim.kvm.vm import KernelConfig, KvmVm
from sim.mkdisk import build_disk
from sim.ram import GuestRAM
from sim.scenario import load
from sim.trace import KERNEL_STAGE_PHASE, Event, Trace
from tests.conftest import SCENARIOS


def run(name):
    return machine.run(load(os.path.join(SCENARIOS, name + ".toml")))


def kernel_events(r):
    return report.split_stages(r.trace)[1].events


def notify_paths(r):
    """For each kernel-stage notify: the events from the guest's store to
    the access's completion."""
    ev = kernel_events(r)
    addrs = {e.fields["addr"] for e in ev if e.name == "linux_virtqueue_notify"}
    paths = []
    for i, e in enumerate(ev):
        if e.name == "mmio_access" and e.fields["rw"] == "W" and e.fields["addr"] in addrs:
            j = next(k for k in range(i, len(ev)) if ev[k].name == "mmio_done")
            paths.append(ev[i:j + 1])
    return paths


def check_reads_match_the_disk(r, disk: bytes):
    reads = r.guest_result["linux"]["reads"]
    # The partition scan: one 64 KiB page-cache page at sector 0; an MBR
    # with a PReP partition asks for nothing more.
    assert [(q["sector"], q["count"]) for q in reads] == [(0, 128)]
    for q in reads:
        want = disk[512 * q["sector"]:512 * (q["sector"] + q["count"])]
        assert q["status"] == 0 and q["sha256"] == hashlib.sha256(want).hexdigest()


# -- the fixed configuration ---------------------------------------------------


def test_fixed_kernel_stage_notifies_by_ioeventfd_and_completes_by_irqfd():
    r = run("dataplane-fixed")
    s = report.summary(r)
    assert s["outcome"] == "booted" and s["kernel_stage"] == "done"
    assert r.guest_result["linux"]["transport"] == "legacy"
    assert r.guest_result["linux"]["interrupts"] == "MSI-X"
    ev = kernel_events(r)
    assert ev[0].name == "phase" and ev[0].fields["name"] == KERNEL_STAGE_PHASE
    assert any(e.name == "mmu_on" for e in ev)
    # The kernel reaches registers only by loads and stores: no H_LOGICAL_CI_*.
    assert not [e for e in ev if e.name == "hcall" and e.fields["nr"] in (papr.H_LOGICAL_CI_LOAD,
                                                                          papr.H_LOGICAL_CI_STORE)]
    paths = notify_paths(r)
    assert len(paths) == 1
    for p in paths:
        names = [e.name for e in p]
        assert names == ["mmio_access", "io_bus_write", "ioeventfd_signal", "mmio_done"]
        assert p[0].fields["byte_reversed"] and p[0].fields["size"] == 2   # sthbrx: iowrite16 on ppc64
        assert p[1].fields["via"] == "mmio" and p[1].fields["ret"] == "0" and p[1].fields["data"] == "0000"
        assert p[-1].actor == "kvm" and p[-1].fields["in_kernel"]
    # The first kernel kick reaches the main-loop handler (the device was
    # reset, so the dataplane stopped), which restarts the dataplane; the
    # guest notifier is then an irqfd, since Linux turned MSI-X on.
    irqfd = [e.fields for e in ev if e.name == "kvm_irqfd"]
    assert irqfd and irqfd[0]["assign"] and irqfd[0]["ret"] == "0"
    assert [e.actor for e in ev if e.name == "blk_complete"] == ["iothread"]
    injects = [e for e in ev if e.name == "irqfd_inject"]
    assert len(injects) == 1 and all(e.fields["gsi"] == irqfd[0]["gsi"] for e in injects)
    assert len([e for e in ev if e.name == "external_interrupt"]) == 1
    ints = [e.fields for e in ev if e.name == "linux_vring_interrupt"]
    assert [f["used_idx"] for f in ints] == [1] and all(f["isr"] is None for f in ints)   # MSI-X: no ISR read
    # The interrupt is taken with the in-kernel XICS: H_XIRR, H_EOI never exit.
    for nr in (papr.H_XIRR, papr.H_EOI, papr.H_CEDE):
        assert not [e for e in ev if e.name == "exit" and e.fields["nr"] == nr]
    check_reads_match_the_disk(r, build_disk())
    # 4.1 prints the partition list; its probe does not print the capacity (6.1's does)
    assert "logical blocks" not in r.console.text() and " vda: vda1" in r.console.text()


def test_kernel_stage_resets_the_device_and_reinitialises_it_like_linux():
    r = run("dataplane-fixed")
    ev = kernel_events(r)
    status = [e.fields["value"] for e in ev if e.name == "virtio_pci_access" and e.fields["reg"] == "STATUS"
              and e.fields["rw"] == "W"]
    assert status == [0, 1, 3, 7]            # reset, ACKNOWLEDGE, DRIVER, DRIVER_OK (legacy: no FEATURES_OK)
    assert [e.name for e in ev if e.name in ("dataplane_stop", "virtio_reset")] == ["dataplane_stop",
                                                                                    "virtio_reset"]
    regs = [(e.fields["rw"], e.fields["offset"]) for e in ev if e.name == "virtio_pci_access"]
    assert ("W", 8) in regs and ("W", 22) in regs and ("R", 22) in regs   # QUEUE_PFN, MSI_QUEUE_VECTOR
    feats = next(e.fields for e in ev if e.name == "virtio_features")
    assert feats["offered"] == r.machine.blk.host_features & 0xFFFFFFFF   # lwbrx through KVM_EXIT_MMIO
    # 4.1 accepts INDIRECT_DESC (28) and EVENT_IDX (29), QEMU 2.4 offers them
    assert feats["negotiated"] & (3 << 28) == 3 << 28
    assert feats["negotiated"] == feats["offered"] & 0x30000EF4   # its table on 2015's offer (RO: read-only disk)


def test_modern_kernel_stage_uses_the_modern_notify_area():
    r = run("modern-fixed")
    s = report.summary(r)
    assert s["kernel_stage"] == "done" and r.guest_result["linux"]["transport"] == "modern"
    assert s["kernel_notifies_in_kernel"] == 1 and s["kernel_notify_exits"] == 0
    ev = kernel_events(r)
    writes = [e.fields["value"] for e in ev if e.name == "virtio_pci_access" and e.fields["reg"] == "device_status"
              and e.fields["rw"] == "W"]
    assert writes == [0, 1, 3, 11, 15]       # ... FEATURES_OK (8) before DRIVER_OK
    check_reads_match_the_disk(r, build_disk())


# -- the stalled configuration -------------------------------------------------


def test_stalled_configuration_never_reaches_the_kernel_stage():
    r = run("dataplane-stall")
    s = report.summary(r)
    assert s["outcome"] == "stalled" and s["kernel_stage"] == "not reached"
    assert kernel_events(r) == []
    assert not r.trace.named("mmio_access")
    assert "linux" not in (r.guest_result or {})


# -- no iothread, 4.0 kernel: the bug is real mode only -------------------------


def test_old_kernel_without_iothread_kernel_notify_goes_via_ioeventfd():
    """Every SLOF notify exits (no in-kernel H_LOGICAL_CI_STORE on 4.0), but
    the kernel's MMU-on store to the same register is emulated by KVM,
    which checks KVM_MMIO_BUS first: the main loop's ioeventfd takes it."""
    r = run("no-iothread-old-kernel")
    s = report.summary(r)
    assert s["notify_exits"] == 36 and s["notifies_in_kernel"] == 0        # SLOF's stage
    assert s["kernel_notifies_in_kernel"] == 1 and s["kernel_notify_exits"] == 0
    for p in notify_paths(r):
        assert [e.name for e in p] == ["mmio_access", "io_bus_write", "ioeventfd_signal", "mmio_done"]
        assert "main loop" in p[2].fields["eventfd"]
    ev = kernel_events(r)
    # The driver's DRIVER_OK creates the host notifier signalled (2015
    # virtio-pci); the partition scan's kick signals the same eventfd before
    # the main loop reads it, so one read serves both: one queue notify.
    assert [e.name for e in ev if e.name in ("host_notifier_init", "ioeventfd_signal", "virtio_queue_notify")] == [
        "host_notifier_init", "ioeventfd_signal", "virtio_queue_notify"]
    assert [e.fields["via"] for e in ev if e.name == "virtio_queue_notify"] == ["ioeventfd"]
    # Without a dataplane QEMU sends the MSI itself: KVM_IRQ_LINE, no irqfd.
    assert len([e for e in ev if e.name == "spapr_msi_write"]) == 1 and s["kernel_irqfd_interrupts"] == 0
    assert s["kernel_interrupts"] == 1
    check_reads_match_the_disk(r, build_disk())


# -- QEMU -kernel: the 2015 workaround --------------------------------------------


def test_direct_kernel_boots_without_slof_touching_the_disk():
    r = run("direct-kernel-old-kernel")
    s = report.summary(r)
    assert s["outcome"] == "booted" and s["kernel_stage"] == "done"
    fw = report.firmware_trace(r.trace)
    assert fw.named("boot_from_memory") and not fw.named("virtio_blk_submit")
    # QEMU 2.3's SLOF 20150313 sets the queue up at PCI probe (pci-device_1af4_1001.fs),
    # then never opens the device
    assert [e.fields["reg"] for e in fw.events if e.name == "virtio_pci_access"] == [
        "QUEUE_SEL", "QUEUE_NUM", "QUEUE_PFN"]
    assert s["enable_cap"]["called"] is False and s["kernel_notifies_in_kernel"] == 1
    assert s["kernel_irqfd_interrupts"] == 1
    assert not r.trace.named("virtio_timeout")
    assert not [e for e in r.trace.events if e.name == "virtio_blk_handle_output"
                and e.fields["dataplane"] == "already started: kick dropped"]
    console = r.console.text()
    assert "KERNEL-ENTRY-OK" in console and "Trying to load" not in console
    check_reads_match_the_disk(r, build_disk())


def test_direct_kernel_on_the_stall_stack_differs_from_the_stall_only_in_the_boot_path():
    stall, direct = load(os.path.join(SCENARIOS, "dataplane-stall.toml")), \
        load(os.path.join(SCENARIOS, "direct-kernel-old-kernel.toml"))
    for key in ("kernel_version", "kvm", "qemu_version", "enable_logical_ci", "iothread", "ioeventfd"):
        assert getattr(stall, key) == getattr(direct, key)
    assert (stall.kernel, direct.kernel) == ("disk", "direct")


# -- KVM_EXIT_MMIO: kvm_run.mmio.data is the guest's memory image on both hosts ---


BAR = 0x2_0000_0000          # outside RAM: no memslot, so an HDSI


def make_vcpu(host_endian):
    vm = KvmVm(KernelConfig("4.0", "HV", host_endian), GuestRAM(0x10000), Trace(), Costs())
    cpu = PowerCPU(vm.ram)
    cpu.msr_dr = True
    return vm, vm.create_vcpu(cpu), cpu


@pytest.mark.parametrize("host_endian", ["big", "little"])
@pytest.mark.parametrize("size,byte_reversed,value,image", [
    (1, False, 0xA5, "a5"),
    (2, False, 0x1234, "1234"),           # sth: big-endian guest
    (2, True, 0x1234, "3412"),            # sthbrx: iowrite16 on ppc64
    (4, False, 0x12345678, "12345678"),
    (4, True, 0x12345678, "78563412"),    # stwbrx: iowrite32
    (8, False, 0x0102030405060708, "0102030405060708"),
])
async def test_kvm_exit_mmio_store_data_is_the_guest_memory_image(autojump_clock, host_endian, size,
                                                                  byte_reversed, value, image):
    vm, vcpu, cpu = make_vcpu(host_endian)

    async def guest():
        await cpu.store(BAR + 8, size, value, byte_reversed=byte_reversed)

    vcpu.load_guest(guest())
    run = await vcpu.ioctl_run()
    assert run.exit_reason == KVM_EXIT_MMIO == 6
    raw = run.mmio
    layout = uapi.kvm_run_mmio(host_endian == "big")
    m = layout.parse(raw)
    assert (m.phys_addr, m.len, m.is_write) == (BAR + 8, size, 1)
    assert m.data[:size].hex() == image                                # the same on both hosts
    assert raw[:8] == (BAR + 8).to_bytes(8, host_endian)               # the u64 field is host-endian
    assert (await vcpu.ioctl_run()).exit_reason == SIM_GUEST_IDLE


@pytest.mark.parametrize("host_endian", ["big", "little"])
@pytest.mark.parametrize("size,byte_reversed,image,want", [
    (1, False, "5a", 0x5A),
    (2, False, "abcd", 0xABCD),           # lhz
    (2, True, "abcd", 0xCDAB),            # lhbrx: ioread16
    (4, False, "01020304", 0x01020304),
    (4, True, "01020304", 0x04030201),    # lwbrx: ioread32
    (8, False, "0102030405060708", 0x0102030405060708),   # ld (ldbrx: not emulated by 4.x KVM)
])
async def test_kvm_exit_mmio_load_completes_from_the_memory_image(autojump_clock, host_endian, size,
                                                                   byte_reversed, image, want):
    vm, vcpu, cpu = make_vcpu(host_endian)
    got = []

    async def guest():
        got.append(await cpu.load(BAR, size, byte_reversed=byte_reversed))

    vcpu.load_guest(guest())
    run = await vcpu.ioctl_run()
    m = run.get_mmio()
    assert run.exit_reason == KVM_EXIT_MMIO and (m.phys_addr, m.len, m.is_write) == (BAR, size, 0)
    run.set_mmio(BAR, bytes.fromhex(image), size, False)     # what QEMU's address_space_rw put there
    assert (await vcpu.ioctl_run()).exit_reason == SIM_GUEST_IDLE
    assert got == [want]
    rt = decode_loadstore(cpu.last_inst)[3]
    assert cpu.gpr[rt] == want


@pytest.mark.parametrize("host_endian", ["big", "little"])
async def test_mmio_store_matching_an_ioeventfd_never_exits(autojump_clock, host_endian):
    """QEMU registers the legacy notify ioeventfd with its datamatch in host
    order; the sthbrx image of queue 1 matches it on either host."""
    vm, vcpu, cpu = make_vcpu(host_endian)
    efd = vm.fds.eventfd("notify")
    datamatch = 0x0100 if host_endian == "big" else 0x0001     # bswap16(1) in target order, then host order
    raw = uapi.kvm_ioeventfd.build(dict(datamatch=datamatch, addr=BAR + 16, len=2, fd=efd.fd,
                                        flags=uapi.KVM_IOEVENTFD_FLAG_DATAMATCH))
    assert vm.ioctl_ioeventfd(raw) == 0

    async def guest():
        await cpu.store(BAR + 16, 2, 1, byte_reversed=True)

    vcpu.load_guest(guest())
    assert (await vcpu.ioctl_run()).exit_reason == SIM_GUEST_IDLE    # no KVM_EXIT_MMIO
    assert efd.signals == 1
    assert [e.fields["data"] for e in vm.trace.named("io_bus_write")] == ["0100"]


async def test_mmio_load_from_an_in_kernel_device_completes_without_exit(autojump_clock):
    vm, vcpu, cpu = make_vcpu("little")

    class Reg(IoDevice):
        def read(self, addr, length, buf):
            buf[:length] = bytes.fromhex("11223344")[:length]
            return 0

    assert vm.buses[KVM_MMIO_BUS].register_dev(BAR, 4, Reg()) == 0
    got = []

    async def guest():
        got.append(await cpu.load(BAR, 4))

    vcpu.load_guest(guest())
    assert (await vcpu.ioctl_run()).exit_reason == SIM_GUEST_IDLE
    assert got == [0x11223344]


def test_instruction_encodings_round_trip():
    for size in (1, 2, 4, 8):
        for store in (False, True):
            for rev in ((False, True) if size > 1 else (False,)):
                word = encode_loadstore(size, store, rev, 10, 9)
                assert decode_loadstore(word) == (size, store, rev, 10, 9)
    assert encode_loadstore(2, True, True, 10, 9) == 0x7D404F2C        # sthbrx r10,0,r9
    assert decode_loadstore(0x60000000) is None                         # nop


def test_le_host_boots_the_kernel_stage_the_same_way():
    be, le = report.summary(run("dataplane-fixed")), report.summary(run("dataplane-fixed-le-host"))
    for key in ("kernel_stage", "kernel_notifies_in_kernel", "kernel_mmio_exits", "kernel_irqfd_interrupts",
                "kernel_requests_completed"):
        assert be[key] == le[key]


# -- the other paths ---------------------------------------------------------------


def test_without_an_ioeventfd_the_kernel_notify_is_a_kvm_exit_mmio(scenario_file):
    """ioeventfd=off (no iothread): nothing on KVM_MMIO_BUS, so the store
    exits with KVM_EXIT_MMIO and QEMU's address_space_rw hands QUEUE_NOTIFY
    the value the guest meant (sthbrx image 00 00 -> LE register 0)."""
    base = open(os.path.join(SCENARIOS, "no-iothread-old-kernel.toml")).read()
    text = base.split("[expect]")[0].replace("iothread = false", "iothread = false\nioeventfd = false")
    r = machine.run(load(scenario_file(text)))
    s = report.summary(r)
    assert s["outcome"] == "booted" and s["kernel_notify_exits"] == 1 and s["kernel_notifies_in_kernel"] == 0
    for p in notify_paths(r):
        names = [e.name for e in p]
        assert names[:3] == ["mmio_access", "io_bus_write", "exit"]
        assert p[1].fields["ret"] == "-EOPNOTSUPP"
        assert p[2].fields["reason"] == "KVM_EXIT_MMIO" and p[2].fields["data"] == "0000"
        access = next(e for e in p if e.name == "virtio_pci_access")
        assert (access.fields["reg"], access.fields["value"]) == ("QUEUE_NOTIFY", 0)
        assert p[-1].actor == "qemu-vcpu" and not p[-1].fields["in_kernel"]
    check_reads_match_the_disk(r, build_disk())


def test_intx_fallback_reads_isr_in_the_interrupt_handler(monkeypatch):
    """Without MSI-X (vp_find_vqs' last resort) the handler is vp_interrupt:
    it reads ISR, which acknowledges the interrupt, then the used ring."""
    from firmware_model.linux import virtio_blk as linux_virtio_blk

    async def no_msix(self, cap, nvec):
        return False
    monkeypatch.setattr(linux_virtio_blk.LinuxVirtioBlk, "_enable_msix", no_msix)
    r = run("dataplane-fixed")
    assert report.outcome(r) == "booted" and r.guest_result["linux"]["interrupts"] == "INTx"
    ev = kernel_events(r)
    ints = [e.fields for e in ev if e.name == "linux_vring_interrupt"]
    assert len(ints) == 1 and all(f["isr"] == 1 for f in ints)
    assert not [e for e in ev if e.name == "irqfd_inject"]       # INTx: QEMU's main loop raises it
    assert [e.fields["source"] for e in ev if e.name == "irq"] == ["INTx"]
    check_reads_match_the_disk(r, build_disk())


class _Result:
    def __init__(self, guest_result, hung=False, names=()):
        self.guest_result, self.hung = guest_result, hung
        tr = Trace()
        tr.events = [Event(0, "guest", n, {}) for n in names]
        self.trace = tr


def test_outcome_booted_means_the_kernel_stage_completed():
    assert report.outcome(_Result({"stage": "kernel", "handed_off": True, "linux": {"ok": True}})) == "booted"
    assert report.outcome(_Result({"stage": "kernel", "linux": {"ok": True}})) == "failed"   # no hand-off seen
    assert report.outcome(_Result({"stage": "kernel", "linux": {"ok": False}}, names=["linux_hung_task"])) \
        == "stalled"
    assert report.outcome(_Result({"stage": "kernel", "linux": {"ok": False}})) == "failed"
    assert report.outcome(_Result({"stage": "prompt"}, names=["virtio_timeout"])) == "stalled"
    assert report.outcome(_Result({"stage": "prompt"})) == "failed"


def test_explain_follows_the_kernel_read_when_slof_read_nothing():
    steps = report.diagnose(run("direct-kernel-old-kernel"))
    text = " | ".join(s["text"] for s in steps)
    for part in ("read sector 0 x128", "HDSI", "taken by ioeventfd", "no exit", "XICS irq", "external interrupt",
                 "status 0"):
        assert part in text
