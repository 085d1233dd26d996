"""mindcv-lseg: LSeg for MindSpore, registered as mindcv models.

``import mindcv_lseg`` registers the ``lseg_*`` entries with ``mindcv.create_model`` (this imports MindSpore).

The command-line tools parse their arguments (and answer ``--help``) before MindSpore is imported: they set the
environment variable ``MINDCV_LSEG_DEFER_IMPORTS=1`` around their first import of the package, which then only
defines itself; the models are registered when ``mindcv_lseg.models`` is imported (the trainer and the evaluation
helpers do that), and the names below are imported on first use.
"""

import os as _os

__version__ = "0.1.0"

__all__ = ["LSeg", "lseg_vitl16_384", "lseg_vitb32", "lseg_rn101", "lseg_tiny_test", "tokenize", "segment", "SegResult"]

_LAZY = {
    "LSeg": ".models",
    "lseg_vitl16_384": ".models",
    "lseg_vitb32": ".models",
    "lseg_rn101": ".models",
    "lseg_tiny_test": ".models",
    "tokenize": ".text.tokenizer",
    "segment": ".eval.api",
    "SegResult": ".eval.api",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if _os.environ.get("MINDCV_LSEG_DEFER_IMPORTS") != "1":
    from .eval.api import SegResult, segment
    from .models import LSeg, lseg_rn101, lseg_tiny_test, lseg_vitb32, lseg_vitl16_384
    from .text.tokenizer import tokenize
