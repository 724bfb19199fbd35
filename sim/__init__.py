"""slofsim: a POWER KVM guest booting through SLOF from a virtio-blk disk."""

__version__ = "0.1.0"     # as pyproject.toml's [project] version (tests/test_cli.py checks)
