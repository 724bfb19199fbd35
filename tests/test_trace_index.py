"""Trace.named/indexed answer from an index built once per trace, and say
what a scan of the events says, before and after the trace changes."""

import pickle

from hypothesis import given
from hypothesis import strategies as st

from sim import report
from sim.trace import KERNEL_STAGE_PHASE, Event, Trace, split_stages

NAMES = ("hcall", "hcall_done", "phase", "exit")


def _event(i, n) -> Event:
    return Event(i, "guest" if i % 3 else "kvm", n,
                 {"name": KERNEL_STAGE_PHASE if i % 2 else "boot"} if n == "phase" else {"i": i})


def _trace(names) -> Trace:
    t = Trace()
    for i, n in enumerate(names):
        t.events.append(_event(i, n))
    return t


def _scan(t, *names):
    return [(i, e) for i, e in enumerate(t.events) if e.name in names]


def _agrees(t):
    for n in NAMES + ("never",):
        assert t.named(n) == [e for _i, e in _scan(t, n)]
        assert t.indexed(n) == _scan(t, n)
    assert t.indexed("exit", "hcall", "exit") == _scan(t, "hcall", "exit")
    assert t.named("phase", "hcall_done") == [e for _i, e in _scan(t, "phase", "hcall_done")]


@given(st.lists(st.sampled_from(NAMES), max_size=60), st.lists(st.sampled_from(NAMES), max_size=5))
def test_lookups_agree_with_a_scan_and_follow_appends(names, more):
    t = _trace(names)
    _agrees(t)
    for n in more:                       # the index is rebuilt after an append
        t.events.append(_event(len(t.events), n))
        _agrees(t)
    fw, kern = split_stages(t)
    assert fw.events + kern.events == t.events
    assert (not kern.events) or (kern.events[0].name == "phase"
                                 and kern.events[0].fields["name"] == KERNEL_STAGE_PHASE)
    _agrees(fw)                          # indexes cut from the whole trace's
    _agrees(kern)
    assert split_stages(t) == (fw, kern) and split_stages(t)[0] is fw     # memoized
    t.events = list(t.events)            # a new list: answers start afresh
    assert split_stages(t)[0] is not fw
    _agrees(t)


def test_memo_is_per_trace_state_and_not_pickled():
    t = _trace(["hcall", "hcall_done"] * 3)
    calls = []
    assert t.memo("k", lambda tr: calls.append(1) or len(tr.events)) == 6
    assert t.memo("k", lambda tr: calls.append(1) or -1) == 6 and calls == [1]
    back = pickle.loads(pickle.dumps(t))
    assert back.events == t.events and back._memo is None
    assert list(report.hcall_pairs(t)) == [(a, b) for a, b in zip(t.events[::2], t.events[1::2])
                                           if a.actor == "guest"]
