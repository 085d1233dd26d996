"""mindcv_lseg.engine.interrupt: a Ctrl-C whose KeyboardInterrupt was swallowed (as MindSpore's graph compiler does
with exceptions raised in its Python callbacks) is raised again at the next interrupt point."""

import os
import signal

import pytest

from mindcv_lseg.engine.interrupt import interrupt_point, interrupt_signals


def _swallowing_callback():
    """Stands in for a compiler callback that discards every exception."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs at the next bytecode boundaries
            pass
    except BaseException:  # noqa: BLE001  (the point: the KeyboardInterrupt is lost here)
        return "swallowed"
    return "not raised"


def test_a_swallowed_sigint_is_raised_at_the_next_interrupt_point():
    with interrupt_signals():
        assert _swallowing_callback() == "swallowed"
        with pytest.raises(KeyboardInterrupt, match="during a MindSpore call"):
            interrupt_point()


def test_sigterm_is_a_keyboard_interrupt_and_the_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with interrupt_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
    assert {s: signal.getsignal(s) for s in before} == before


def test_no_signal_no_interrupt_and_a_new_block_forgets_an_old_signal():
    with interrupt_signals():
        interrupt_point()  # nothing arrived
        _swallowing_callback()
    with interrupt_signals():
        interrupt_point()  # the signal of the earlier block does not leak into this one
    interrupt_point()  # outside a block: a no-op
