"""The command line: exit codes, JSON, and one-line user errors."""

import json
import os

import pytest

from sim.cli import main
from tests.conftest import SCENARIOS


def test_run_json_fields_and_exit_codes(capsys):
    assert main(["run", os.path.join(SCENARIOS, "dataplane-fixed.toml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("outcome", "sim_time_us", "hcalls_in_kernel", "hcall_exits", "ioeventfd_signals",
                "requests_completed", "bytes_loaded", "block_requests", "register_accesses", "console",
                "diagnosis"):
        assert key in out
    assert out["outcome"] == "booted"
    assert out["block_requests"][0] == {"type": "read", "sector": 64, "count": 4}
    # QEMU 2.4's SLOF 20150429 selects queue 0 at PCI probe (no reset at init)
    assert out["register_accesses"][0] == {"bar": 0, "region": "legacy", "offset": 14, "size": 2, "rw": "W", "value": 0}
    assert main(["run", "dataplane-stall", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["outcome"] == "stalled"


def test_run_prints_console_summary_and_why(capsys):
    assert main(["run", "dataplane-stall"]) == 1
    out = capsys.readouterr().out
    assert "E3404: Not a bootable device!" in out
    assert "outcome:             stalled" in out
    assert "kick dropped" in out


def test_check_passes_on_shipped_scenarios(capsys):
    assert main(["check", SCENARIOS]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") >= 9 and "MISMATCH" not in out


def test_check_fails_on_a_wrong_expectation(tmp_path, capsys):
    text = open(os.path.join(SCENARIOS, "dataplane-stall.toml")).read().replace(
        'outcome = "stalled"', 'outcome = "booted"')
    (tmp_path / "wrong.toml").write_text(text)
    assert main(["check", str(tmp_path)]) == 1
    assert "MISMATCH: outcome='stalled' (expected 'booted')" in capsys.readouterr().out


def test_demo_explains_both(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "dataplane-stall" in out and "dataplane-fixed" in out and "In plain words" in out


@pytest.mark.parametrize("text, fragment", [
    ("[kernel]\nversion = 4.1\n", "[kernel] version: expected a string"),
    ("[kernel]\nflavour = \"HV\"\n", "[kernel] unknown key 'flavour'"),
    ("bogus = 1\n", "unknown key 'bogus'"),
    ("[kernel]\nkvm = \"BookE\"\n", "[kernel] kvm: expected \"HV\" or \"PR\""),
    ("[qemu]\nversion = \"two\"\n", "[qemu] version: 'two' is not a modelled QEMU release; expected one of 2.1,"),
    ("[qemu]\nversion = \"1.0\"\n", "[qemu] version: '1.0' is not a modelled QEMU release"),
    ("[qemu]\nversion = \"99.0\"\n", "[qemu] version: '99.0' is not a modelled QEMU release"),
    ("[qemu]\nversion = \"2.04\"\n", "[qemu] version: '2.04' is not a modelled QEMU release"),
    ("[kernel]\nversion = \"3.10\"\n", "[kernel] version: '3.10' is not a modelled Linux release; expected one of 3.17,"),
    ("[qemu]\nversion = \"2.3\"\nenable_logical_ci_hcalls = true\n", "predates kvmppc_enable_logical_ci_hcalls"),
    ("[device]\niothread = true\nioeventfd = false\n", "[device] iothread: an iothread needs ioeventfd"),
    ("[disk]\nimage = \"missing.img\"\n", "missing.img: cannot open disk image"),
    ("[disk]\npersist = true\n", "[disk] persist: needs writable = true"),
    ("[expect]\noutcome = \"maybe\"\n", "[expect] outcome: expected one of"),
    ("[costs]\nhcall_in_kernel = -1\n", "[costs] hcall_in_kernel: expected a finite number of seconds"),
    ("[costs]\nhcall_in_kernel = nan\n", "[costs] hcall_in_kernel: expected a finite number of seconds"),
    ("[costs]\nhcall_in_kernel = inf\n", "[costs] hcall_in_kernel: expected a finite number of seconds"),
    ("[costs]\nslof_startup = 1e300\n", "[costs] slof_startup: expected a finite number of seconds in 0..3600"),
    ("[device]\nqueue_size = 1\n", "[device] queue_size: QEMU refuses queue-size 1 (virtio_blk_device_realize: "
     "must be > 2)"),
    ("[device]\nqueue_size = 2\n", "[device] queue_size: QEMU refuses queue-size 2"),
    ("[device]\nqueue_size = 96\n", "must be a power of 2, max 1024"),
    ("[device]\nqueue_size = 2048\n", "must be a power of 2, max 1024"),
    ("[machine]\nram_mib = 65537\n", "[machine] ram_mib: expected 64..65536"),
    ("[kernel\n", "not valid TOML"),
])
def test_bad_scenarios_give_one_line_errors(scenario_file, capsys, text, fragment):
    path = scenario_file(text)
    assert main(["run", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err
    if "missing.img" not in fragment:
        assert path in err


def test_truncated_disk_image_is_a_user_error(tmp_path, capsys):
    img = tmp_path / "short.img"
    img.write_bytes(b"\0" * 100)
    assert main(["run", "dataplane-fixed", "--disk", str(img)]) == 2
    assert "expected a non-zero multiple of 512" in capsys.readouterr().err


def test_bad_usage_is_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    assert main(["run"]) == 2
    assert main(["run", "no-such-scenario"]) == 2
    assert "no such scenario" in capsys.readouterr().err


def test_check_in_parallel_equals_check_in_one_process(capsys):
    assert main(["check", SCENARIOS, "-j", "1"]) == 0
    one = capsys.readouterr().out
    assert main(["check", SCENARIOS, "-j", "2"]) == 0
    assert capsys.readouterr().out == one
    assert main(["check", SCENARIOS, "-j", "0"]) == 2


@pytest.mark.parametrize("name, make, fragment", [
    ("disk-dir", lambda p: p.mkdir(), "it is a directory"),                                       # a directory
    ("disk-dir.xz", lambda p: p.mkdir(), "it is a directory"),                                    # ... named .xz
    ("bad.img.xz", lambda p: p.write_bytes(b"\xfd7zXZ\x00 not really xz"), "not a valid .xz file"),  # corrupt .xz
    ("bad.img.xz", lambda p: p.write_bytes(b""), "not a valid .xz file"),                           # empty .xz
])
def test_unreadable_disk_images_are_user_errors(tmp_path, capsys, name, make, fragment):
    img = tmp_path / name
    make(img)
    assert main(["run", "dataplane-fixed", "--disk", str(img)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and str(img) in err and "Traceback" not in err and err.count("\n") == 1
