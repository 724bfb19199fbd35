"""A raw disk image as QEMU's block layer serves it to virtio-blk.

Read-only unless the scenario allows writes. Writes then go to an
in-memory copy-on-write overlay, or, with persist, to the file, where they
are durable only after a flush (like a host page cache before fsync).
An .xz image is unpacked into memory as far as the guest reads
(devices.xzimage); its writes stay in the overlay.
"""

import errno
import os
import stat

from devices.xzimage import XzError, XzImage

SECTOR = 512
# Image formats QEMU's block layer would probe (block/qcow2.c QCOW_MAGIC
# "QFI\xfb", also qcow v1; block/vmdk.c VMDK4_MAGIC "KDMV"; block/vhdx.h
# "vhdxfile"): slofsim serves raw images only, as `-drive format=raw`.
FORMAT_MAGICS = ((b"QFI\xfb", "qcow2"), (b"KDMV", "vmdk"), (b"vhdxfile", "vhdx"))
_NOT_A_FILE = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device node"),
               (stat.S_ISBLK, "a block device node"))


class BlockError(Exception):
    """The image cannot be used: message names the file and the reason."""


class BlockBackend:
    def __init__(self, path: str, *, writable: bool = False, persist: bool = False):
        self.path = path
        self.writable = writable
        self.persist = persist and writable
        self._fd = None
        self._data = None
        self._xz = None
        self.overlay: dict[int, bytes] = {}
        self.dirty: dict[int, bytes] = {}
        try:
            _check_regular(path, os.stat(path))   # before open: open() on a FIFO would block
            # O_NONBLOCK: should the path become a FIFO after the stat, open
            # returns at once and the fstat below refuses it.
            fd = os.open(path, (os.O_RDWR if self.persist and not path.endswith(".xz") else os.O_RDONLY)
                         | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                _check_regular(path, os.fstat(fd))
                os.set_blocking(fd, True)
            except BaseException:
                os.close(fd)
                raise
            if path.endswith(".xz"):
                with os.fdopen(fd, "rb") as raw:
                    self._xz = XzImage(raw.read())
                self.persist = False
                size = self._xz.size
                head = bytes(self._xz.buf[:8])
            else:
                self._fd = fd
                size = os.fstat(fd).st_size
                head = os.pread(fd, 8, 0)
        except OSError as exc:
            why = ("a symbolic link loop" if exc.errno == errno.ELOOP else exc.strerror or exc)
            persist = (" for writing, because [disk] persist = true writes the guest's writes back to it "
                       "(set persist = false to keep them in memory)" if self._fd is None and self.persist
                       and not path.endswith(".xz") else "")
            raise BlockError(f"{path}: cannot open disk image{persist}: {why}") from None
        except XzError as exc:   # corrupt or truncated .xz
            raise BlockError(f"{path}: cannot open disk image: not a valid .xz file: {exc}") from None
        for magic, fmt in FORMAT_MAGICS:
            if head.startswith(magic):
                self.close()
                raise BlockError(f"{path}: a {fmt} image; slofsim boots raw images only: "
                                 f"qemu-img convert -f {fmt} -O raw {path} {_raw_name(path)}")
        if size < SECTOR or size % SECTOR:
            self.close()
            raise BlockError(f"{path}: disk image is {size} bytes; expected a non-zero multiple of {SECTOR}")
        self.size = size
        self.sectors = size // SECTOR

    @classmethod
    def from_bytes(cls, data, name: str = "<generated>", *, writable: bool = False) -> "BlockBackend":
        """An image held in memory (slofsim mkdisk output); never persisted."""
        self = cls.__new__(cls)
        self.path, self.writable, self.persist = name, writable, False
        # A bytearray is adopted, not copied: a big image's zero pages stay untouched.
        self._fd, self._data, self._xz = None, memoryview(data).toreadonly(), None
        self.overlay, self.dirty = {}, {}
        self.size = len(data)
        self.sectors = self.size // SECTOR
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read_into(self, sector: int, dest: memoryview) -> None:
        """Read len(dest) bytes from sector; the caller checked the range."""
        n = len(dest)
        off = sector * SECTOR
        if self._data is not None:
            dest[:] = self._data[off:off + n]
        elif self._xz is not None:
            xz = self._xz
            if len(xz.buf) < off + n:
                self._unpack(off + n, sector)
            with memoryview(xz.buf) as buf:     # released: buf grows on the next unpack
                dest[:] = buf[off:off + n]
        else:
            got = os.preadv(self._fd, [dest], off)
            if got != n:
                raise OSError(f"short read at sector {sector}")
        if self.overlay or self.dirty:
            for i in range(n // SECTOR):
                s = self.dirty.get(sector + i) or self.overlay.get(sector + i)
                if s is not None:
                    dest[i * SECTOR:(i + 1) * SECTOR] = s

    def _unpack(self, end: int, sector: int) -> None:
        """A data error found now is the image file's, not the guest's: the
        run stops with it (sim.machine makes it a one-line error, exit 2)."""
        try:
            self._xz.need(end)
        except XzError as exc:
            raise BlockError(f"{self.path}: not a valid .xz file: {exc} (found unpacking it for a read of "
                             f"sector {sector}; the run stops here)") from None

    def write(self, sector: int, data: bytes) -> None:
        target = self.dirty if self.persist else self.overlay
        for i in range(len(data) // SECTOR):
            target[sector + i] = bytes(data[i * SECTOR:(i + 1) * SECTOR])

    def flush(self) -> None:
        """bdrv_flush: make persisted writes durable on the file."""
        if not self.persist:
            return
        for sector in sorted(self.dirty):
            os.pwrite(self._fd, self.dirty[sector], sector * SECTOR)
        self.dirty.clear()
        os.fsync(self._fd)


def _check_regular(path: str, st) -> None:
    for test, what in _NOT_A_FILE:
        if test(st.st_mode):
            raise BlockError(f"{path}: cannot open disk image: it is {what}; expected a raw image file")


def _raw_name(path: str) -> str:
    stem = path[:-3] if path.endswith(".xz") else path
    return os.path.splitext(stem)[0] + ".raw"
