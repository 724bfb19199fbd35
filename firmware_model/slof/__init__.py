"""SLOF, the firmware: its boot flow, libvirtio, deblocker, disk-label and ELF loader."""
