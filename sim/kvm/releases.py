"""Linux (host KVM) releases as data.

Fields:
  logical_ci           book3s HV/PR implement H_LOGICAL_CI_LOAD/STORE in the kernel
  ioeventfd_any_length KVM_CAP_IOEVENTFD_ANY_LENGTH is reported (length-0 ioeventfds)
  tce_multi            H_PUT_TCE_INDIRECT and H_STUFF_TCE are implemented
  emulation_failure_exits  an MMIO instruction KVM cannot emulate ends KVM_RUN with
                       KVM_EXIT_UNKNOWN (RESUME_HOST) rather than resuming the guest
"""

from sim.releases import Row, Table

# From 3.17: KVM_CAP_PPC_ENABLE_HCALL and the per-VM enabled_hcalls bitmap
# the model starts from (699a0ea0823d, "KVM: PPC: Book3S: Controls for
# in-kernel sPAPR hypercall handling"; release inferred from its 2014 date).
RELEASES = tuple([(3, 17), (3, 18), (3, 19)] + [(4, m) for m in range(21)] + [(5, m) for m in range(20)] + [(6, m) for m in range(17)])

_ROWS = (
    Row((3, 17), "logical_ci", False, "", "reference"),
    Row((4, 1), "logical_ci", True, "99342cf KVM: PPC: Book3S: in-kernel H_LOGICAL_CI_{LOAD,STORE}",
        "reference (kvm.md; QEMU 026bfd89's message cites kernel commit 99342cf)"),
    Row((3, 17), "ioeventfd_any_length", False, "", "model"),
    Row((4, 4), "ioeventfd_any_length", True, "kvm: add capability for any-length ioeventfds "
        "(KVM_CAP_IOEVENTFD_ANY_LENGTH = 122; commit not identified)",
        "inferred: cap 122 sits between 121 and 123, both 4.4-4.5 numbers; not checked at v4.3/v4.4"),
    Row((3, 17), "tce_multi", False, "", "tag (a v4.1.15 tree: kvmppc_hcall_impl_pr lists H_PUT_TCE only)"),
    Row((4, 6), "tce_multi", True, "d3695aa4f452 KVM: PPC: Add support for multiple-TCE hcalls",
        "inferred (release from memory, not checked at v4.5/v4.6)"),
    Row((3, 17), "emulation_failure_exits", True, "kvmppc_emulate_mmio: EMULATE_FAIL -> RESUME_HOST", "model"),
    Row((5, 18), "emulation_failure_exits", False, "KVM: PPC: resume the guest after a failed MMIO emulation "
        "(F. Rosas, 2022; commit not identified)", "model (release unverified)"),
)

TABLE = Table("Linux", RELEASES, _ROWS)


def parse(text: str) -> tuple[int, int]:
    return TABLE.parse(text)


def behaviour(version: tuple[int, int]):
    return TABLE.behaviour(version)
