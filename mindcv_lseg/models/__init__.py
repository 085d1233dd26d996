"""LSeg networks; importing this module registers the ``lseg_*`` entries with mindcv."""

from .. import shutdown as _shutdown
from .lseg import LOGIT_SCALE, LSeg, lseg_tiny_test, lseg_vitb32, lseg_vitl16_384
from .lseg_rn import lseg_rn101

_shutdown.install()  # no "Exception ignored in Cell.__del__" flood at interpreter exit

__all__ = ["LSeg", "LOGIT_SCALE", "lseg_vitl16_384", "lseg_vitb32", "lseg_tiny_test", "lseg_rn101"]
