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

import trio
from trio._core import _run

QUANTUM = 1e-3   # most simulated time a task runs ahead of trio's clock

_owed = contextvars.ContextVar("slofsim_owed", default=0.0)
_clock_now = trio.current_time


class AutojumpClock(trio.abc.Clock):
    """One machine's trio clock: simulated time, which moves only when
    every task waits, straight to the next deadline (the semantics of
    trio.testing.MockClock(autojump_threshold=0), without trio.testing).
    trio asks deadline_to_sleep_time only when no task is runnable, so the
    jump happens there, and the deadline expires in the same scheduler pass
    (MockClock spends an extra, empty pass on each jump)."""

    __slots__ = ("_now",)

    def __init__(self):
        self._now = 0.0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        if deadline == math.inf:      # nothing will ever wake: trio's own idle wait
            return deadline
        if deadline > self._now:
            self._now = deadline
        return 0.0


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


def use_clock(clock) -> None:
    """Read this run's clock directly (None: trio.current_time again); it
    is the hottest call in a boot."""
    global _clock_now
    _clock_now = clock.current_time if clock is not None else trio.current_time


def trio_now() -> float:
    """trio's clock: the time every task has settled to."""
    return _clock_now()


def charge(seconds: float) -> None:
    _owed.set(_owed.get() + seconds)


def now() -> float:
    """This task's simulated time."""
    return _clock_now() + _owed.get()


def catch_up(t: float) -> None:
    """Continue from time t if that is later than this task's clock (a
    wake-up caused by another task at its time t)."""
    behind = t - now()
    if behind > 0:
        charge(behind)


def park() -> float:
    """Hand over what this task owes, as it parks (see resume_at)."""
    owed = _owed.get()
    _owed.set(0.0)
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


async def settle() -> None:
    """Sleep what is owed: trio's clock becomes this task's clock."""
    owed = _owed.get()
    if owed:
        _owed.set(0.0)
        await trio.sleep(owed)


async def sync() -> None:
    """Settle only if another task could act before this task's time (one
    is runnable, or one sleeps until earlier): what this task does next is
    then ordered correctly against everything the others do."""
    owed = _owed.get()
    if owed:
        # trio.lowlevel.current_statistics()'s tasks_runnable and
        # seconds_to_next_deadline, read from the runner without building
        # the statistics (and the I/O backend's) on every BQL take.
        rn = _run.GLOBAL_RUN_CONTEXT.runner
        if rn.runq or rn.deadlines.next_deadline() - _clock_now() <= owed:
            await settle()


async def checkpoint() -> None:
    if _owed.get() >= QUANTUM:
        await settle()


async def wait_set(event, deadline: float) -> bool:
    """Wait for event (set by another task at its settled time) or until
    simulated time deadline; the clock then reads the later of this task's
    time before waiting and the wake-up. True if the event was set."""
    start = now()
    _owed.set(0.0)
    with trio.move_on_at(deadline):
        await event.wait()
    catch_up(start)
    return event.is_set()
