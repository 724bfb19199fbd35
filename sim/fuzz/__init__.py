"""A hostile guest: a fuzz campaign against the host side (KVM, QEMU, devices).

The guest here is not SLOF. It runs on the same vcpu and reaches the host
the same ways a real guest does -- `sc 1` hcalls, and guest RAM for the
rings and buffers -- but with arbitrary hcall numbers, sizes, addresses and
values, arbitrary vring contents and arbitrary virtio-blk headers -- and,
with the MMU on (the kernel stage's path), arbitrary load/store instruction
words at arbitrary addresses, which take an HDSI to KVM's MMIO emulation.

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
- KVM's answer to every MMU-on access (kvm.md §7, kvmppc_emulate_loadstore
  of the 4.x kernels): a store an ioeventfd matches (exact address, length,
  datamatch on the guest-endian memory image read in host order) signals it
  with no exit; every other emulated access exits KVM_EXIT_MMIO with
  phys_addr/len/is_write and that memory image; a load completes into its
  GPR in the guest's byte order, zero- or (lha) sign-extended, an update
  form sets RA to the EA, and no other GPR moves; a word KVM cannot emulate
  exits KVM_EXIT_UNKNOWN with a program interrupt queued, and QEMU stops
  the VM (internal-error);
- the device either serves a request correctly (status, used id and len,
  the data read) or does what QEMU does: IOERR/UNSUPP, or, for a bad ring
  or header, what the release does (sim.qemu.releases ring_error,
  dataplane_pop): virtio_error (2.8+) or the 2.2-2.5 dataplane's
  vring->broken, with QEMU's reason, after which the queue is not served
  until reset; or, before 2.8, QEMU's exit(1) with its message, which ends
  the machine (checked against the oracle's prediction).

The oracle predicts, it never reads back: the enable bits and ioeventfds
are its own, computed from the KVM_ENABLE_CAP and KVM_IOEVENTFD calls made
to the VM (each call's return value predicted too), and a ring's one QEMU
message comes from its own virtqueue_pop or 2.2-2.5 vring_pop
(sim/fuzz/ref_ring.py).

Hostile disks (sim/fuzz/disks.py) take a quarter of a campaign: whole boots
of a corrupted MBR, EBR chain, GPT or ELF, checked for "ends within a
bound", "no host exception" and "booted implies the marker".

Every fourth machine of the campaign is a fault case instead
(sim.fuzz.faults): SLOF on a random stack under random sim.faults, with
its own oracle (every outcome explained by the trace).

Choices come from a Chooser, so the same generators serve hypothesis
(tests/test_hostile.py) and `slofsim fuzz` (random.Random(seed)).
"""

from sim.fuzz.campaign import campaign, cmd_fuzz, run_case
from sim.fuzz.cases import (
    DISK, MMIO_CONFIGS, RAM_SIZE, RTAS_BUF, SERVING, Blk, Case, Event, Hcall, Mmio, Pfn, Ring, Rtas, gen_case,
    word_for,
)

__all__ = ["DISK", "MMIO_CONFIGS", "RAM_SIZE", "RTAS_BUF", "SERVING", "Blk", "Case", "Event", "Hcall", "Mmio", "Pfn",
           "Ring", "Rtas", "campaign", "cmd_fuzz", "gen_case", "run_case", "word_for"]
