import csv
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = os.path.join(ROOT, "scenarios")
REAL_SLOF = os.path.join(ROOT, "tests", "data", "real-slof")
REFERENCE_DISK = os.path.join(REAL_SLOF, "disk.img.xz")


@pytest.fixture
def scenario_file(tmp_path):
    """Write a scenario TOML into tmp_path and return its path."""
    def make(text: str, name: str = "s.toml") -> str:
        p = tmp_path / name
        p.write_text(text)
        return str(p)
    return make


def real_slof_csv(name: str) -> list[dict]:
    """Rows of a measurement of the real SLOF (tests/data/real-slof)."""
    with open(os.path.join(REAL_SLOF, name)) as f:
        return list(csv.DictReader(f))


def reference_disks() -> list[str]:
    """The built-in image, and the measured disk when it is present."""
    return ["mkdisk"] + ([REFERENCE_DISK] if os.path.exists(REFERENCE_DISK) else [])


# Both reference-equality suites boot QEMU 7.2's settings, as measured.
QEMU72 = """
[kernel]
version = "{kernel}"
[qemu]
version = "7.2"
{qemu_extra}
[device]
iothread = {iothread}
ioeventfd = {ioeventfd}
[disk]
image = "{image}"
writable = true
"""
