"""QEMU device models: PCI, the virtio-pci transport, the split virtqueue,
virtio-blk, its dataplane, and the block backend."""
