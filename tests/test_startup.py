"""The user's paths start lean: run, check, explain and demo import no test,
plotting or debugging module (each would cost start-up time for nothing)."""

import json
import os
import shutil
import subprocess
import sys

from tests.conftest import ROOT, SCENARIOS

FORBIDDEN = {"pytest", "_pytest", "hypothesis", "matplotlib", "pdb", "bdb", "trio.testing"}


def _imported(proc) -> set[str]:
    """Module names from a `python -X importtime` child's stderr."""
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1), err[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in err.splitlines() if line.startswith("import time:")}


def test_user_paths_import_no_test_plot_or_debug_module(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(os.path.join(SCENARIOS, "dataplane-stall.toml"), one)
    env = dict(os.environ, PYTHONPATH=ROOT)
    commands = (["run", "dataplane-fixed"], ["check", str(one)], ["explain", "dataplane-stall"], ["demo"])
    procs = [subprocess.Popen([sys.executable, "-X", "importtime", "-m", "sim.cli", *argv], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for argv in commands]
    for argv, proc in zip(commands, procs):
        mods = _imported(proc)
        assert {"trio", "sim.machine", "construct"} <= mods, argv    # the parse saw the boot's imports
        bad = {m for m in mods if m.split(".")[0] in FORBIDDEN or m in FORBIDDEN}
        assert not bad, f"slofsim {argv[0]} imports {sorted(bad)}"


def test_pdb_still_works_after_construct():
    """construct's `import pdb` gets a stand-in; the first use loads pdb."""
    out = subprocess.run([sys.executable, "-c", "import sys, sim.abi, construct.debug as d; "
                          "assert 'bdb' not in sys.modules; print(d.pdb.Pdb.__module__, 'bdb' in sys.modules)"],
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["pdb", "True"]


def test_pickle_is_deferred_too_and_a_process_pool_still_works():
    """construct's `import pickle` gets the same stand-in; its first use,
    or a process pool's, loads the real module."""
    code = ("import sys, sim.abi, construct.core as c; assert '_pickle' not in sys.modules; "
            "from concurrent.futures import ProcessPoolExecutor as P; p = P(1); print(list(p.map(abs, [-3]))); "
            "p.shutdown(); import pickle; print(pickle.loads(c.pickle.dumps([1])), type(pickle).__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[3]", "[1] module"]


def test_the_gpt_type_constants_are_what_uuid_makes_of_them():
    """sim.abi.gpt writes its GUID constants without importing uuid."""
    from sim.abi import gpt as G
    for text, const in (("9E1A2D38-C612-4316-AA26-8B49521E5A8B", G.PREP),
                        ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", G.BASIC_DATA),
                        ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", G.LINUX_FS)):
        assert G.guid(text) == const


def test_the_program_exits_fast_with_its_output_and_status_and_profilers_still_write(tmp_path):
    """sim.cli.entry ends with os._exit after flushing: the whole output and
    the status still arrive; under cProfile the exit is the usual one, so the
    profile is written."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-m", "sim.cli", "run", "dataplane-stall", "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 1 and json.loads(run.stdout)["outcome"] == "stalled"
    prof = tmp_path / "p.prof"
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "sim.cli", "list"], cwd=ROOT, env=env,
                   capture_output=True, check=True)
    assert prof.stat().st_size > 0
