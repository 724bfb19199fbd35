"""Fault injection (sim.faults, devices.blkdebug): the spec, each kind, and
the blkdebug runs of real SLOF on QEMU 7.2 (tests/data/real-slof-2015)."""

import os
import re

import pytest

from sim import machine, report
from sim.faults import Fault, FaultError, from_option, from_table
from sim.scenario import ScenarioError, load
from tests.conftest import QEMU72, SCENARIOS
from tests.test_reference import _meant
from tests.test_slof_releases import REAL_2015, _csv, _got_requests, _real_console, _requests, _seen

HANG_AFTER1 = '[[faults]]\nkind = "hang"\nrequests = "2-"\n'
EIO_ALL = '[[faults]]\nkind = "io_error"\n'


def _boot(scenario_file, faults, slof="20220719", iothread=True, qemu="7.2", kernel="4.1"):
    text = QEMU72.format(kernel=kernel, qemu_extra="", iothread=str(iothread).lower(), ioeventfd="true",
                         image="mkdisk").replace('version = "7.2"', f'version = "{qemu}"')
    return machine.run(load(scenario_file(text + f'[firmware]\nslof = "{slof}"\n' + faults)))


def _console_without_qemu(name):
    """The real console with QEMU's own `blkdebug: ...` messages taken out
    (they end with a newline and land inside SLOF's lines)."""
    with open(os.path.join(REAL_2015, name), encoding="latin-1") as f:
        return re.sub(r"blkdebug: [^\n]*\n", "", f.read())


def _real(name, tmp_path):
    p = tmp_path / name
    p.write_text(_console_without_qemu(name), encoding="latin-1")
    return _real_console(name, str(tmp_path))


# --- the spec ------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("hang:2-", Fault("hang", 2, None)),
    ("io_error", Fault("io_error", 1, None)),
    ("io_error:3", Fault("io_error", 3, 3)),
    ("short_read:1-5,sectors=0-2047", Fault("short_read", 1, 5, (0, 2047))),
    ("delay:all,delay_ms=40", Fault("delay", 1, None, delay_ms=40)),
    ("lost_kick:1,layer=iothread", Fault("lost_kick", 1, 1, layer="iothread")),
])
def test_option_and_table_give_the_same_fault(text, want):
    assert from_option(text) == want
    assert from_option(want.text()) == want


@pytest.mark.parametrize("table,msg", [
    ({"kind": "explode"}, "kind: expected one of io_error | hang | delay | lost_kick | short_read"),
    ({"kind": "hang", "requests": "0"}, 'requests: expected "all", "N", "N-" or "N-M"'),
    ({"kind": "hang", "requests": "5-2"}, "requests: expected"),
    ({"kind": "hang", "requests": "x"}, "requests: expected"),
    ({"kind": "hang", "sectors": "3-"}, 'sectors: expected "N" or "N-M"'),
    ({"kind": "delay"}, "delay_ms: expected a positive integer"),
    ({"kind": "hang", "delay_ms": 4}, "delay_ms: only applies to kind = \"delay\""),
    ({"kind": "lost_kick"}, "layer: expected one of kvm | qemu | iothread"),
    ({"kind": "hang", "layer": "kvm"}, "layer: only applies"),
    ({"kind": "hang", "when": 1}, "unknown key 'when'"),
    ({"kind": "delay", "delay_ms": "4"}, "delay_ms: expected an integer"),
])
def test_bad_fault_is_one_line(table, msg):
    with pytest.raises(FaultError, match=re.escape(msg)):
        from_table(table)


def test_scenario_fault_errors_name_file_and_table(scenario_file):
    with pytest.raises(ScenarioError, match=r"s\.toml: \[\[faults\]\] #2 kind: expected one of"):
        load(scenario_file('[[faults]]\nkind = "hang"\n[[faults]]\nkind = "boom"\n'))
    with pytest.raises(ScenarioError, match=r"faults: expected an array"):
        load(scenario_file('faults = 3\n'))
    assert load(scenario_file(HANG_AFTER1)).faults == (Fault("hang", 2, None),)


def test_request_numbers_print_as_runs():
    from sim.faults import numbers
    assert numbers([2, 3, 4, 7, 9, 10]) == "#2-#4, #7, #9-#10" and numbers([]) == "none"


def test_selects_requests_and_sectors():
    f = from_option("io_error:2-3,sectors=10-20")
    assert [n for n in range(1, 6) if f.selects(n, 15, 1)] == [2, 3]
    assert not f.selects(2, 21, 4) and f.selects(2, 8, 4) and not f.selects(2, 0, 10)


# --- against the real runs (blkdebug on QEMU 7.2) ---------------------------------------

@pytest.mark.parametrize("slof,name", [("20150429", "e2015-eio-io"), ("20220719", "e2022-eio-io")])
def test_every_read_failing_equals_real_slof(scenario_file, tmp_path, slof, name):
    """blkdebug inject-error read_aio errno 5: the same requests, the same
    register accesses, the same console, line by line. Each failed read is
    one deblocker retry, five make a read fail; 20150429's CHRP open prints
    `No DOS disk-label found.` after the tenth sector-0 failure, 20220719
    also tries a GPT FAT partition (5 more reads)."""
    r = _boot(scenario_file, EIO_ALL, slof=slof)
    assert _got_requests(r) == _requests(_csv(f"{name}_requests.csv"))
    want = [dict(_meant(row), value=int(row["value"], 16)) for row in _csv(f"{name}_regs.csv")]
    assert _seen(r) == want
    model = r.console.text().split("\n")
    real = _real(f"console-{name}.txt", tmp_path)
    diff = [(m, x) for m, x in zip(model, real) if m != x]
    if slof == "20220719":       # the banner's build lines are Debian's build in the real one
        assert [m for m, _ in diff] == [" Build Date = slofsim", " FW Version = slofsim model of SLOF 20220719"]
    else:
        assert diff == []
    assert len(model) == len(real)
    assert report.outcome(r) == "failed" and report.summary(r)["bytes_loaded"] == 0    # IOERR carries no data
    assert [e.fields["request"] for e in r.trace.named("blkdebug")] == list(range(1, len(_got_requests(r)) + 1))


def test_hang_after_the_first_read_with_an_iothread_hangs_in_qemu(scenario_file, tmp_path):
    """h2022-after1-io: 20 timeouts, E3404, then SLOF's close clears bus
    mastering; QEMU 7.2 stops the dataplane (stop_ioeventfd) and drains the
    block layer for the suspended request: the vcpu never comes back."""
    r = _boot(scenario_file, HANG_AFTER1)
    assert _got_requests(r) == _requests(_csv("h2022-after1-io_requests.csv"))
    want = [dict(_meant(row), value=int(row["value"], 16)) for row in _csv("h2022-after1-io_regs.csv")]
    assert _seen(r) == want
    model = r.console.text().split("\n")
    real = _real("console-h2022-after1-io.txt", tmp_path)
    assert len(model) == len(real) and model[-1] == "E3404: Not a bootable device!"
    assert [m for m, x in zip(model, real) if m != x] == [" Build Date = slofsim",
                                                          " FW Version = slofsim model of SLOF 20220719"]
    assert report.outcome(r) == "hung-in-qemu" and not r.hung       # stopped where it hangs, not by the watchdog
    assert r.guest_result == {"stage": "hung in QEMU", "drain": "virtio_blk_data_plane_stop"}
    assert report.summary(r)["timeouts"] == 20
    stop = r.trace.named("dataplane_stop")[-1]
    drain = report.hung_in_qemu(r)
    assert drain.fields["why"] == "virtio_blk_data_plane_stop" and drain.fields["suspended"] == list(range(2, 22))
    # the last PCI command write cleared bus mastering (real: 0x100107 -> 0x100100)
    cmd = [e for e in r.trace.named("pci_cfg_write") if e.fields["reg"] == 4]
    assert cmd[-1].fields["value"] & 7 == 0 and cmd[-2].fields["value"] & 7 == 7 and stop.t_ns >= cmd[-1].t_ns
    assert [row["value"] for row in _csv("h2022-after1-io_pcicfg.csv")][-2:] == ["0x100107", "0x100100"]
    # nothing ran in the guest after it: no hcall after the drain began
    assert not [e for e in r.trace.events if e.name == "hcall" and e.t_ns > drain.t_ns]


def test_hang_after_the_first_read_without_an_iothread_goes_on(scenario_file, tmp_path):
    """h2022-after1-noio: no context to leave, no drain: SLOF goes on to
    cdrom/net, E3407, Ready!, 0 >."""
    r = _boot(scenario_file, HANG_AFTER1, iothread=False)
    assert _got_requests(r) == _requests(_csv("h2022-after1-noio_requests.csv"))
    want = [dict(_meant(row), value=int(row["value"], 16)) for row in _csv("h2022-after1-noio_regs.csv")]
    assert _seen(r) == want
    model = r.console.text().split("\n")
    real = _real("console-h2022-after1-noio.txt", tmp_path)
    assert len(model) == len(real)
    assert [m for m, x in zip(model, real) if m != x] == [" Build Date = slofsim",
                                                          " FW Version = slofsim model of SLOF 20220719"]
    assert model[-1] == "0 > " and report.outcome(r) == "stalled" and not r.trace.named("bdrv_drain_begin")
    why = [st["text"] for st in report.diagnose(r)]
    assert any("with no IOThread the disk never leaves the main loop's context: nothing drains" in t for t in why)


def test_2015_every_read_hanging_equals_real_slof(scenario_file):
    """h2015b-all-noio (20150429, blkdebug suspends every read, no
    iothread): 20 requests, 20 timeouts, `No DOS disk-label found.`."""
    text = QEMU72.format(kernel="4.1", qemu_extra="", iothread="false", ioeventfd="true", image="mkdisk")
    r = machine.run(load(scenario_file(text + '[firmware]\nslof = "20150429"\n[[faults]]\nkind = "hang"\n')))
    assert _got_requests(r) == _requests(_csv("h2015b-all-noio_requests.csv"))
    want = [dict(_meant(row), value=int(row["value"], 16)) for row in _csv("h2015b-all-noio_regs.csv")]
    assert _seen(r) == want
    assert report.summary(r)["timeouts"] == 20 and report.outcome(r) == "stalled"
    console = r.console.text()
    with open(os.path.join(REAL_2015, "console-h2015b-all-noio-tail.txt"), encoding="latin-1") as f:
        assert console[console.index("Trying to load"):] == f.read()


# --- by QEMU release: where the stop and the drain come from -------------------------------

def test_on_qemu_2_4_the_bus_master_clear_does_not_stop_the_dataplane(scenario_file):
    """2.4's virtio_write_config calls virtio_pci_stop_ioeventfd, a no-op
    once the dataplane took the host notifier, and virtio_set_status(3),
    which stops the dataplane only without DRIVER: no drain, SLOF goes on.
    7.2 (2.8+, ff4c07df67f0) stops it through stop_ioeventfd and drains."""
    old = _boot(scenario_file, HANG_AFTER1, slof="20150429", qemu="2.4")
    assert [e.fields["status"] for e in old.trace.named("bus_master_cleared")][-1] == 7
    assert not old.trace.named("bdrv_drain_begin") and report.outcome(old) == "stalled"
    assert old.console.text().endswith("0 > ")
    new = _boot(scenario_file, HANG_AFTER1, slof="20150429")
    assert report.outcome(new) == "hung-in-qemu"


async def test_a_reset_with_a_request_in_flight_drains(autojump_clock):
    """virtio_blk_reset drains (2.4 bdrv_drain_all, 7.2 blk_drain), with or
    without a dataplane: a suspended request keeps the drain waiting."""
    import trio
    from devices.blkdebug import BlkDebug
    from sim.abi.virtio import VIRTIO_BLK_T_IN
    from tests.test_devices import STATUS_REG, Rig, running

    drains = []
    rig = Rig()
    rig.host.bdrv_drain = lambda actor, blk, why: drains.append((why, blk.in_flight, list(blk.suspended)))
    rig.blk.blkdebug = BlkDebug((from_option("hang:1"),), rig.trace)
    rig.setup()
    async with running(rig):
        rig.request(VIRTIO_BLK_T_IN, sector=0, data_len=512).publish()
        rig.kick()
        await trio.sleep(1)
        assert rig.blk.blkdebug.in_flight == 1 and not rig.trace.named("blk_complete")
        rig.write(STATUS_REG, 0, 1)
    assert drains == [("virtio_blk_reset", 0, []), ("virtio_blk_reset", 1, [1])]    # setup's reset, then this one


# --- the other kinds ---------------------------------------------------------------------

def test_delay_slows_every_read_by_its_time(scenario_file):
    base = _boot(scenario_file, "")
    slow = _boot(scenario_file, '[[faults]]\nkind = "delay"\ndelay_ms = 40\n')
    n = len(slow.trace.named("blkdebug"))       # SLOF's 36 reads and the kernel stage's
    assert report.outcome(slow) == "booted" and n == len(base.trace.named("disk_io")) > 36
    grew = (slow.end_ns - base.end_ns) / 1e9
    assert 0.040 * n <= grew < 0.040 * n + 0.05


def test_delay_past_slofs_timeout_is_a_timeout(scenario_file):
    r = _boot(scenario_file, '[[faults]]\nkind = "delay"\nrequests = "1"\ndelay_ms = 6000\n')
    assert report.summary(r)["timeouts"] >= 1


def test_short_read_of_the_label_sectors_leaves_zeros(scenario_file):
    """The MBR read comes back half (a one-sector read: nothing), padded with
    zeros: SLOF finds no label on sector 0 and nothing bootable."""
    r = _boot(scenario_file, '[[faults]]\nkind = "short_read"\nsectors = "0"\n')
    assert report.outcome(r) == "failed" and "E3404" in r.console.text()
    assert all(e.fields["kind"] == "short_read" and e.fields["sector"] == 0 for e in r.trace.named("blkdebug"))


@pytest.mark.parametrize("layer,iothread,kernel,qemu", [
    ("kvm", True, "4.1", "7.2"),        # the ioeventfd matches but KVM does not signal it
    ("qemu", False, "4.0", "2.4"),      # the userspace notify (no in-kernel H_LOGICAL_CI_STORE)
    ("iothread", True, "4.1", "7.2"),   # the eventfd is signalled, the IOThread sleeps on
])
def test_one_lost_kick_costs_one_timeout_then_the_next_kick_serves_both(scenario_file, layer, iothread, kernel, qemu):
    r = _boot(scenario_file, f'[[faults]]\nkind = "lost_kick"\nrequests = "3"\nlayer = "{layer}"\n',
              iothread=iothread, kernel=kernel, qemu=qemu, slof="20150429" if qemu == "2.4" else "20220719")
    lost = r.trace.named("fault_lost_kick")
    assert [(e.fields["layer"], e.fields["kick"]) for e in lost] == [(layer, 3)]
    assert report.summary(r)["timeouts"] == 1


# --- matrix --fault ----------------------------------------------------------------------------

def test_matrix_with_a_hang_finds_where_the_vm_hangs_in_qemu(monkeypatch, capsys):
    """Every boot with hang:2-: with an iothread, from QEMU 2.8 (the
    dataplane stops through stop_ioeventfd, so SLOF's close drains) the VM
    hangs in QEMU; before, SLOF times out and goes on (stalled)."""
    import json
    from sim import matrix
    from sim.cli import main
    monkeypatch.setattr(matrix, "CONFIGS", (("HV", True, False),))
    assert main(["matrix", "--json", "-j", "1", "--fault", "hang:2-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    row = doc["map"]["HV iothread legacy"]["4.1"]
    assert doc["faults"] == ["hang:2-"]
    assert (row["2.4"], row["2.7"], row["2.8"], row["7.2"]) == ("stalled", "stalled", "hung-in-qemu", "hung-in-qemu")
    b = next(x for x in doc["boundaries"] if x["to"] == "hung-in-qemu")
    assert b["release"] == "2.8" and {r["field"] for r in b["rows"] if r["cause"]} >= {"dataplane_start"}


# --- the campaign's fault cases ------------------------------------------------------------------

def test_random_fault_cases_keep_the_campaigns_properties():
    """No host exception, a bounded run, every outcome explained (sim.fuzz.faults.check)."""
    import random
    from collections import Counter
    from sim.fuzz.cases import RandomChooser
    from sim.fuzz.faults import gen_fault_case, run_fault_case
    ch = RandomChooser(random.Random(7))
    outcomes = Counter()
    for _ in range(10):
        case = gen_fault_case(ch)
        r = run_fault_case(case)
        assert r.ok, (str(case), r.exception, r.hung, r.violations)
        outcomes[case.faults[0].kind] += 1
    assert len(outcomes) >= 3


def test_the_fault_oracle_catches_an_unexplained_hang(scenario_file):
    """A run that reached the watchdog is a finding."""
    from sim.fuzz.faults import FaultCase, check
    case = FaultCase("7.2", "6.1", True, 5000, (Fault("hang", 2, None),))
    r = _boot(scenario_file, HANG_AFTER1)
    base = _boot(scenario_file, "")
    assert check(case, r, base) == []
    r.hung = True
    assert "the run reached the watchdog in a drain" in check(case, r, base)


def test_an_eio_on_a_request_slof_gave_up_on_is_not_one_it_must_report():
    """Kicks 9-13 lost: SLOF times out on #9 and posts #10-#13 unanswered;
    #14's kick makes the IOThread complete them all, #13 with the injected
    EIO. SLOF waits for #14 only, so it never reads #13's status (found by
    fuzz, seed 101: the oracle wanted "status = 1" on the console)."""
    from sim.fuzz.faults import FaultCase, run_fault_case
    faults = (Fault("io_error", 13, 13, sectors=(2, 6)), Fault("lost_kick", 9, 13, layer="iothread"))
    r = run_fault_case(FaultCase("7.2", "6.1", True, 50, faults))
    assert r.ok, (r.exception, r.hung, r.violations)
    seen = run_fault_case(FaultCase("7.2", "6.1", True, 50, (Fault("io_error", 5, 5),)))
    assert seen.ok                                      # one SLOF waits for: "status = 1" is printed


# --- the command line --------------------------------------------------------------------------

def test_fault_option_adds_to_the_scenario_and_explain_names_it(capsys):
    import json
    from sim.cli import main
    assert main(["explain", "dataplane-fixed", "--json", "--fault", "io_error:5", "--fault", "hang:7-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["faults"] == ["io_error:5", "hang:7-"] and doc["outcome"] == "stalled"
    texts = [s["text"] for s in doc["diagnosis"]]
    assert texts[:2] == ["injected: io_error:5", "injected: hang:7-"]
    assert any("hang:7-: read_aio of request #7" in t and "never resumed" in t for t in texts)


@pytest.mark.parametrize("arg,msg", [
    ("hang:0", "--fault hang:0: requests: expected"),
    ("lost_kick:1", "--fault lost_kick:1: layer: expected one of kvm | qemu | iothread"),
    ("delay:2,delay_ms=x", "delay_ms: expected an integer"),
    ("hang:2,sectors", "'sectors': expected key=value"),
])
def test_bad_fault_option_is_a_one_line_usage_error(capsys, arg, msg):
    from sim.cli import main
    assert main(["run", "dataplane-fixed", "--fault", arg]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


@pytest.mark.parametrize("layer,func", [("kvm", "ioeventfd_write"), ("iothread", "aio_poll")])
def test_explain_follows_the_request_whose_kick_was_lost(scenario_file, layer, func):
    r = _boot(scenario_file, f'[[faults]]\nkind = "lost_kick"\nrequests = "3"\nlayer = "{layer}"\n')
    steps = report.diagnose(r)
    assert steps[0] == {"t_us": 0.0, "layer": "fault", "function": func, "text": f"injected: lost_kick:3,layer={layer}"}
    assert any(s["text"].startswith("request #3:") for s in steps)
    lost = next(s for s in steps[1:] if s["layer"] == "fault")
    assert lost["function"] == func and f"notify #3 lost at the {layer} layer" in lost["text"]
    assert "timeout, status 255" in steps[-1]["text"]


def test_the_trace_shows_each_fault_and_the_drain_the_vm_hangs_in(scenario_file):
    from sim import perfetto
    from sim.diagnosis import notify_addrs
    r = _boot(scenario_file, HANG_AFTER1)
    ev = perfetto.build(r, notify_addrs(r))["traceEvents"]
    assert len([e for e in ev if e.get("name") == "fault hang:2-"]) == 20
    drain = [e for e in ev if e.get("cat") == "drain"]
    assert [e["name"] for e in drain] == ["bdrv_drain (virtio_blk_data_plane_stop): VM hung in QEMU"]


async def test_a_drain_holds_the_bql_until_a_slow_request_ends(autojump_clock):
    """BDRV_POLL_WHILE with a delayed request: the vcpu thread waits with
    the BQL, a main-loop taker waits behind it, and both go on when the
    request ends (a suspended one alone would end the wait with False)."""
    import trio
    from devices.blkdebug import BlkDebug
    from sim.qemu.main_loop import Bql
    from sim.trace import Trace
    blk = BlkDebug((from_option("delay:1,delay_ms=300"), from_option("hang:2")), Trace())
    bql = Bql(Trace())
    got = {}

    async def io():
        blk.begin()
        try:
            await blk.aio(True, 0, 512)
        finally:
            blk.end()

    async def main_loop():
        await trio.sleep(0.1)
        await bql.lock("qemu-main")
        got["main"] = trio.current_time()

    async with trio.open_nursery() as n:
        n.start_soon(io)
        n.start_soon(main_loop)
        await trio.sleep(0.05)
        got["drained"] = await bql.hold("qemu-vcpu", blk.drain())
        got["vcpu"] = trio.current_time()
        bql.unlock("qemu-vcpu")
        n.start_soon(io)                   # request 2: suspended for ever
        await trio.sleep(0.01)
        got["hung"] = await blk.drain()
        n.cancel_scope.cancel()
    assert got["drained"] is True and abs(got["vcpu"] - 0.3) < 1e-6 and got["main"] >= got["vcpu"]
    assert got["hung"] is False and blk.suspended == [2]
