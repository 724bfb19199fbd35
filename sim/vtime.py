"""Simulated time a task owes: costs are charged, and slept only when needed.

Each trio task (the vcpu thread, an AioContext, a block-layer AIO) keeps
the time its work has cost but not yet slept, in a context variable (trio
gives every task its own context). Its clock is trio's time plus that debt.
The debt is slept before the task waits or does something a waiting task
could observe at the wrong time, and every QUANTUM at the latest, so the
machine's watchdog still fires on a guest that never waits. Wake-ups carry
the waker's clock. The trace is the same as with one trio.sleep per cost,
but a boot costs a few scheduler passes per request instead of dozens.
"""

import contextvars
import math
from heapq import heappop, heappush

import trio
from trio._core import _run
from trio.lowlevel import Abort, current_task, enable_ki_protection, reschedule, wait_task_rescheduled

QUANTUM = 1e-3   # most simulated time a task runs ahead of trio's clock

# The debt is a one-element list, a cell per task, changed in place: a
# ContextVar.set per charge made a Token and a new context mapping, garbage
# for the collector, 45 times per block request on SLOF 20150429.
_ZERO = [0.0]   # the debt of a task that never charged; read, never written
_owed = contextvars.ContextVar("slofsim_owed", default=_ZERO)
_clock_now = trio.current_time


class _FreshCells(trio.abc.Instrument):
    """trio starts a task in a copy of its spawner's context: with a float
    the task starts owing what its spawner owed then; with a cell it would
    share the spawner's from then on. Every task spawned gets its own cell,
    holding what its spawner owes as it spawns."""

    # KI-protected, as trio's own run loop is: a Ctrl-C raised inside an
    # instrument hook is caught by trio's Instruments.call, which drops the
    # instrument and logs the KeyboardInterrupt -- the Ctrl-C is lost. This
    # hook runs inside start_soon, in the spawning task, which is not protected.
    @enable_ki_protection
    def task_spawned(self, task) -> None:
        ctx = task.context
        ctx.run(_owed.set, [ctx.get(_owed, _ZERO)[0]])


_FRESH_CELLS = _FreshCells()
_cells_runner = None    # the trio run _FRESH_CELLS instruments


def _cell() -> list:
    """This task's debt cell, made on its first charge. Inside a run the
    instrument is installed first, so no task spawned from here on can
    inherit this cell; outside a run there are no tasks, and nothing is
    kept (now() needs a run too)."""
    global _cells_runner
    cell = [0.0]
    runner = getattr(_run.GLOBAL_RUN_CONTEXT, "runner", None)
    if runner is None:
        return cell
    if runner is not _cells_runner:
        trio.lowlevel.add_instrument(_FRESH_CELLS)
        _cells_runner = runner
    _owed.set(cell)
    return cell


class AutojumpClock(trio.abc.Clock, trio.abc.Instrument):
    """One machine's trio clock: simulated time, which moves only when
    every task waits, straight to the next deadline (the semantics of
    trio.testing.MockClock(autojump_threshold=0), without trio.testing).
    trio asks deadline_to_sleep_time only when no task is runnable, so the
    jump happens there, and the deadline expires in the same scheduler pass
    (MockClock spends an extra, empty pass on each jump).

    It also keeps the timers of vtime's own waits (Alarm): a timed trio
    sleep is a cancel scope whose expiry raises and catches Cancelled; an
    Alarm's task is rescheduled directly. The clock is its own instrument:
    after each I/O wait (after_io_wait, just before trio expires its own
    deadlines) it wakes every Alarm due by now, so both kinds of deadline
    wake in the same pass, and trio sorts each pass's batch by task
    creation (deterministic_scheduling): the order is trio's."""

    __slots__ = ("_now", "_timers", "_seq")

    def __init__(self):
        self._now = 0.0
        self._timers = []    # heap of [deadline, seq, Alarm or None (stale)]
        self._seq = 0

    def start_clock(self) -> None:
        global _cells_runner
        trio.lowlevel.add_instrument(self)
        trio.lowlevel.add_instrument(_FRESH_CELLS)
        _cells_runner = _run.GLOBAL_RUN_CONTEXT.runner

    def current_time(self) -> float:
        return self._now

    def next_timer(self) -> float:
        timers = self._timers
        while timers:
            if timers[0][2] is not None:
                return timers[0][0]
            heappop(timers)
        return math.inf

    def deadline_to_sleep_time(self, deadline: float) -> float:
        own = self.next_timer()
        if own < deadline:
            deadline = own
        if deadline == math.inf:      # nothing will ever wake: trio's own idle wait
            return deadline
        if deadline > self._now:
            self._now = deadline
        return 0.0

    @enable_ki_protection        # as task_spawned above
    def after_io_wait(self, timeout) -> None:
        timers, now = self._timers, self._now
        while timers and timers[0][0] <= now:
            alarm = heappop(timers)[2]
            if alarm is not None:
                alarm._fire()

    def _arm(self, deadline: float, alarm) -> list:
        self._seq += 1
        entry = [deadline, self._seq, alarm]
        heappush(self._timers, entry)
        return entry


# The seed of trio's scheduler for every machine: same scenario, same trace.
SCHEDULER_SEED = 0


def deterministic_scheduling(seed: int = SCHEDULER_SEED) -> None:
    """Make the order trio runs simultaneously runnable tasks a function of
    the run alone. Unseeded, trio reverses each batch of runnable tasks at
    random, and tasks whose deadlines tie wake in the order of their cancel
    scopes' id() (a memory address); two block-layer completions at the same
    nanosecond then came out in either order from one run to the next. Its
    deterministic mode (the hook its Hypothesis plugin sets) sorts each
    batch by task creation, then shuffles it with trio's own Random, seeded
    here once per machine."""
    _run._ALLOW_DETERMINISTIC_SCHEDULING = True
    _run._r.seed(seed)


_clock = None   # this run's AutojumpClock (use_clock), whose timers Alarm uses


def use_clock(clock) -> None:
    """Read this run's clock directly (None: trio.current_time again); it
    is the hottest call in a boot. Alarms use its timers (None: trio's)."""
    global _clock_now, _clock
    _clock_now = clock.current_time if clock is not None else trio.current_time
    _clock = clock


def trio_now() -> float:
    """trio's clock: the time every task has settled to."""
    return _clock_now()


def charge(seconds: float) -> None:
    cell = _owed.get()
    if cell is _ZERO:
        cell = _cell()
    cell[0] += seconds


def now() -> float:
    """This task's simulated time."""
    c = _clock    # its _now, not a call of its current_time: the hottest read
    return (c._now if c is not None else _clock_now()) + _owed.get()[0]


def catch_up(t: float) -> None:
    """Continue from time t if that is later than this task's clock (a
    wake-up caused by another task at its time t)."""
    behind = t - now()
    if behind > 0:
        charge(behind)


def park() -> float:
    """Hand over what this task owes, as it parks (see resume_at)."""
    cell = _owed.get()
    owed = cell[0]
    if owed:
        cell[0] = 0.0
    return owed


def resume_at(owed: float, ready_at: float, cost: float) -> float:
    """The trio time a task that parked owing `owed` resumes at, woken now
    by work ready at simulated time ready_at, its wake-up costing `cost`:
    what catch_up(ready_at), charge(cost) and settle() would reach if it ran
    now, with the same arithmetic, so one timed wake replaces an unpark and
    a sleep."""
    base = _clock_now()
    behind = ready_at - (base + owed)
    if behind > 0:
        owed += behind
    return base + (owed + cost)


class Alarm:
    """One task parked until trio's clock reaches `deadline` (inf: none;
    it may be moved while the task waits) or until wake(): what a cancel
    scope's deadline around trio.sleep_forever does, on the AutojumpClock's
    own timers (under another clock, trio's cancel scope)."""

    __slots__ = ("_deadline", "task", "_entry", "_scope")

    def __init__(self, deadline: float = math.inf):
        self._deadline = deadline
        self.task = None
        self._entry = None
        self._scope = None

    @property
    def deadline(self) -> float:
        return self._deadline

    @deadline.setter
    def deadline(self, deadline: float) -> None:
        self._deadline = deadline
        if self.task is None:
            return
        if self._scope is not None:
            self._scope.deadline = deadline
            return
        self._disarm()
        if deadline != math.inf:
            self._entry = _clock._arm(deadline, self)

    async def wait(self) -> None:
        self.task = current_task()
        try:
            if _clock is None:
                with trio.CancelScope(deadline=self._deadline) as self._scope:
                    await wait_task_rescheduled(self._abort)
                return
            if self._deadline != math.inf:
                self._entry = _clock._arm(self._deadline, self)
            await wait_task_rescheduled(self._abort)
        finally:
            # However the wait ends. An exception can come before the task
            # parks -- a Ctrl-C or the fuzz alarm's, raised by a signal
            # handler at any bytecode -- and an armed timer or a kept task
            # would later reschedule a task that is not parked here (trio
            # then ran the finished main task again: TrioInternalError).
            self.task = None
            self._scope = None
            self._disarm()

    def wake(self) -> None:
        """Reschedule the waiting task now (no-op if none waits)."""
        task = self.task
        if task is not None:
            self.task = None
            self._disarm()
            reschedule(task)

    def _fire(self) -> None:
        self._entry = None
        task, self.task = self.task, None
        reschedule(task)

    def _disarm(self) -> None:
        if self._entry is not None:
            self._entry[2] = None
            self._entry = None

    def _abort(self, _raise_cancel) -> Abort:
        # Cancelled by an enclosing scope (or, under another clock, by
        # this wait's own deadline).
        self.task = None
        self._disarm()
        return Abort.SUCCEEDED


class Flag:
    """trio.Event's set/is_set/wait for at most one waiter, which wait_set
    can wait on with its deadline as one Alarm."""

    __slots__ = ("_set", "_alarm")

    def __init__(self):
        self._set = False
        self._alarm = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            if self._alarm is not None:
                self._alarm.wake()

    async def wait(self) -> None:
        await _wait_flag(self, math.inf)


async def _wait_flag(flag: Flag, deadline: float) -> None:
    if flag._set:      # as trio.Event.wait on a set event: a checkpoint
        await trio.lowlevel.checkpoint()
        return
    if flag._alarm is not None:
        raise RuntimeError("vtime.Flag takes one waiter")
    alarm = flag._alarm = Alarm(deadline)
    try:
        await alarm.wait()
    finally:
        flag._alarm = None


async def sleep_until(deadline: float) -> None:
    """trio.sleep_until, on the clock's own timer."""
    if _clock is None:
        await trio.sleep_until(deadline)
    else:
        await Alarm(deadline).wait()


async def settle() -> None:
    """Sleep what is owed: trio's clock becomes this task's clock."""
    cell = _owed.get()
    owed = cell[0]
    if owed:
        cell[0] = 0.0
        # trio.sleep(owed) is sleep_until(current_time() + owed)
        if _clock is None:
            await trio.sleep_until(_clock_now() + owed)
        else:
            await Alarm(_clock._now + owed).wait()


# The tests of sync() and checkpoint() as plain calls, for the hot paths:
# `if vtime.must_settle(): await vtime.settle()` makes no coroutine when
# nothing is to be slept (most times, on every exit and BQL take).
def must_settle() -> bool:
    """sync()'s test: another task could act before this task's time (one
    is runnable, or one sleeps until earlier)."""
    owed = _owed.get()[0]
    if owed:
        # trio.lowlevel.current_statistics()'s tasks_runnable and
        # seconds_to_next_deadline, read from the runner without building
        # the statistics (and the I/O backend's) on every BQL take; and
        # the clock's own timers.
        rn = _run.GLOBAL_RUN_CONTEXT.runner
        if rn.runq:
            return True
        nxt = rn.deadlines.next_deadline()
        c = _clock
        if c is None:
            return nxt - _clock_now() <= owed
        timers = c._timers     # c.next_timer(), inline when its first timer is live
        own = timers[0][0] if timers and timers[0][2] is not None else c.next_timer()
        if own < nxt:
            nxt = own
        return nxt - c._now <= owed
    return False


def owing() -> float:
    """What this task owes (settle() sleeps it)."""
    return _owed.get()[0]


def overdue() -> bool:
    """checkpoint()'s test: the task has run QUANTUM ahead of trio's clock."""
    return _owed.get()[0] >= QUANTUM


async def sync() -> None:
    """Settle only if another task could act before this task's time:
    what this task does next is then ordered correctly against everything
    the others do."""
    if must_settle():
        await settle()


async def checkpoint() -> None:
    if _owed.get()[0] >= QUANTUM:
        await settle()


async def wait_set(event, deadline: float) -> bool:
    """Wait for event (a Flag or trio.Event, set by another task at its
    settled time) or until simulated time deadline; the clock then reads
    the later of this task's time before waiting and the wake-up. True if
    the event was set."""
    cell = _owed.get()
    start = _clock_now() + cell[0]
    if cell[0]:
        cell[0] = 0.0
    if type(event) is Flag:
        await _wait_flag(event, deadline)
    else:
        with trio.move_on_at(deadline):
            await event.wait()
    catch_up(start)
    return event.is_set()
