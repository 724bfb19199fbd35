"""slofsim: a POWER KVM guest booting through SLOF from a virtio-blk disk."""
