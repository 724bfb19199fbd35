"""Unit tests of the KVM layer (sim/kvm) against /work/shared/reference/kvm.md.

Every test drives the layer through the interfaces the real stack has:
VM ioctls built from the uapi structs (KVM_ENABLE_CAP, KVM_IOEVENTFD,
KVM_IRQFD), KVM_RUN on a vcpu whose guest executes `sc 1`, and
kvm_io_bus devices. Tests that await run on pytest-trio's autojump clock,
so the cost sleeps take no wall time.
"""

import pytest

from sim.abi import kvm as uapi
from sim.abi import papr
from sim.abi.kvm import (
    EBADF, EBUSY, EEXIST, EINVAL, ENOENT, ENOSPC, EOPNOTSUPP, KVM_CAP_PPC_ENABLE_HCALL,
    KVM_EXIT_PAPR_HCALL, KVM_FAST_MMIO_BUS, KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN,
    KVM_IOEVENTFD_FLAG_PIO, KVM_MMIO_BUS, KVM_PIO_BUS, NR_IOBUS_DEVS,
)
from sim.costs import Costs
from sim.cpu import PowerCPU
from sim.kvm import book3s
from sim.kvm.iobus import IoDevice, KvmIoBus
from sim.kvm.vcpu import SIM_GUEST_IDLE
from sim.kvm.vm import KernelConfig, KvmVm
from sim.ram import GuestRAM
from sim.trace import Trace

LOAD, STORE = papr.H_LOGICAL_CI_LOAD, papr.H_LOGICAL_CI_STORE
BAR = 0x2_0000_0000          # an MMIO address outside guest RAM, like a PHB BAR
NOTIFY = BAR + 16            # virtio-pci legacy QUEUE_NOTIFY
U64 = (1 << 64) - 1


@pytest.fixture(autouse=True)
def _clock(autojump_clock):
    """Every test runs on simulated time (trace timestamps, cost sleeps)."""
    return autojump_clock


# -- helpers -------------------------------------------------------------------


def make_vm(version="4.1", flavour="HV", host_endian="big", logical_ci=None) -> KvmVm:
    return KvmVm(KernelConfig(version, flavour, host_endian, logical_ci), GuestRAM(0x10000), Trace(), Costs())


def enable_cap(vm, hcall, on=1, flags=0, cap=KVM_CAP_PPC_ENABLE_HCALL) -> int:
    raw = uapi.kvm_enable_cap.build(dict(cap=cap, flags=flags, args=[hcall, on, 0, 0]))
    return vm.ioctl_enable_cap(raw)


def ioeventfd(vm, addr, length, efd=None, datamatch=None, flags=0, fd=None) -> int:
    if datamatch is not None:
        flags |= KVM_IOEVENTFD_FLAG_DATAMATCH
    raw = uapi.kvm_ioeventfd.build(dict(datamatch=datamatch or 0, addr=addr, len=length,
                                        fd=efd.fd if fd is None else fd, flags=flags))
    return vm.ioctl_ioeventfd(raw)


def irqfd(vm, fd, gsi) -> int:
    return vm.ioctl_irqfd(uapi.kvm_irqfd.build(dict(fd=fd, gsi=gsi, flags=0, resamplefd=0)))


class Dev(IoDevice):
    """An in-kernel device that records every access it is offered."""

    def __init__(self, name, accept=True, data=b""):
        self.name = name
        self.accept = accept
        self.data = data
        self.writes = []
        self.reads = []

    def write(self, addr, length, buf):
        self.writes.append((addr, length, bytes(buf[:length])))
        return 0 if self.accept else -EOPNOTSUPP

    def read(self, addr, length, buf):
        self.reads.append((addr, length))
        if not self.accept:
            return -EOPNOTSUPP
        buf[:length] = self.data[:length]
        return 0

    def describe(self):
        return self.name


class Guest:
    """A vcpu whose guest runs a list of hcalls, each with r4..r12 given."""

    def __init__(self, vm, calls):
        self.cpu = PowerCPU(vm.ram)
        self.vcpu = vm.create_vcpu(self.cpu)
        self.results = []   # (r3, r4..r12) as the guest saw them after each sc 1
        self.vcpu.load_guest(self._main(calls))

    async def _main(self, calls):
        for nr, args in calls:
            r3 = await self.cpu.hcall(nr, *args)
            self.results.append((r3, list(self.cpu.gpr[4:13])))
        return "done"

    async def run(self, userspace=None):
        """QEMU's vcpu loop: KVM_RUN until the guest ends. Returns the exits
        as (nr, args, r3 at exit time); userspace(papr_hcall) answers each."""
        exits = []
        while True:
            run = await self.vcpu.ioctl_run()
            if run.exit_reason == SIM_GUEST_IDLE:
                assert run.guest_result == "done"
                return exits
            assert run.exit_reason == KVM_EXIT_PAPR_HCALL
            hc = run.papr_hcall
            exits.append((hc.nr, list(hc.args), self.cpu.gpr[3]))
            if userspace is not None:
                userspace(hc)
            else:
                hc.ret = papr.H_SUCCESS


async def one_hcall(vm, nr, *args, userspace=None):
    """Run one hcall; return (r3 as signed, r4 the guest sees, exits)."""
    g = Guest(vm, [(nr, args)])
    exits = await g.run(userspace)
    r3, regs = g.results[0]
    return papr.from_reg(r3), regs[0], exits


# -- enabled_hcalls bitmap and the exit protocol -------------------------------


@pytest.mark.parametrize("flavour", ["HV", "PR"])
async def test_logical_ci_bits_clear_by_default_so_store_exits_despite_ioeventfd(flavour):
    vm = make_vm(flavour=flavour)
    assert len(vm.enabled_hcalls) == book3s.MAX_HCALL_OPCODE // 4 + 1 == 200
    assert not vm.hcall_enabled(LOAD) and not vm.hcall_enabled(STORE)
    assert vm.hcall_enabled(papr.H_CEDE)          # a default-list hcall is on
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 2, efd, datamatch=0) == 0
    ret, _, exits = await one_hcall(vm, STORE, 2, NOTIFY, 0)
    assert [e[0] for e in exits] == [STORE]
    assert efd.count == 0 and efd.signals == 0    # the bus was never tried
    assert ret == papr.H_SUCCESS                  # what our userspace answered


async def test_exit_exposes_nr_and_nine_args_and_reentry_writes_them_back():
    vm = make_vm()
    regs_in = [2, NOTIFY, 0x1234, 0x5, 0x6, 0x7, 0x8, 0x9, 0xA]   # r4..r12

    def userspace(hc):
        assert hc.nr == STORE
        hc.ret = papr.H_PARAMETER
        hc.args[:] = [0x100 + i for i in range(9)]

    g = Guest(vm, [(STORE, regs_in)])
    exits = await g.run(userspace)
    (nr, args, r3_at_exit), = exits
    assert nr == STORE
    assert args == regs_in                        # args[0..8] = r4..r12
    assert r3_at_exit == STORE                    # KVM did not write r3 (no H_TOO_HARD leak)
    r3, regs = g.results[0]
    assert r3 == papr.to_reg(papr.H_PARAMETER)    # ret -> r3, as a 64-bit GPR
    assert papr.from_reg(r3) == papr.H_PARAMETER
    assert regs == [0x100 + i for i in range(9)]  # all nine args -> r4..r12
    assert vm.vcpus[0].hcall_needed is False


async def test_enabled_store_to_ioeventfd_completes_in_kernel():
    vm = make_vm()
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 2, efd, datamatch=0) == 0
    assert enable_cap(vm, STORE) == 0
    ret, r4, exits = await one_hcall(vm, STORE, 2, NOTIFY, 0)
    assert exits == []
    assert ret == papr.H_SUCCESS
    assert r4 == 2                                # store leaves r4 (size) alone
    assert efd.count == 1


async def test_store_bit_does_not_enable_load():
    vm = make_vm()
    dev = Dev("reg", data=b"\x12\x34")
    assert vm.buses[KVM_MMIO_BUS].register_dev(BAR, 0x100, dev) == 0
    assert enable_cap(vm, STORE) == 0
    _, _, exits = await one_hcall(vm, LOAD, 2, BAR)
    assert [e[0] for e in exits] == [LOAD] and dev.reads == []
    assert enable_cap(vm, LOAD) == 0
    ret, r4, exits = await one_hcall(vm, LOAD, 2, BAR)
    assert exits == [] and ret == papr.H_SUCCESS and r4 == 0x1234


async def test_disabling_at_runtime_sends_hcalls_back_to_userspace():
    vm = make_vm()
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 2, efd) == 0
    assert enable_cap(vm, STORE) == 0
    assert enable_cap(vm, STORE) == 0             # idempotent
    g = Guest(vm, [(STORE, (2, NOTIFY, 0))])
    assert await g.run() == [] and efd.count == 1
    assert enable_cap(vm, STORE, on=0) == 0
    assert not vm.hcall_enabled(STORE)
    _, _, exits = await one_hcall(vm, STORE, 2, NOTIFY, 0)
    assert [e[0] for e in exits] == [STORE] and efd.count == 1


async def test_hcalls_above_max_opcode_are_not_gated_and_do_not_raise():
    vm = make_vm()
    for nr in (papr.KVMPPC_H_RTAS, papr.KVMPPC_H_LOGICAL_MEMOP, U64):
        _, _, exits = await one_hcall(vm, nr, 1, 2, 3)
        assert [(e[0], e[1][:3]) for e in exits] == [(nr, [1, 2, 3])]
    assert not vm.trace.named("hcall_gate") or all(
        e.fields["nr"] <= book3s.MAX_HCALL_OPCODE for e in vm.trace.named("hcall_gate"))


# -- KVM_ENABLE_CAP(KVM_CAP_PPC_ENABLE_HCALL) ----------------------------------


async def test_check_extension_reports_enable_hcall():
    vm = make_vm()
    assert vm.ioctl_check_extension(KVM_CAP_PPC_ENABLE_HCALL) == 1
    assert vm.ioctl_check_extension(0x7FFF) == 0


@pytest.mark.parametrize("flavour", ["HV", "PR"])
@pytest.mark.parametrize("hcall", [LOAD, STORE])
async def test_enable_cap_sets_and_clears_only_that_bit(flavour, hcall):
    vm = make_vm(flavour=flavour)
    before = bytes(vm.enabled_hcalls)
    assert enable_cap(vm, hcall, on=1) == 0
    after = bytes(vm.enabled_hcalls)
    assert [i for i in range(len(before)) if before[i] != after[i]] == [hcall // 4]
    assert hcall // 4 in (15, 16) and vm.hcall_enabled(hcall)
    assert enable_cap(vm, hcall, on=0) == 0
    assert bytes(vm.enabled_hcalls) == before


@pytest.mark.parametrize("case, kwargs", [
    ("flags set", dict(hcall=STORE, flags=1)),
    ("flags high bit", dict(hcall=STORE, flags=0x8000_0000)),
    ("args[1] == 2", dict(hcall=STORE, on=2)),
    ("args[1] huge", dict(hcall=STORE, on=1 << 63)),
    ("not a multiple of 4 (bit 16)", dict(hcall=STORE + 1)),
    ("not a multiple of 4 (bit 15)", dict(hcall=LOAD + 2)),
    ("above MAX_HCALL_OPCODE", dict(hcall=book3s.MAX_HCALL_OPCODE + 4)),
    ("H_RTAS", dict(hcall=papr.KVMPPC_H_RTAS)),
    ("KVMPPC_H_LOGICAL_MEMOP", dict(hcall=papr.KVMPPC_H_LOGICAL_MEMOP)),
    ("H_GET_TERM_CHAR not implemented", dict(hcall=papr.H_GET_TERM_CHAR)),
    ("H_PUT_TERM_CHAR not implemented", dict(hcall=papr.H_PUT_TERM_CHAR)),
    ("H_LOGICAL_CACHE_LOAD not implemented", dict(hcall=0x44)),
    ("another capability", dict(hcall=STORE, cap=uapi.KVM_CAP_PPC_FIXUP_HCALL)),
])
async def test_enable_cap_einval_leaves_bitmap_alone(case, kwargs):
    vm = make_vm()
    before = bytes(vm.enabled_hcalls)
    assert enable_cap(vm, **kwargs) == -EINVAL, case
    assert bytes(vm.enabled_hcalls) == before, case


@pytest.mark.parametrize("hcall", [STORE + 1, LOAD + 2, LOAD - 1, book3s.MAX_HCALL_OPCODE + 4,
                                   papr.KVMPPC_H_RTAS, U64])
async def test_enable_cap_range_and_alignment_checked_before_implemented(hcall):
    """The range and multiple-of-4 checks stand on their own, whatever the
    kernel's implemented list says."""
    vm = make_vm()
    vm.hcall_implemented = lambda nr: True
    before = bytes(vm.enabled_hcalls)
    assert enable_cap(vm, hcall) == -EINVAL
    assert bytes(vm.enabled_hcalls) == before


async def test_enable_cap_flags_checked_even_when_disabling():
    vm = make_vm()
    assert enable_cap(vm, STORE) == 0
    assert enable_cap(vm, STORE, on=0, flags=2) == -EINVAL
    assert vm.hcall_enabled(STORE)


@pytest.mark.parametrize("kernel", [dict(version="4.0"), dict(version="3.19"),
                                    dict(version="4.1", logical_ci=False)])
async def test_kernel_without_logical_ci_handlers_rejects_and_always_exits(kernel):
    vm = make_vm(**kernel)
    assert enable_cap(vm, LOAD) == -EINVAL
    assert enable_cap(vm, STORE) == -EINVAL
    assert not vm.hcall_enabled(LOAD) and not vm.hcall_enabled(STORE)
    assert enable_cap(vm, papr.H_CEDE, on=0) == 0      # implemented hcalls still toggle
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 2, efd) == 0
    # Even with the bit forced on, this kernel has no handler: userspace it is.
    vm.enabled_hcalls[STORE // 4] = 1
    _, _, exits = await one_hcall(vm, STORE, 2, NOTIFY, 0)
    assert [e[0] for e in exits] == [STORE] and efd.count == 0


async def test_kernel_4_1_implements_logical_ci():
    vm = make_vm(version="4.1")
    assert vm.hcall_implemented(LOAD) and vm.hcall_implemented(STORE)
    assert not make_vm(version="4.0").hcall_implemented(STORE)


# -- H_LOGICAL_CI_LOAD/STORE: sizes and the big-endian buffer -------------------


@pytest.mark.parametrize("host_endian", ["big", "little"])
@pytest.mark.parametrize("size", [1, 2, 4, 8])
async def test_store_puts_big_endian_value_on_bus(host_endian, size):
    vm = make_vm(host_endian=host_endian)
    dev = Dev("reg")
    assert vm.buses[KVM_MMIO_BUS].register_dev(BAR, 0x100, dev) == 0
    assert enable_cap(vm, STORE) == 0
    val = 0x1122334455667788
    ret, _, exits = await one_hcall(vm, STORE, size, BAR + 8, val)
    assert exits == [] and ret == papr.H_SUCCESS
    expected = (val & ((1 << (8 * size)) - 1)).to_bytes(size, "big")
    assert dev.writes == [(BAR + 8, size, expected)]
    assert expected == {1: b"\x88", 2: b"\x77\x88", 4: b"\x55\x66\x77\x88",
                        8: bytes.fromhex("1122334455667788")}[size]


@pytest.mark.parametrize("host_endian", ["big", "little"])
@pytest.mark.parametrize("size, r4", [(1, 0xA1), (2, 0xA1B2), (4, 0xA1B2C3D4), (8, 0xA1B2C3D4E5F60718)])
async def test_load_reads_big_endian_into_r4_zero_extended(host_endian, size, r4):
    vm = make_vm(host_endian=host_endian)
    dev = Dev("reg", data=bytes.fromhex("A1B2C3D4E5F60718"))
    assert vm.buses[KVM_MMIO_BUS].register_dev(BAR, 0x100, dev) == 0
    assert enable_cap(vm, LOAD) == 0
    ret, got, exits = await one_hcall(vm, LOAD, size, BAR + 4, 0xFFFF_FFFF_FFFF_FFFF)
    assert exits == [] and ret == papr.H_SUCCESS
    assert dev.reads == [(BAR + 4, size)]
    assert got == r4


@pytest.mark.parametrize("hcall", [LOAD, STORE])
@pytest.mark.parametrize("size", [0, 3, 5, 6, 7, 16, 1 << 40, U64])
async def test_bad_size_is_too_hard_not_h_parameter(hcall, size):
    """KVM never answers H_PARAMETER: the size goes out to userspace untouched."""
    vm = make_vm()
    dev = Dev("reg", data=bytes(8))
    assert vm.buses[KVM_MMIO_BUS].register_dev(BAR, 0x100, dev) == 0
    assert enable_cap(vm, hcall) == 0
    _, _, exits = await one_hcall(vm, hcall, size, BAR, 0)
    (nr, args, r3_at_exit), = exits
    assert nr == hcall and args[0] == size and args[1] == BAR
    assert r3_at_exit == hcall                     # H_TOO_HARD never reached r3
    assert dev.reads == [] and dev.writes == []


@pytest.mark.parametrize("hcall", [LOAD, STORE])
async def test_miss_on_bus_exits_with_registers_untouched(hcall):
    vm = make_vm()
    dev = Dev("elsewhere", data=bytes(8))
    assert vm.buses[KVM_MMIO_BUS].register_dev(BAR + 0x1000, 0x10, dev) == 0
    assert enable_cap(vm, hcall) == 0
    regs = [4, BAR, 0xDEAD, 1, 2, 3, 4, 5, 6]
    _, _, exits = await one_hcall(vm, hcall, *regs)
    (nr, args, r3_at_exit), = exits
    assert (nr, args, r3_at_exit) == (hcall, regs, hcall)
    assert dev.reads == [] and dev.writes == []


async def test_address_in_guest_ram_still_goes_to_bus_and_punts():
    vm = make_vm()
    assert enable_cap(vm, STORE) == 0
    _, _, exits = await one_hcall(vm, STORE, 4, 0x100, 7)
    assert [e[0] for e in exits] == [STORE]
    assert vm.ram.read(0x100, 4) == bytes(4)       # KVM never wrote guest RAM


# -- kvm_io_bus ---------------------------------------------------------------


@pytest.mark.parametrize("addr, length, hit", [
    (0x1000, 8, True), (0x1000, 1, True), (0x1004, 4, True), (0x1007, 1, True),
    (0x1006, 4, False),   # runs past the end
    (0x0FFE, 4, False),   # starts before
    (0x0FFF, 1, False), (0x1008, 1, False),
    (0x0FF8, 0x20, False),  # covers the device but is not contained in it
])
def test_bus_matches_by_containment(addr, length, hit):
    bus = KvmIoBus()
    dev = Dev("d")
    assert bus.register_dev(0x1000, 8, dev) == 0
    ret, who = bus.write(addr, length, bytes(length))
    assert (ret, who) == ((0, dev) if hit else (-EOPNOTSUPP, None))
    assert len(dev.writes) == (1 if hit else 0)
    ret, who = bus.read(addr, length, bytearray(max(length, 8)))
    assert (ret, who) == ((0, dev) if hit else (-EOPNOTSUPP, None))


def test_bus_zero_length_device_matches_exact_address_only():
    bus = KvmIoBus()
    dev = Dev("d")
    assert bus.register_dev(0x2000, 0, dev) == 0
    for length in (1, 2, 4, 8):
        assert bus.write(0x2000, length, bytes(length))[0] == 0
    assert bus.write(0x2001, 1, b"\0") == (-EOPNOTSUPP, None)
    assert bus.write(0x1FFF, 2, b"\0\0") == (-EOPNOTSUPP, None)


def test_bus_first_accepting_device_in_sorted_order_wins():
    bus = KvmIoBus()
    wide = Dev("wide")          # (0x1000, 0x10): sorts after the narrower range
    narrow = Dev("narrow")      # (0x1000, 0x8)
    later = Dev("later")
    assert bus.register_dev(0x1000, 0x10, wide) == 0
    assert bus.register_dev(0x1000, 0x8, narrow) == 0
    assert bus.register_dev(0x1000, 0x20, later) == 0
    assert bus.write(0x1000, 4, bytes(4)) == (0, narrow)
    assert (len(narrow.writes), len(wide.writes), len(later.writes)) == (1, 0, 0)
    narrow.accept = False       # declines: the next matching device is tried
    assert bus.write(0x1000, 4, bytes(4)) == (0, wide)
    assert (len(narrow.writes), len(wide.writes), len(later.writes)) == (2, 1, 0)
    wide.accept = False
    assert bus.write(0x1000, 4, bytes(4)) == (0, later)
    later.accept = False        # nobody takes it: falls through to userspace
    assert bus.write(0x1000, 4, bytes(4)) == (-EOPNOTSUPP, None)
    assert (len(narrow.writes), len(wide.writes), len(later.writes)) == (4, 3, 2)
    # An access only the wider ranges contain never reaches the narrow one.
    later.accept = True
    assert bus.write(0x100C, 4, bytes(4)) == (0, later)
    assert len(narrow.writes) == 4 and len(wide.writes) == 4


def test_bus_read_falls_through_to_next_device():
    bus = KvmIoBus()
    a, b = Dev("a", accept=False), Dev("b", data=b"\x01\x02")
    assert bus.register_dev(0x1000, 4, a) == 0
    assert bus.register_dev(0x1000, 8, b) == 0
    buf = bytearray(8)
    assert bus.read(0x1000, 2, buf) == (0, b)
    assert buf[:2] == b"\x01\x02" and a.reads == [(0x1000, 2)]


def test_bus_unregister():
    bus = KvmIoBus()
    dev = Dev("d")
    assert bus.register_dev(0x1000, 4, dev) == 0
    assert bus.unregister_dev(dev) == 0
    assert bus.write(0x1000, 4, bytes(4)) == (-EOPNOTSUPP, None)
    assert bus.unregister_dev(dev) == -ENOENT


async def test_bus_device_limit_excludes_ioeventfds_from_the_count():
    vm = make_vm()
    bus = vm.buses[KVM_MMIO_BUS]
    efds = [vm.fds.eventfd(f"e{i}") for i in range(3)]
    assert ioeventfd(vm, 0x10, 4, efds[0]) == 0       # ioeventfds do not count
    assert ioeventfd(vm, 0x20, 4, efds[1]) == 0
    for i in range(NR_IOBUS_DEVS):
        assert bus.register_dev(0x1_0000 + 16 * i, 8, IoDevice()) == 0
    assert bus.register_dev(0x9_0000, 8, IoDevice()) == -ENOSPC
    # The kernel's check looks at the bus, not at what is being added, so a
    # full bus refuses an ioeventfd too.
    assert ioeventfd(vm, 0x30, 4, efds[2]) == -ENOSPC
    assert len(vm.ioeventfds) == 2


# -- KVM_IOEVENTFD ------------------------------------------------------------


async def test_ioeventfd_flag_values():
    assert (KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_PIO, KVM_IOEVENTFD_FLAG_DEASSIGN,
            uapi.KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY, uapi.KVM_IOEVENTFD_VALID_FLAG_MASK) == (1, 2, 4, 8, 0x1F)
    assert uapi.kvm_ioeventfd.sizeof() == 64 and uapi.kvm_enable_cap.sizeof() == 104


@pytest.mark.parametrize("case, kwargs, err", [
    ("unknown flag 0x20", dict(addr=NOTIFY, length=2, flags=0x20), -EINVAL),
    ("unknown flag 1<<31", dict(addr=NOTIFY, length=2, flags=1 << 31), -EINVAL),
    ("len 3", dict(addr=NOTIFY, length=3), -EINVAL),
    ("len 16", dict(addr=NOTIFY, length=16), -EINVAL),
    ("len 0 with datamatch", dict(addr=NOTIFY, length=0, datamatch=0), -EINVAL),
    ("addr+len wraps", dict(addr=U64 - 1, length=4), -EINVAL),
    ("addr+len == 2**64", dict(addr=U64 - 3, length=4), -EINVAL),
    ("bad fd", dict(addr=NOTIFY, length=2, fd=999), -EBADF),
])
async def test_ioeventfd_assign_validation(case, kwargs, err):
    vm = make_vm()
    efd = vm.fds.eventfd("e")
    assert ioeventfd(vm, efd=efd, **kwargs) == err, case
    assert vm.ioeventfds == [] and vm.buses[KVM_MMIO_BUS].ranges == []


async def test_ioeventfd_assign_edge_cases_accepted():
    vm = make_vm()
    efd = vm.fds.eventfd("e")
    assert ioeventfd(vm, U64 - 7, 4, efd) == 0          # ends inside the space
    assert ioeventfd(vm, NOTIFY, 0, efd) == 0           # len 0, no datamatch
    # A len 0 MMIO ioeventfd is registered on KVM_FAST_MMIO_BUS as well.
    assert [r[:2] for r in vm.buses[KVM_FAST_MMIO_BUS].ranges] == [(NOTIFY, 0)]


@pytest.mark.parametrize("first, second, err", [
    (dict(length=2), dict(length=2), -EEXIST),                                   # both wildcard
    (dict(length=2), dict(length=2, datamatch=1), -EEXIST),                      # wildcard vs datamatch
    (dict(length=2, datamatch=1), dict(length=2), -EEXIST),
    (dict(length=2, datamatch=1), dict(length=2, datamatch=1), -EEXIST),         # same datamatch
    (dict(length=2, datamatch=1), dict(length=2, datamatch=2), 0),               # distinct datamatch
    (dict(length=2), dict(length=4), 0),                                         # distinct lengths
    (dict(length=0), dict(length=4), -EEXIST),                                   # len 0 takes the address
    (dict(length=4, datamatch=3), dict(length=0), -EEXIST),
    (dict(length=2), dict(length=2, flags=KVM_IOEVENTFD_FLAG_PIO), 0),           # another bus
    (dict(length=2), dict(length=2, addr=NOTIFY + 2), 0),                        # another address
])
async def test_ioeventfd_collisions(first, second, err):
    vm = make_vm()
    e1, e2 = vm.fds.eventfd("e1"), vm.fds.eventfd("e2")   # distinct fds still collide
    assert ioeventfd(vm, first.pop("addr", NOTIFY), efd=e1, **first) == 0
    assert ioeventfd(vm, second.pop("addr", NOTIFY), efd=e2, **second) == err
    assert len(vm.ioeventfds) == (1 if err else 2)


async def test_ioeventfd_pio_goes_on_pio_bus_only():
    vm = make_vm()
    efd = vm.fds.eventfd("e")
    assert ioeventfd(vm, 0x60, 1, efd, flags=KVM_IOEVENTFD_FLAG_PIO) == 0
    assert vm.buses[KVM_MMIO_BUS].write(0x60, 1, b"\0") == (-EOPNOTSUPP, None)
    assert vm.buses[KVM_PIO_BUS].write(0x60, 1, b"\0")[0] == 0
    assert efd.count == 1


async def test_ioeventfd_deassign():
    vm = make_vm()
    e1, e2 = vm.fds.eventfd("e1"), vm.fds.eventfd("e2")
    dm = KVM_IOEVENTFD_FLAG_DEASSIGN
    assert ioeventfd(vm, NOTIFY, 2, e1, datamatch=5) == 0
    assert ioeventfd(vm, NOTIFY, 2, e1, datamatch=6, flags=dm) == -ENOENT    # other datamatch
    assert ioeventfd(vm, NOTIFY, 2, e1, flags=dm) == -ENOENT                 # wildcard vs datamatch
    assert ioeventfd(vm, NOTIFY, 2, e2, datamatch=5, flags=dm) == -ENOENT    # other eventfd
    assert ioeventfd(vm, NOTIFY, 4, e1, datamatch=5, flags=dm) == -ENOENT    # other len
    assert ioeventfd(vm, NOTIFY + 4, 2, e1, datamatch=5, flags=dm) == -ENOENT
    assert vm.buses[KVM_MMIO_BUS].write(NOTIFY, 2, (5).to_bytes(2, "big"))[0] == 0
    assert ioeventfd(vm, NOTIFY, 2, e1, datamatch=5, flags=dm) == 0
    assert vm.ioeventfds == []
    assert vm.buses[KVM_MMIO_BUS].write(NOTIFY, 2, (5).to_bytes(2, "big")) == (-EOPNOTSUPP, None)
    assert e1.count == 1
    assert ioeventfd(vm, NOTIFY, 2, e1, datamatch=5, flags=dm) == -ENOENT
    assert ioeventfd(vm, NOTIFY, 2, e1, datamatch=5) == 0                    # reassign works


async def test_ioeventfd_len0_deassign_leaves_fast_mmio_bus_too():
    vm = make_vm()
    efd = vm.fds.eventfd("e")
    assert ioeventfd(vm, NOTIFY, 0, efd) == 0
    assert ioeventfd(vm, NOTIFY, 0, efd, flags=KVM_IOEVENTFD_FLAG_DEASSIGN) == 0
    assert vm.buses[KVM_FAST_MMIO_BUS].ranges == [] and vm.buses[KVM_MMIO_BUS].ranges == []


async def test_ioeventfd_is_write_only_load_exits_to_userspace():
    vm = make_vm()
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 2, efd) == 0
    assert enable_cap(vm, LOAD) == 0
    assert vm.buses[KVM_MMIO_BUS].read(NOTIFY, 2, bytearray(8)) == (-EOPNOTSUPP, None)

    def userspace(hc):
        hc.ret = papr.H_SUCCESS
        hc.args[0] = 0x4242                     # QEMU's value for the register

    ret, r4, exits = await one_hcall(vm, LOAD, 2, NOTIFY, userspace=userspace)
    assert [e[0] for e in exits] == [LOAD]
    assert (ret, r4) == (papr.H_SUCCESS, 0x4242)
    assert efd.count == 0 and efd.signals == 0


async def test_ioeventfd_read_falls_through_to_a_readable_device():
    vm = make_vm()
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 2, efd) == 0
    dev = Dev("bar0", data=b"\x00\x07")
    assert vm.buses[KVM_MMIO_BUS].register_dev(BAR, 0x40, dev) == 0
    assert enable_cap(vm, LOAD) == 0
    ret, r4, exits = await one_hcall(vm, LOAD, 2, NOTIFY)
    assert exits == [] and (ret, r4) == (papr.H_SUCCESS, 7) and efd.count == 0


@pytest.mark.parametrize("host_endian, datamatch, signals", [
    ("big", 0x0001, True),       # BE host reads bytes 00 01 as 0x0001
    ("big", 0x0100, False),
    ("little", 0x0001, False),   # LE host reads bytes 00 01 as 0x0100
    ("little", 0x0100, True),
])
async def test_datamatch_compares_big_endian_buffer_in_host_order(host_endian, datamatch, signals):
    vm = make_vm(host_endian=host_endian)
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 2, efd, datamatch=datamatch) == 0
    assert enable_cap(vm, STORE) == 0
    ret, _, exits = await one_hcall(vm, STORE, 2, NOTIFY, 1)
    assert efd.count == (1 if signals else 0)
    if signals:
        assert exits == [] and ret == papr.H_SUCCESS
    else:
        assert [(e[0], e[1][:3]) for e in exits] == [(STORE, [2, NOTIFY, 1])]


@pytest.mark.parametrize("host_endian", ["big", "little"])
@pytest.mark.parametrize("size", [1, 4, 8])
async def test_datamatch_other_widths(host_endian, size):
    vm = make_vm(host_endian=host_endian)
    val = 0x0102030405060708 & ((1 << (8 * size)) - 1)
    match = int.from_bytes(val.to_bytes(size, "big"), host_endian)
    hit, miss = vm.fds.eventfd("hit"), vm.fds.eventfd("miss")
    assert ioeventfd(vm, NOTIFY, size, hit, datamatch=match) == 0
    assert ioeventfd(vm, NOTIFY + 0x100, size, miss, datamatch=match ^ 1) == 0
    assert enable_cap(vm, STORE) == 0
    g = Guest(vm, [(STORE, (size, NOTIFY, val)), (STORE, (size, NOTIFY + 0x100, val))])
    exits = await g.run()
    assert (hit.count, miss.count) == (1, 0)
    assert [e[1][1] for e in exits] == [NOTIFY + 0x100]


async def test_datamatch_mismatch_does_not_signal_and_exits():
    vm = make_vm()
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 2, efd, datamatch=0) == 0      # queue 0 only
    assert enable_cap(vm, STORE) == 0
    _, _, exits = await one_hcall(vm, STORE, 2, NOTIFY, 1)      # queue 1
    assert [e[0] for e in exits] == [STORE] and efd.count == 0 and efd.signals == 0


async def test_distinct_datamatch_ioeventfds_share_an_address():
    vm = make_vm()
    q0, q1 = vm.fds.eventfd("q0"), vm.fds.eventfd("q1")
    assert ioeventfd(vm, NOTIFY, 2, q0, datamatch=0) == 0
    assert ioeventfd(vm, NOTIFY, 2, q1, datamatch=1) == 0
    assert enable_cap(vm, STORE) == 0
    g = Guest(vm, [(STORE, (2, NOTIFY, 1)), (STORE, (2, NOTIFY, 1)), (STORE, (2, NOTIFY, 0))])
    assert await g.run() == []
    assert (q0.count, q1.count) == (1, 2)


@pytest.mark.parametrize("store_addr, store_size", [
    (NOTIFY + 2, 2),   # inside the registered range, but not its address
    (NOTIFY, 2),       # right address, wrong length (ioeventfd has len 4)
])
async def test_inexact_write_does_not_signal(store_addr, store_size):
    vm = make_vm()
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 4, efd) == 0                   # wildcard, len 4
    assert enable_cap(vm, STORE) == 0
    _, _, exits = await one_hcall(vm, STORE, store_size, store_addr, 0)
    assert [e[0] for e in exits] == [STORE] and efd.count == 0


async def test_ioeventfd_needs_the_exact_address_even_for_a_matching_length():
    """ioeventfd_in_range: "address must be precise for a hit"."""
    vm = make_vm()
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 4, efd) == 0
    (p,) = vm.ioeventfds
    assert p.write(NOTIFY + 2, 4, bytes(4)) == -EOPNOTSUPP
    assert p.write(NOTIFY - 4, 4, bytes(4)) == -EOPNOTSUPP
    assert efd.count == 0
    assert p.write(NOTIFY, 4, bytes(4)) == 0 and efd.count == 1


@pytest.mark.parametrize("size", [1, 2, 4, 8])
async def test_len0_ioeventfd_ignores_access_length_and_data(size):
    vm = make_vm()
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 0, efd) == 0
    assert enable_cap(vm, STORE) == 0
    ret, _, exits = await one_hcall(vm, STORE, size, NOTIFY, 0xABCD)
    assert exits == [] and ret == papr.H_SUCCESS and efd.count == 1


async def test_mismatching_ioeventfd_falls_through_to_next_device():
    vm = make_vm()
    efd = vm.fds.eventfd("notify")
    assert ioeventfd(vm, NOTIFY, 2, efd, datamatch=0) == 0
    dev = Dev("bar0")
    assert vm.buses[KVM_MMIO_BUS].register_dev(BAR, 0x40, dev) == 0
    assert enable_cap(vm, STORE) == 0
    ret, _, exits = await one_hcall(vm, STORE, 2, NOTIFY, 3)
    assert exits == [] and ret == papr.H_SUCCESS
    assert efd.count == 0 and dev.writes == [(NOTIFY, 2, b"\x00\x03")]


# -- irqfd --------------------------------------------------------------------


async def test_irqfd_signal_raises_gsi():
    vm = make_vm()
    efd = vm.fds.eventfd("virtio-irq")
    other = vm.fds.eventfd("unrelated")
    assert irqfd(vm, efd.fd, 17) == 0
    assert vm.irq_lines.get(17, 0) == 0
    other.signal()
    assert vm.irq_lines.get(17, 0) == 0
    efd.signal()
    assert vm.irq_lines[17] == 1
    assert [e.fields["gsi"] for e in vm.trace.named("irq")] == [17]


async def test_irqfd_validation():
    vm = make_vm()
    efd = vm.fds.eventfd("virtio-irq")
    assert irqfd(vm, 999, 1) == -EBADF
    assert irqfd(vm, efd.fd, 1) == 0
    assert irqfd(vm, efd.fd, 2) == -EBUSY
    efd.signal()
    assert vm.irq_lines == {1: 1}
