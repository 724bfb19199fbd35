"""A model of SLOF (and, after the hand-off, of the guest it loaded).

Like real firmware, it sees the machine only through the CPU: hcalls
(`sc 1`), guest RAM, and the device tree QEMU handed it.
"""
