"""A user's disk image is never damaged: read-only by default, writes in a
memory overlay unless persist is set, and durable on the file only after FLUSH."""

import hashlib

import pytest

from devices.block import SECTOR, BlockBackend
from sim.cli import main
from sim.mkdisk import write_disk


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(backend, sector, count=1) -> bytes:
    buf = bytearray(count * SECTOR)
    backend.read_into(sector, memoryview(buf))
    return bytes(buf)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    write_disk(str(path), size_mib=2)
    return path


def test_a_full_boot_leaves_the_image_unchanged(image, capsys):
    before = _sha(image)
    assert main(["run", "dataplane-fixed", "--disk", str(image)]) == 0
    assert "booted" in capsys.readouterr().out
    assert _sha(image) == before


def test_writable_without_persist_writes_only_to_the_overlay(image):
    before = _sha(image)
    b = BlockBackend(str(image), writable=True)
    b.write(10, b"\xab" * SECTOR)
    b.flush()
    assert _read(b, 10) == b"\xab" * SECTOR
    b.close()
    assert _sha(image) == before
    assert _read(BlockBackend(str(image)), 10) != b"\xab" * SECTOR


def test_persisted_writes_are_durable_only_after_flush(image):
    original = _read(BlockBackend(str(image)), 9, 3)
    b = BlockBackend(str(image), writable=True, persist=True)
    b.write(10, b"\xcd" * (2 * SECTOR))
    assert _read(b, 10, 2) == b"\xcd" * (2 * SECTOR)           # the guest sees its write at once
    assert _read(BlockBackend(str(image)), 9, 3) == original    # a host crash now would lose it
    b.flush()
    b.close()
    restarted = BlockBackend(str(image))                        # a simulated restart
    assert _read(restarted, 10, 2) == b"\xcd" * (2 * SECTOR)
    assert _read(restarted, 9) == original[:SECTOR]             # neighbours untouched


def test_persist_needs_writable(image):
    b = BlockBackend(str(image), persist=True)
    assert not b.persist and not b.writable


def test_xz_image_is_never_persisted(tmp_path):
    import lzma
    raw = tmp_path / "d.img"
    write_disk(str(raw), size_mib=2)
    xz = tmp_path / "d.img.xz"
    xz.write_bytes(lzma.compress(raw.read_bytes()))
    before = _sha(xz)
    b = BlockBackend(str(xz), writable=True, persist=True)
    assert b.writable and not b.persist
    b.write(3, b"\x11" * SECTOR)
    b.flush()
    assert _read(b, 3) == b"\x11" * SECTOR
    assert _sha(xz) == before


def test_a_fuzz_run_leaves_the_image_unchanged(tmp_path):
    from sim.fuzz import DISK, campaign
    path = tmp_path / "fuzz.img"
    path.write_bytes(DISK)
    before = _sha(path)
    c = campaign(1.0, seed=2, disk_file=str(path))
    assert c.ok and c.cases > 0
    assert c.statuses          # requests were served from the file
    assert _sha(path) == before
