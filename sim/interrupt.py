"""Ctrl-C: one line (`interrupted`) and exit status 130, as shells expect.

While a command runs, SIGINT sets a flag and raises KeyboardInterrupt. The
flag, not the exception's type, decides what an escape was: trio may wrap
KeyboardInterrupt in an exception group or a TrioInternalError, and the
fuzz campaign catches every exception of a case as a finding.
"""

import contextlib
import signal
import threading

EXIT_INTERRUPTED = 128 + signal.SIGINT      # 130: the shell's status for a SIGINT death

_flag = threading.Event()


def _on_sigint(signum, frame):
    _flag.set()
    raise KeyboardInterrupt


def interrupted() -> bool:
    """True once Ctrl-C arrived inside catching()."""
    return _flag.is_set()


def is_interrupt(exc: BaseException) -> bool:
    """exc is, wraps, or was caused by a Ctrl-C."""
    if _flag.is_set():
        return True
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt):
            return True
        if isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def catching():
    """Install the SIGINT handler for the duration (main thread only)."""
    _flag.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        _flag.clear()
