"""Serve the interactive LSeg page: upload or drop a photo, type any labels, click Segment.

    python tools/demo.py                       # after tools/quickstart.py: serves its toy model with toy examples
    python tools/demo.py --model lseg_vitl16_384 --ckpt_path lseg_vitl16_384_demo.ckpt [--host 127.0.0.1] [--port 7860]

Needs the demo extra: ``pip install -e ".[demo]"``. The logic lives in ``mindcv_lseg.demo``.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from mindcv_lseg.demo.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
