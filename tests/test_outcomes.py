"""Outcomes say what happened (issue 12): "booted" only when the image SLOF
loaded ran to its hand-off (its marker printed by its own executed code,
then its idle spin), the kernel stage never runs over an image that did
not get there, the simulator's watchdog is its own outcome, and a host-side
exception is exit 70, never a boot result."""

import resource
import struct

import pytest

from devices.block import BlockBackend
from sim import handoff, machine, mkdisk, report
from sim.cli import EXIT_SOFTWARE, main
from sim.fuzz.disks import PART_START, DiskCase, scenario
from sim.scenario import load
from tests.conftest import SCENARIOS

SEG = PART_START * 512 + mkdisk.SEG_OFFSET          # the PT_LOAD segment on the MBR disk
CODE = SEG + mkdisk.CODE_OFFSET
N_CODE = len(mkdisk._code(0))
PHDR = PART_START * 512 + 64                        # the one program header (after the 64-byte ehdr)


def boot(edits=(), max_prep=65536):
    case = DiskCase("test", False, max_prep, list(edits))
    return machine.run(scenario(case), backend=BlockBackend.from_bytes(case.image(), "test"))


def _kernel_events(r):
    return [e for e in r.trace.events if e.name.startswith("linux_") or e.name == "mmu_on"]


def test_the_payload_boots_when_its_code_prints_the_marker():
    r = boot()
    s = report.summary(r)
    assert (s["outcome"], s["reason"], s["kernel_stage"]) == ("booted", "", "done")
    assert handoff.reached(r.trace) == (True, "")
    assert handoff.image_output(r.trace) == "\r\n" + mkdisk.PAYLOAD_MARKER + "\r\n"


@pytest.mark.parametrize("edits, max_prep, why", [
    # max_prep_partition_blocks = 1: only the ELF header is loaded, the segment is zeros
    ((), 1, "the image stopped: unmodelled instruction 0x00000000"),
    # no loadable segment: p_type 0
    ((("p_type 0", PHDR, b"\0\0\0\0"),), 65536, "the image stopped"),
    # the entry descriptor 3 bytes off: a garbage nip
    ((("e_entry", PART_START * 512 + 24, (0x400003).to_bytes(8, "big")),), 65536, "the image stopped"),
    # the code's first instruction is `b .`: an idle spin that printed nothing
    ((("b .", CODE, struct.pack(">I", 0x48000000)),), 65536,
     "reached its idle spin at 0x400020 without printing KERNEL-ENTRY-OK"),
    # the marker printed, then the final `b .` is 0: the image crashes after it
    ((("0 for b .", CODE + 4 * (N_CODE - 1), b"\0\0\0\0"),), 65536, "the image stopped: unmodelled instruction"),
])
def test_an_image_that_did_not_reach_its_hand_off_fails_and_the_kernel_stage_never_runs(edits, max_prep, why):
    r = boot(edits, max_prep)
    s = report.summary(r)
    assert s["outcome"] == "failed"
    assert s["reason"].startswith("the loaded image did not reach its hand-off: ") and why in s["reason"]
    assert s["kernel_stage"] == "not reached" and not _kernel_events(r)
    assert r.guest_result["handed_off"] is False and "linux" not in r.guest_result


def test_the_simulators_watchdog_is_its_own_outcome_not_the_stall(monkeypatch):
    monkeypatch.setattr(machine, "WATCHDOG_S", 7.0)     # the stall's timeouts take 125 s
    r = machine.run(load(f"{SCENARIOS}/dataplane-stall.toml"))
    s = report.summary(r)
    assert r.hung and s["outcome"] == "watchdog"
    assert s["reason"] == "the simulator's watchdog ended the run after 7 s simulated"
    assert main(["run", f"{SCENARIOS}/dataplane-stall.toml"]) == 1


def test_stalled_and_failed_say_why():
    s = report.summary(machine.run(load(f"{SCENARIOS}/dataplane-stall.toml")))
    assert (s["outcome"], s["reason"]) == ("stalled", f"{s['timeouts']} SLOF virtio-blk request(s) timed out")
    s = report.summary(machine.run(load(f"{SCENARIOS}/mbr-not-active.toml")))
    assert s["outcome"] == "failed" and s["reason"].startswith("E3404: Not a bootable device!")


class _Result:
    def __init__(self, guest_result, hung=False, names=()):
        from sim.trace import Event, Trace
        self.guest_result, self.hung = guest_result, hung
        self.trace = Trace()
        self.trace.events = [Event(0, "guest", n, {}) for n in names]


def test_verdict_from_the_guest_result():
    assert report.outcome(_Result({"stage": "kernel", "handed_off": True, "linux": {"ok": True}})) == "booted"
    assert report.outcome(_Result({"stage": "kernel", "handed_off": False, "why": "x"})) == "failed"
    assert report.outcome(_Result({"stage": "kernel", "handed_off": True, "linux": {"ok": True}},
                                  hung=True)) == "watchdog"
    assert report.outcome(_Result({"stage": "prompt"}, names=["virtio_timeout"])) == "stalled"


# -- host-side exceptions are bugs: exit 70 --------------------------------

def _boom(*_a, **_k):
    raise RuntimeError("model bug\nsecond line")


@pytest.mark.parametrize("argv", [["run", "dataplane-fixed"], ["--debug", "run", "dataplane-fixed"],
                                  ["run", "dataplane-fixed", "--debug"]])
def test_a_host_exception_is_exit_70_with_one_line(monkeypatch, capsys, argv):
    monkeypatch.setattr(machine, "run", _boom)
    assert main(argv) == EXIT_SOFTWARE == 70
    err = capsys.readouterr().err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("slofsim: internal error (a slofsim bug): RuntimeError: model bug second line")
    if "--debug" in argv:
        assert "Traceback" in err
    else:
        assert "Traceback" not in err and err.count("\n") == 1 and "--debug" in err


# -- sizes: a 64 GiB guest, a 4 GiB built disk, both lazily backed ------------

def test_a_64_gib_guest_and_a_4_gib_disk_boot_without_touching_their_memory(scenario_file):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    path = scenario_file('[kernel]\nversion = "4.1"\n[qemu]\nversion = "2.4"\n[machine]\nram_mib = 65536\n'
                         '[device]\niothread = true\n[disk]\nsize_mib = 4096\n')
    r = machine.run(load(path))
    assert report.outcome(r) == "booted" and r.machine.ram.size == 64 << 30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 << 10   # KiB


def test_a_disk_too_big_to_build_is_a_user_error(scenario_file, capsys):
    path = scenario_file("[disk]\nsize_mib = 4097\n")
    assert main(["run", path]) == 2
    assert "[disk]: size_mib = 4097 is out of range [1, 4096]" in capsys.readouterr().err


def test_the_smallest_queue_qemu_accepts_boots(scenario_file):
    path = scenario_file('[kernel]\nversion = "4.1"\n[qemu]\nversion = "2.4"\n[device]\niothread = true\n'
                         'queue_size = 4\n')
    assert report.outcome(machine.run(load(path))) == "booted"
