"""A hostile guest: a fuzz campaign against the host side (KVM, QEMU, devices).

The guest here is not SLOF. It runs on the same vcpu and reaches the host
the same ways a real guest does -- `sc 1` hcalls, and guest RAM for the
rings and buffers -- but with arbitrary hcall numbers, sizes, addresses and
values, arbitrary vring contents and arbitrary virtio-blk headers. (The CPU
model has no MMIO trap: device registers are reached through
H_LOGICAL_CI_LOAD/STORE, as in real mode.)

Each case is one machine (one trio.run). After every operation an oracle
written from reference/kvm.md and qemu.md, independently of the host code,
checks what the guest saw:

- no Python exception escapes the host side, and the machine stops within
  a bounded simulated time (WATCHDOG_S) and wall time (WALL_LIMIT_S);
- KVM's answer to every hcall: in the kernel exactly when the enable bit,
  the 4.1 handlers, a size of 1/2/4/8 and an accepting in-kernel device
  (an ioeventfd: exact address, length, datamatch on the big-endian buffer
  read in host order) all say so; otherwise an exit, where QEMU's
  h_logical_load/store give H_PARAMETER for bad sizes; H_TOO_HARD never
  reaches r3, and a punt leaves r4..r12 as the guest set them;
- the device either serves a request correctly (status, used id and len,
  the data read) or does what QEMU does: IOERR/UNSUPP, or virtio_error with
  QEMU's reason, after which the queue is not served until reset.

Choices come from a Chooser, so the same generators serve hypothesis
(tests/test_hostile.py) and `slofsim fuzz` (random.Random(seed)).
"""

from __future__ import annotations

import dataclasses
import re
import signal
import threading
import time
import traceback
from collections import Counter

import trio
import trio.testing

from devices.block import SECTOR, BlockBackend
from firmware_model.hvcall import HvCalls, bswap
from firmware_model.pci import Phb, PciFunction
from sim import vtime
from sim.abi import papr
from sim.abi.kvm import KVM_MMIO_BUS
from sim.abi.virtio import (
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_BARRIER, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_PCI_GUEST_FEATURES, VIRTIO_PCI_HOST_FEATURES, VIRTIO_PCI_QUEUE_NOTIFY, VIRTIO_PCI_QUEUE_NUM,
    VIRTIO_PCI_QUEUE_PFN, VIRTIO_PCI_QUEUE_SEL, VIRTIO_PCI_STATUS, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE, layouts, vring_addrs, vring_size,
)
from sim.cpu import PowerCPU
from sim.kvm.vm import KernelConfig, KvmVm
from sim.qemu.spapr import Console, SpaprMachine
from sim.ram import GuestRAM
from sim.scenario import Scenario
from sim.trace import Trace

M64 = (1 << 64) - 1
RAM_MIB = 64
RAM_SIZE = RAM_MIB << 20
DISK_SECTORS = 128
WATCHDOG_S = 120.0      # simulated seconds a case may take
WALL_LIMIT_S = 20.0     # wall seconds a case may take before it counts as a hang
SERVE_WAIT_S = 0.05     # how long the guest polls used->idx after a kick
QUIESCE_S = 0.05        # then waits for stragglers before the next operation

# Guest memory map.
RTAS_BUF = 0x1000
RING = 0x10_0000
INDIRECT = 0x11_0000
HDR = 0x12_0000
STATUS = 0x12_1000
DATA = 0x20_0000
DATA_STRIDE = 0x1_0000

H_LOGICAL_CACHE_LOAD, H_LOGICAL_CACHE_STORE = 0x44, 0x48
LOADS = (papr.H_LOGICAL_CI_LOAD, H_LOGICAL_CACHE_LOAD)
STORES = (papr.H_LOGICAL_CI_STORE, H_LOGICAL_CACHE_STORE)
MAX_HCALL_OPCODE = papr.H_SET_MODE   # 3.17-4.x kernels, and QEMU 2.x's table

# QEMU's own words for a broken device (virtio_error calls in hw/virtio/virtio.c
# and hw/block/virtio-blk.c). A reason outside this list is a finding.
QEMU_REASONS = [re.compile(p) for p in (
    r"Guest moved used index from \d+ to \d+",
    r"Guest says index \d+ is available",
    r"Desc next is \d+",
    r"Looped descriptor",
    r"Incorrect order for descriptors",
    r"Invalid size for indirect buffer table",
    r"Nested indirect descriptor",
    r"Cannot map indirect buffer",
    r"Cannot map (desc|avail|used)",
    r"virtio: zero sized buffers are not allowed",
    r"virtio: bogus descriptor or out of resources",
    r"virtio: too many write descriptors in indirect table",
    r"Virtqueue size exceeded",
    r"virtio-blk missing headers",
    r"virtio-blk request outhdr too short",
    r"virtio-blk request inhdr too short",
)]


def reason_class(reason: str) -> str:
    """A virtio_error reason with its numbers replaced, for counting."""
    return re.sub(r"\d+", "N", reason)


# -- choices ---------------------------------------------------------------

class RandomChooser:
    """Choices from random.Random (the CLI campaign)."""

    def __init__(self, rng):
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def boolean(self) -> bool:
        return self.rng.random() < 0.5


def _u64(ch) -> int:
    return ch.choice((0, 1, 2, 3, 4, 8, 16, 0xFF, 0xFFFF, 1 << 63, M64, M64 - 7, ch.integer(0, M64)))


def _size(ch) -> int:
    return ch.choice((1, 2, 4, 8, 1, 2, 4, 8, 0, 3, 5, 16, 1 << 63, M64, ch.integer(0, M64)))


def _addr(ch):
    """A symbolic address, resolved in the guest (BARs are placed at run time)."""
    base = ch.choice(("ram", "ram_end", "bar0", "bar0", "notify", "bar1", "hole", "beyond", "top", "abs"))
    if base == "ram":
        return base, ch.integer(0, RAM_SIZE - 1)
    if base in ("ram_end", "top"):
        return base, -ch.integer(0, 16)
    if base in ("bar0", "bar1"):
        return base, ch.integer(0, 72)
    if base == "notify":
        return base, ch.choice((0, 0, 1, -1, 2))
    if base == "hole":
        return base, ch.integer(0, 1 << 40)
    if base == "beyond":
        return base, ch.integer(0, 1 << 20)
    return base, ch.integer(0, M64)


@dataclasses.dataclass
class Hcall:
    """A raw `sc 1`: r3 = nr, r4.. = args (args[1] symbolic: the address)."""
    nr: int
    size: int
    addr: tuple
    val: int
    rest: tuple


@dataclasses.dataclass
class Rtas:
    """KVMPPC_H_RTAS with an arbitrary argument buffer."""
    where: tuple
    token: int
    nargs: int
    nret: int
    args: tuple


@dataclasses.dataclass
class Ring:
    """Arbitrary descriptors, avail entries and avail->idx, then a kick."""
    descs: tuple      # (index, addr, len, flags, next)
    indirect: tuple   # descriptors written at INDIRECT
    avail: tuple      # (slot, head)
    idx_step: int     # avail->idx = idx_step (from a clean ring)
    kick_val: int


@dataclasses.dataclass
class Pfn:
    """QUEUE_PFN set to an arbitrary page, then one request posted there."""
    pfn: int


@dataclasses.dataclass
class Post:
    """A good read posted and kicked without waiting: the hcalls that follow
    (a reset, a PFN, a BAR move) meet it in flight."""
    sectors: int


@dataclasses.dataclass
class Blk:
    """One virtio-blk request in a well-placed chain with arbitrary contents."""
    rtype: int
    sector: int
    header: str       # "whole", "split", "short"
    data: tuple       # (len, write flag)
    status: str       # "byte", "missing", "long", "readonly"
    indirect: bool


HCALL_NRS = (papr.H_LOGICAL_CI_LOAD, papr.H_LOGICAL_CI_STORE, H_LOGICAL_CACHE_LOAD, H_LOGICAL_CACHE_STORE,
             papr.H_GET_TERM_CHAR, papr.H_PUT_TERM_CHAR, papr.KVMPPC_H_RTAS, papr.KVMPPC_H_LOGICAL_MEMOP,
             0xF002, 0xF003, papr.H_CEDE, papr.H_SET_MODE, 0x4C, 0x50, 0x04)


def gen_hcall(ch) -> Hcall:
    if ch.integer(0, 2) == 0:   # near a queue kick: the one store an in-kernel device takes
        return Hcall(ch.choice((papr.H_LOGICAL_CI_STORE,) * 4 + (papr.H_LOGICAL_CI_LOAD,)),
                     ch.choice((2, 2, 2, 2, 1, 4, 8, 0, 3)), ("notify", ch.choice((0, 0, 0, 0, 1, -2))),
                     ch.choice((0, 0, 0, 0x100, 1, ch.integer(0, M64))), tuple(_u64(ch) for _ in range(6)))
    nr = ch.choice(HCALL_NRS + (papr.H_LOGICAL_CI_LOAD, papr.H_LOGICAL_CI_STORE) * 3
                   + ("aligned", "any", "above"))
    if nr == "aligned":
        nr = ch.integer(0, MAX_HCALL_OPCODE // 4) * 4
    elif nr == "any":
        nr = ch.integer(0, M64)
    elif nr == "above":
        nr = ch.integer(MAX_HCALL_OPCODE + 1, 0x10000)
    val = ch.choice((0, 1, 0x100, 4, 7, 0x80, _u64(ch)))
    return Hcall(nr, _size(ch), _addr(ch), val, tuple(_u64(ch) for _ in range(6)))


def gen_rtas(ch) -> Rtas:
    token = ch.choice((papr.RTAS_IBM_READ_PCI_CONFIG, papr.RTAS_IBM_WRITE_PCI_CONFIG, 0,
                       ch.integer(0, 0xFFFFFFFF)))
    nargs = ch.choice((4, 5, 0, 3, 16, 17, 0xFFFFFFFF, ch.integer(0, 0xFFFFFFFF)))
    nret = ch.choice((1, 2, 0, 3, 0xFFFFFFFF, 0xFFFFFFFF, ch.integer(0, 0xFFFFFFFF)))
    reg = ch.choice((0x0, 0x4, 0x10, 0x14, 0x30, 0x3C, 0xFC, 0xFF, 0x100, ch.integer(0, 0xFFF)))
    cfg_addr = (ch.choice((0, 0, 1, 0xFF)) << 16) | (ch.choice((0, 0, 8, 0xFF)) << 8) | reg
    buid = ch.choice((0x800000020000000, 0x800000020000000, ch.integer(0, M64)))
    args = (cfg_addr, buid >> 32, buid & 0xFFFFFFFF, ch.choice((1, 2, 4, 0, 3, 8)),
            ch.choice((0, 0xFFFFFFFF, 7, ch.integer(0, 0xFFFFFFFF))))
    where = ch.choice((("ram", RTAS_BUF), ("ram", RTAS_BUF), ("ram_end", -ch.integer(0, 24)),
                       ("beyond", 0), ("top", -8)))
    return Rtas(where, token, nargs, nret, args)


def _ring_addr(ch):
    base = ch.choice(("data", "data", "data", "ring", "indirect", "ram_end", "beyond", "top", "abs", "bar0"))
    if base == "data":
        return base, ch.choice((0, 0x800, ch.integer(0, 4 * DATA_STRIDE)))
    if base == "ring":
        return base, ch.integer(0, 0x2000)
    if base in ("ram_end", "top"):
        return base, -ch.integer(0, 4096)
    if base == "abs":
        return base, ch.integer(0, M64)
    return base, 0


def _desc(ch, num: int):
    length = ch.choice((16, 1, 512, 4096, 0, 17, 0x10000, 0xFFFFFFFF, ch.integer(0, 0xFFFFFFFF)))
    flags = ch.choice((0, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
                       VRING_DESC_F_INDIRECT, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT,
                       ch.integer(0, 0xFFFF)))
    nxt = ch.choice((0, 1, 2, num - 1, num, 0xFFFF, ch.integer(0, 0xFFFF)))
    return _ring_addr(ch), length, flags, nxt


def gen_ring(ch, num: int) -> Ring:
    descs = tuple((ch.integer(0, num - 1),) + _desc(ch, num) for _ in range(ch.integer(1, 6)))
    indirect = tuple(_desc(ch, num) for _ in range(ch.integer(0, 4)))
    if ch.integer(0, 3) == 0:   # an indirect table, maybe huge, maybe looping
        length = ch.choice((16, 64, 0x10000, 0x400000, RAM_SIZE - INDIRECT, 0xFFFFFFF0, 17, 0))
        head = ch.integer(0, num - 1)
        descs += ((head, ("indirect", 0), length, VRING_DESC_F_INDIRECT, 0),)
        flags = ch.choice((VRING_DESC_F_NEXT, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE))
        indirect = tuple((("data", 0), ch.choice((1, 512, 16)), flags, ch.choice((0, 1, 2, 3)))
                         for _ in range(4))
        return Ring(descs, indirect, ((0, head),), 1, 0)
    avail = tuple((ch.integer(0, num - 1), ch.choice((0, 1, num - 1, num, 0xFFFF, ch.integer(0, 0xFFFF))))
                  for _ in range(ch.integer(0, 4)))
    idx_step = ch.choice((1, 1, 2, 0, num, num + 1, 0x8000, 0xFFFF, ch.integer(0, 0xFFFF)))
    return Ring(descs, indirect, avail, idx_step, ch.choice((0, 0, 0, 1, 0x100)))


BLK_TYPES = (VIRTIO_BLK_T_IN, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
             2, 3, 5, 9, 11, 13, 0x10, VIRTIO_BLK_T_IN | VIRTIO_BLK_T_BARRIER,
             VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_BARRIER)


def gen_pfn(ch) -> Pfn:
    top = RAM_SIZE >> 12
    return Pfn(ch.choice((top - 1, top - 2, top, top + 1, 0xFFFFFFFF, 1, ch.integer(0, 0xFFFFFFFF))))


def gen_blk(ch) -> Blk:
    rtype = ch.choice(BLK_TYPES + ("any",))
    if rtype == "any":
        rtype = ch.integer(0, 0xFFFFFFFF)
    sector = ch.choice((0, 1, DISK_SECTORS - 1, DISK_SECTORS, DISK_SECTORS + 1, 1 << 63, M64,
                        M64 // SECTOR, ch.integer(0, DISK_SECTORS)))
    data = []
    for _ in range(ch.choice((1, 1, 0, 2, 3))):
        n = ch.choice((512, 512, 1024, 4096, 511, 1, 0, 513))
        data.append((n, ch.choice(("right", "right", "right", "wrong"))))
    return Blk(rtype, sector, ch.choice(("whole", "whole", "whole", "split", "short")), tuple(data),
               ch.choice(("byte", "byte", "byte", "missing", "long", "readonly")), ch.boolean())


# -- machine configurations ------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    kernel: str
    kvm: str
    host_endian: str
    qemu: tuple
    iothread: bool

    def scenario(self, queue_size: int) -> Scenario:
        q = self.qemu
        return Scenario(path="<fuzz>", name=f"fuzz-{self.name}", kernel_version=self.kernel, kvm=self.kvm,
                        host_endian=self.host_endian, qemu_version=q, enable_logical_ci=q >= (2, 4),
                        forward_userspace_kick=q >= (4, 2), emulate_ioeventfd=q >= (2, 5),
                        iothread=self.iothread, ioeventfd=True, queue_size=queue_size, ram_mib=RAM_MIB)


# Configurations in which every kick reaches the queue (no 2015 stall), so
# a request that is neither served nor rejected is a finding.
SERVING = (
    Config("no-iothread-old", "4.0", "HV", "big", (2, 3), False),
    Config("dataplane-fixed", "4.1", "HV", "big", (2, 4), True),
    Config("dataplane-fixed-le", "4.1", "HV", "little", (2, 4), True),
    Config("pr-dataplane-fixed", "4.1", "PR", "big", (2, 4), True),
    Config("forwards-kick", "4.0", "HV", "little", (4, 2), True),
    Config("no-iothread-fixed", "4.1", "PR", "little", (2, 4), False),
)
# ... and the 2015 stall, where a dropped kick is what QEMU did.
ALL_CONFIGS = SERVING + (Config("dataplane-stall", "4.0", "HV", "big", (2, 3), True),
                         Config("kernel-fixed-qemu-old", "4.1", "HV", "big", (2, 3), True))


@dataclasses.dataclass
class Case:
    kind: str         # "hcall", "ring" or "blk"
    config: Config
    queue_size: int
    writable: bool
    features: int     # GUEST_FEATURES written (masked by the device)
    ops: list


KINDS = ("hcall", "ring", "blk")


def gen_op(ch, kind: str, num: int):
    if kind == "hcall":
        g = ch.integer(0, 7)
        return gen_rtas(ch) if g < 2 else Post(ch.choice((1, 8, 64))) if g == 2 else gen_hcall(ch)
    if kind == "ring":
        g = ch.choice(("ring", "ring", "ring", "pfn", "blk"))
        return gen_ring(ch, num) if g == "ring" else gen_pfn(ch) if g == "pfn" else gen_blk(ch)
    return gen_blk(ch)


def gen_case(ch, kind: str | None = None) -> Case:
    kind = kind or ch.choice(KINDS)
    config = ch.choice(ALL_CONFIGS if kind == "hcall" else SERVING)
    num = ch.choice((4, 8, 128))
    features = ch.choice((0, 1 << 6, 1 << 28, 0xFFFFFFFF))
    n = ch.integer(1, 6)
    ops = [gen_op(ch, kind, num) for _ in range(n)]
    return Case(kind, config, num, ch.boolean(), features, ops)


def disk_bytes() -> bytes:
    return b"".join(bytes((s * 31 + j) & 0xFF for j in range(SECTOR)) for s in range(DISK_SECTORS))


DISK = disk_bytes()


# -- results ---------------------------------------------------------------

@dataclasses.dataclass
class CaseResult:
    ops: Counter = dataclasses.field(default_factory=Counter)
    device_errors: Counter = dataclasses.field(default_factory=Counter)
    statuses: Counter = dataclasses.field(default_factory=Counter)
    hcall_paths: Counter = dataclasses.field(default_factory=Counter)
    violations: list = dataclasses.field(default_factory=list)
    exception: str | None = None
    hung: str | None = None
    sim_time: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations and self.exception is None and self.hung is None

    def failure(self) -> str:
        parts = []
        if self.exception:
            parts.append("host-side exception:\n" + self.exception)
        if self.hung:
            parts.append("hang: " + self.hung)
        parts += self.violations
        return "\n".join(parts)


class _WallClockHang(BaseException):
    pass


# -- the oracle ------------------------------------------------------------

class Oracle:
    """What reference/kvm.md and qemu.md say the guest must see."""

    def __init__(self, m, vm, trace, result: CaseResult):
        self.m, self.vm, self.trace, self.result = m, vm, trace, result

    def violation(self, text: str) -> None:
        self.result.violations.append(text)

    # KVM: kvmppc_pseries_do_hcall / kvmppc_h_pr, then h_logical_ci_*.
    def expect_in_kernel(self, nr: int, size: int, addr: int, val: int) -> bool:
        vm = self.vm
        if nr not in (papr.H_LOGICAL_CI_LOAD, papr.H_LOGICAL_CI_STORE):
            return False          # nothing else has an in-kernel handler in this model
        if not vm.enabled_hcalls[nr // 4] or not vm.kernel_has_logical_ci:
            return False
        if size not in (1, 2, 4, 8) or nr == papr.H_LOGICAL_CI_LOAD:
            return False          # no in-kernel device on KVM_MMIO_BUS has a read op
        buf = (val & ((1 << (8 * size)) - 1)).to_bytes(size, "big")
        for p in vm.ioeventfds:
            if p.bus_idx != KVM_MMIO_BUS or p.addr != addr:
                continue
            if not p.length or (p.length == size and (
                    p.wildcard or int.from_bytes(buf, vm.host_byteorder) == p.datamatch)):
                return True
        return False

    def expect_load(self, addr: int, size: int):
        """ld*_phys: RAM big-endian, unassigned 0, a device: anything."""
        if addr + size <= RAM_SIZE:
            return int.from_bytes(self.m.ram.read(addr, size), "big")
        r = self.m.address_space.lookup(addr)
        if r is None or addr + size > r.start + r.size:
            return 0
        return None

    def check_hcall(self, nr, regs_in, r3, regs_out, in_kernel, expected_in_kernel, expected_load) -> None:
        ret = papr.from_reg(r3)
        where = f"hcall 0x{nr:x} r4..r6={[hex(v) for v in regs_in[:3]]}"
        if ret == papr.H_TOO_HARD:
            self.violation(f"{where}: H_TOO_HARD reached the guest")
        if in_kernel != expected_in_kernel:
            self.violation(f"{where}: handled {'in KVM' if in_kernel else 'by an exit'}, "
                           f"kvm.md says {'in KVM' if expected_in_kernel else 'exit to QEMU'}")
        size = regs_in[0]
        if nr in LOADS + STORES:
            want = papr.H_PARAMETER if size not in (1, 2, 4, 8) else papr.H_SUCCESS
            if ret != want:
                self.violation(f"{where}: r3={ret}, expected {want}")
            keep_from = 1 if nr in LOADS and ret == papr.H_SUCCESS else 0
            if regs_out[keep_from:] != regs_in[keep_from:]:
                self.violation(f"{where}: r{4 + keep_from}..r12 changed")
            if nr in LOADS and ret == papr.H_SUCCESS:
                if regs_out[0] >> (8 * size):
                    self.violation(f"{where}: r4=0x{regs_out[0]:x} wider than {size} bytes")
                if expected_load is not None and regs_out[0] != expected_load:
                    self.violation(f"{where}: r4=0x{regs_out[0]:x}, expected 0x{expected_load:x}")
        elif nr & 3 or MAX_HCALL_OPCODE < nr < papr.KVMPPC_H_RTAS or nr > 0xF003:
            # spapr_hypercall: outside both tables, "Unimplemented SPAPR hcall"
            if ret != papr.H_FUNCTION:
                self.violation(f"{where}: r3={ret}, expected H_FUNCTION")

    def device_errors_since(self, mark: int) -> list[str]:
        return [e.fields["reason"] for e in self.trace.events[mark:] if e.name == "virtio_error"]

    def note_errors(self, reasons) -> None:
        for r in reasons:
            self.result.device_errors[reason_class(r)] += 1
            if not any(p.fullmatch(r) for p in QEMU_REASONS):
                self.violation(f"virtio_error reason not in QEMU's words: {r!r}")
        if reasons:
            blk = self.m.blk
            if not blk.broken:
                self.violation(f"virtio_error({reasons[0]!r}) but the device is not broken")
            # virtio_error: NEEDS_RESET only for a VIRTIO 1.0 device (never legacy)
            has_v1 = bool(blk.guest_features >> 32 & 1)
            if bool(blk.status & VIRTIO_CONFIG_S_NEEDS_RESET) != has_v1:
                self.violation(f"status 0x{blk.status:x} after virtio_error: NEEDS_RESET iff VERSION_1")


# -- the hostile guest -----------------------------------------------------

class HostileGuest:
    def __init__(self, cpu, machine, case: Case, oracle: Oracle):
        self.cpu, self.ram, self.case, self.oracle = cpu, cpu.ram, case, oracle
        self.m = machine
        self.hv = HvCalls(cpu, RTAS_BUF)
        self.phb = Phb(machine.phb_node)
        self.L = layouts(True)
        self.bar0 = self.bar1 = None
        self.num = 0

    # symbolic addresses
    def resolve(self, a) -> int:
        base, off = a
        bases = {"ram": 0, "ram_end": RAM_SIZE, "bar0": self.bar0 or 0, "bar1": self.bar1 or 0,
                 "notify": (self.bar0 or 0) + VIRTIO_PCI_QUEUE_NOTIFY, "hole": 0x8000_0000_0000,
                 "beyond": RAM_SIZE, "top": 1 << 64, "abs": 0, "data": DATA, "ring": RING,
                 "indirect": INDIRECT}
        return (bases[base] + off) & M64

    def poke(self, addr: int, data: bytes) -> None:
        """A guest store to RAM (stores outside RAM are simply not made)."""
        if addr + len(data) <= RAM_SIZE:
            self.ram.write(addr, data)

    async def sleep(self, seconds: float) -> None:
        await vtime.wait_set(trio.Event(), vtime.now() + seconds)

    async def main(self):
        try:
            await self.setup_pci()
            await self.virtio_init()
            for op in self.case.ops:
                self.oracle.result.ops[type(op).__name__.lower()] += 1
                await getattr(self, "op_" + type(op).__name__.lower())(op)
        except Exception:
            self.oracle.violation("guest driver raised (a harness bug):\n" + traceback.format_exc())
        return {"stage": "hostile guest done"}

    async def setup_pci(self) -> None:
        fn = PciFunction(self.hv, self.phb, 0)
        await fn.assign_bars()
        await fn.enable()
        self.fn = fn
        self.bar0, self.bar1 = fn.cpu_address(0), fn.cpu_address(1)

    async def virtio_init(self) -> None:
        hv, b = self.hv, self.bar0
        await hv.ci_write(1, b + VIRTIO_PCI_STATUS, 0)
        await hv.ci_write(1, b + VIRTIO_PCI_STATUS, 1)
        await hv.ci_write(1, b + VIRTIO_PCI_STATUS, 3)
        await hv.ci_read_le(4, b + VIRTIO_PCI_HOST_FEATURES)
        await hv.ci_write_le(4, b + VIRTIO_PCI_GUEST_FEATURES, self.case.features)
        await hv.ci_write_le(2, b + VIRTIO_PCI_QUEUE_SEL, 0)
        self.num = await hv.ci_read_le(2, b + VIRTIO_PCI_QUEUE_NUM)
        self.desc, self.avail, self.used = vring_addrs(RING, self.num)
        self.ram.write(RING, bytes(vring_size(self.num)))
        await hv.ci_write_le(4, b + VIRTIO_PCI_QUEUE_PFN, RING >> 12)
        self.ram.write(self.avail, self.L.avail_hdr.build(dict(flags=1, idx=0)))
        await hv.ci_write(1, b + VIRTIO_PCI_STATUS, 7)
        self.avail_idx = 0

    async def reset(self) -> None:
        await self.sleep(QUIESCE_S)
        await self.virtio_init()

    def used_idx(self) -> int:
        return int.from_bytes(self.ram.read(self.used + 2, 2), "big")

    async def kick(self, val: int = 0) -> None:
        await self.hv.ci_write(2, self.bar0 + VIRTIO_PCI_QUEUE_NOTIFY, bswap(val, 2))

    async def wait_used(self, old: int) -> None:
        deadline = vtime.now() + SERVE_WAIT_S
        while self.used_idx() == old and vtime.now() < deadline:
            event = self.ram.watch(self.used + 2, 2)
            await vtime.wait_set(event, deadline)
            self.ram.unwatch(event)
        await self.sleep(QUIESCE_S)

    # -- operations --------------------------------------------------------

    async def op_hcall(self, op: Hcall) -> None:
        addr = self.resolve(op.addr)
        args = [op.size, addr, op.val, *op.rest]
        cpu, o = self.cpu, self.oracle
        in_k = o.expect_in_kernel(op.nr, op.size, addr, op.val)
        load = o.expect_load(addr, op.size) if op.nr in LOADS and op.size in (1, 2, 4, 8) else None
        mark = len(o.trace.events)
        r3 = await cpu.hcall(op.nr, *args)
        regs_out = list(cpu.gpr[4:13])
        done = [e for e in o.trace.events[mark:] if e.name == "hcall_done"]
        in_kernel = bool(done) and done[0].fields.get("in_kernel") is True
        o.result.hcall_paths["handled in KVM" if in_kernel else "exit to QEMU"] += 1
        o.check_hcall(op.nr, [a & M64 for a in args], r3, regs_out, in_kernel, in_k, load)
        o.note_errors(o.device_errors_since(mark))

    async def op_rtas(self, op: Rtas) -> None:
        base = self.resolve(op.where)
        words = [op.token, op.nargs, op.nret, *op.args, 0, 0]
        for i, w in enumerate(words):
            self.poke(base + 4 * i, w.to_bytes(4, "big"))
        mark = len(self.oracle.trace.events)
        r3 = papr.from_reg(await self.cpu.hcall(papr.KVMPPC_H_RTAS, base))
        if r3 == papr.H_TOO_HARD:
            self.oracle.violation("H_RTAS: H_TOO_HARD reached the guest")
        self.oracle.note_errors(self.oracle.device_errors_since(mark))

    async def op_post(self, op: Post) -> None:
        num, L = self.num, self.L
        if not num:
            return
        head = (2 * self.avail_idx) % num
        self.ram.write(HDR, L.blk_outhdr_fast.pack(VIRTIO_BLK_T_IN, 0, 0))
        self.poke(self.desc + 16 * head, L.desc_fast.pack(HDR, 16, VRING_DESC_F_NEXT, (head + 1) % num))
        self.poke(self.desc + 16 * ((head + 1) % num),
                  L.desc_fast.pack(DATA, op.sectors * SECTOR + 1, VRING_DESC_F_WRITE, 0))
        self.poke(self.avail + 4 + 2 * (self.avail_idx % num), head.to_bytes(2, "big"))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.poke(self.avail + 2, self.avail_idx.to_bytes(2, "big"))
        mark = len(self.oracle.trace.events)
        await self.kick()
        self.oracle.note_errors(self.oracle.device_errors_since(mark))

    def _write_desc(self, table: int, i: int, d) -> None:
        a, length, flags, nxt = d
        self.poke(table + 16 * i, self.L.desc_fast.pack(self.resolve(a), length, flags, nxt))

    async def op_ring(self, op: Ring) -> None:
        o, num = self.oracle, self.num
        if self.m.blk.broken:
            await self.reset()
        for i, *d in op.descs:
            self._write_desc(self.desc, i, d)
        for i, d in enumerate(op.indirect):
            self._write_desc(INDIRECT, i, d)
        for slot, head in op.avail:
            self.poke(self.avail + 4 + 2 * slot, head.to_bytes(2, "big"))
        new_idx = (self.avail_idx + op.idx_step) & 0xFFFF
        self.poke(self.avail + 2, new_idx.to_bytes(2, "big"))
        mark, used0 = len(o.trace.events), self.used_idx()
        await self.kick(op.kick_val)
        await self.wait_used(used0)
        reasons = o.device_errors_since(mark)
        o.note_errors(reasons)
        completed = [e for e in o.trace.events[mark:] if e.name == "blk_complete"]
        moved = (self.used_idx() - used0) & 0xFFFF
        if moved != len(completed):
            o.violation(f"ring: used->idx moved by {moved}, {len(completed)} requests completed")
        if op.kick_val == 0 and op.idx_step > num:
            want = f"Guest moved used index from {self.avail_idx} to {new_idx}"
            if reasons[:1] != [want]:
                o.violation(f"ring: avail->idx jumped by {op.idx_step} > {num}: expected "
                            f"virtio_error({want!r}), got {reasons}")
        await self.check_stopped(reasons)
        await self.reset()

    async def check_stopped(self, reasons) -> None:
        """After virtio_error the queue is not served: another kick, with a
        fresh request posted, completes nothing."""
        if not reasons:
            return
        used1 = self.used_idx()
        self.poke(self.avail + 2, ((self.avail_idx + 1) & 0xFFFF).to_bytes(2, "big"))
        await self.kick()
        await self.wait_used(used1)
        if self.used_idx() != used1:
            self.oracle.violation(f"a broken device ({reasons[0]!r}) served the queue")

    async def op_pfn(self, op: Pfn) -> None:
        o = self.oracle
        if self.m.blk.broken:
            await self.reset()
        mark = len(o.trace.events)
        await self.hv.ci_write_le(4, self.bar0 + VIRTIO_PCI_QUEUE_PFN, op.pfn)
        base = op.pfn << 12
        if base:
            self.desc, self.avail, self.used = vring_addrs(base, self.num)
            self.poke(self.desc, self.L.desc_fast.pack(HDR, 16, VRING_DESC_F_NEXT, 1))
            self.poke(self.desc + 16, self.L.desc_fast.pack(STATUS, 1, VRING_DESC_F_WRITE, 0))
            self.poke(self.avail + 4 + 2 * (self.avail_idx % self.num), b"\0\0")
            self.poke(self.avail + 2, (self.avail_idx + 1).to_bytes(2, "big"))
            self.ram.write(HDR, self.L.blk_outhdr_fast.pack(VIRTIO_BLK_T_FLUSH, 0, 0))
            await self.kick()
            await self.sleep(SERVE_WAIT_S + QUIESCE_S)
        o.note_errors(o.device_errors_since(mark))
        self.desc, self.avail, self.used = vring_addrs(RING, self.num)
        await self.reset()

    def _blk_chain(self, op: Blk):
        """[(addr, len, write)] for op, and the bytes placed in its buffers."""
        hdr = self.L.blk_outhdr_fast.pack(op.rtype, 0, op.sector & M64)
        chain = []
        if op.header == "whole":
            self.ram.write(HDR, hdr)
            chain.append((HDR, 16, False))
        elif op.header == "split":
            self.ram.write(HDR, hdr[:8])
            self.ram.write(HDR + 0x800, hdr[8:])
            chain += [(HDR, 8, False), (HDR + 0x800, 8, False)]
        else:
            self.ram.write(HDR, hdr[:8])
            chain.append((HDR, 8, False))
        data_write = op.rtype != VIRTIO_BLK_T_OUT and op.rtype & ~VIRTIO_BLK_T_BARRIER != VIRTIO_BLK_T_OUT
        for k, (n, right) in enumerate(op.data):
            addr = DATA + k * DATA_STRIDE
            self.ram.write(addr, bytes((k * 17 + j * 3 + 1) & 0xFF for j in range(min(n, 8192))))
            chain.append((addr, n, data_write if right == "right" else not data_write))
        self.ram.write(STATUS, b"\xee" * 4)
        if op.status == "byte":
            chain.append((STATUS, 1, True))
        elif op.status == "long":
            chain.append((STATUS, 4, True))
        elif op.status == "readonly":
            chain.append((STATUS, 1, False))
        return chain

    def _expect_blk(self, chain):
        """virtqueue_pop, then virtio_blk_handle_request, from qemu.md and
        QEMU's rules: ('error', None) or (status|None for any, in_len)."""
        if any(n == 0 for _, n, _w in chain):
            return "error", None
        seen_in = False
        for _, _n, w in chain:
            if w:
                seen_in = True
            elif seen_in:
                return "error", None           # Incorrect order for descriptors
        out = [(a, n) for a, n, w in chain if not w]
        ins = [(a, n) for a, n, w in chain if w]
        if not out or not ins:
            return "error", None               # virtio-blk missing headers
        out_bytes = b"".join(self.ram.read(a, n) for a, n in out)
        if len(out_bytes) < 16:
            return "error", None               # outhdr too short
        rtype, _, sector = self.L.blk_outhdr_fast.unpack_from(out_bytes, 0)
        in_len = sum(n for _, n in ins)
        # 2015 QEMU tests flags in this order; IN only for exactly 0 or BARRIER.
        kind = next((f for f in (VIRTIO_BLK_T_FLUSH, 2, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_OUT) if rtype & f),
                    VIRTIO_BLK_T_IN if rtype in (0, VIRTIO_BLK_T_BARRIER) else None)
        if kind in (VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT):
            is_write = kind == VIRTIO_BLK_T_OUT
            size = len(out_bytes) - 16 if is_write else in_len - 1
            if size % SECTOR or sector > DISK_SECTORS or size // SECTOR > DISK_SECTORS - sector:
                return VIRTIO_BLK_S_IOERR, in_len
            if is_write and not self.case.writable:
                return (None if size == 0 else VIRTIO_BLK_S_IOERR), in_len
            return ("read", sector, size) if not is_write else VIRTIO_BLK_S_OK, in_len
        if kind in (VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID):
            return VIRTIO_BLK_S_OK, in_len
        return VIRTIO_BLK_S_UNSUPP, in_len

    async def op_blk(self, op: Blk) -> None:
        o, num = self.oracle, self.num
        if self.m.blk.broken:
            await self.reset()
        chain = self._blk_chain(op)
        if not op.indirect and len(chain) > num:
            chain = chain[:num]
        expect, in_len = self._expect_blk(chain)
        last_in = [(a, n) for a, n, w in chain if w][-1:] if expect != "error" else []
        head = self.avail_idx % num
        table, first = (INDIRECT, 0) if op.indirect else (self.desc, head)
        idx = [(first + k) % (num if not op.indirect else 1 << 16) for k in range(len(chain))]
        for k, (a, n, w) in enumerate(chain):
            flags = (VRING_DESC_F_WRITE if w else 0) | (VRING_DESC_F_NEXT if k + 1 < len(chain) else 0)
            nxt = idx[k + 1] if k + 1 < len(chain) else 0
            self.poke(table + 16 * idx[k], self.L.desc_fast.pack(a, n, flags, nxt))
        if op.indirect:
            self.poke(self.desc + 16 * head, self.L.desc_fast.pack(INDIRECT, 16 * len(chain),
                                                                   VRING_DESC_F_INDIRECT, 0))
        self.poke(self.avail + 4 + 2 * (self.avail_idx % num), head.to_bytes(2, "big"))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.poke(self.avail + 2, self.avail_idx.to_bytes(2, "big"))
        mark, used0 = len(o.trace.events), self.used_idx()
        await self.kick()
        await self.wait_used(used0)
        reasons = o.device_errors_since(mark)
        o.note_errors(reasons)
        moved = (self.used_idx() - used0) & 0xFFFF
        what = f"blk {op}"
        if expect == "error":
            if not reasons:
                o.violation(f"{what}: QEMU rejects this chain (virtio_error); the device did not")
            if moved:
                o.violation(f"{what}: rejected request reached the used ring")
            await self.check_stopped(reasons)
            await self.reset()
            return
        if reasons:
            o.violation(f"{what}: QEMU serves this request; the device said {reasons}")
            await self.reset()
            return
        if moved != 1:
            o.violation(f"{what}: used->idx moved by {moved}, expected 1 (served or IOERR/UNSUPP)")
            await self.reset()
            return
        slot = self.used + 4 + 8 * ((used0) % num)
        uid, ulen = self.L.used_elem_fast.unpack(self.ram.read(slot, 8))
        if uid != head or ulen != in_len:
            o.violation(f"{what}: used elem (id {uid}, len {ulen}), expected (id {head}, len {in_len})")
        a, n = last_in[0]
        status = self.ram.read(a + n - 1, 1)[0]
        o.result.statuses[status] += 1
        if isinstance(expect, tuple):       # a read that must succeed, with the disk's bytes
            _, sector, size = expect
            if status != VIRTIO_BLK_S_OK:
                o.violation(f"{what}: status {status}, expected OK")
            got = b"".join(self.ram.read(a, n) for a, n, w in chain if w)[:size]
            if got != DISK[sector * SECTOR:sector * SECTOR + size]:
                o.violation(f"{what}: the data read is not the disk's")
        elif expect is not None and status != expect:
            o.violation(f"{what}: status {status}, expected {expect}")
        elif status not in (VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP):
            o.violation(f"{what}: status byte {status}")


# -- running a case --------------------------------------------------------

async def _machine(case: Case, result: CaseResult, disk_file: str | None) -> None:
    scn = case.config.scenario(case.queue_size)
    trace = Trace()
    # A file holding DISK's bytes is opened as a user's image would be:
    # read-only, or with writes in the memory overlay.
    backend = (BlockBackend(disk_file, writable=case.writable) if disk_file
               else BlockBackend.from_bytes(DISK, "fuzz-disk", writable=case.writable))
    ram = GuestRAM(RAM_SIZE)
    vm = KvmVm(KernelConfig(scn.kernel_version, scn.kvm, scn.host_endian), ram, trace, scn.costs)
    m = SpaprMachine(scn, vm, ram, backend, trace, scn.costs, Console(trace))
    cpu = PowerCPU(ram)
    vcpu = vm.create_vcpu(cpu)
    oracle = Oracle(m, vm, trace, result)
    vcpu.load_guest(HostileGuest(cpu, m, case, oracle).main())
    done = False
    try:
        async with trio.open_nursery() as nursery:
            for ctx in (m.main_ctx, m.iothread_ctx):
                if ctx is not None:
                    ctx.nursery = nursery
                    nursery.start_soon(ctx.run)
            with trio.move_on_after(WATCHDOG_S):
                await m.kvm_cpu_exec(vcpu)
                done = True
            nursery.cancel_scope.cancel()
    finally:
        vcpu.close()
        backend.close()
    result.sim_time = vtime.now()
    for e in trace.events:   # every hcall of the run, the driver's own included
        if e.name == "hcall_done" and e.fields.get("ret") == papr.H_TOO_HARD:
            result.violations.append(f"hcall 0x{e.fields['nr']:x}: H_TOO_HARD reached the guest")
    if not done:
        result.hung = f"the machine did not stop within {WATCHDOG_S} simulated seconds"
    elif result.sim_time <= 0:
        result.violations.append("simulated time did not advance")


_alarm_fired = False


def _alarm(signum, frame):
    global _alarm_fired
    _alarm_fired = True
    raise _WallClockHang()


def run_case(case: Case, wall_limit: float = WALL_LIMIT_S, disk_file: str | None = None) -> CaseResult:
    """One machine, one hostile guest; never raises for a host-side failure."""
    global _alarm_fired
    _alarm_fired = False
    result = CaseResult()
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    old = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    if use_alarm:
        signal.setitimer(signal.ITIMER_REAL, wall_limit)
    try:
        trio.run(_machine, case, result, disk_file, clock=trio.testing.MockClock(autojump_threshold=0))
    except _WallClockHang:
        result.hung = f"still running after {wall_limit} s of wall time"
    except BaseException as exc:  # noqa: BLE001 -- every escape is the finding
        if isinstance(exc, KeyboardInterrupt):
            raise
        if _alarm_fired:  # the alarm landed inside trio's own code
            result.hung = f"still running after {wall_limit} s of wall time"
        else:
            result.exception = "".join(traceback.format_exception(exc))
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    return result


# -- the campaign (slofsim fuzz) -------------------------------------------

@dataclasses.dataclass
class Campaign:
    cases: int = 0
    ops: Counter = dataclasses.field(default_factory=Counter)
    device_errors: Counter = dataclasses.field(default_factory=Counter)
    statuses: Counter = dataclasses.field(default_factory=Counter)
    hcall_paths: Counter = dataclasses.field(default_factory=Counter)
    exceptions: list = dataclasses.field(default_factory=list)
    hangs: list = dataclasses.field(default_factory=list)
    violations: list = dataclasses.field(default_factory=list)
    sim_time: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.exceptions or self.hangs or self.violations)

    def add(self, case: Case, r: CaseResult) -> None:
        self.cases += 1
        self.ops.update(r.ops)
        self.device_errors.update(r.device_errors)
        self.statuses.update(r.statuses)
        self.hcall_paths.update(r.hcall_paths)
        self.sim_time += r.sim_time
        if r.exception:
            self.exceptions.append((case, r.exception))
        if r.hung:
            self.hangs.append((case, r.hung))
        self.violations += [(case, v) for v in r.violations]


def campaign(seconds: float, seed: int, clock=time.monotonic, disk_file: str | None = None) -> Campaign:
    import random
    ch = RandomChooser(random.Random(seed))
    c = Campaign()
    end = clock() + seconds
    while True:
        case = gen_case(ch)
        c.add(case, run_case(case, disk_file=disk_file))
        if clock() >= end:
            return c


def format_campaign(c: Campaign, seconds: float, seed: int) -> str:
    names = {VIRTIO_BLK_S_OK: "OK", VIRTIO_BLK_S_IOERR: "IOERR", VIRTIO_BLK_S_UNSUPP: "UNSUPP"}
    lines = [f"slofsim fuzz: seed {seed}, {seconds:g} s budget",
             f"inputs tried: {c.cases} machines, {sum(c.ops.values())} operations "
             f"({', '.join(f'{k} {v}' for k, v in sorted(c.ops.items()))}), "
             f"{c.sim_time:.3f} simulated s",
             "request statuses: " + (", ".join(f"{names.get(k, k)} {v}" for k, v in sorted(c.statuses.items()))
                                     or "none"),
             "raw hcalls: " + (", ".join(f"{k} {v}" for k, v in sorted(c.hcall_paths.items())) or "none"),
             "device errors by reason (virtio_error):"]
    lines += [f"  {v:6d}  {k}" for k, v in c.device_errors.most_common()] or ["  none"]
    lines.append(f"host-side exceptions: {len(c.exceptions)}")
    lines.append(f"hangs: {len(c.hangs)}")
    lines.append(f"oracle violations: {len(c.violations)}")
    for case, text in (c.exceptions + c.hangs + c.violations)[:3]:
        lines.append(f"--- first failures: {case}\n{text}")
    return "\n".join(lines)


def cmd_fuzz(args) -> int:
    """slofsim fuzz: exit 0 only with no host-side exception, hang or
    oracle violation."""
    from sim.scenario import ScenarioError
    if not args.seconds > 0:
        raise ScenarioError(f"--seconds: expected a positive number, got {args.seconds:g}")
    c = campaign(args.seconds, args.seed)
    print(format_campaign(c, args.seconds, args.seed))
    return 0 if c.ok else 1
