"""A KVM vcpu: the KVM_RUN ioctl and the struct kvm_run it fills.

KVM_RUN runs the guest on the calling thread (QEMU's vcpu thread) until
something needs userspace. Here "running the guest" means stepping the
guest coroutine: its trio sleeps are passed through, and each trap it takes
is handled in the kernel when possible (no return to QEMU) or turned into a
KVM_EXIT_* for QEMU.
"""

import types

from sim.abi import papr
from sim.abi.kvm import EXIT_NAMES, KVM_EXIT_PAPR_HCALL
from sim.cpu import Trap
from sim import vtime
from sim.kvm import book3s

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
    """struct kvm_run, the fields book3s uses."""
    __slots__ = ("exit_reason", "papr_hcall", "guest_result")

    def __init__(self):
        self.exit_reason = 0
        self.papr_hcall = PaprHcall()
        self.guest_result = None


@types.coroutine
def _step(guest, send):
    """Run the guest until it traps or returns, passing trio's yields up."""
    throw = None
    while True:
        try:
            out = guest.throw(throw) if throw is not None else guest.send(send)
        except StopIteration as stop:
            return stop.value, None
        if type(out) is Trap:
            return None, out
        try:
            send, throw = (yield out), None
        except BaseException as exc:  # delivered to the guest, as trio would
            send, throw = None, exc


class Vcpu:
    def __init__(self, vm, cpu):
        self.vm = vm
        self.cpu = cpu          # vcpu->arch: the registers live with the CPU
        self.gpr = cpu.gpr
        self.run_state = KvmRun()
        self.hcall_needed = False
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
        while True:
            await vtime.checkpoint()
            result, trap = await _step(self._guest, None)
            if trap is None:
                run.exit_reason = SIM_GUEST_IDLE
                run.guest_result = result
                return run
            # BOOK3S_INTERRUPT_SYSCALL with sc 1 from MSR_PR=0: kvm_run is
            # filled before the in-kernel attempt (kvmppc_handle_exit_hv).
            nr = gpr[3]
            trace.emit("guest", "hcall", nr=nr, name=papr.hcall_name(nr), r4=gpr[4], r5=gpr[5], r6=gpr[6])
            handled, why = book3s.do_hcall(self)
            if handled:
                vtime.charge(costs.hcall_in_kernel)
                trace.emit("kvm", "hcall_done", nr=nr, ret=papr.from_reg(gpr[3]), r4=gpr[4], in_kernel=True)
                continue
            run.exit_reason = KVM_EXIT_PAPR_HCALL
            run.papr_hcall.nr = nr
            run.papr_hcall.args[:] = gpr[4:13]
            self.hcall_needed = True
            trace.emit("kvm", "exit", reason=EXIT_NAMES[KVM_EXIT_PAPR_HCALL], nr=nr, why=why)
            vtime.charge(costs.exit_to_userspace)
            return run
