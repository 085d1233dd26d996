"""LSeg networks; importing this module registers the ``lseg_*`` entries with mindcv."""
from .lseg import LOGIT_SCALE, LSeg, lseg_tiny_test, lseg_vitb32, lseg_vitl16_384
from .lseg_rn import lseg_rn101

__all__ = ["LSeg", "LOGIT_SCALE", "lseg_vitl16_384", "lseg_vitb32", "lseg_tiny_test", "lseg_rn101"]
