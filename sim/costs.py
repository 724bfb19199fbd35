"""The one cost table: how much simulated time each step of the stack takes.

Every cost the model charges (sim/vtime.py) takes its duration from here. Figures are
in seconds; a scenario can override any of them in its [costs] table.

Each figure says where it comes from. SOURCED means a published
measurement backs the value (or its order of magnitude) and is cited by
title and commit or URL; the values were not changed to fit a source.
ASSUMPTION means no measurement of that exact step on POWER8/POWER9 was
found, and the comment gives the reasoning and the nearest evidence.
Published POWER numbers are mostly for POWER9's 2021+ "P9 path" or for
POWER8 guests with 8 threads per vcore; the scenarios model a 2015 POWER8
host with one vcpu, so treat every figure as an order of magnitude.
"""

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Costs:
    # SOURCED (order of magnitude): an hcall handled in KVM's virtual-mode
    # dispatcher (kvmppc_pseries_do_hcall), guest exit and re-entry included.
    # - Linux b44bb1b7cbba, "KVM: PPC: Book3S HV: Provide more detailed
    #   timings for P9 entry path" (F. Rosas, 2022): debugfs timings on the
    #   P9 path average ~0.5 us per in-kernel hcall and ~0.94 us per guest
    #   entry; the shortest guest exit is ~0.83 us: ~1.5-2.5 us round trip.
    # - Linux 66feed61cdf6, "KVM: PPC: Book3S HV: Use msgsnd for signalling
    #   threads on POWER8" (P. Mackerras, 2015): on POWER8 real-mode entry
    #   ~3.1-3.4 us and exit ~4.2-4.6 us (means, 8 threads/vcore), and an
    #   H_PROD handled in the host kernel ~16 us (35 us before the patch).
    # - Linux 9dc2babc185e, "KVM: PPC: Book3S HV P9: Stop handling hcalls in
    #   real-mode in the P9 path": leaving HV real mode for host virtual mode
    #   is "very expensive" on POWER8 and earlier, cheap on POWER9 radix.
    # 1.5 us matches POWER9; a 2015 POWER8 host is likely several us.
    hcall_in_kernel: float = 1.5e-6
    # ASSUMPTION: KVM_RUN returning to QEMU's vcpu thread and re-entering the
    # guest (kvm_arch_handle_exit under the BQL). No POWER measurement of a
    # KVM_EXIT_PAPR_HCALL round trip was found. Bounds: on x86 a userspace
    # exit costs ~3.6-3.9 us (259k-274k exits/s, Linux 743eeb0b01d2, "KVM:
    # Intelligent device lookup on I/O bus", S. Levin, 2011); on POWER8 the
    # real-mode exit+entry alone is ~7 us and an in-host-kernel hcall ~16 us
    # (66feed61cdf6, above). Hence ~10x hcall_in_kernel.
    exit_to_userspace: float = 12e-6
    # ASSUMPTION: QEMU's address-space lookup and device callback. QEMU
    # 729633c2bc30, "exec: Introduce AddressSpaceDispatch.mru_section"
    # (F. Zheng, 2016) profiles this lookup at a few % of CPU but gives no
    # per-access time. ~1 us: a few thousand instructions.
    qemu_dispatch: float = 1e-6
    # ASSUMPTION: eventfd_signal() from the io bus (a spinlock, a counter
    # add and a wake_up). Upper bound: QEMU 826cc32423db, "aio-posix: split
    # poll check from ready handler" (S. Hajnoczi, 2020) traces an IOThread
    # signalling an eventfd with write(2) in 1-2 us (x86), syscall included;
    # the in-kernel call skips the syscall.
    eventfd_signal: float = 0.3e-6
    # ASSUMPTION: an IOThread (or the main loop) returning from ppoll and
    # dispatching a ready fd. Linux Documentation/virt/kvm/halt-polling.rst
    # (written for powerpc kvm-hv) puts "a trip through the scheduler" at
    # "the order of a few micro-seconds"; the wakeup adds the ppoll return
    # and aio_dispatch on top. No POWER measurement of the whole step found.
    thread_wakeup: float = 8e-6
    # ASSUMPTION: QEMU's main loop (main_loop_wait -> os_host_main_loop_wait)
    # returning from ppoll for a readable fd: the same scheduler trip as an
    # IOThread's (thread_wakeup), before it takes the BQL
    # (qemu_mutex_lock_iothread) to dispatch. Kept apart so the start-up
    # race (the signalled host notifier against SLOF's first request) can be
    # replayed with a slower main loop.
    main_loop_wakeup: float = 8e-6
    # ASSUMPTION: a raw-file read or write that hits the host page cache,
    # plus a per-sector copy cost. Nearest evidence: QEMU 826cc32423db
    # (above) shows io_submit(2) from an IOThread taking "10s of
    # microseconds" (x86, aio=native); linux-kvm.org "Virtio/Block/Latency"
    # gives the method to measure it per layer but no POWER figures.
    disk_request: float = 15e-6
    # ASSUMPTION: ~2.5 GB/s memcpy of a 512-byte sector out of the page cache.
    disk_per_sector: float = 0.2e-6
    # ASSUMPTION: SLOF's own work around one block request (Forth deblocker,
    # descriptor fill, re-reading capacity and blk_size), with the CPU running
    # natively under KVM. Under TCG the real SLOF takes ~1 ms per 32 KiB
    # request (reference/real-slof/README.md); native code is ~50x faster.
    slof_per_request: float = 20e-6
    # ASSUMPTION: SLOF start-up before the PCI probe (Forth engine, device
    # tree); real SLOF under TCG takes ~3.2-3.5 s here
    # (reference/real-slof/timings.csv, t_populate_pci_median), natively
    # under KVM far less. No published native-KVM SLOF boot timing found.
    slof_startup: float = 0.5
    # ASSUMPTION: SLOF's ELF load (memmove of PT_LOAD segments), per byte:
    # 10 GB/s, an ordinary memmove bandwidth.
    slof_copy_per_byte: float = 0.1e-9
    # ASSUMPTION: one client-interface call from a client program (GRUB):
    # SLOF's call-client entry, the service lookup by name in Forth, the
    # return. A few thousand instructions natively.
    slof_client_call: float = 5e-6
    # ASSUMPTION: GRUB's own work around one disk-cache miss or one file
    # block (grub_disk_read_small, fshelp, memcpy of 4 KiB), natively.
    grub_per_block: float = 2e-6

    # ASSUMPTION: an MMU-on load/store to a device page handled in KVM: the
    # HDSI, the HPTE lookup that finds no memslot (kvmppc_hv_emulate_mmio),
    # fetching and decoding the instruction (kvmppc_get_last_inst,
    # kvmppc_emulate_loadstore) and the KVM_MMIO_BUS walk. No POWER
    # measurement found; the path is an hcall round trip (hcall_in_kernel)
    # plus a guest-memory instruction fetch and a virtual-mode switch, so
    # about twice it. A KVM_EXIT_MMIO adds exit_to_userspace on top.
    mmio_in_kernel: float = 3e-6
    # ASSUMPTION: a ceded vcpu woken by an interrupt (irqfd or KVM_IRQ_LINE
    # -> in-kernel XICS -> kvmppc_fast_vcpu_kick -> the vcore leaves
    # kvmppc_vcore_blocked and re-enters the guest). Linux
    # Documentation/virt/kvm/halt-polling.rst (written for powerpc kvm-hv)
    # puts a wake-up through the scheduler at a few microseconds.
    cede_wakeup: float = 5e-6
    # ASSUMPTION: the guest kernel's own work around one block request
    # (blk-mq submit, virtqueue_add_sgs, the interrupt handler, completion);
    # a few thousand instructions natively.
    linux_per_request: float = 5e-6
    # ASSUMPTION: the guest kernel from its entry to the virtio-blk probe
    # (prom_init, early boot, PCI probe, driver init). Not measured; an
    # order of magnitude for a small 2015 ppc64 kernel under KVM.
    linux_boot_to_probe: float = 0.3

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
