"""The guest Linux kernel after the hand-off: its virtio_pci and virtio_blk drivers."""
