"""The structured event trace: every claim slofsim prints comes from here.

An event is (time_ns, actor, name, fields). Actors are the threads and
layers of the real stack: "guest" (the vcpu running SLOF), "kvm",
"qemu-vcpu" (QEMU's vcpu thread), "qemu-main", "iothread", "disk".
"""

from bisect import bisect_left
from collections import defaultdict
from typing import NamedTuple

from sim import vtime


class _Event(NamedTuple):
    t_ns: int
    actor: str
    name: str
    raw: object     # the fields dict, or the builder index Trace.record was given
    # (Trace.record's args for the builder follow, in the same tuple)


# Fields builders (Trace.record), by index. A recorded event is one tuple,
# its builder's args inline: fewer objects than an emitted one (its tuple
# and kwargs dict). Each allocation counts towards the garbage collector's
# next pass, and every pass over an older generation scans each event that
# is a tracked object (an Event always is: the collector untracks only
# exact tuples), so an args tuple of its own would be one more.
_BUILDERS: list = []


def fields_builder(fn):
    """Register fn(*args) -> fields dict for Trace.record; returns its index."""
    _BUILDERS.append(fn)
    return len(_BUILDERS) - 1


class Event(_Event):
    """(t_ns, actor, name, fields). A hot event is recorded raw (Trace.record):
    its fields dict -- names formatted, bytes hexed -- is built when read."""
    __slots__ = ()

    @property
    def fields(self) -> dict:
        raw = self.raw
        if type(raw) is dict:
            return raw
        return _BUILDERS[raw](*self[4:])

    @property
    def args(self) -> tuple:
        """Trace.record's args for the builder (() for an emitted event)."""
        return self[4:]

    def to_json(self) -> dict:
        return {"t_ns": self.t_ns, "actor": self.actor, "event": self.name, **self.fields}

    def __eq__(self, other):
        """Equal as (t_ns, actor, name, fields), however each was recorded."""
        if not isinstance(other, Event):
            return NotImplemented
        return self[:3] == other[:3] and self.fields == other.fields

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(self[:3])

    def __repr__(self) -> str:
        return f"Event(t_ns={self.t_ns!r}, actor={self.actor!r}, name={self.name!r}, fields={self.fields!r})"

    def __reduce__(self):
        # Pickled (to or from a worker process) with its fields built: a
        # builder index means nothing in another interpreter.
        return Event, (self.t_ns, self.actor, self.name, self.fields)


_new_event = tuple.__new__
_owed = vtime._owed


class Trace:
    __slots__ = ("events", "_memo")

    def __init__(self):
        self.events: list[Event] = []
        self._memo = None       # (events, len(events), {key: value}): see memo

    def __getstate__(self):
        return {"events": self.events}

    def __setstate__(self, state):
        self.events, self._memo = state["events"], None

    def memo(self, key, build):
        """build(self), computed once while the events stay as they are (an
        append, or a new events list, starts afresh): for the readers of a
        finished trace (the report, the diagnosis), which ask the same
        questions many times."""
        ev = self.events
        m = self._memo
        if m is None or m[0] is not ev or m[1] != len(ev):
            m = self._memo = (ev, len(ev), {})
        got = m[2].get(key, _MISSING)
        if got is _MISSING:
            got = m[2][key] = build(self)
        return got

    def emit(self, _actor: str, _name: str, **fields) -> Event:
        # vtime.now() and Event(...) inlined: the hottest call of a boot.
        c = vtime._clock    # its _now, not a call of its current_time
        ev = _new_event(Event, (round(((c._now if c is not None else vtime._clock_now()) + _owed.get()[0]) * 1e9),
                                _actor, _name, fields))
        self.events.append(ev)
        return ev

    def record(self, _actor: str, _name: str, build: int, *args) -> Event:
        """emit(actor, name, **fields) with fields = the builder `build`
        (fields_builder) applied to args, called only when the fields are
        read: for the events of every hcall and exit. args must be values
        that do not change (ints, strings, bytes, None)."""
        c = vtime._clock
        ev = _new_event(Event, (round(((c._now if c is not None else vtime._clock_now()) + _owed.get()[0]) * 1e9),
                                _actor, _name, build) + args)
        self.events.append(ev)
        return ev

    def named(self, *names: str) -> list[Event]:
        """The events called any of names, in trace order (a new list)."""
        if len(names) == 1:
            return list(map(self.events.__getitem__, self.memo(_BY_NAME, _by_name).get(names[0], ())))
        return [e for _i, e in self.indexed(*names)]

    def indexed(self, *names: str) -> list[tuple[int, Event]]:
        """(index in events, event) of the events called any of names, in
        trace order: a walk over some kinds of event, not all."""
        by = self.memo(_BY_NAME, _by_name)
        ev = self.events
        runs = [[(k, ev[k]) for k in by[n]] for n in dict.fromkeys(names) if n in by]
        if len(runs) == 1:
            return runs[0]
        return sorted((x for run in runs for x in run), key=_first)    # runs are sorted: a merge

    def first(self, name: str, after: int = -1, **match):
        """The first event called name after index `after` whose fields match."""
        for i in range(after + 1, len(self.events)):
            e = self.events[i]
            if e.name == name and all(e.fields.get(k) == v for k, v in match.items()):
                return i, e
        return None, None


_MISSING = object()
_BY_NAME = "by name"


def _by_name(trace) -> dict[str, list[int]]:
    """Trace.named's index: each name's event indexes, in one pass."""
    by = defaultdict(list)
    for i, e in enumerate(trace.events):
        by[e[2]].append(i)
    return by


def _first(pair):
    return pair[0]


# The phase the guest kernel model announces after the hand-off. Events
# before it are the firmware (SLOF) stage, events from it on the kernel
# stage: the report keeps their figures apart (split_stages below).
KERNEL_STAGE_PHASE = "kernel virtio-blk"


def split_stages(trace) -> tuple[Trace, Trace]:
    """(firmware stage, kernel stage) as two traces over the same events;
    the same two for as long as the trace is unchanged (Trace.memo), so
    their own lookups are built once."""
    return trace.memo(split_stages, _split_stages)


def _split_stages(trace) -> tuple[Trace, Trace]:
    ev = trace.events
    i = next((k for k, e in trace.indexed("phase") if e.fields["name"] == KERNEL_STAGE_PHASE), len(ev))
    fw, kern = Trace(), Trace()
    fw.events, kern.events = ev[:i], ev[i:]
    # Their indexes, cut from the whole trace's.
    fw_by, kern_by = {}, {}
    for name, where in trace.memo(_BY_NAME, _by_name).items():
        k = bisect_left(where, i)
        if k:
            fw_by[name] = where[:k]
        if k < len(where):
            kern_by[name] = [j - i for j in where[k:]]
    fw.memo(_BY_NAME, lambda _t: fw_by)
    kern.memo(_BY_NAME, lambda _t: kern_by)
    return fw, kern


def firmware_trace(trace) -> Trace:
    return split_stages(trace)[0]
