"""The model against the real SLOF measured on real QEMU (tests/data/real-slof)."""

import os

import pytest

from sim import machine, report
from sim.scenario import load
from tests.conftest import QEMU72, REFERENCE_DISK, real_slof_csv, reference_disks




def _meant(row):
    """The CSV holds the LE bus value; legacy device config is guest-endian."""
    v, off, size = int(row["value"], 16), int(row["bar_off"], 16), int(row["size"])
    if off >= 20 and size > 1:
        v = int.from_bytes(v.to_bytes(size, "little"), "big")
    return {"bar": int(row["bar"]), "region": "legacy", "offset": off, "size": size, "rw": row["rw"], "value": v}


def _boot(scenario_file, image="mkdisk", iothread=False):
    text = QEMU72.format(kernel="4.1", qemu_extra="", iothread=str(iothread).lower(),
                         ioeventfd=str(iothread or False).lower(), image=image)
    return machine.run(load(scenario_file(text)))



@pytest.mark.parametrize("image", reference_disks())
def test_legacy_register_accesses_equal_real_slof(scenario_file, image):
    r = _boot(scenario_file, image)
    got = report.register_accesses(r)
    assert got == [_meant(row) for row in real_slof_csv("tr-legacy-noioev_regs.csv")]


@pytest.mark.parametrize("image", reference_disks())
def test_block_requests_equal_real_slof(scenario_file, image):
    r = _boot(scenario_file, image)
    want = [{"type": row["type"], "sector": int(row["sector"]), "count": int(row["nsectors"])}
            for row in real_slof_csv("tr-legacy-noioev_requests.csv")]
    got = [{k: q[k] for k in ("type", "sector", "count")} for q in report.block_requests(r.trace)]
    assert got == want
    assert report.summary(r)["bytes_loaded"] == 1052160


def test_with_iothread_the_device_sees_what_real_qemu_saw(scenario_file):
    """The notifies go to the ioeventfd in the kernel and never reach the
    device: QEMU's own trace of the device (119 accesses) is what remains."""
    r = _boot(scenario_file, iothread=True)
    seen = [{"bar": e.fields["bar"], "region": e.fields["region"], "offset": e.fields["offset"], "size": e.fields["size"],
             "rw": e.fields["rw"], "value": e.fields["value"]}
            for e in report.firmware_trace(r.trace).named("virtio_pci_access")]   # SLOF's stage only
    want = [dict(_meant(row), value=int(row["value"], 16)) for row in real_slof_csv("tr-legacy-io_regs.csv")]
    assert seen == want


@pytest.mark.skipif(not os.path.exists(REFERENCE_DISK), reason="the reference disk is not here")
def test_reference_disk_boots_in_the_fix_and_stalls_in_the_bug():
    from tests.conftest import SCENARIOS
    for name, want in (("dataplane-fixed", "booted"), ("dataplane-stall", "stalled")):
        r = machine.run(load(os.path.join(SCENARIOS, name + ".toml")), disk_override=REFERENCE_DISK)
        assert report.outcome(r) == want
