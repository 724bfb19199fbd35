"""slofsim matrix: one boot per class of releases, the map and its boundaries."""

import json

import pytest

from sim import matrix
from sim.cli import main
from sim.kvm import releases as linux
from sim.qemu import releases as qemu

ONE = (("HV", True, False),)     # HV, iothread, legacy: the 2015 configuration


@pytest.fixture
def one_config(monkeypatch):
    monkeypatch.setattr(matrix, "CONFIGS", ONE)


def test_classes_partition_the_releases_at_the_table_rows():
    qc = matrix.classes(qemu.TABLE, matrix.keys(ONE[0])[0])
    assert [v for c in qc for v in c] == list(qemu.RELEASES)
    starts = [c[0] for c in qc]
    assert (2, 4) in starts and (2, 8) in starts and (2, 9) in starts and (4, 2) in starts
    assert (2, 7) not in starts
    lc = matrix.classes(linux.TABLE, matrix.keys(ONE[0])[1])
    assert [c[0] for c in lc] == [(3, 17), (4, 1), (5, 18)]   # 4.4 (any-length) only matters for modern


def test_the_2015_configuration_stalls_exactly_where_both_halves_are_missing(one_config):
    m = matrix.run(jobs=2)
    out = m["outcome"]
    for q in qemu.RELEASES:
        for k in linux.RELEASES:
            stalls = (q < (2, 9)) and not (qemu.behaviour(q).enable_logical_ci and linux.behaviour(k).logical_ci)
            assert out[(q, k, ONE[0])][0] == ("stalled" if stalls else "booted"), (q, k)
    found = {(e["axis"], e["release"]): e for e in m["boundaries"]}
    # 2.4 also shipped another SLOF (20150313 -> 20150429); the hcall enabling is the cause
    assert [r.field for r in found[("QEMU", (2, 4))]["rows"]] == ["enable_logical_ci", "slof"]
    assert [f for f, cause in found[("QEMU", (2, 4))]["causes"].items() if cause] == ["enable_logical_ci"]
    assert [r.field for r in found[("Linux", (4, 1))]["rows"]] == ["logical_ci"]
    # 2.8.0 changes several rows and still drops the kick; 2.9 forwards it
    assert ("QEMU", (2, 8)) not in found
    assert [r.field for r in found[("QEMU", (2, 9))]["rows"]] == ["userspace_kick", "slof"]
    assert [f for f, cause in found[("QEMU", (2, 9))]["causes"].items() if cause] == ["userspace_kick"]
    ablations = sum(len(e["rows"]) for e in m["boundaries"])
    assert m["boots"] == len(matrix.classes(qemu.TABLE, matrix.keys(ONE[0])[0])) * 3 + ablations


def test_matrix_cli_json(one_config, capsys):
    assert main(["matrix", "--json", "-j", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    cfg = "HV iothread legacy"
    assert doc["configs"] == [cfg]
    assert doc["map"][cfg]["4.0"]["2.3"] == "stalled" and doc["map"][cfg]["4.1"]["2.4"] == "booted"
    assert doc["map"][cfg]["4.0"]["2.8"] == "stalled" and doc["map"][cfg]["4.0"]["2.9"] == "booted"
    b = {(x["axis"], x["release"]): x for x in doc["boundaries"]}
    assert b[("QEMU", "2.4")]["rows"][0]["commit"].startswith("026bfd89") and b[("QEMU", "2.4")]["rows"][0]["cause"]
