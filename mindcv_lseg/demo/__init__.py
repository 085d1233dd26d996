"""Interactive demo page: upload a photo, type any labels, see the segmentation (``tools/demo.py``).

* :mod:`.service` — framework-independent request handling around :func:`mindcv_lseg.segment` (limits, label and
  image checks, label-embedding caches, one request at a time);
* :mod:`.ui` — the Gradio page (optional extra ``pip install -e ".[demo]"``);
* :mod:`.cli` — arguments, the quickstart default, load + warm-up, serving.
"""

from .service import DEFAULT_LABELS, DemoInputError, DemoLimits, DemoOutput, DemoService

__all__ = ["DEFAULT_LABELS", "DemoInputError", "DemoLimits", "DemoOutput", "DemoService"]
