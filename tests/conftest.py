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
