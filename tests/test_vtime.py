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
