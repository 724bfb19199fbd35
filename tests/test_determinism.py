"""Same scenario, same output, byte for byte."""

import json
import os

from sim import machine, report
from sim.scenario import load
from tests.conftest import SCENARIOS


def _once(name):
    r = machine.run(load(os.path.join(SCENARIOS, name + ".toml")))
    return (json.dumps(report.to_json(r), sort_keys=True),
            json.dumps([e.to_json() for e in r.trace.events], sort_keys=True))


def test_two_runs_are_byte_identical():
    for name in ("dataplane-stall", "dataplane-fixed", "guest-6.1-real-grub"):
        assert _once(name) == _once(name)


def test_perfetto_trace_files_are_byte_identical(tmp_path, capsys):
    from sim.cli import main
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        main(["run", "dataplane-stall", "--json", "--trace", str(path)])
    capsys.readouterr()
    assert a.read_bytes() == b.read_bytes() and len(a.read_bytes()) > 1000
