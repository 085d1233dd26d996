"""Where the quickstart (``tools/quickstart.py``) writes its run, in one place.

The demo (``tools/demo.py`` without arguments) and the quickstart both read these, so moving the quickstart's output
folder means changing it here only. Paths are relative to the working directory, as the quickstart's own defaults.
"""

import os
from typing import Optional

__all__ = ["QUICKSTART_MODEL", "QUICKSTART_DATA_DIR", "QUICKSTART_OUT_DIR", "find_checkpoint"]

QUICKSTART_MODEL = "lseg_tiny_test"
QUICKSTART_DATA_DIR = os.path.join("data", "toy")
QUICKSTART_OUT_DIR = os.path.join(
    "output", "quickstart"
)  # its own folder: train.py -c lseg_toy.yaml uses output/lseg_toy


def find_checkpoint(out_dir: str, model: str = QUICKSTART_MODEL) -> Optional[str]:
    """``out_dir/best.ckpt`` if present, else the newest periodic ``{model}-NNNN.ckpt``, else ``None``."""
    best = os.path.join(out_dir, "best.ckpt")
    if os.path.isfile(best):
        return best
    if not os.path.isdir(out_dir):
        return None
    periodic = sorted(f for f in os.listdir(out_dir) if f.startswith(model + "-") and f.endswith(".ckpt"))
    return os.path.join(out_dir, periodic[-1]) if periodic else None
