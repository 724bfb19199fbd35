"""KVM userspace ABI for book3s (include/uapi/linux/kvm.h)."""

import construct as c

KVM_CAP_PPC_FIXUP_HCALL = 103
KVM_CAP_PPC_ENABLE_HCALL = 104
KVM_CAP_IOEVENTFD = 36
KVM_CAP_IOEVENTFD_ANY_LENGTH = 122

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_PAPR_HCALL = 19

EXIT_NAMES = {
    KVM_EXIT_UNKNOWN: "KVM_EXIT_UNKNOWN",
    KVM_EXIT_MMIO: "KVM_EXIT_MMIO",
    KVM_EXIT_SHUTDOWN: "KVM_EXIT_SHUTDOWN",
    KVM_EXIT_PAPR_HCALL: "KVM_EXIT_PAPR_HCALL",
}

# enum kvm_bus
KVM_MMIO_BUS = 0
KVM_PIO_BUS = 1
KVM_VIRTIO_CCW_NOTIFY_BUS = 2
KVM_FAST_MMIO_BUS = 3
BUS_NAMES = ("KVM_MMIO_BUS", "KVM_PIO_BUS", "KVM_VIRTIO_CCW_NOTIFY_BUS", "KVM_FAST_MMIO_BUS")

NR_IOBUS_DEVS = 1000

KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0
KVM_IOEVENTFD_FLAG_PIO = 1 << 1
KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2
KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY = 1 << 3
# kvm_ioeventfd_flag_nr_fast_mmio (4) has no public FLAG macro but counts in
# the mask: (1 << kvm_ioeventfd_flag_nr_max) - 1.
KVM_IOEVENTFD_VALID_FLAG_MASK = (1 << 5) - 1

# struct kvm_enable_cap { __u32 cap; __u32 flags; __u64 args[4]; __u8 pad[64]; }
kvm_enable_cap = c.Struct(
    "cap" / c.Int32un,
    "flags" / c.Int32un,
    "args" / c.Array(4, c.Int64un),
    "pad" / c.Padding(64),
)

# struct kvm_ioeventfd { __u64 datamatch; __u64 addr; __u32 len; __s32 fd;
#                        __u32 flags; __u8 pad[36]; }
kvm_ioeventfd = c.Struct(
    "datamatch" / c.Int64un,
    "addr" / c.Int64un,
    "len" / c.Int32un,
    "fd" / c.Int32sn,
    "flags" / c.Int32un,
    "pad" / c.Padding(36),
)

# struct kvm_irqfd { __u32 fd; __u32 gsi; __u32 flags; __u32 resamplefd; __u8 pad[16]; }
kvm_irqfd = c.Struct(
    "fd" / c.Int32un,
    "gsi" / c.Int32un,
    "flags" / c.Int32un,
    "resamplefd" / c.Int32un,
    "pad" / c.Padding(16),
)

EINVAL = 22
EEXIST = 17
ENOENT = 2
ENOSPC = 28
ENOMEM = 12
EBADF = 9
EOPNOTSUPP = 95
EBUSY = 16
ERRNO_NAMES = {EINVAL: "EINVAL", EEXIST: "EEXIST", ENOENT: "ENOENT", ENOSPC: "ENOSPC",
               ENOMEM: "ENOMEM", EBADF: "EBADF", EOPNOTSUPP: "EOPNOTSUPP", EBUSY: "EBUSY"}


def errno_name(ret: int) -> str:
    """'-EINVAL' for -22, '0' for success."""
    if ret == 0:
        return "0"
    name = ERRNO_NAMES.get(-ret)
    return f"-{name if name is not None else -ret}"


# struct kvm_run, the KVM_EXIT_MMIO member of its exit union:
#   struct { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; } mmio;
# phys_addr and len are host-endian like every kvm_run field; data[] is not an
# integer but the bytes the guest's load or store moves, i.e. the memory
# image of the access in the guest's byte order (kvmppc_handle_load/store
# byte-swap the register when the guest's order differs from the host's).
def kvm_run_mmio(host_big_endian: bool) -> c.Struct:
    u64, u32 = (c.Int64ub, c.Int32ub) if host_big_endian else (c.Int64ul, c.Int32ul)
    return c.Struct(
        "phys_addr" / u64,
        "data" / c.Bytes(8),
        "len" / u32,
        "is_write" / c.Int8ub,
        "pad" / c.Padding(3),
    )


KVM_RUN_MMIO = {True: kvm_run_mmio(True), False: kvm_run_mmio(False)}

# KVM_IRQFD flags (include/uapi/linux/kvm.h)
KVM_IRQFD_FLAG_DEASSIGN = 1 << 0
