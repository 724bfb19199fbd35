"""Ctrl-C: one line (`interrupted`) and exit status 130, as shells expect.

SIGINT keeps Python's default handler, so trio (which installs its own
only over that one) delivers KeyboardInterrupt to the running machine at a
safe point and unwinds it cleanly. The exception may come out wrapped --
in an exception group, or as the cause or context of another error -- so
is_interrupt looks through the chain.
"""

import signal

EXIT_INTERRUPTED = 128 + signal.SIGINT      # 130: the shell's status for a SIGINT death


def is_interrupt(exc: BaseException | None) -> bool:
    """exc is, wraps, or was caused by a Ctrl-C."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt):
            return True
        if isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None:
            return True
        exc = exc.__cause__ or exc.__context__
    return False
