"""The hostile guest on the vcpu, and the oracle that checks every answer."""

from __future__ import annotations

import traceback

import trio
import trio.testing

from devices.block import SECTOR
from firmware_model.hvcall import HvCalls, bswap
from firmware_model.rtas_pci import Phb, PciFunction
from sim import vtime
from sim.abi import papr
from sim.abi.virtio import (
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_BARRIER, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_PCI_GUEST_FEATURES, VIRTIO_PCI_HOST_FEATURES, VIRTIO_PCI_QUEUE_NOTIFY, VIRTIO_PCI_QUEUE_NUM,
    VIRTIO_PCI_QUEUE_PFN, VIRTIO_PCI_QUEUE_SEL, VIRTIO_PCI_STATUS, VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, layouts, vring_addrs, vring_size,
)
from sim.abi.virtio import VIRTIO_PCI_ISR, VIRTIO_PCI_ISR_OFF, VIRTIO_PCI_REGION_SIZE
from sim.fuzz.ref_ring import predict_pop, predict_vring_pop
from sim.qemu import releases as qemu_releases
from sim.cpu import MMIO_ADDR_REG, MMIO_DATA_REG, encode_loadstore
from sim.fuzz.cases import (
    M64, Blk, Case, CaseResult, D_FORMS, DATA, DATA_STRIDE, DISK, DISK_SECTORS, Event, HDR, Hcall, INDIRECT, LOADS,
    MAX_HCALL_OPCODE, Mmio, Pfn, Post, QEMU_REASONS, VRING_REASONS, QUIESCE_S, RAM_SIZE, RING, RTAS_BUF, Ring, Rtas,
    SERVE_WAIT_S, STATUS, STORES, X_BYTEREV, reason_class,
)

BOOK3S_INTERRUPT_PROGRAM = 0x700


# The oracle's reading of the 4.x kvmppc_emulate_loadstore (an opcode
# switch; numbers from ppc-opcode.h): size, L(oad)/S(tore), and flags
# u(pdate RA with the EA), a (sign-extend, kvmppc_handle_loads),
# r (byte-reversed: is_default_endian 0).
_REF_PRIMARY = {32: "4L", 33: "4Lu", 34: "1L", 35: "1Lu", 36: "4S", 37: "4Su", 38: "1S", 39: "1Su",
                40: "2L", 41: "2Lu", 42: "2La", 43: "2Lau", 44: "2S", 45: "2Su", 58: "8L", 62: "8S"}
_REF_OP31 = {23: "4L", 87: "1L", 119: "1Lu", 151: "4S", 215: "1S", 247: "1Su", 279: "2L", 311: "2Lu",
             343: "2La", 407: "2S", 439: "2Su", 534: "4Lr", 662: "4Sr", 790: "2Lr", 918: "2Sr"}
_REF_NOPS = (54, 86, 470)    # dcbst, dcbf, dcbi: "Do nothing"


def ref_decode(word: int):
    """(size, store, byte_reversed, sign_extend, rt, update RA or None),
    "nop", or None for EMULATE_FAIL. The RA of a non-update form plays no
    part: the address is the fault's (vcpu->arch.paddr_accessed)."""
    op, rt, ra = word >> 26, (word >> 21) & 31, (word >> 16) & 31
    if op == 31:
        xo = (word >> 1) & 0x3FF
        if xo in _REF_NOPS:
            return "nop"
        f = _REF_OP31.get(xo)
    else:
        f = _REF_PRIMARY.get(op)
    if f is None:
        return None
    return int(f[0]), f[1] == "S", "r" in f, "a" in f, rt, ra if "u" in f else None


def cpu_form(word: int):
    """(size, store, byte_reversed) if the CPU model's load/store methods
    encode this form (what the guest can execute from RAM here)."""
    op = word >> 26
    for (size, store), o in D_FORMS.items():
        if op == o and (o not in (58, 62) or word & 3 == 0):
            return size, store, False
    if op == 31:
        for (size, store), x in X_BYTEREV.items():
            if (word >> 1) & 0x3FF == x:
                return size, store, True
    return None


def _sext(value: int, size: int) -> int:
    sign = 1 << (8 * size - 1)
    return ((value ^ sign) - sign) & M64


# -- the oracle ------------------------------------------------------------

# What the oracle knows of KVM, from reference/kvm.md (not from sim.kvm):
# the hcalls kvmppc_core_init_vm_* enable by default that the guest here
# can meet in the kernel (H_CEDE and the XICS calls, in both lists), the
# in-kernel H_LOGICAL_CI_* handlers from Linux 4.1, and the KVM_IOEVENTFD
# and KVM_ENABLE_CAP rules.
# H_CEDE; XICS: H_EOI 0x64, H_CPPR 0x68, H_IPI 0x6c, H_IPOLL 0x70, H_XIRR 0x74, H_XIRR_X 0x2fc.
_DEFAULT_ENABLED = frozenset({papr.H_CEDE, papr.H_EOI, 0x68, 0x6C, 0x70, papr.H_XIRR, 0x2FC})
_LOGICAL_CI = (papr.H_LOGICAL_CI_LOAD, papr.H_LOGICAL_CI_STORE)
_REF_MAX_HCALL_OPCODE = 0x304     # H_SET_MODE in 3.17-4.x
_DATAMATCH, _PIO, _DEASSIGN = 1, 2, 4
_EINVAL, _EEXIST, _ENOENT = -22, -17, -2


class Oracle:
    """What reference/kvm.md and qemu.md say the guest must see. Its
    enable bits and ioeventfds are its own: computed from the
    KVM_ENABLE_CAP and KVM_IOEVENTFD calls made to this VM (seen at the
    ioctl boundary, arguments only), each call's return value predicted
    and checked, never read back from KVM's state."""

    def __init__(self, m, vm, trace, result: CaseResult, config=None):
        self.m, self.vm, self.trace, self.result = m, vm, trace, result
        self.expect_stop = None    # an MMIO op whose emulation must fail and stop the VM
        # What a bad ring does in this release (sim.qemu.releases ring_error,
        # dataplane_pop): QEMU exits, or the device (or the 2.2-2.5
        # dataplane's vring) breaks. expect_exit: the message QEMU must exit
        # with, True (any of QEMU's), False (it must not exit), None (not predicted).
        rel = qemu_releases.behaviour(config.qemu if config else (2, 4))
        self.ring_error = rel.ring_error
        self.vring = bool(config and config.iothread) and rel.dataplane_pop == "vring"
        self.expect_exit = None
        self.virtio_errors = 0     # virtio_error events among the last device_errors_since
        kernel = tuple(int(x) for x in (config.kernel if config else "4.1").split(".")[:2])
        self.has_logical_ci = kernel >= (4, 1)      # kvm.md: Linux 4.1 added the in-kernel handlers
        self.host_order = config.host_endian if config else "big"
        self.enabled = set(_DEFAULT_ENABLED)
        self.ioeventfds: list[dict] = []           # as registered, in order
        self.predicted_rings = self.unpredicted_rings = 0
        vm.ioctl_enable_cap = self._spy(vm.ioctl_enable_cap, self._enable_cap)
        vm.ioctl_ioeventfd = self._spy(vm.ioctl_ioeventfd, self._ioeventfd)

    def _spy(self, ioctl, predict):
        def call(raw: bytes) -> int:
            want, apply = predict(raw)
            ret = ioctl(raw)
            if want is not None and ret != want:
                self.violation(f"{ioctl.__name__}({raw[:32].hex()}...): returned {ret}, kvm.md says {want}")
            elif apply is not None:
                apply()
            return ret
        return call

    def _enable_cap(self, raw: bytes):
        """kvm_vm_ioctl_enable_cap, KVM_CAP_PPC_ENABLE_HCALL (kvm.md §4)."""
        from sim.abi.kvm import KVM_CAP_PPC_ENABLE_HCALL, kvm_enable_cap
        cap = kvm_enable_cap.parse(raw)
        hcall, on = cap.args[0], cap.args[1]
        if cap.flags or cap.cap != KVM_CAP_PPC_ENABLE_HCALL or hcall > _REF_MAX_HCALL_OPCODE or hcall & 3 \
                or on > 1:
            return _EINVAL, None
        if hcall in _LOGICAL_CI and not self.has_logical_ci:
            return _EINVAL, None
        if hcall not in _LOGICAL_CI and hcall not in _DEFAULT_ENABLED:
            return None, None       # outside what the oracle knows: no prediction (QEMU asks for no other)
        return 0, (lambda: self.enabled.add(hcall)) if on else (lambda: self.enabled.discard(hcall))

    def _ioeventfd(self, raw: bytes):
        """kvm_ioeventfd: assign or deassign (kvm.md §6)."""
        from sim.abi.kvm import kvm_ioeventfd
        a = kvm_ioeventfd.parse(raw)
        p = dict(addr=a.addr, length=a.len, fd=a.fd, bus="pio" if a.flags & _PIO else "mmio",
                 wildcard=not a.flags & _DATAMATCH, datamatch=a.datamatch if a.flags & _DATAMATCH else 0)
        if a.flags & _DEASSIGN:
            for k, q in enumerate(self.ioeventfds):
                if all(q[f] == p[f] for f in ("bus", "fd", "addr", "length", "wildcard")) and \
                        (p["wildcard"] or q["datamatch"] == p["datamatch"]):
                    return 0, lambda: self.ioeventfds.pop(k)
            return _ENOENT, None
        if a.flags & ~0xF or a.len not in (0, 1, 2, 4, 8) or a.addr + a.len > (1 << 64) - 1 \
                or (a.len == 0 and a.flags & _DATAMATCH):
            return _EINVAL, None
        for q in self.ioeventfds:
            if q["bus"] == p["bus"] and q["addr"] == p["addr"] and (
                    not q["length"] or not p["length"] or (q["length"] == p["length"] and (
                        q["wildcard"] or p["wildcard"] or q["datamatch"] == p["datamatch"]))):
                return _EEXIST, None
        return 0, lambda: self.ioeventfds.append(p)

    def violation(self, text: str) -> None:
        self.result.violations.append(text)

    def _ioeventfd_takes(self, addr: int, size: int, image: bytes) -> bool:
        """An exact address, and (length 0, or the same length and wildcard
        or the bytes read in host order equal to datamatch)."""
        for p in self.ioeventfds:
            if p["bus"] != "mmio" or p["addr"] != addr:
                continue
            if not p["length"] or (p["length"] == size and (
                    p["wildcard"] or int.from_bytes(image, self.host_order) == p["datamatch"])):
                return True
        return False

    # KVM: kvmppc_pseries_do_hcall / kvmppc_h_pr, then h_logical_ci_*.
    def expect_in_kernel(self, nr: int, size: int, addr: int, val: int) -> bool:
        if nr in (papr.H_CEDE, papr.H_XIRR, papr.H_EOI):
            return nr in self.enabled            # kvmppc_h_cede; the in-kernel XICS
        if nr not in _LOGICAL_CI:
            return False          # nothing else has an in-kernel handler in this model
        if nr not in self.enabled or not self.has_logical_ci:
            return False
        if size not in (1, 2, 4, 8) or nr == papr.H_LOGICAL_CI_LOAD:
            return False          # no in-kernel device on KVM_MMIO_BUS has a read op
        return self._ioeventfd_takes(addr, size, (val & ((1 << (8 * size)) - 1)).to_bytes(size, "big"))

    # KVM: kvmppc_handle_store -> kvm_io_bus_write (kvm.md §7, §5, §6).
    def expect_mmio_in_kernel(self, addr: int, size: int, image: bytes) -> bool:
        """A store's bus buffer is the guest's memory image."""
        return self._ioeventfd_takes(addr, size, image)

    def signals(self) -> int:
        """Signals counted on the eventfds of the oracle's registrations."""
        fds = {p["fd"] for p in self.ioeventfds}
        return sum(getattr(self.vm.fds.get(fd), "signals", 0) for fd in sorted(fds))

    def kvm_exits_since(self, mark: int) -> list:
        return [e for e in self.trace.events[mark:] if e.actor == "kvm" and e.name == "exit"]

    def check_stopped_on_failure(self, result, cpu) -> None:
        """After an emulation failure (4.x): KVM_EXIT_UNKNOWN with a program
        interrupt queued, and QEMU's vm_stop(RUN_STATE_INTERNAL_ERROR)."""
        what = self.expect_stop
        if not isinstance(result, dict) or result.get("run_state") != "internal-error":
            self.violation(f"{what}: expected the VM stopped (internal-error), the run ended with {result!r}")
        exits = [e for e in self.trace.events if e.actor == "kvm" and e.name == "exit"]
        if not exits or exits[-1].fields.get("reason") != "KVM_EXIT_UNKNOWN":
            self.violation(f"{what}: last exit {exits[-1].fields if exits else None}, expected KVM_EXIT_UNKNOWN")
        if cpu.pending_exception != BOOK3S_INTERRUPT_PROGRAM:
            self.violation(f"{what}: pending interrupt {cpu.pending_exception}, expected a program interrupt")

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
            if want is not None and ret != want:
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
        """The reasons of the device's virtio_error and the dataplane's
        vring_error events, each checked to be one this release has."""
        out, self.virtio_errors = [], 0
        for e in self.trace.events[mark:]:
            if e.name in ("virtio_error", "vring_error"):
                self.virtio_errors += e.name == "virtio_error"
                # Model gap, not predicted here: the ring-mapping check at
                # QUEUE_PFN/features (virtio_init_region_cache) follows 2.9+
                # in every release.
                if e.name == "virtio_error" and self.ring_error == "exit" \
                        and not e.fields["reason"].startswith("Cannot map "):
                    self.violation(f"virtio_error({e.fields['reason']!r}) in a QEMU that exits on a guest error")
                if e.name == "vring_error" and not self.vring:
                    self.violation(f"vring_error({e.fields['reason']!r}) without the 2.2-2.5 dataplane")
                out.append(e.fields["reason"])
        return out

    def check_exit(self, run_result: dict) -> None:
        """QEMU called exit(1): only a release that does so, with QEMU's
        words, and the message predicted where the op predicts one."""
        reason, want = run_result.get("reason"), self.expect_exit
        self.result.device_errors["exit: " + reason_class(reason)] += 1
        if self.ring_error != "exit":
            self.violation(f"QEMU exited ({reason!r}); this release calls virtio_error")
        elif want is False:
            self.violation(f"QEMU exited ({reason!r}) where the op must not make it exit")
        elif isinstance(want, str) and reason != want:
            self.violation(f"QEMU exited with {reason!r}; the oracle predicts {want!r}")
        elif not any(p.fullmatch(reason) for p in QEMU_REASONS):
            self.violation(f"QEMU's exit message not in its words: {reason!r}")

    def note_errors(self, reasons) -> None:
        for r in reasons:
            self.result.device_errors[reason_class(r)] += 1
            if not any(p.fullmatch(r) for p in QEMU_REASONS + (VRING_REASONS if self.vring else [])):
                self.violation(f"device error reason not in QEMU's words: {r!r}")
        if reasons and self.virtio_errors:
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
        self.bar0 = self.bar1 = self.bar4 = None
        self.num = 0
        self.disk = bytearray(DISK)      # the oracle's copy: DISK and the writes that succeeded
        self._write = None

    # symbolic addresses
    def resolve(self, a) -> int:
        base, off = a
        if base == "ioeventfd":         # the k-th registered ioeventfd's address (+ delta)
            k, delta = off
            fds = self.oracle.ioeventfds
            return ((fds[k % len(fds)]["addr"] if fds else (self.bar0 or 0) + VIRTIO_PCI_QUEUE_NOTIFY) + delta) & M64
        if base in ("iowin", "memwin"):
            node = self.m.phb_node
            return ((node["io_window"][0] if base == "iowin" else node["mem_window"][1]) + off) & M64
        if base == "bar4" and self.bar4 is None:
            base = "bar0"
        bases = {"ram": 0, "ram_end": RAM_SIZE, "bar0": self.bar0 or 0, "bar1": self.bar1 or 0,
                 "bar4": self.bar4 or 0,
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
        self.bar4 = fn.cpu_address(4) if 4 in fn.bars else None   # transitional: the modern BAR

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
        o, mark = self.oracle, len(self.oracle.trace.events)
        await hv.ci_write(1, b + VIRTIO_PCI_STATUS, 7)
        self.avail_idx = 0
        # DRIVER_OK starts the ioeventfd, and QEMU creates the host notifier
        # already signalled (event_notifier_init(notifier, 1); qemu.md §5):
        # the queue is popped once, with no kick, as soon as the main loop
        # (then the dataplane's self-kick) gets to it. The guest's RAM stores
        # take no simulated time, so a ring written now would be popped by
        # that start-up notifier whatever the guest's kick says. Let it run
        # on the empty ring: from here on only the guest's kicks pop.
        await self.sleep(QUIESCE_S)
        reasons = o.device_errors_since(mark)
        o.note_errors(reasons)
        if reasons or self.used_idx():
            o.violation(f"DRIVER_OK on an empty ring: used->idx {self.used_idx()}, device errors {reasons}")

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
        if self.m.blk.broken or self.avail_idx:
            await self.reset()                  # from a known ring: last_avail_idx 0
        for i, *d in op.descs:
            self._write_desc(self.desc, i, d)
        for i, d in enumerate(op.indirect):
            self._write_desc(INDIRECT, i, d)
        for slot, head in op.avail:
            self.poke(self.avail + 4 + 2 * slot, head.to_bytes(2, "big"))
        new_idx = (self.avail_idx + op.idx_step) & 0xFFFF
        self.poke(self.avail + 2, new_idx.to_bytes(2, "big"))
        # The oracle's virtqueue_pop over the ring as written; a notify of
        # another queue (kick_val != 0) pops nothing.
        if op.kick_val:
            served, error, source = 0, None, None
        elif o.vring:
            served, error, source = predict_vring_pop(self.ram.read, RAM_SIZE, num, self.desc, self.avail,
                                                      self.used, self.avail_idx)
        else:
            served, error, source = predict_pop(self.ram.read, RAM_SIZE, num, self.desc, self.avail, self.avail_idx)
        # Before 2.8 a bad ring or header is error_report(); exit(1), except
        # a ring error the 2.2-2.5 dataplane's vring_pop finds (vring->broken).
        fatal = error is not None and o.ring_error == "exit" and (source == "request" or not o.vring)
        o.expect_exit = error if fatal else False
        mark, used0 = len(o.trace.events), self.used_idx()
        await self.kick(op.kick_val)
        await self.wait_used(used0)
        o.expect_exit = None
        if fatal:
            o.violation(f"ring {op}: QEMU exits ({error!r}); the VM went on")
            await self.reset()
            return
        reasons = o.device_errors_since(mark)
        o.note_errors(reasons)
        completed = [e for e in o.trace.events[mark:] if e.name == "blk_complete"]
        moved = (self.used_idx() - used0) & 0xFFFF
        if moved != len(completed):
            o.violation(f"ring: used->idx moved by {moved}, {len(completed)} requests completed")
        if reasons != ([error] if error else []):
            o.violation(f"ring {op}: QEMU's virtqueue_pop gives {[error] if error else 'no error'}; "
                        f"the device said {reasons}")
        # virtqueue_fill/flush do nothing once the device is broken, so a
        # request popped before the error never reaches the used ring.
        want = 0 if error else served
        if len(completed) != want:
            o.violation(f"ring {op}: {served} requests pop{' before the error' if error else ''}, so {want} "
                        f"complete; {len(completed)} completed")
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

    async def op_event(self, op: Event) -> None:
        """used_event and avail->flags as given, then a FLUSH posted and
        kicked: it must complete (the event index gates interrupts only)."""
        o, num = self.oracle, self.num
        if self.m.blk.broken:
            await self.reset()
        self.poke(self.avail + 4 + 2 * num, op.used_event.to_bytes(2, "big"))
        self.poke(self.avail, op.flags.to_bytes(2, "big"))
        head = (2 * self.avail_idx) % num
        self.ram.write(HDR, self.L.blk_outhdr_fast.pack(VIRTIO_BLK_T_FLUSH, 0, 0))
        self.poke(self.desc + 16 * head, self.L.desc_fast.pack(HDR, 16, VRING_DESC_F_NEXT, (head + 1) % num))
        self.poke(self.desc + 16 * ((head + 1) % num), self.L.desc_fast.pack(STATUS, 1, VRING_DESC_F_WRITE, 0))
        self.poke(self.avail + 4 + 2 * (self.avail_idx % num), head.to_bytes(2, "big"))
        self.poke(self.avail + 2, ((self.avail_idx + 1) & 0xFFFF).to_bytes(2, "big"))
        mark, used0 = len(o.trace.events), self.used_idx()
        await self.kick()
        await self.wait_used(used0)
        reasons = o.device_errors_since(mark)
        o.note_errors(reasons)
        if not reasons and self.used_idx() != (used0 + 1) & 0xFFFF:
            o.violation(f"event: used_event {op.used_event:#x}, flags {op.flags:#x}: a good request was not served")
        await self.reset()

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
        QEMU's rules: ('error', "pop" or "request": where it fails) or
        (status|None for any, in_len)."""
        if any(n == 0 for _, n, _w in chain):
            return "error", "pop"
        seen_in = False
        for _, _n, w in chain:
            if w:
                seen_in = True
            elif seen_in:
                return "error", "pop"          # Incorrect order for descriptors
        out = [(a, n) for a, n, w in chain if not w]
        ins = [(a, n) for a, n, w in chain if w]
        if not out or not ins:
            return "error", "request"          # virtio-blk missing headers
        out_bytes = b"".join(self.ram.read(a, n) for a, n in out)
        if len(out_bytes) < 16:
            return "error", "request"          # outhdr too short
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
            if is_write:     # the oracle's own copy of the disk takes the write once it succeeds
                self._write = (sector, out_bytes[16:16 + size])
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
        self._write = None
        expect, in_len = self._expect_blk(chain)
        last_in = [(a, n) for a, n, w in chain if w][-1:] if expect != "error" else []
        # Before 2.8 QEMU exits, except on a ring error the 2.2-2.5 dataplane finds.
        source = in_len if expect == "error" else None      # "pop" or "request"
        fatal = source is not None and o.ring_error == "exit" and (source == "request" or not o.vring)
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
        o.expect_exit = fatal
        await self.kick()
        await self.wait_used(used0)
        o.expect_exit = None
        what = f"blk {op}"
        if fatal:
            o.violation(f"{what}: QEMU exits on this chain; the VM went on")
            await self.reset()
            return
        reasons = o.device_errors_since(mark)
        o.note_errors(reasons)
        moved = (self.used_idx() - used0) & 0xFFFF
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
            if got != bytes(self.disk[sector * SECTOR:sector * SECTOR + size]):
                o.violation(f"{what}: the data read is not the disk's")
        elif expect is not None and status != expect:
            o.violation(f"{what}: status {status}, expected {expect}")
        elif self._write is not None and status == VIRTIO_BLK_S_OK:
            sector, data = self._write
            self.disk[sector * SECTOR:sector * SECTOR + len(data)] = data
        elif status not in (VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP):
            o.violation(f"{what}: status byte {status}")

    # -- MMU-on loads and stores -------------------------------------------

    def _signals(self) -> int:
        return self.oracle.signals()

    def _side_effect_read(self, base: str, addr: int, size: int) -> bool:
        """A register whose read changes it (the ISR, legacy or modern)."""
        if base in ("bar0", "notify", "ioeventfd") and self.bar0 is not None:
            isr = self.bar0 + VIRTIO_PCI_ISR
            if addr <= isr < addr + size:
                return True
        if self.bar4 is not None:
            lo = self.bar4 + VIRTIO_PCI_ISR_OFF
            if addr < lo + VIRTIO_PCI_REGION_SIZE and lo < addr + size:
                return True
        return False

    async def op_mmio(self, op: Mmio) -> None:
        cpu, o, gpr = self.cpu, self.oracle, self.cpu.gpr
        addr = self.resolve(op.addr)
        dec, form = ref_decode(op.word), cpu_form(op.word)
        what = f"mmio 0x{op.word:08x} at 0x{addr:x} val 0x{op.val:x} MSR[LE]={int(op.guest_le)}"
        if addr < RAM_SIZE:
            if form is not None:
                await self._mmio_ram(op, addr, form, what)
                return
            addr = RAM_SIZE + (addr & 0xFFF)     # RAM would not fault: take the word to a device page
        if isinstance(dec, tuple):
            size, store, rev, sext, rt, upd = dec
        else:
            size, store, rev, sext, rt, upd = 0, False, False, False, 0, None
        order = "little" if op.guest_le != rev else "big"      # the memory image's byte order
        mask = (1 << (8 * size)) - 1
        fix = (lambda v: _sext(v, size)) if sext else (lambda v: v)
        want_value = None
        if size and not store:
            r = self.m.address_space.lookup(addr)
            if r is None or addr + size > r.start + r.size:
                want_value = 0                    # unassigned_mem_read
            elif not self._side_effect_read(op.addr[0], addr, size):
                # The same register through QEMU's h_logical_load: its
                # big-endian image, read in the guest's order.
                ci = await self.hv.ci_read(size, addr)
                want_value = fix(int.from_bytes(ci.to_bytes(size, "big"), order))
        if size:
            gpr[rt] = op.val & M64
        before = list(gpr)
        image = (before[rt] & mask).to_bytes(size, order) if store else None
        # Decided on the bus as it stands before the access (the exit may
        # make QEMU start the dataplane, which registers the ioeventfd).
        in_kernel = store and o.expect_mmio_in_kernel(addr, size, image)
        mark, sig0 = len(o.trace.events), self._signals()
        if dec is None:
            o.expect_stop = what
            o.result.mmio_paths["emulation failure"] += 1
        cpu.msr_dr, cpu.msr_le = True, op.guest_le
        try:
            await cpu.execute_loadstore(op.word, addr)
        finally:
            cpu.msr_dr, cpu.msr_le = False, False
        if dec is None:
            o.violation(f"{what}: KVM cannot emulate it; 4.x exits KVM_EXIT_UNKNOWN and QEMU stops the "
                        "VM, but the guest ran on")
            o.expect_stop = None
            return
        exits = o.kvm_exits_since(mark)
        if dec == "nop":
            o.result.mmio_paths["cache op, done as nothing"] += 1
            if exits or gpr != before:
                o.violation(f"{what}: dcbst/dcbf/dcbi are emulated as nothing; exits {exits}, "
                            f"GPRs {[i for i in range(32) if gpr[i] != before[i]]} changed")
            return
        run = o.vm.vcpus[0].run_state.get_mmio()
        if in_kernel:
            o.result.mmio_paths["store taken by an ioeventfd in KVM"] += 1
            if exits:
                o.violation(f"{what}: an ioeventfd matches; expected no exit, got {[e.fields for e in exits]}")
            if self._signals() != sig0 + 1:
                o.violation(f"{what}: ioeventfd signals {self._signals() - sig0}, expected 1")
        else:
            o.result.mmio_paths["KVM_EXIT_MMIO " + ("store" if store else "load")] += 1
            if [e.fields.get("reason") for e in exits] != ["KVM_EXIT_MMIO"]:
                o.violation(f"{what}: exits {[e.fields for e in exits]}, expected one KVM_EXIT_MMIO")
            if (run.phys_addr, run.len, bool(run.is_write)) != (addr, size, store):
                o.violation(f"{what}: kvm_run.mmio (0x{run.phys_addr:x}, len {run.len}, "
                            f"is_write {run.is_write}), expected (0x{addr:x}, {size}, {int(store)})")
            if store and run.data[:size] != image:
                o.violation(f"{what}: kvm_run.mmio.data {run.data[:size].hex()}, expected the guest's "
                            f"memory image {image.hex()}")
        allowed = set()
        if upd is not None:
            allowed.add(upd)
            # RA := EA right after the emulation call; a load's RT is
            # written after that, at the next KVM_RUN (so RT wins if RA=RT).
            if (store or upd != rt) and gpr[upd] != addr:
                o.violation(f"{what}: update form left r{upd}=0x{gpr[upd]:x}, expected the EA 0x{addr:x}")
        if not store:
            allowed.add(rt)
            got = gpr[rt]
            if got != fix(int.from_bytes(run.data[:size], order)):
                o.violation(f"{what}: r{rt}=0x{got:x} is not kvm_run.mmio.data {run.data[:size].hex()} "
                            f"read {order}-endian{' and sign-extended' if sext else ''}")
            if not sext and got >> (8 * size):
                o.violation(f"{what}: r{rt}=0x{got:x} not zero-extended from {size} bytes")
            if want_value is not None and got != want_value:
                o.violation(f"{what}: r{rt}=0x{got:x}, expected 0x{want_value:x}")
        changed = [i for i in range(32) if gpr[i] != before[i] and i not in allowed]
        if changed:
            o.violation(f"{what}: GPRs {changed} changed")
        o.note_errors(o.device_errors_since(mark))
        await self.sleep(QUIESCE_S)

    async def _mmio_ram(self, op: Mmio, addr: int, form, what: str) -> None:
        """A form the CPU encodes, at a RAM address: plain memory (no trap),
        or, straddling the end of RAM, an HDSI at the address through the
        CPU's own load/store (whose word KVM then decodes)."""
        cpu, o = self.cpu, self.oracle
        size, store, rev = form
        order = "little" if op.guest_le != rev else "big"
        mask = (1 << (8 * size)) - 1
        straddles = addr + size > RAM_SIZE
        if straddles and ref_decode(encode_loadstore(size, store, rev, MMIO_DATA_REG, MMIO_ADDR_REG)) is None:
            o.expect_stop = what
            o.result.mmio_paths["emulation failure"] += 1
        mark = len(o.trace.events)
        cpu.msr_dr, cpu.msr_le = True, op.guest_le
        try:
            if store:
                await cpu.store(addr, size, op.val & mask, byte_reversed=rev)
                got = None
            else:
                got = await cpu.load(addr, size, byte_reversed=rev)
        finally:
            cpu.msr_dr, cpu.msr_le = False, False
        if o.expect_stop:
            o.violation(f"{what}: KVM cannot emulate it; 4.x stops the VM, but the guest ran on")
            o.expect_stop = None
            return
        exits = o.kvm_exits_since(mark)
        if not straddles:
            o.result.mmio_paths["RAM"] += 1
            if exits:
                o.violation(f"{what}: a RAM access exited: {[e.fields for e in exits]}")
            mem = self.ram.read(addr, size)
            if store and mem != (op.val & mask).to_bytes(size, order):
                o.violation(f"{what}: RAM holds {mem.hex()} after the store")
            if not store and got != int.from_bytes(mem, order):
                o.violation(f"{what}: loaded 0x{got:x} from RAM holding {mem.hex()}")
            return
        o.result.mmio_paths["straddles the end of RAM"] += 1
        run = o.vm.vcpus[0].run_state.get_mmio()
        if [e.fields.get("reason") for e in exits] != ["KVM_EXIT_MMIO"] or \
                (run.phys_addr, run.len, bool(run.is_write)) != (addr, size, store):
            o.violation(f"{what}: exits {[e.fields for e in exits]}, expected one KVM_EXIT_MMIO at 0x{addr:x}")
        if not store and got >> (8 * size):
            o.violation(f"{what}: loaded 0x{got:x}, wider than {size} bytes")
