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
    for name in ("dataplane-stall", "dataplane-fixed"):
        assert _once(name) == _once(name)
