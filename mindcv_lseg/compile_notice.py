"""Say when MindSpore is about to compile a graph, so that a silent first step or first image is explained.

In GRAPH mode the first call of a network with a new input shape compiles a graph before it runs: seconds for the
tiny model, a minute or two for a ViT-L/16 training step on a CPU. :func:`announce_compile` prints one line before
such a call (``compiling the training graph for 8x3x128x128 (first step, ~15 s on a 2-core CPU)...``) and returns
a function that reports the time taken afterwards. It is called outside the graphs (Python side, once per call
site and shape), never inside a ``construct``.
"""

import sys
import time
import weakref
from typing import Callable, Optional, Sequence

__all__ = ["announce_compile", "is_graph_mode", "COMPILE_SECONDS"]

# first-call times (compilation + one run) measured on an otherwise idle 2-core x86_64 CPU, MindSpore 2.10, GRAPH
# mode: forward at 384x384 and a training step at crop 480 / batch 1 (README, Speed and memory); the tiny model at
# the toy sizes (128x128, batch 8), from the process CPU time of a run on a loaded machine
COMPILE_SECONDS = {
    "lseg_tiny_test": {"forward": 10, "training": 40},
    "lseg_vitb32": {"forward": 9, "training": 49},
    "lseg_vitl16_384": {"forward": 16, "training": 123},
}

_SEEN = weakref.WeakKeyDictionary()  # cell -> {(what, shape)} already compiled


def is_graph_mode() -> bool:
    import mindspore as ms

    return ms.get_context("mode") == ms.GRAPH_MODE


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def announce_compile(
    cell,
    what: str,
    shape: Sequence[int],
    detail: str = "",
    model: Optional[str] = None,
    log: Callable[[str], None] = _stderr,
) -> Callable[[], None]:
    """Announce a graph compilation before ``cell`` is first called with an input of ``shape`` (GRAPH mode only).

    Args:
        cell: the network whose call compiles (remembered weakly: each (what, shape) is announced once per cell).
        what: ``"training"``, ``"forward"``, ``"embedding"``, ... (the graph's name in the message).
        shape: the input shape that selects the graph.
        detail: extra words for the parenthesis, e.g. ``"first step"``.
        model: registered model name, for the time estimate (default: ``cell.model_name`` if set).
        log: where the two lines go (default: stderr).

    Returns:
        ``done()``: call it after the call returned to log ``... compiled and ran in X s``; a no-op when nothing was
        announced.
    """
    key = (what, tuple(int(s) for s in shape))
    seen = _SEEN.setdefault(cell, set())
    if key in seen or not is_graph_mode():
        return lambda: None
    seen.add(key)
    model = model or getattr(cell, "model_name", None)
    estimate = COMPILE_SECONDS.get(model, {}).get(what)
    words = [w for w in (detail, f"~{estimate} s on a 2-core CPU" if estimate else "") if w]
    name = f"{what} graph" + (f" for input {'x'.join(str(s) for s in key[1])}" if key[1] else "")
    log(f"compiling the {name}" + (f" ({', '.join(words)})" if words else "") + "...")
    t0 = time.time()

    def done() -> None:
        log(f"{name} compiled and ran in {time.time() - t0:.1f} s")

    return done
