"""The BQL: QEMU's global mutex (qemu_mutex_lock_iothread, cpus.c).

The vcpu thread holds it while it handles an exit (kvm_cpu_exec takes it
when KVM_RUN returns and drops it before the next KVM_RUN); the main loop
takes it after ppoll returns, to run its fd handlers and bottom halves
(os_host_main_loop_wait). An IOThread does not take it.

Nobody awaits while holding it (exit handling and main-loop dispatch are
synchronous here) but a drain (hold), so the lock is a time: a holder releases it at its own
simulated time, and the next taker -- which first lets every task that
could act before its time run (vtime.sync), so takers are served in
simulated-time order -- continues from that time if it is later.
"""

import trio

from sim import vtime


class Bql:
    def __init__(self, trace):
        self.trace = trace
        self.free_at = 0.0     # simulated time of the last release
        self.last_holder = None
        self.waits = 0
        self._blocked = None

    async def hold(self, actor: str, wait):
        """The one wait done holding the BQL: a drain in the vcpu thread
        (bdrv_drain_all / blk_drain polls with it held). Other takers wait
        until it ends; if it never does, neither do they. Returns its result."""
        self._blocked = done = trio.Event()
        self.last_holder = actor
        await vtime.settle()
        try:
            return await wait
        finally:
            self._blocked = None
            done.set()

    async def lock(self, actor: str, trace_it: bool = False) -> None:
        """qemu_mutex_lock_iothread, in simulated-time order."""
        while self._blocked is not None:       # a holder waits in a drain
            await self._blocked.wait()
        if vtime.must_settle():     # vtime.sync(), without a coroutine when nothing is owed
            await vtime.settle()
        self.take(actor, trace_it)

    def free(self) -> bool:
        """lock() would not wait: no drain holds the BQL and no other task
        could act before this one's time. The vcpu thread, taking it on
        every exit, then calls take() and makes no coroutine."""
        return self._blocked is None and not vtime.must_settle()

    def take(self, actor: str, trace_it: bool = False) -> None:
        """lock()'s last step: continue from the last release if it is later."""
        t = vtime.now()
        if self.free_at > t:
            self.waits += 1
            self.trace.emit(actor, "bql_wait", holder=self.last_holder, wait_ns=round((self.free_at - t) * 1e9))
            vtime.catch_up(self.free_at)
        if trace_it:
            self.trace.emit(actor, "bql_lock")

    def unlock(self, actor: str, trace_it: bool = False) -> None:
        """qemu_mutex_unlock_iothread, at this task's time."""
        self.free_at = vtime.now()
        self.last_holder = actor
        if trace_it:
            self.trace.emit(actor, "bql_unlock")
