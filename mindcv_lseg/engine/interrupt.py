"""Ctrl-C / SIGTERM during training: a ``KeyboardInterrupt`` in Python instead of a silent kill or a lost signal.

MindSpore 2.10 gets in the way of Python's SIGINT handling in two ways:

- Running a graph installs its own C-level SIGINT handler and does not always put Python's back; that handler ends
  the process with SIGTERM (exit status 143, no message, no cleanup).
- While a graph compiles, MindSpore calls back into Python (attribute lookups on cells, for one) in places that
  discard any exception. A ``KeyboardInterrupt`` raised there by Python's default handler is swallowed: the
  compilation goes on and the Ctrl-C is lost (seen with the epoch-end validation graph of a training run).

Within :func:`interrupt_signals`, SIGINT and SIGTERM both run :func:`_on_signal`, which first records the signal and
then raises ``KeyboardInterrupt``. The record survives a swallowed exception: :func:`interrupt_point`, called by the
trainer after each training step and each validation image, re-installs the handler (MindSpore may have replaced it)
and raises ``KeyboardInterrupt`` if a signal was recorded.
"""

import contextlib
import signal
import threading

__all__ = ["interrupt_signals", "interrupt_point"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received = threading.Event()  # set by the handler; cleared when a block starts
_active = threading.Event()  # inside interrupt_signals()


def _on_signal(signum, frame):
    _received.set()
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def interrupt_point() -> None:
    """Raise ``KeyboardInterrupt`` if SIGINT/SIGTERM arrived (even if its first ``KeyboardInterrupt`` was swallowed
    inside MindSpore), and re-install the handler for SIGINT. No-op outside :func:`interrupt_signals` or off the main
    thread."""
    if not _active.is_set() or not _main_thread():
        return
    signal.signal(signal.SIGINT, _on_signal)
    if _received.is_set():
        raise KeyboardInterrupt("a signal arrived during a MindSpore call")


@contextlib.contextmanager
def interrupt_signals():
    """Within the block SIGINT and SIGTERM raise ``KeyboardInterrupt`` (see the module docstring); the previous
    handlers come back after it."""
    if not _main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in _SIGNALS}
    _received.clear()
    for s in _SIGNALS:
        signal.signal(s, _on_signal)
    _active.set()
    try:
        yield
    finally:
        _active.clear()
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
