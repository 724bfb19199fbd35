"""The hostile guest on the vcpu, and the oracle that checks every answer."""

from __future__ import annotations

import traceback

import trio
import trio.testing

from devices.block import SECTOR
from firmware_model.hvcall import HvCalls, bswap
from firmware_model.pci import Phb, PciFunction
from sim import vtime
from sim.abi import papr
from sim.abi.kvm import KVM_MMIO_BUS
from sim.abi.virtio import (
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_BARRIER, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_PCI_GUEST_FEATURES, VIRTIO_PCI_HOST_FEATURES, VIRTIO_PCI_QUEUE_NOTIFY, VIRTIO_PCI_QUEUE_NUM,
    VIRTIO_PCI_QUEUE_PFN, VIRTIO_PCI_QUEUE_SEL, VIRTIO_PCI_STATUS, VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, layouts, vring_addrs, vring_size,
)
from sim.fuzz.cases import (
    M64, Blk, Case, CaseResult, DATA, DATA_STRIDE, DISK, DISK_SECTORS, HDR, Hcall, INDIRECT, LOADS,
    MAX_HCALL_OPCODE, Pfn, Post, QEMU_REASONS, QUIESCE_S, RAM_SIZE, RING, RTAS_BUF, Ring, Rtas,
    SERVE_WAIT_S, STATUS, STORES, reason_class,
)

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
        if nr in (papr.H_CEDE, papr.H_XIRR, papr.H_EOI):
            return bool(vm.enabled_hcalls[nr // 4])   # kvmppc_h_cede; the in-kernel XICS
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
