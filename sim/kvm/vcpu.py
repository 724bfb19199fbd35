"""A KVM vcpu: the KVM_RUN ioctl and the struct kvm_run it fills.

KVM_RUN runs the guest on the calling thread (QEMU's vcpu thread) until
something needs userspace. Here "running the guest" means stepping the
guest coroutine: its trio sleeps are passed through, and each trap it takes
is handled in the kernel when possible (no return to QEMU) or turned into a
KVM_EXIT_* for QEMU.
"""

import types

from sim.abi import papr
from sim.abi.kvm import EXIT_NAMES, KVM_EXIT_MMIO, KVM_EXIT_PAPR_HCALL, KVM_EXIT_UNKNOWN, KVM_RUN_MMIO
from sim.cpu import HDSI, TIMEBASE_FREQ, Trap
from sim import vtime
from sim.kvm import book3s
from sim.trace import fields_builder

BOOK3S_INTERRUPT_EXTERNAL = 0x500
BOOK3S_INTERRUPT_DECREMENTER = 0x900
BOOK3S_INTERRUPT_PROGRAM = 0x700
DEC_MAX_S = (1 << 31) / TIMEBASE_FREQ

# Not a KVM exit: the guest model finished what it models (SLOF at its
# prompt, or the kernel spinning). The machine stops here.
SIM_GUEST_IDLE = -1


class PaprHcall:
    __slots__ = ("nr", "ret", "args")

    def __init__(self):
        self.nr = 0
        self.ret = 0
        self.args = [0] * 9


class KvmRun:
    """struct kvm_run, the fields book3s uses. The mmio member is kept as
    the bytes of its C layout (sim.abi.kvm.kvm_run_mmio, host-endian
    fields), so QEMU reads it the way it reads the mmap'd page."""
    __slots__ = ("exit_reason", "papr_hcall", "guest_result", "mmio", "hardware_exit_reason", "_layout")

    def __init__(self, host_big_endian: bool = True):
        self.exit_reason = 0
        self.hardware_exit_reason = 0   # run->hw: book3s never fills it
        self.papr_hcall = PaprHcall()
        self.guest_result = None
        self._layout = KVM_RUN_MMIO[host_big_endian]
        self.mmio = self._layout.build(dict(phys_addr=0, data=bytes(8), len=0, is_write=0))

    def set_mmio(self, phys_addr: int, data: bytes, length: int, is_write: bool) -> None:
        self.mmio = self._layout.build(dict(phys_addr=phys_addr, data=bytes(data).ljust(8, b"\0"),
                                            len=length, is_write=int(is_write)))

    def get_mmio(self):
        return self._layout.parse(self.mmio)


# The fields of the events every hcall records (Trace.record: built when read).
@fields_builder
def _hcall_fields(nr, r4, r5, r6) -> dict:
    return {"nr": nr, "name": papr.hcall_name(nr), "r4": r4, "r5": r5, "r6": r6}


@fields_builder
def _hcall_done_fields(nr, r3, r4) -> dict:
    return {"nr": nr, "ret": papr.from_reg(r3), "r4": r4, "in_kernel": True}


@fields_builder
def _hcall_exit_fields(nr, why) -> dict:
    return {"reason": EXIT_NAMES[KVM_EXIT_PAPR_HCALL], "nr": nr, "why": why}


@types.coroutine
def _pass_up(out):
    """One of the guest's trio yields, passed up to trio; returns what trio
    sends (what trio throws is raised here, and delivered to the guest)."""
    return (yield out)


class Vcpu:
    def __init__(self, vm, cpu):
        self.vm = vm
        self.cpu = cpu          # vcpu->arch: the registers live with the CPU
        self.gpr = cpu.gpr
        self.run_state = KvmRun(vm.host_byteorder == "big")
        self.hcall_needed = False
        self.mmio = None        # vcpu->mmio_needed and the load to complete
        self._guest = None

    def load_guest(self, coro) -> None:
        """Set what the CPU executes from its entry point (the firmware)."""
        self._guest = coro

    def close(self) -> None:
        if self._guest is not None:
            self._guest.close()

    async def ioctl_run(self) -> KvmRun:
        """KVM_RUN."""
        run, gpr, costs, trace = self.run_state, self.gpr, self.vm.costs, self.vm.trace
        if self.hcall_needed:  # kvm_arch_vcpu_ioctl_run: complete the hcall
            gpr[3] = papr.to_reg(run.papr_hcall.ret)
            gpr[4:13] = run.papr_hcall.args
            self.hcall_needed = False
        if self.mmio is not None:   # kvm_arch_vcpu_ioctl_run: vcpu->mmio_needed
            if not self.mmio.is_write:
                book3s.complete_mmio_load(self, run.get_mmio().data)
            self.mmio = None
        while True:
            if vtime.overdue():     # vtime.checkpoint()
                await vtime.settle()
            # Run the guest until it traps or returns, passing trio's yields
            # up (inline: most steps trap at once, without a trio yield).
            guest, send, throw = self._guest, None, None
            while True:
                try:
                    out = guest.throw(throw) if throw is not None else guest.send(send)
                except StopIteration as stop:
                    result, trap = stop.value, None
                    break
                if type(out) is Trap:
                    result, trap = None, out
                    break
                try:
                    send, throw = await _pass_up(out), None
                except BaseException as exc:  # delivered to the guest, as trio would
                    send, throw = None, exc
            if trap is None:
                run.exit_reason = SIM_GUEST_IDLE
                run.guest_result = result
                return run
            if trap is HDSI:
                if await self._hdsi(run):
                    continue
                return run
            # BOOK3S_INTERRUPT_SYSCALL with sc 1 from MSR_PR=0: kvm_run is
            # filled before the in-kernel attempt (kvmppc_handle_exit_hv).
            nr = gpr[3]
            trace.record("guest", "hcall", _hcall_fields, nr, gpr[4], gpr[5], gpr[6])
            if nr == papr.H_CEDE and self.vm.hcall_enabled(nr):
                await self._cede()
                trace.emit("kvm", "hcall_done", nr=nr, ret=papr.H_SUCCESS, r4=gpr[4], in_kernel=True)
                continue
            handled, why = book3s.do_hcall(self)
            if handled:
                vtime.charge(costs.hcall_in_kernel)
                trace.record("kvm", "hcall_done", _hcall_done_fields, nr, gpr[3], gpr[4])
                continue
            run.exit_reason = KVM_EXIT_PAPR_HCALL
            run.papr_hcall.nr = nr
            run.papr_hcall.args[:] = gpr[4:13]
            self.hcall_needed = True
            trace.record("kvm", "exit", _hcall_exit_fields, nr, why)
            vtime.charge(costs.exit_to_userspace)
            return run

    async def _hdsi(self, run) -> bool:
        """BOOK3S_INTERRUPT_H_DATA_STORAGE on a page with no memslot:
        kvmppc_book3s_hv_page_fault -> kvmppc_hv_emulate_mmio (PR reaches
        the same kvmppc_emulate_mmio from kvmppc_handle_pagefault). True if
        the access finished in the kernel (the guest resumes), False for a
        KVM_EXIT_MMIO (run filled in)."""
        cpu, trace, costs = self.cpu, self.vm.trace, self.vm.costs
        dec = book3s.decode_emulated(cpu.last_inst)
        dec = dec if isinstance(dec, tuple) else None
        store = bool(dec and dec[1])
        trace.emit("guest", "mmio_access", addr=cpu.hdar, inst=f"0x{cpu.last_inst:08x}",
                   size=dec[0] if dec else None, rw="W" if store else "R",
                   byte_reversed=bool(dec and dec[2]), value=self.gpr[dec[4]] if store else None)
        vtime.charge(costs.mmio_in_kernel)
        how = book3s.emulate_mmio(self, run)
        if how == "fail":
            # kvmppc_emulate_loadstore: EMULATE_FAIL queues a program
            # interrupt (kvmppc_core_queue_program) and does not advance the
            # PC; kvmppc_emulate_mmio then returns RESUME_HOST in 4.x, with
            # the exit_reason kvmppc_handle_exit_hv/pr preset:
            # KVM_EXIT_UNKNOWN. Newer kernels resume the guest instead.
            cpu.pending_exception = BOOK3S_INTERRUPT_PROGRAM
            if not self.vm.kernel.emulation_failure_exits:
                return True
            run.exit_reason = KVM_EXIT_UNKNOWN
            trace.emit("kvm", "exit", reason=EXIT_NAMES[KVM_EXIT_UNKNOWN], nr=None,
                       why="kvmppc_emulate_mmio: emulation failed, RESUME_HOST")
            vtime.charge(costs.exit_to_userspace)
            return False
        if how == "done":
            trace.emit("kvm", "mmio_done", addr=cpu.hdar, in_kernel=True)
            return True
        m = run.get_mmio()
        run.exit_reason = KVM_EXIT_MMIO
        trace.emit("kvm", "exit", reason=EXIT_NAMES[KVM_EXIT_MMIO], nr=None, phys_addr=m.phys_addr,
                   len=m.len, is_write=bool(m.is_write), data=m.data[:m.len].hex() if m.is_write else None,
                   why="no in-kernel device on KVM_MMIO_BUS took it")
        vtime.charge(costs.exit_to_userspace)
        return False

    async def _cede(self) -> None:
        """kvmppc_h_cede (handled in the kernel by HV and PR): MSR[EE] is
        set and the vcpu naps until an interrupt is pending for it or its
        decrementer expires; the interrupt is delivered as it resumes."""
        cpu, xics, trace = self.cpu, self.vm.xics, self.vm.trace
        trace.emit("kvm", "cede", pending=xics.has_pending())
        event = xics.wakeup()
        if not event.is_set():
            # An unarmed decrementer still counts down: it goes negative
            # (and interrupts) within 2^31 timebase ticks, about 4.2 s.
            deadline = cpu.dec_expiry if cpu.dec_expiry is not None else vtime.now() + DEC_MAX_S
            await vtime.wait_set(event, deadline)
            if event.is_set():
                vtime.catch_up(xics.ready_at)    # woken at the raiser's time
        vtime.charge(self.vm.costs.cede_wakeup)
        self.gpr[3] = papr.to_reg(papr.H_SUCCESS)
        if xics.has_pending():
            cpu.pending_exception = BOOK3S_INTERRUPT_EXTERNAL
            trace.emit("kvm", "external_interrupt", vector=BOOK3S_INTERRUPT_EXTERNAL)
        elif cpu.dec_expiry is None or vtime.now() >= cpu.dec_expiry:
            cpu.pending_exception = BOOK3S_INTERRUPT_DECREMENTER
            cpu.dec_expiry = None
            trace.emit("kvm", "decrementer", vector=BOOK3S_INTERRUPT_DECREMENTER)
