"""The spapr board (hw/ppc/spapr*.c): the PHB, RTAS, the hcall table and the devices it plugs in.

It sits above devices/ as hw/ppc does in QEMU; sim/qemu is the core below them."""
