"""PAPR hcall numbers and return codes (arch/powerpc/include/asm/hvcall.h)."""

H_SUCCESS = 0
H_BUSY = 1
H_HARDWARE = -1
H_FUNCTION = -2
H_PRIVILEGE = -3
H_PARAMETER = -4
H_TOO_HARD = 9999  # "Internal value used in book3s_hv kvm support; not returned to guests"

H_LOGICAL_CI_LOAD = 0x3C
H_LOGICAL_CI_STORE = 0x40
H_GET_TERM_CHAR = 0x54
H_PUT_TERM_CHAR = 0x58
H_CEDE = 0xE0
H_EOI = 0x64
H_XIRR = 0x74
H_SET_MODE = 0x31C

# QEMU-private hcalls (include/hw/ppc/spapr.h): KVMPPC_HCALL_BASE 0xf000.
KVMPPC_H_RTAS = 0xF000
KVMPPC_H_LOGICAL_MEMOP = 0xF001

HCALL_NAMES = {
    H_LOGICAL_CI_LOAD: "H_LOGICAL_CI_LOAD",
    H_LOGICAL_CI_STORE: "H_LOGICAL_CI_STORE",
    H_GET_TERM_CHAR: "H_GET_TERM_CHAR",
    H_PUT_TERM_CHAR: "H_PUT_TERM_CHAR",
    H_CEDE: "H_CEDE",
    H_EOI: "H_EOI",
    H_XIRR: "H_XIRR",
    H_SET_MODE: "H_SET_MODE",
    KVMPPC_H_RTAS: "KVMPPC_H_RTAS",
    KVMPPC_H_LOGICAL_MEMOP: "KVMPPC_H_LOGICAL_MEMOP",
}

RETURN_NAMES = {
    H_SUCCESS: "H_SUCCESS",
    H_BUSY: "H_BUSY",
    H_HARDWARE: "H_HARDWARE",
    H_FUNCTION: "H_FUNCTION",
    H_PRIVILEGE: "H_PRIVILEGE",
    H_PARAMETER: "H_PARAMETER",
    H_TOO_HARD: "H_TOO_HARD",
}


def hcall_name(nr: int) -> str:
    name = HCALL_NAMES.get(nr)     # the fallback formatted only when needed
    return name if name is not None else f"hcall 0x{nr:x}"


def to_reg(value: int) -> int:
    """A signed return code as the 64-bit GPR holds it."""
    return value & 0xFFFF_FFFF_FFFF_FFFF


def from_reg(value: int) -> int:
    """A 64-bit GPR read back as a signed return code."""
    return value - (1 << 64) if value & (1 << 63) else value


# The vty SLOF and the kernel print to (QEMU spapr_vty, reg 0x71000000).
SPAPR_VTY_REG = 0x71000000

# RTAS tokens QEMU assigns (include/hw/ppc/spapr.h, RTAS_TOKEN_BASE 0x2000);
# SLOF finds them by name under /rtas.
RTAS_TOKEN_BASE = 0x2000
RTAS_IBM_READ_PCI_CONFIG = RTAS_TOKEN_BASE + 0x16
RTAS_IBM_WRITE_PCI_CONFIG = RTAS_TOKEN_BASE + 0x17
RTAS_IBM_QUERY_INTERRUPT_SOURCE_NUMBER = RTAS_TOKEN_BASE + 0x18
RTAS_IBM_CHANGE_MSI = RTAS_TOKEN_BASE + 0x19
# ibm,change-msi functions (arch/powerpc/platforms/pseries/msi.c; QEMU spapr_pci.c)
RTAS_CHANGE_MSIX_FN = 4
