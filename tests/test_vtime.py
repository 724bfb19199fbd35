"""The machine's clock and the IOThread's wake-up: simulated time moves only
when every task waits, and a woken AioContext resumes at the time it would
have settled to, in one scheduler step."""

import collections

import trio
import trio.testing

from sim import vtime
from sim.costs import Costs
from sim.qemu.aio import AioContext
from sim.trace import Trace


class Steps(trio.abc.Instrument):
    def __init__(self):
        self.passes = 0
        self.by_task = collections.Counter()

    def before_io_wait(self, timeout):
        self.passes += 1

    def before_task_step(self, task):
        self.by_task[task.name.rsplit(".", 1)[-1]] += 1


async def _sleepers(log):
    async def sleeper(name, seconds):
        for _ in range(3):
            await trio.sleep(seconds)
            log.append((name, trio.current_time()))
    async with trio.open_nursery() as n:
        n.start_soon(sleeper, "a", 0.5)
        n.start_soon(sleeper, "b", 0.75)


def test_clock_wakes_as_an_autojump_mock_clock_without_its_empty_passes():
    runs = {}
    for name, clock in (("own", vtime.AutojumpClock()), ("mock", trio.testing.MockClock(autojump_threshold=0))):
        log, steps = [], Steps()
        trio.run(_sleepers, log, clock=clock, instruments=[steps])
        runs[name] = (sorted(log, key=lambda x: (x[1], x[0])), steps.passes)
    assert runs["own"][0] == runs["mock"][0]
    assert runs["own"][0][-1] == ("b", 2.25)
    # MockClock jumps after a pass has found nothing to run; the own clock
    # jumps as trio asks how long to sleep, so that pass runs the sleeper.
    assert runs["own"][1] < runs["mock"][1]


def test_clock_does_not_move_while_a_task_can_run():
    async def main():
        async def spin():
            for _ in range(100):
                await trio.lowlevel.checkpoint()
        async with trio.open_nursery() as n:
            n.start_soon(spin)
            await trio.sleep(1)
            assert trio.current_time() == 1.0
        return trio.current_time()
    assert trio.run(main, clock=vtime.AutojumpClock()) == 1.0


async def _woken(ctx_owes, wakers):
    """Park an AioContext owing ctx_owes; wakers are (trio time, waker's
    owed) pairs; returns (the handler's clock, the context's steps)."""
    costs, seen, steps = Costs(), [], Steps()
    ctx = AioContext("iothread", Trace(), costs)
    trio.lowlevel.add_instrument(steps)
    async with trio.open_nursery() as n:
        ctx.nursery = n

        async def iothread():
            vtime.charge(ctx_owes)
            await ctx.run()
        n.start_soon(iothread)
        await trio.testing.wait_all_tasks_blocked()
        steps.by_task.clear()
        for at, owed in wakers:
            await trio.sleep_until(at)
            vtime.charge(owed)
            ctx.schedule(lambda: seen.append(vtime.now()))
            await vtime.settle()
        while len(seen) < len(wakers):
            await trio.sleep(1e-3)
        woken_steps = steps.by_task["iothread"]
        n.cancel_scope.cancel()
    return seen, woken_steps, costs.thread_wakeup


async def test_woken_context_resumes_after_the_wakers_clock_in_one_step(autojump_clock):
    seen, steps, wakeup = await _woken(0.0, [(1.0, 2e-3)])
    assert seen == [1.0 + (2e-3 + wakeup)]
    assert steps == 1


async def test_woken_context_ahead_of_its_waker_keeps_its_own_clock(autojump_clock):
    seen, _, wakeup = await _woken(5e-3, [(1.0, 2e-3)])
    assert seen == [1.0 + (5e-3 + wakeup)]


async def test_a_later_waker_does_not_move_a_wake_up_already_due(autojump_clock):
    wakeup = Costs().thread_wakeup
    seen, steps, _ = await _woken(0.0, [(1.0, 0.0), (1.0 + wakeup / 2, 0.0)])
    # As when the context woke at 1.0 and slept its wake-up cost: the
    # second item, ready while it slept, is dispatched in the same wake-up.
    assert seen == [1.0 + wakeup] * 2
    assert steps == 1


def _own_clock_run(async_fn, *args):
    """trio.run on a machine's clock, with vtime's waits on its timers (as
    sim.machine.run does)."""
    clock = vtime.AutojumpClock()
    vtime.use_clock(clock)
    try:
        return trio.run(async_fn, *args, clock=clock)
    finally:
        vtime.use_clock(None)


async def _tie(sleep_a, sleep_b, steps):
    """Tasks whose deadlines tie at 1.0 and 1.5, and one whose deadlines
    are already due while another task runs, sleeping with the given
    functions; returns (task, time, scheduler pass) as each woke."""
    log = []
    trio.lowlevel.add_instrument(steps)

    async def sleeper(name, sleep, deadlines):
        for d in deadlines:
            await sleep(d if d is not None else trio.current_time())
            log.append((name, trio.current_time(), steps.passes))

    async def spinner():
        for _ in range(4):
            await trio.lowlevel.checkpoint()
            log.append(("spin", trio.current_time(), steps.passes))
    async with trio.open_nursery() as n:
        n.start_soon(sleeper, "a", sleep_a, (1.0, 1.5))
        n.start_soon(sleeper, "b", sleep_b, (1.0, 1.5))
        n.start_soon(sleeper, "c", sleep_a, (0.5, 1.5))
        n.start_soon(sleeper, "due", sleep_b, (None, None, None))
        n.start_soon(spinner)
    return log


def test_own_timers_wake_in_trios_pass_and_order():
    """An Alarm (vtime.sleep_until on the AutojumpClock's timers) wakes in
    the scheduler pass a trio deadline would have, in trio's seeded order:
    the same log, the same passes, with no cancel scope expiring."""
    runs = {}
    for name, sleep_b in (("trio", trio.sleep_until), ("own", vtime.sleep_until)):
        vtime.deterministic_scheduling()
        steps = Steps()
        log = _own_clock_run(_tie, trio.sleep_until, sleep_b, steps)
        runs[name] = (log, steps.passes)
    assert runs["own"] == runs["trio"]
    assert [t for name, t, _ in runs["own"][0] if name in "abc"] == [0.5, 1.0, 1.0, 1.5, 1.5, 1.5]
    assert [p for name, _, p in runs["own"][0] if name == "due"] == [2, 3, 4]   # one pass each


def test_an_alarm_moved_while_parked_wakes_at_its_new_deadline_and_a_cancelled_one_is_gone():
    async def main():
        clock = vtime._clock
        alarm, woke = vtime.Alarm(), []

        async def parked():
            await alarm.wait()
            woke.append(trio.current_time())
        async with trio.open_nursery() as n:
            n.start_soon(parked)
            await trio.sleep(1.0)
            alarm.deadline = 3.0
            await trio.sleep(1.0)
            alarm.deadline = 2.5    # moved again: the 3.0 timer is stale
        with trio.move_on_after(0.5):
            await vtime.sleep_until(100.0)
        return woke, trio.current_time(), clock.next_timer()
    woke, end, nxt = _own_clock_run(main)
    assert woke == [2.5]
    assert end == 3.0
    assert nxt == float("inf")


def test_an_exception_before_an_alarm_parks_leaves_no_timer_and_no_task(monkeypatch):
    """A signal handler's exception (Ctrl-C, the fuzz alarm) can land between
    arming the timer and parking: the timer must not fire later and
    reschedule a task that is not waiting there."""
    async def main():
        clock = vtime._clock
        alarm = vtime.Alarm(5.0)

        async def interrupted_before_parking(abort):
            assert clock.next_timer() == 5.0          # armed
            raise KeyboardInterrupt
        monkeypatch.setattr(vtime, "wait_task_rescheduled", interrupted_before_parking)
        try:
            await alarm.wait()
        except KeyboardInterrupt:
            pass
        monkeypatch.undo()
        left = alarm.task, clock.next_timer()
        await trio.sleep(10.0)                        # past its deadline: this sleep is not cut short
        return left, trio.current_time()
    left, end = _own_clock_run(main)
    assert left == (None, float("inf")) and end == 10.0


def test_the_clocks_instrument_hooks_run_protected_from_ctrl_c():
    """trio's Instruments.call catches a KeyboardInterrupt raised in a hook,
    drops the instrument and logs it: the Ctrl-C would be lost. The hooks
    run KI-protected, so trio delivers it at the next checkpoint instead."""
    seen = []

    class Spy(list):
        def __len__(self):
            seen.append(("after_io_wait", trio.lowlevel.currently_ki_protected()))
            return super().__len__()

    class SpyCell(list):       # the spawner's debt cell, read by task_spawned
        def __getitem__(self, i):
            seen.append(("task_spawned", trio.lowlevel.currently_ki_protected()))
            return super().__getitem__(i)

    async def main():
        vtime._clock._timers = Spy()
        vtime._owed.set(SpyCell([0.0]))
        async with trio.open_nursery() as n:            # spawned from an unprotected task
            n.start_soon(trio.sleep, 1.0)
        return trio.current_time()
    assert _own_clock_run(main) == 1.0
    assert {name for name, _ in seen} == {"after_io_wait", "task_spawned"}
    assert all(protected for _, protected in seen)
