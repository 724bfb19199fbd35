"""Ctrl-C: one line (`interrupted`) and exit status 130, as shells expect;
a closed pipe: silence and 141.

SIGINT keeps Python's default handler, so trio (which installs its own
only over that one) delivers KeyboardInterrupt to the running machine at a
safe point and unwinds it cleanly. The exception may come out wrapped --
in an exception group, or as the cause or context of another error -- so
is_interrupt looks through the chain.
"""

import signal

import trio

EXIT_INTERRUPTED = 128 + signal.SIGINT      # 130: the shell's status for a SIGINT death
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE     # 141: as a tool killed by SIGPIPE (`slofsim run ... | head`)

# Held while trio.run tears down: Ctrl-C, and the fuzz campaign's wall-clock alarm.
HELD_DURING_TEARDOWN = {signal.SIGINT, signal.SIGALRM}


def run_trio(async_fn, *args, **kwargs):
    """trio.run, with SIGINT and SIGALRM held from the moment async_fn is
    done until trio.run has returned.

    trio's WakeupSocketpair.close (trio 0.22-0.27) closes its two sockets
    before it restores the old signal wakeup fd. A signal landing in between
    makes CPython write its wake-up byte to a socket whose peer is gone and
    print "Exception ignored when trying to write to the signal wakeup fd"
    with a BrokenPipeError traceback (CI saw it under `slofsim fuzz`, whose
    machines each end a trio.run). Held, the signal is delivered as soon as
    trio.run returns: a Ctrl-C then raises KeyboardInterrupt here.
    """
    old_mask = []

    async def until_done():
        try:
            return await async_fn(*args)
        finally:
            old_mask.append(signal.pthread_sigmask(signal.SIG_BLOCK, HELD_DURING_TEARDOWN))

    try:
        return trio.run(until_done, **kwargs)
    finally:
        if old_mask:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask[0])


def caused_by(exc: BaseException | None, kind: type) -> bool:
    """exc is, wraps (in an exception group), or was caused by a kind."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, kind):
            return True
        if isinstance(exc, BaseExceptionGroup) and exc.subgroup(kind) is not None:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def is_interrupt(exc: BaseException | None) -> bool:
    """exc is, wraps, or was caused by a Ctrl-C."""
    return caused_by(exc, KeyboardInterrupt)
