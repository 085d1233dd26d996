"""Ctrl-C / SIGTERM during training: a ``KeyboardInterrupt`` in Python instead of a silent kill.

MindSpore 2.10 installs its own C-level SIGINT handler when its runtime starts and again when it compiles a graph;
that handler ends the process with SIGTERM (exit status 143, no message, no cleanup). :func:`interrupt_signals`
puts Python's handler back for SIGINT and turns SIGTERM into a ``KeyboardInterrupt`` too, so an interrupt arriving
while MindSpore's handler is installed (e.g. during a graph compilation) still ends in Python;
:func:`restore_sigint` re-installs Python's SIGINT handler after each training step (MindSpore may have replaced it).
"""

import contextlib
import signal
import threading

__all__ = ["interrupt_signals", "restore_sigint"]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def restore_sigint() -> None:
    """Make SIGINT raise ``KeyboardInterrupt`` again (no-op outside the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def interrupt_signals():
    """Within the block SIGINT and SIGTERM raise ``KeyboardInterrupt``; the previous handlers come back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
