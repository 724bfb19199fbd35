"""The release tables: every change cites its commit, versions are checked
against the tables, and the model reads behaviour from them."""

import pytest

from sim.kvm import releases as linux
from sim.kvm.vm import KernelConfig, KvmVm
from sim.kvm import book3s
from sim.qemu import releases as qemu
from sim.releases import UnknownRelease
from sim.costs import Costs
from sim.ram import GuestRAM
from sim.trace import Trace


@pytest.mark.parametrize("table", [qemu.TABLE, linux.TABLE])
def test_every_change_cites_a_commit_and_a_source(table):
    first = {}
    for r in table.rows:
        if r.field in first:
            assert r.commit and r.source, r
        first.setdefault(r.field, r)
    # every field has a value at the first modelled release
    assert all(r.release == table.releases[0] for r in first.values())


@pytest.mark.parametrize("text", ["1.0", "99.0", "2.04", "2", "", "2.3.x", "v2.3"])
def test_unknown_qemu_versions_are_refused_naming_the_modelled_ones(text):
    with pytest.raises(UnknownRelease, match="expected one of 2.1, 2.2,.* 10.1"):
        qemu.parse(text)


def test_patch_releases_read_as_their_minor():
    assert qemu.parse("2.4.1") == (2, 4) and linux.parse("4.1.15") == (4, 1)


@pytest.mark.parametrize("v, slof", [((2, 3), "20150313"), ((2, 4), "20150429"), ((2, 5), "20151103"),
                                     ((7, 2), "20220719")])
def test_shipped_slof(v, slof):
    assert qemu.shipped_slof(v) == slof


def test_qemu_rows_at_their_releases():
    b = qemu.behaviour
    assert [b(v).enable_logical_ci for v in ((2, 3), (2, 4))] == [False, True]
    assert [b(v).userspace_kick for v in ((2, 7), (2, 8), (2, 9), (4, 1), (4, 2))] == [
        "handle_output", "handle_output", "iothread", "iothread", "host notifier"]
    assert [b(v).dataplane_start for v in ((2, 7), (2, 8))] == ["main loop", "start_ioeventfd"]
    assert [b(v).emulate_ioeventfd for v in ((2, 4), (2, 5))] == [False, True]
    assert [b(v).blk_queue_size for v in ((4, 2), (5, 0))] == [128, 256]
    assert [b(v).modern_default for v in ((2, 6), (2, 7))] == [False, True]


@pytest.mark.parametrize("version, flavour, multi", [("4.0", "HV", False), ("4.1", "HV", False),
                                                      ("4.1", "PR", False), ("4.6", "HV", True)])
def test_multi_tce_hcalls_are_implemented_only_from_4_6(version, flavour, multi):
    vm = KvmVm(KernelConfig(version, flavour), GuestRAM(0x10000), Trace(), Costs())
    assert [vm.hcall_implemented(h) for h in book3s.TCE_MULTI] == [multi, multi]
    assert vm.hcall_implemented(book3s.H_PUT_TCE)


def test_linux_rows_at_their_releases():
    b = linux.behaviour
    assert [b(v).logical_ci for v in ((4, 0), (4, 1))] == [False, True]
    assert [b(v).ioeventfd_any_length for v in ((4, 3), (4, 4))] == [False, True]
    with pytest.raises(UnknownRelease, match="expected one of 3.17"):
        linux.parse("3.10")
