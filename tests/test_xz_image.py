"""An .xz image is sized from its index and unpacked only as far as read;
a hostile or broken .xz is a one-line user error, at open or mid-run."""

import lzma

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.block import SECTOR, BlockBackend, BlockError
from devices.xzimage import UNPACK_STEP, XzError, XzImage, xz_streams
from sim.abi import xz as X
from sim.cli import main
from tests.conftest import REFERENCE_DISK

REF_XZ = open(REFERENCE_DISK, "rb").read()
REF = lzma.decompress(REF_XZ)


def _xz(data: bytes, check=lzma.CHECK_CRC64) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=check)


def _multi(parts, pads) -> bytes:
    """Streams of parts, each followed by its padding (null bytes)."""
    return b"".join(_xz(p, check=lzma.CHECK_CRC32 if i % 2 else lzma.CHECK_CRC64) + bytes(pad)
                    for i, (p, pad) in enumerate(zip(parts, pads)))


def _unpacked(img: XzImage) -> bytes:
    img.need(img.size)
    return bytes(img.buf)


def test_the_reference_image_is_sized_from_its_index_and_read_lazily():
    img = XzImage(REF_XZ)
    assert img.size == len(REF) == 16 << 20
    assert len(img.buf) == UNPACK_STEP              # the first step only, for the format probe
    img.need(2 << 20)                                # what a boot of it reads
    assert len(img.buf) < 3 << 20 and img.buf[:2 << 20] == REF[:2 << 20]
    assert _unpacked(img) == REF


def test_streams_and_stream_padding():
    """lzma.decompress stops at stream padding and drops what follows; the index walk does not."""
    parts = [b"a" * 1000, b"", b"\x01\x02" * 3000, b"z" * 7]
    blob = _multi(parts, [8, 0, 4, 12])
    assert [s[2] for s in xz_streams(blob)] == [len(p) for p in parts]
    assert _unpacked(XzImage(blob)) == b"".join(parts)


BROKEN = [
    (b"", "no .xz stream"),
    (bytes(64), "no .xz stream"),
    (REF_XZ[:-1], "stream footer magic: parsing expected b'YZ'"),
    (REF_XZ[:-2] + b"ZY", "stream footer"),
    (REF_XZ[100:], "run past the file's start"),
    (b"\0\0\0\0" + REF_XZ, "bytes before the first stream header"),
    (REF_XZ + b"\0\0", "stream padding of 2 bytes, not a multiple of 4"),
    (REF_XZ + b"\0" * 6, "stream padding of 6 bytes"),
    (REF_XZ[:-12] + b"\0" + REF_XZ[-11:], "stream footer CRC32 mismatch"),
    (REF_XZ[:-16] + b"\0" + REF_XZ[-15:], "index CRC32 mismatch"),
    (REF_XZ[:7] + b"\x01" + REF_XZ[8:], "stream header CRC32 mismatch"),
    (lzma.compress(b"x" * 512, format=lzma.FORMAT_ALONE), "stream"),    # legacy .lzma: no footer
]


@pytest.mark.parametrize("blob, why", BROKEN, ids=[w.split(":")[0] for _b, w in BROKEN])
def test_a_broken_layout_is_found_at_open(blob, why):
    with pytest.raises(XzError, match=why):
        XzImage(blob)


def test_the_layout_walk_is_bounded(monkeypatch):
    import devices.xzimage as XI
    blob = _multi([b"a", b"b", b"c"], [0, 4, 0])
    monkeypatch.setattr(XI, "MAX_STREAMS", 2)
    with pytest.raises(XzError, match="more than 2 streams"):
        XzImage(blob)
    monkeypatch.setattr(XI, "MAX_STREAMS", 3)
    monkeypatch.setattr(XI, "MAX_BLOCKS", 2)
    with pytest.raises(XzError, match="or 2 blocks"):
        XzImage(blob)


def _vli(n: int) -> bytes:
    return X.vli.build(n)


@given(st.integers(0, (1 << 63) - 1))
def test_multibyte_integers_round_trip(n):
    assert X.vli.parse(_vli(n)) == n and len(_vli(n)) <= X.VLI_MAX_BYTES


@pytest.mark.parametrize("raw, why", [(b"\x80\x00", "needless zero"), (b"\xff" * 9 + b"\x01", "longer than 9"),
                                      (b"\x80", "read less")])
def test_bad_multibyte_integers(raw, why):
    with pytest.raises(X.c.ConstructError, match=why):
        X.vli.parse(raw)


def _edit(base: bytes, edits) -> bytes:
    b = bytearray(base)
    for pos, val, op in edits:
        pos %= len(b) + 1
        if op == 0 and pos < len(b):
            b[pos] = val
        elif op == 1:
            b.insert(pos, val)
        elif op == 2 and pos < len(b):
            del b[pos]
        else:
            del b[pos:]
    return bytes(b)


_BASE = _multi([b"a" * 3000, b"\x07" * 1024], [4, 0])
_EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255), st.integers(0, 3)), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), _EDITS.map(lambda e: _edit(_BASE, e)),
                 _EDITS.map(lambda e: _edit(REF_XZ, e))))
def test_hostile_xz_is_xzerror_or_exact(blob):
    """Any bytes: XzError, or streams whose unpacked bytes are exactly the
    index's sizes, equal to what liblzma unpacks of the whole file."""
    try:
        img = XzImage(blob)
        data = _unpacked(img) if img.size <= 1 << 25 else None
    except XzError:
        return
    assert data is None or len(data) == img.size
    if data is not None and sum(n for _s, n, _u in xz_streams(blob)) == len(blob):
        assert data == lzma.decompress(blob)     # no padding: liblzma's own walk sees the same streams


@given(st.lists(st.binary(max_size=600), min_size=1, max_size=4), st.data())
@settings(max_examples=60, deadline=None)
def test_any_streams_with_any_padding(parts, data):
    pads = [4 * data.draw(st.integers(0, 3)) for _ in parts]
    img = XzImage(_multi(parts, pads))
    assert img.size == sum(map(len, parts)) and _unpacked(img) == b"".join(parts)


def _two_streams_broken_in_the_second(tmp_path):
    """The reference disk as two streams (its first 1 MiB, then the rest),
    the second with a bit flipped that liblzma finds within its first MiB:
    the layout is sound, so open succeeds, and the boot's reads (up to
    2 MiB) meet the data error."""
    head, tail = _xz(REF[:1 << 20]), _xz(REF[1 << 20:])
    for pos in range(12 + 12, len(tail) - 12):
        bad = bytearray(tail)
        bad[pos] ^= 0x10
        try:
            lzma.LZMADecompressor().decompress(bytes(bad), max_length=1 << 20)
        except lzma.LZMAError:
            break
    else:
        pytest.fail("no early-detected flip")
    path = tmp_path / "broken.img.xz"
    path.write_bytes(head + bytes(bad))
    return path


def test_a_data_error_mid_run_stops_the_run_as_a_user_error(tmp_path, capsys):
    path = _two_streams_broken_in_the_second(tmp_path)
    b = BlockBackend(str(path))                      # open: the layout is sound
    dest = memoryview(bytearray(SECTOR))
    b.read_into(0, dest)
    with pytest.raises(BlockError, match=r"not a valid \.xz file: stream 2: data error .* sector 4095;"):
        b.read_into((2 << 20) // SECTOR - 1, dest)
    assert main(["run", "dataplane-fixed", "--json", "--disk", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"slofsim: error: {path}: not a valid .xz file: stream 2: data error")
    assert "the run stops here" in err


def test_a_flipped_bit_in_the_reference_image_is_an_error_or_harmless_to_what_a_boot_reads():
    """Bytes are served before their block's check is reached (the
    reference image is one 16 MiB block; a boot reads 2 MiB of it). LZMA2's
    chunk framing catches what the check would: every flip either fails the
    open or the unpack, or leaves the first 2 MiB as they were."""
    seen = set()
    for pos in range(0, len(REF_XZ), 31):
        bad = bytearray(REF_XZ)
        bad[pos] ^= 1 << (pos % 8)
        try:
            img = XzImage(bytes(bad))
            img.need(2 << 20)
        except XzError:
            seen.add("error")
            continue
        assert img.buf[:2 << 20] == REF[:2 << 20], pos
        seen.add("same")
    assert seen == {"error", "same"}
