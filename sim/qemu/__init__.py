"""QEMU userspace: the spapr machine, its vcpu thread, main loop and
IOThreads, the memory API and the KVM glue."""
