"""The in-kernel XICS (arch/powerpc/kvm/book3s_xics.c), reduced to one
presentation controller (ICP) for the one vcpu.

QEMU's xics-kvm makes the interrupt controller live in KVM, so an irqfd
or KVM_IRQ_LINE raises a source without QEMU, and the guest's H_XIRR
(accept the most favoured pending interrupt) and H_EOI are handled in the
kernel (real mode on POWER8). An XIRR is CPPR << 24 | XISR; XISR 0 means
nothing pending (XICS_IRQ_SPURIOUS).

Not modelled: priorities and masking. Every source is taken as unmasked at
the one priority Linux gives device interrupts (it sets them with the
ibm,set-xive RTAS call, which xics-kvm also handles in the kernel), so
pending interrupts are presented in arrival order.
"""

from collections import deque


from sim import vtime

XICS_IRQ_SPURIOUS = 0
DEFAULT_CPPR = 0xFF   # "least favoured": everything may interrupt


class KvmXics:
    def __init__(self, trace):
        self.trace = trace
        self.pending: deque[int] = deque()   # raised, not yet accepted with H_XIRR
        self.presented: list[int] = []       # accepted, not yet EOI'd
        self.levels: dict[int, int] = {}     # level-triggered (LSI) sources as asserted
        self.cppr = DEFAULT_CPPR
        self.ready_at = 0.0      # the raiser's clock when the last interrupt became pending
        self._event = vtime.Flag()

    def deliver(self, irq: int, level: int, lsi: bool = False) -> None:
        """ics_deliver_irq: an MSI is an edge (level 1 raises it once); an
        LSI stays asserted until lowered and is re-presented after EOI."""
        if lsi:
            self.levels[irq] = level
        if not level:
            return
        if irq not in self.pending and irq not in self.presented:
            self.pending.append(irq)
            self.ready_at = max(self.ready_at, vtime.now())
            self._event.set()

    def has_pending(self) -> bool:
        return bool(self.pending)

    def wakeup(self) -> vtime.Flag:
        """An event set once an interrupt is pending (kvmppc_vcpu_woken)."""
        if self.pending:
            ev = vtime.Flag()
            ev.set()
            return ev
        if self._event.is_set():
            self._event = vtime.Flag()
        return self._event

    def h_xirr(self) -> int:
        """kvmppc_h_xirr: accept the pending interrupt; r4 := XIRR."""
        xirr = self.cppr << 24 | XICS_IRQ_SPURIOUS
        if self.pending:
            irq = self.pending.popleft()
            self.presented.append(irq)
            xirr = self.cppr << 24 | irq
        return xirr

    def h_eoi(self, xirr: int) -> int:
        """kvmppc_h_eoi: end of interrupt; a still-asserted LSI comes back."""
        irq = xirr & 0xFFFFFF
        if irq in self.presented:
            self.presented.remove(irq)
        self.cppr = xirr >> 24
        if self.levels.get(irq):
            self.deliver(irq, 1)
        return 0
