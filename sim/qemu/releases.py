"""STUB of the QEMU release table, for the slof2015 branch only.

The real table (branch "startup") replaces this file at merge; all this
branch uses from it is `shipped_slof`. Rows: QEMU's roms/SLOF submodule and
pc-bios/README at each tag (../shared/reference/real-slof-2015/README.md).
"""

# (first QEMU release, SLOF tag its roms/SLOF and pc-bios/slof.bin were built from)
_SHIPPED = (
    ((2, 3), "20150313"),   # 0d2f830255 "pseries: Update SLOF firmware image to qemu-slof-20150313"
    ((2, 4), "20150429"),   # 780184aae6 "pseries: Update SLOF firmware image to qemu-slof-20150429"
    ((2, 5), "20151103"),   # roms/SLOF b4c93802a5b2 at v2.5.0
    # 2.6 .. 7.0: not in this stub; until the real table lands they keep
    # the SLOF the model had before (20220719).
    ((2, 6), "20220719"),
    ((7, 1), "20220719"),   # the SLOF QEMU 7.2 runs in ../shared/reference/real-slof (update commit not checked here)
)


def shipped_slof(qemu_version: tuple[int, int]) -> str:
    """The SLOF tag QEMU `qemu_version` shipped (the newest row not newer)."""
    rows = [tag for first, tag in _SHIPPED if first <= qemu_version]
    return rows[-1] if rows else _SHIPPED[0][1]
