"""AioContext: QEMU's event loop, one per thread (util/async.c, aio-posix.c).

The main loop and each IOThread run one. A context sleeps in ppoll until an
eventfd it watches becomes readable or a bottom half is scheduled, then
dispatches the handlers in its own thread. A handler for an eventfd runs
once per wake-up however many signals arrived (the count coalesces). The
main loop's context dispatches under the BQL (sim.qemu.main_loop), taken
after the wake-up; a handler removed meanwhile does not run.

A handler added while the context sleeps in ppoll is not in that poll's fd
set: adding it wakes the context (aio_notify / qemu_notify_event), which
goes round once more -- rebuilds the set, polls again (the fd is already
readable, so ppoll returns at once) -- before it dispatches the new fd.
"""

from collections import deque

from sim import vtime
from sim.trace import fields_builder

_eventfd_read_fields = fields_builder(lambda eventfd, count: {"eventfd": eventfd, "count": count})


class AioContext:
    def __init__(self, actor: str, trace, costs, bql=None):
        self.actor = actor
        self.trace = trace
        self.costs = costs
        self.bql = bql          # the main loop's: dispatch under the BQL
        self._wakeup = costs.main_loop_wakeup if bql is not None else costs.thread_wakeup
        self._handlers = {}
        self._wakers = {}
        self._ready = deque()
        self._ready_at = 0.0   # the waker's clock: when the work became ready
        self.nursery = None
        self.wakeups = 0
        self._parked = False
        self._sleep = None     # the parked context's wait: its deadline is the wake-up
        self._owed = 0.0       # what the context owed when it parked
        self._woken = None     # trio time of the first wake of this park
        self._late = set()     # fds added, already readable, while parked in ppoll
        self.fault_plan = None  # lost_kick faults for this thread (an IOThread's: layer "iothread")

    def set_event_notifier(self, efd, handler) -> None:
        """aio_set_event_notifier(ctx, e, handler); None removes it."""
        old = self._wakers.pop(efd, None)
        if old is not None:
            efd.wait_queue.remove(old)
            self._handlers.pop(efd, None)
        if handler is None:
            return
        self._handlers[efd] = handler

        def waker(efd=efd):
            self._ready.append(efd)
            self._wake()

        def signalled(efd=efd):
            """A signal while watched; a lost_kick fault at this thread
            leaves it unseen (the count stays: the next wake-up reads it)."""
            plan = self.fault_plan
            if plan is None or not plan.drop_kick(self.actor, self.actor, "aio_poll", efd.label):
                waker()
        self._wakers[efd] = signalled
        efd.wait_queue.append(signalled)
        if efd.count:
            if self._parked:
                self._late.add(efd)
            waker()

    def schedule(self, fn) -> None:
        """qemu_bh_schedule / aio completion delivered to this context."""
        self._ready.append(fn)
        self._wake()

    def _wake(self) -> None:
        """Work is ready at the caller's time: a parked context resumes
        after its wake-up cost, by one timed wake (the deadline of its wait;
        vtime.resume_at). Wakers at the same instant as the first move it
        as they would have moved the clock of a context that woke to run
        in that instant; later ones find it already awake."""
        self._ready_at = max(self._ready_at, vtime.now())
        sleep = self._sleep
        if sleep is not None:
            t = vtime.trio_now()
            if self._woken is None:
                self._woken = t
            elif self._woken != t:
                return
            sleep.deadline = vtime.resume_at(self._owed, self._ready_at, self._wakeup)

    def spawn(self, async_fn, *args) -> None:
        """Work done off this thread (the block layer's I/O)."""
        self.nursery.start_soon(async_fn, *args)

    async def run(self) -> None:
        ready, handlers, late = self._ready, self._handlers, self._late
        while True:
            if ready:
                # ppoll over the rebuilt set returns at once: ASSUMPTION,
                # a syscall and a dispatch pass, charged as qemu_dispatch.
                vtime.charge(self.costs.qemu_dispatch)
            else:
                self._parked = True
                self._owed = vtime.park()
                self._sleep = vtime.Alarm()    # no deadline until work is ready
                await self._sleep.wait()
                self._sleep = self._woken = None
                self._parked = False
            self.wakeups += 1
            if vtime.owing():
                await vtime.settle()
            bql = self.bql
            if bql is not None:
                self.trace.emit(self.actor, "main_loop_wakeup", ready=[_name(x) for x in ready])
                await bql.lock(self.actor, trace_it=True)
            if late:
                self.trace.emit(self.actor, "poll_set_rebuilt", new=[_name(x) for x in late])
            deferred = []
            while ready:
                item = ready.popleft()
                if item in late:        # not in the poll set this wake-up came from
                    deferred.append(item)
                    continue
                if callable(item) and item not in handlers:
                    item()
                    continue
                handler = handlers.get(item)
                if handler is not None and item.count:
                    self.trace.record(self.actor, "eventfd_read", _eventfd_read_fields, item.label, item.count)
                    handler()
            late.clear()
            ready.extend(deferred)
            if bql is not None:
                bql.unlock(self.actor, trace_it=True)


def _name(item) -> str:
    return item.label if hasattr(item, "label") else "bottom half"
