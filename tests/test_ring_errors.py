"""What a bad ring does, per QEMU release (sim.qemu.releases ring_error,
dataplane_pop): before 2.8 QEMU exits (error_report; exit(1)); the 2.2-2.5
dataplane's own vring_pop breaks only the dataplane (vring->broken), with
its own messages; from 2.8 virtio_error breaks the device."""

import types

import pytest
import trio

from devices.vring import vring_pop
from devices.virtqueue import VirtioError
from sim import fuzz, report
from sim.fuzz.cases import Config
from sim.abi.virtio import VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE
from sim.qemu import releases as qemu_releases
from sim.scenario import OUTCOMES
from sim.trace import Trace
from tests.test_devices import (   # the broken-ring builders are shared with the virtio.c tests
    _head_too_big, _loop, _next_too_big, _outside_ram,
    BROKEN_RINGS, DATA, HDR, NUM, RAM_SIZE, S_DRIVER_OK, STATUS_REG, TABLE, Rig, _vq, running,
)


@pytest.mark.parametrize("version, ring_error, dataplane_pop", [
    ((2, 1), "exit", "vring"), ((2, 3), "exit", "vring"), ((2, 5), "exit", "vring"),
    ((2, 6), "exit", "virtqueue"), ((2, 7), "exit", "virtqueue"), ((2, 8), "virtio_error", "virtqueue"),
    ((7, 2), "virtio_error", "virtqueue")])
def test_release_rows(version, ring_error, dataplane_pop):
    rel = qemu_releases.behaviour(version)
    assert (rel.ring_error, rel.dataplane_pop) == (ring_error, dataplane_pop)


# -- before 2.8: the whole QEMU process exits ---------------------------------

@pytest.mark.parametrize("corrupt, reason", BROKEN_RINGS, ids=[f.__name__.strip("_") for f, _ in BROKEN_RINGS])
async def test_before_2_8_a_broken_ring_exits_qemu(autojump_clock, corrupt, reason):
    rig = Rig(qemu=(2, 7)).setup()
    async with running(rig):
        corrupt(rig.ring)
        rig.kick()
        await trio.sleep(0.1)
    assert rig.host.exits == [(1, reason)]
    assert rig.errors() == [] and rig.served() == 0           # no virtio_error: it does not exist yet
    assert rig.read(STATUS_REG, 1) == S_DRIVER_OK


async def test_before_2_8_a_request_without_headers_exits_qemu(autojump_clock):
    rig = Rig(qemu=(2, 3)).setup()
    rig.ram.write(HDR, bytes(16))
    rig.ring.publish(rig.ring.add_chain([(HDR, 16, False)]))
    async with running(rig):
        rig.kick()
        await trio.sleep(0.1)
    assert rig.host.exits == [(1, "virtio-blk missing headers")] and rig.errors() == []


async def test_qemu_exited_is_an_outcome_with_the_message_as_reason():
    trace = Trace()
    trace.emit("qemu-vcpu", "qemu_exit", status=1, reason="Desc next is 11")
    result = types.SimpleNamespace(trace=trace, hung=False, guest_result={"stage": "qemu exited"})
    assert "qemu-exited" in OUTCOMES
    assert report.verdict(result) == ("qemu-exited", "QEMU exited with status 1: Desc next is 11")


# -- the 2.2-2.5 dataplane's vring_pop ----------------------------------------

# The broken rings are test_devices' (imported above); vring_pop names them its own way.

def _zero_length(ring):
    ring.write_desc(0, HDR, 0, 0)
    ring.publish(0)


def _out_after_in(ring):
    ring.write_desc(0, DATA, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1)
    ring.write_desc(1, HDR, 16, 0)
    ring.publish(0)


def _indirect_len(ring):
    ring.write_desc(0, TABLE, 24, VRING_DESC_F_INDIRECT)
    ring.publish(0)


def _indirect_empty(ring):
    ring.write_desc(0, TABLE, 0, VRING_DESC_F_INDIRECT)
    ring.publish(0)


def _nested(ring):
    ring.write_desc(0, HDR, 16, VRING_DESC_F_INDIRECT, table=TABLE)
    ring.write_desc(0, TABLE, 16, VRING_DESC_F_INDIRECT)
    ring.publish(0)


VRING_ERRORS = [
    (_head_too_big, f"Guest says index {NUM} > {NUM} is available"),
    (_next_too_big, f"Desc index is {NUM + 3} > {NUM}, head = 0"),
    (_loop, f"Loop detected: last one at 0 vq size {NUM} head 0"),
    (_outside_ram, f"Failed to map descriptor addr {RAM_SIZE - 8:#x} len 512"),
    (_zero_length, f"Failed to map descriptor addr {HDR:#x} len 0"),
    (_out_after_in, "Descriptor has out after in"),
    (_indirect_len, "Invalid length in indirect descriptor: len 0x18 not multiple of 0x10"),
    (_indirect_empty, "Loop detected: last one at 0 indirect size 0"),
    (_nested, "Nested indirect descriptor"),
]


@pytest.mark.parametrize("corrupt, reason", VRING_ERRORS, ids=[f.__name__.strip("_") for f, _ in VRING_ERRORS])
def test_vring_pop_messages_and_last_avail_idx_stays(corrupt, reason):
    vq, ring = _vq()
    corrupt(ring)
    with pytest.raises(VirtioError) as exc:
        vring_pop(vq, True)
    assert str(exc.value) == reason
    assert vq.last_avail_idx == 0          # "On success, increment avail index"


def test_vring_pop_takes_indirect_on_any_descriptor_of_the_chain():
    """virtio.c honours INDIRECT on the head only (further on the flag is
    ignored: the table is mapped as a buffer); vring_pop calls get_indirect
    wherever it is set."""
    vq, ring = _vq()
    ring.write_desc(0, HDR, 16, VRING_DESC_F_NEXT, 1)
    ring.write_desc(1, TABLE, 16, VRING_DESC_F_INDIRECT)
    ring.write_desc(0, DATA, 512, VRING_DESC_F_WRITE, table=TABLE)
    ring.publish(0)
    elem = vring_pop(vq, True)
    assert (elem.index, elem.out_sg, elem.in_sg) == (0, [(HDR, 16)], [(DATA, 512)])
    assert vq.last_avail_idx == 1
    vq2, ring2 = _vq()
    ring2.write_desc(0, HDR, 16, VRING_DESC_F_NEXT, 1)
    ring2.write_desc(1, TABLE, 16, VRING_DESC_F_INDIRECT)
    ring2.write_desc(0, DATA, 512, VRING_DESC_F_WRITE, table=TABLE)
    ring2.publish(0)
    elem = vq2.pop(True)
    assert (elem.out_sg, elem.in_sg) == ([(HDR, 16), (TABLE, 16)], [])


# -- the machine: per release, through the fuzz oracle ---------------------

JUMP = fuzz.Ring(((0, ("data", 0), 16, 0, 0),), (), ((0, 0),), 9, 0)      # avail->idx moves by 9 > num
HEAD = fuzz.Ring(((0, ("data", 0), 16, 0, 0),), (), ((0, 8),), 1, 0)      # head 8 in an 8-entry ring


def _config(qemu, iothread):
    return Config("t", "4.1", "HV", "big", qemu, iothread)


@pytest.mark.parametrize("qemu, iothread, op, errors", [
    ((2, 3), False, JUMP, {"exit: Guest moved used index from N to N": 1}),
    ((2, 7), True, HEAD, {"exit: Guest says index N is available": 1}),     # 2.6+: virtio.c's pop
    ((2, 4), True, HEAD, {"Guest says index N > N is available": 1}),        # vring->broken, QEMU lives
    ((2, 4), True, JUMP, {"Guest moved used index from N to N": 1}),
    ((2, 8), True, HEAD, {"Guest says index N is available": 1}),            # virtio_error
])
def test_each_release_does_what_its_qemu_did(qemu, iothread, op, errors):
    r = fuzz.run_case(fuzz.Case("ring", _config(qemu, iothread), 8, False, 0, [op]), wall_limit=5.0)
    assert r.ok, r.failure()
    assert r.device_errors == errors
