"""Ctrl-C: one line (`interrupted`) and exit status 130, as shells expect;
a closed pipe: silence and 141.

SIGINT keeps Python's default handler, so trio (which installs its own
only over that one) delivers KeyboardInterrupt to the running machine at a
safe point and unwinds it cleanly. The exception may come out wrapped --
in an exception group, or as the cause or context of another error -- so
is_interrupt looks through the chain.
"""

import contextlib
import signal
import sys

import trio

EXIT_INTERRUPTED = 128 + signal.SIGINT      # 130: the shell's status for a SIGINT death
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE     # 141: as a tool killed by SIGPIPE (`slofsim run ... | head`)

# Held while trio.run tears down: Ctrl-C, and the fuzz campaign's wall-clock alarm.
HELD_DURING_TEARDOWN = {signal.SIGINT, signal.SIGALRM}


@contextlib.contextmanager
def threads_leave_signals_to_main():
    """Threads started inside block SIGINT and SIGALRM for life (a thread
    inherits its creator's mask), so the kernel gives those signals to the
    main thread, the one that holds them while trio.run tears down (rich's
    refresh thread took a Ctrl-C there once)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_DURING_TEARDOWN)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def run_trio(async_fn, *args, **kwargs):
    """trio.run, with SIGINT and SIGALRM held from the moment async_fn is
    done until trio.run has returned, then acted on here.

    trio's WakeupSocketpair.close (trio 0.22 to 0.35 at least) closes its two sockets
    before it restores the old signal wakeup fd. A signal landing in between
    makes CPython write its wake-up byte to a socket whose peer is gone and
    print "Exception ignored when trying to write to the signal wakeup fd"
    with a BrokenPipeError traceback (CI saw it under `slofsim fuzz`, whose
    machines each end a trio.run). A held signal is taken with sigtimedwait
    and raised from here, not left to arrive at whatever bytecode runs next:
    that was once a garbage-collected Nursery's __del__, which swallowed the
    KeyboardInterrupt. A Ctrl-C wins over the alarm.
    """
    before = signal.pthread_sigmask(signal.SIG_BLOCK, ())

    async def until_done():
        try:
            return await async_fn(*args)
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, HELD_DURING_TEARDOWN)

    try:
        return trio.run(until_done, **kwargs)
    finally:
        held = (signal.sigpending() & HELD_DURING_TEARDOWN) - set(before)
        for sig in held:
            signal.sigtimedwait({sig}, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        if signal.SIGINT in held:
            raise KeyboardInterrupt
        raise_if_swallowed()
        if signal.SIGALRM in held:
            _deliver(signal.SIGALRM)


def _deliver(sig) -> None:
    """Act on a signal taken while held, as its handler would have."""
    handler = signal.getsignal(sig)
    if callable(handler):
        handler(sig, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(sig)


# A KeyboardInterrupt raised inside a __del__ or a weakref callback (the
# garbage collector runs them anywhere) is printed and dropped by CPython.
_swallowed = False


def watch_swallowed() -> None:
    """Keep such a Ctrl-C (sys.unraisablehook) for raise_if_swallowed;
    every other unraisable exception goes to the hook there was."""
    previous = sys.unraisablehook
    if getattr(previous, "keeps_ctrl_c", False):
        return

    def hook(args):
        global _swallowed
        if isinstance(args.exc_value, KeyboardInterrupt):
            _swallowed = True
            return
        previous(args)

    hook.keeps_ctrl_c = True
    sys.unraisablehook = hook


def raise_if_swallowed() -> None:
    """Raise the Ctrl-C a __del__ swallowed since the last call, if any."""
    global _swallowed
    if _swallowed:
        _swallowed = False
        raise KeyboardInterrupt


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
