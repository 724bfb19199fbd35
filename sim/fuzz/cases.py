"""What a hostile guest does: choosers, operations, machine configurations."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

from devices.block import SECTOR
from sim.abi import papr
from sim.abi.virtio import (
    VIRTIO_BLK_T_BARRIER, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
)
from sim.qemu import releases as qemu_releases
from sim.scenario import Scenario

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
# and hw/block/virtio-blk.c; before 2.8 the same checks' error_report + exit(1)).
# A reason outside this list is a finding.
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

# ... and the 2.2-2.5 dataplane's (error_report calls in hw/virtio/dataplane/vring.c),
# with virtio_blk_handle_request's, which exit QEMU there.
VRING_REASONS = [re.compile(p) for p in (
    r"Failed to map 0x[0-9a-f]+ byte for vring (desc|avail|used) at 0x[0-9a-f]+",
    r"Guest moved used index from \d+ to \d+",
    r"Guest says index \d+ > \d+ is available",
    r"Desc index is \d+ > \d+, head = \d+",
    r"Loop detected: last one at \d+ vq size \d+ head \d+",
    r"Loop detected: last one at \d+ indirect size \d+",
    r"Invalid length in indirect descriptor: len (0|0x[0-9a-f]+) not multiple of 0x10",
    r"Indirect buffer length too big: -?\d+",
    r"Failed to map indirect descriptor addr (0|0x[0-9a-f]+) len 16",
    r"Nested indirect descriptor",
    r"Descriptor has out after in",
    r"Invalid SG num: \d+",
    r"Failed to map descriptor addr (0|0x[0-9a-f]+) len \d+",
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
class Event:
    """VIRTIO_RING_F_EVENT_IDX's fields as a hostile guest writes them:
    used_event (avail->ring[num]) anywhere in 16 bits -- behind, at, or far
    past the ring's indices -- and avail->idx, then a good request and a
    kick. QEMU never validates used_event (vring_need_event is 16-bit
    arithmetic): the request is served whatever it says; only the
    interrupt may be suppressed."""
    used_event: int
    flags: int        # avail->flags (VRING_AVAIL_F_NO_INTERRUPT, or junk)


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


# -- MMU-on loads and stores (the kernel stage's path) ----------------------

@dataclasses.dataclass
class Mmio:
    """One data-relocated (MSR[DR]=1) load or store: an instruction word,
    the address it touches (symbolic), the value in its source/target GPR
    beforehand, and the guest's MSR[LE]. A device address takes an HDSI and
    KVM emulates the word (or fails to); a RAM address is plain memory."""
    word: int
    addr: tuple
    val: int
    guest_le: bool


# The load/store forms the CPU model encodes (its load/store methods), by
# Power ISA primary opcode, or 31 and the extended opcode: D-form lbz 34,
# lhz 40, lwz 32, stb 38, sth 44, stw 36; DS-form ld 58/0, std 62/0;
# X-form lhbrx 790, lwbrx 534, ldbrx 532, sthbrx 918, stwbrx 662, stdbrx 660.
D_FORMS = {(1, False): 34, (2, False): 40, (4, False): 32, (8, False): 58,
           (1, True): 38, (2, True): 44, (4, True): 36, (8, True): 62}
X_BYTEREV = {(2, False): 790, (4, False): 534, (8, False): 532,
             (2, True): 918, (4, True): 662, (8, True): 660}
# More forms the 4.x kvmppc_emulate_loadstore emulates: update forms
# lwzu 33, lbzu 35, stwu 37, stbu 39, lhzu 41, lhau 43, sthu 45; lha 42;
# 31/xo lwzx 23, lbzx 87, lbzux 119, stwx 151, stbx 215, stbux 247,
# lhzx 279, lhzux 311, lhax 343, sthx 407, sthux 439; the cache ops dcbst 54,
# dcbf 86, dcbi 470 (done as nothing); any DS-form of ld/std (ldu, lwa, stdu).
MORE_PRIMARY = (33, 35, 37, 39, 41, 42, 43, 45)
MORE_XO31 = (23, 87, 119, 151, 215, 247, 279, 311, 343, 407, 439, 54, 86, 470)
# Memory-access instructions it does not emulate (EMULATE_FAIL): lfs..stfdu
# 48-55, lmw 46, stmw 47, lq 56; 31/xo lwarx 20, ldarx 84, stwcx. 150,
# stdcx. 214, lbarx 52, lharx 116, lswx 533, lswi 597, stswx 661, stswi 725,
# and the 64-bit and other forms only later kernels emulate: ldx 21, ldux 53,
# lwzux 55, stdx 149, stdux 181, stwux 183, lwax 341, lwaux 373, lhaux 375,
# ldbrx 532, stdbrx 660.
NEVER_OPS = (46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56)
NEVER_XO31 = (20, 84, 150, 214, 52, 116, 533, 597, 661, 725, 21, 53, 55, 149, 181, 183, 341, 373, 375,
              532, 660)
# Words that are no load or store at all: what KVM reads when the guest
# rewrote the instruction between the fault and the emulation (illegal 0,
# nop, sc 1, addi). They fail the same way.
NOT_MEMORY = (0x00000000, 0x60000000, 0x44000022, 0x38600001)


def word_for(size: int, store: bool, byte_reversed: bool, rt: int, ra: int, rb: int = 0, rc: int = 0) -> int:
    """The instruction word of one CPU-encodable form (D-form displacement 0)."""
    if byte_reversed:
        return (31 << 26) | (rt << 21) | (ra << 16) | (rb << 11) | (X_BYTEREV[(size, store)] << 1) | rc
    return (D_FORMS[(size, store)] << 26) | (rt << 21) | (ra << 16)


def gen_word(ch) -> int:
    """Mostly emulated forms: a failing word stops a 4.x VM, ending the case."""
    g = ch.integer(0, 39)
    rt, ra = ch.choice((10, 10, 0, 1, 9, 31, ch.integer(0, 31))), ch.choice((9, 9, 0, 10, ch.integer(0, 31)))
    rb, low = ch.choice((9, 0, ch.integer(0, 31))), ch.choice((0, 0, 0, 1))
    if g < 22:
        if ch.boolean():   # X-form: RA 0 (as ppc64's in_le32) or a base register; Rc ignored
            size = ch.choice((2, 4, 2, 4, 2, 4, 8))
            return word_for(size, ch.boolean(), True, rt, ch.choice((0, 0, ra)), rb, low)
        return word_for(ch.choice((1, 2, 4, 8)), ch.boolean(), False, rt, ra)
    if g < 30:
        return (ch.choice(MORE_PRIMARY) << 26) | (rt << 21) | (ra << 16) | ch.choice((0, 8, ch.integer(0, 0xFFFF)))
    if g < 34:
        return (31 << 26) | (rt << 21) | (ra << 16) | (rb << 11) | (ch.choice(MORE_XO31) << 1) | low
    if g < 36:
        return (ch.choice((58, 62)) << 26) | (rt << 21) | (ra << 16) | ch.choice((1, 2, 3))
    if g < 37:
        return (ch.choice(NEVER_OPS) << 26) | ch.integer(0, (1 << 26) - 1)
    if g < 39:
        return (31 << 26) | (ch.integer(0, (1 << 15) - 1) << 11) | (ch.choice(NEVER_XO31) << 1) | ch.integer(0, 1)
    return ch.choice(NOT_MEMORY)


def _mmio_addr(ch):
    base = ch.choice(("ram", "ram_end", "bar0", "bar0", "notify", "ioeventfd", "ioeventfd", "bar1", "bar4",
                      "bar4", "iowin", "memwin", "hole", "beyond", "top", "abs"))
    if base == "ram":
        return base, ch.choice((0, 8, RING, DATA, ch.integer(0, RAM_SIZE - 1)))
    if base in ("ram_end", "top"):
        return base, -ch.integer(0, 16)
    if base == "bar0":
        return base, ch.integer(0, 40)
    if base == "notify":
        return base, ch.choice((0, 0, 1, -1, 2))
    if base == "ioeventfd":     # the address of a registered ioeventfd (k-th), maybe off by one
        return base, (ch.integer(0, 3), ch.choice((0, 0, 0, 0, 1, -1, 2)))
    if base == "bar1":
        return base, ch.choice((0, 12, 0x800, ch.integer(0, 0x1000)))
    if base == "bar4":
        return base, ch.choice((0x0, 0x14, 0x16, 0x1000, 0x2000, 0x3000, 0x3004, ch.integer(0, 0x4000)))
    if base in ("iowin", "memwin"):   # in a PHB window, away from the BARs
        return base, ch.integer(0x8000, 0xFFFF)
    if base == "hole":
        return base, ch.integer(0, 1 << 40)
    if base == "beyond":
        return base, ch.integer(0, 1 << 20)
    return base, ch.integer(0, M64)


def gen_mmio(ch) -> Mmio:
    if ch.integer(0, 3) == 0:   # a queue kick: sth/sthbrx at a notify address, the one store KVM takes
        rev = ch.boolean()
        return Mmio(word_for(2, True, rev, 10, 0 if rev else 9, 9), ("ioeventfd", (ch.integer(0, 3), 0)),
                    ch.choice((0, 0, 0, 1, 0x100, 0xFFFF)), ch.choice((False, False, True)))
    return Mmio(gen_word(ch), _mmio_addr(ch), ch.choice((0, 1, 0x100, 0xFFFF, _u64(ch))),
                ch.choice((False, False, False, True)))


BLK_TYPES = (VIRTIO_BLK_T_IN, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
             2, 3, 5, 9, 11, 13, 0x10, VIRTIO_BLK_T_IN | VIRTIO_BLK_T_BARRIER,
             VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_BARRIER)


def gen_event(ch, num: int) -> Event:
    used_event = ch.choice((0, 1, num - 1, num, num + 1, 0x7FFF, 0x8000, 0xFFFF, ch.integer(0, 0xFFFF)))
    return Event(used_event, ch.choice((0, 1, 0xFFFF)))


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
    modern: bool = False     # disable-modern=off: a transitional device with BAR 4

    def scenario(self, queue_size: int) -> Scenario:
        q = self.qemu
        rel = qemu_releases.behaviour(q)
        return Scenario(path="<fuzz>", name=f"fuzz-{self.name}", kernel_version=self.kernel, kvm=self.kvm,
                        host_endian=self.host_endian, qemu_version=q, enable_logical_ci=rel.enable_logical_ci,
                        forward_userspace_kick=rel.userspace_kick != "handle_output",
                        emulate_ioeventfd=rel.emulate_ioeventfd,
                        iothread=self.iothread, ioeventfd=True, queue_size=queue_size, ram_mib=RAM_MIB,
                        disable_modern=not self.modern)


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
# ... and, for the MMU-on path, transitional devices (modern BAR 4; from
# 2.8 in the 64-bit window).
MMIO_CONFIGS = ALL_CONFIGS + (Config("modern-dataplane", "4.0", "HV", "big", (2, 5), True, True),
                              Config("modern-dataplane-le", "4.1", "HV", "little", (2, 8), True, True),
                              Config("modern-pr", "4.1", "PR", "big", (4, 2), False, True))


@dataclasses.dataclass
class Case:
    kind: str         # "hcall", "ring", "blk" or "mmio"
    config: Config
    queue_size: int
    writable: bool
    features: int     # GUEST_FEATURES written (masked by the device)
    ops: list


KINDS = ("hcall", "ring", "blk", "mmio")


def gen_op(ch, kind: str, num: int):
    if kind == "hcall":
        g = ch.integer(0, 7)
        return gen_rtas(ch) if g < 2 else Post(ch.choice((1, 8, 64))) if g == 2 else gen_hcall(ch)
    if kind == "ring":
        g = ch.choice(("ring", "ring", "ring", "pfn", "blk", "event"))
        if g == "event":
            return gen_event(ch, num)
        return gen_ring(ch, num) if g == "ring" else gen_pfn(ch) if g == "pfn" else gen_blk(ch)
    if kind == "mmio":
        return gen_mmio(ch)
    return gen_blk(ch)


def gen_case(ch, kind: str | None = None) -> Case:
    kind = kind or ch.choice(KINDS)
    config = ch.choice(ALL_CONFIGS if kind == "hcall" else MMIO_CONFIGS if kind == "mmio" else SERVING)
    num = ch.choice((4, 8, 128))
    features = ch.choice((0, 1 << 6, 1 << 28, 0xFFFFFFFF, 3 << 28))   # 3 << 28: INDIRECT_DESC | EVENT_IDX, as Linux
    n = ch.integer(1, 12 if kind == "mmio" else 6)
    ops = [gen_op(ch, kind, num) for _ in range(n)]
    return Case(kind, config, num, ch.boolean(), features, ops)


def disk_bytes() -> bytes:
    return b"".join(bytes((s * 31 + j) & 0xFF for j in range(SECTOR)) for s in range(DISK_SECTORS))


DISK = disk_bytes()


# -- results ---------------------------------------------------------------

@dataclasses.dataclass
class Tally:
    """What the guest saw, counted by kind: per case, and summed per campaign."""
    ops: Counter = dataclasses.field(default_factory=Counter)
    device_errors: Counter = dataclasses.field(default_factory=Counter)
    statuses: Counter = dataclasses.field(default_factory=Counter)
    hcall_paths: Counter = dataclasses.field(default_factory=Counter)
    mmio_paths: Counter = dataclasses.field(default_factory=Counter)

    def add_tally(self, other: "Tally") -> None:
        for f in dataclasses.fields(Tally):
            getattr(self, f.name).update(getattr(other, f.name))


@dataclasses.dataclass
class CaseResult(Tally):
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
