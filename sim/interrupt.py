"""Ctrl-C: one line (`interrupted`) and exit status 130, as shells expect;
a closed pipe: silence and 141.

SIGINT keeps Python's default handler, so trio (which installs its own
only over that one) delivers KeyboardInterrupt to the running machine at a
safe point and unwinds it cleanly. The exception may come out wrapped --
in an exception group, or as the cause or context of another error -- so
is_interrupt looks through the chain.
"""

import signal

EXIT_INTERRUPTED = 128 + signal.SIGINT      # 130: the shell's status for a SIGINT death
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE     # 141: as a tool killed by SIGPIPE (`slofsim run ... | head`)


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
