"""The one cost table: how much simulated time each step of the stack takes.

Every `trio.sleep` in the model takes its duration from here. Figures are
in seconds. None of them is yet tied to a published POWER8/POWER9
measurement, so each is marked ASSUMPTION with the reasoning behind it; a
scenario can override any of them in its [costs] table.
"""

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Costs:
    # ASSUMPTION: an hcall handled in KVM's virtual-mode dispatcher
    # (kvmppc_pseries_do_hcall), guest exit and re-entry included: ~1-2 us.
    hcall_in_kernel: float = 1.5e-6
    # ASSUMPTION: KVM_RUN returning to QEMU's vcpu thread and re-entering the
    # guest (kvm_arch_handle_exit under the BQL): an order of magnitude more
    # than an in-kernel hcall.
    exit_to_userspace: float = 12e-6
    # ASSUMPTION: QEMU's address-space lookup and device callback.
    qemu_dispatch: float = 1e-6
    # ASSUMPTION: eventfd_signal() from the io bus.
    eventfd_signal: float = 0.3e-6
    # ASSUMPTION: an IOThread (or the main loop) returning from ppoll and
    # dispatching a ready fd.
    thread_wakeup: float = 8e-6
    # ASSUMPTION: a raw-file read or write that hits the host page cache,
    # plus a per-sector copy cost.
    disk_request: float = 15e-6
    disk_per_sector: float = 0.2e-6
    # ASSUMPTION: SLOF's own work around one block request (Forth deblocker,
    # descriptor fill), with the CPU running natively under KVM.
    slof_per_request: float = 20e-6
    # ASSUMPTION: SLOF start-up before the PCI probe (Forth engine, device
    # tree); real SLOF under TCG takes ~3.3 s here (real-slof/timings.csv),
    # natively under KVM far less.
    slof_startup: float = 0.5
    # ASSUMPTION: SLOF's ELF load (memmove of PT_LOAD segments), per byte.
    slof_copy_per_byte: float = 0.1e-9

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
