"""explain: change one knob of the stall at a time and the causal chain
changes at the step that knob controls, because every step comes from the trace."""

import pytest

from sim import machine, report
from sim.scenario import load

BASE = {"kernel": "4.0", "qemu": "2.3", "iothread": "true", "extra_qemu": ""}


def _chain(scenario_file, **knobs) -> list[tuple[str, str, str]]:
    k = {**BASE, **knobs}
    text = (f'[kernel]\nversion = "{k["kernel"]}"\n[qemu]\nversion = "{k["qemu"]}"\n{k["extra_qemu"]}'
            f'[device]\niothread = {k["iothread"]}\n')
    r = machine.run(load(scenario_file(text)))
    steps = [(s["layer"], s["function"], s["text"]) for s in report.diagnose(r)]
    # from the request on (before it: how the dataplane started, if it did)
    return steps[next(i for i, s in enumerate(steps) if s[1] in ("virtioblk_read", "virtioblk_transfer")):]


def _first_difference(a, b) -> int:
    """Index of the first differing step after the request line (a good
    boot explains a typical request, a stall the first one lost)."""
    return next(i for i, (x, y) in enumerate(zip(a, b)) if i > 0 and x != y)


@pytest.fixture
def stall(scenario_file):
    return _chain(scenario_file)


def test_the_stall_chain_names_every_layer(stall):
    funcs = [f for _, f, _ in stall]
    assert funcs[:2] == ["virtioblk_read", "virtio_queue_notify"]     # QEMU 2.3's SLOF 20150313
    assert "kvmppc_pseries_do_hcall" in funcs and "h_logical_store" in funcs
    assert any("kick dropped" in t for *_, t in stall)
    assert any("never signalled" in t for *_, t in stall)
    assert any("E3404" in t for *_, t in stall)


def test_qemu_enabling_on_an_old_kernel_changes_only_the_kvm_reason(scenario_file, stall):
    chain = _chain(scenario_file, qemu="2.4")
    i = _first_difference(stall, chain)
    assert chain[i][1] == "kvmppc_pseries_do_hcall"
    assert "returned -EINVAL" in chain[i][2] and "never called" in stall[i][2]
    assert [s[1] for s in chain] == [s[1] for s in stall]


def test_both_halves_move_the_chain_into_the_kernel(scenario_file, stall):
    chain = _chain(scenario_file, kernel="4.1", qemu="2.4")
    i = _first_difference(stall, chain)
    assert chain[i][1] == "kvmppc_pseries_do_hcall" and "bit 16 set" in chain[i][2]
    assert chain[i + 1][1] == "kvm_io_bus_write" and chain[i + 2][1] == "ioeventfd_write"
    assert "h_logical_store" not in [s[1] for s in chain]


def test_no_iothread_changes_the_step_in_virtio_blk_handle_output(scenario_file, stall):
    chain = _chain(scenario_file, iothread="false")
    i = _first_difference(stall, chain)
    assert chain[i][1] == "virtio_blk_handle_output" and "serves the queue itself" in chain[i][2]
    assert chain[i + 1][0] == "qemu-main"


def test_forwarding_qemu_changes_the_step_after_the_notify(scenario_file, stall):
    chain = _chain(scenario_file, extra_qemu="forward_userspace_kick = true\n")
    i = _first_difference(stall, chain)
    assert chain[i][1] == "event_notifier_set"
    assert chain[i + 1][0] == "iothread"
