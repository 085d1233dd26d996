"""mindcv-lseg: LSeg for MindSpore, registered as mindcv models.

``import mindcv_lseg`` registers the ``lseg_*`` entries with ``mindcv.create_model``.
"""
__version__ = "0.1.0"

from .eval.api import SegResult, segment
from .models import LSeg, lseg_tiny_test, lseg_vitb32, lseg_vitl16_384
from .text.tokenizer import tokenize

__all__ = ["LSeg", "lseg_vitl16_384", "lseg_vitb32", "lseg_tiny_test", "tokenize", "segment", "SegResult"]
