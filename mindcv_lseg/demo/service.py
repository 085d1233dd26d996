"""The demo's request handling, independent of the web framework.

:class:`DemoService` holds one network (loaded and compiled once, at start), its label-embedding caches and the
limits, and turns one request (uploaded file, label text, eval mode, prompt templates) into a :class:`DemoOutput`
by calling :func:`mindcv_lseg.segment` — the same inference core as ``tools/infer.py``; the page adds no second
inference path. Bad input raises :class:`DemoInputError`, whose message is safe to show to the client: it never
contains a server-side path.
"""

import itertools
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["DemoLimits", "DemoInputError", "DemoOutput", "DemoService", "DEFAULT_LABELS", "PROMPT_TEMPLATE"]

DEFAULT_LABELS = ("person", "sky", "tree", "building", "road", "grass", "water", "car", "other")
PROMPT_TEMPLATE = "a photo of a {}."


@dataclass(frozen=True)
class DemoLimits:
    """What one request may ask for.

    Args:
        max_file_mb: largest upload in MB (also enforced by the web server before the file reaches the handler).
        max_pixels: images with more pixels are rejected before they are decoded (decompression bombs).
        max_side: images with a longer side are downscaled to it (keeps memory and compile time bounded).
        max_labels: most labels per request.
        queue_size: requests waiting at most; more are refused by the server until the queue drains.
    """

    max_file_mb: float = 10.0
    max_pixels: int = 40_000_000
    max_side: int = 1024
    max_labels: int = 64
    queue_size: int = 16

    def __post_init__(self):
        for name in ("max_file_mb", "max_pixels", "max_side", "max_labels", "queue_size"):
            if not getattr(self, name) > 0:
                raise ValueError(f"demo limit {name} must be positive, got {getattr(self, name)!r}")
        if self.max_labels > 256:
            raise ValueError(
                f"demo limit max_labels must be <= 256 (one palette index per label), got " f"{self.max_labels}"
            )

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


class DemoInputError(ValueError):
    """Bad request input; the message is meant for the page (no server-side paths)."""


@dataclass
class DemoOutput:
    """One answered request.

    Attributes:
        result: the :class:`~mindcv_lseg.SegResult` of :func:`mindcv_lseg.segment`.
        overlay: the overlay with its legend (``result.visualize()``).
        mask_rgb: the colour mask as an RGB image (for display; the download keeps the label ids).
        mask_path: palette PNG, pixel value = label index, in the service's work folder.
        table: rows ``[id, label, colour hex, pixel share %]`` in label order.
        notes: what the page should tell the user besides the result (resizing, duplicate labels).
        seconds: wall time of the request.
    """

    result: object
    overlay: Image.Image
    mask_rgb: Image.Image
    mask_path: str
    table: List[list]
    notes: List[str] = field(default_factory=list)
    seconds: float = 0.0


def _safe_stem(name: Optional[str]) -> str:
    """A download name from the client's own file name: letters, digits, ``-`` and ``_`` only."""
    stem = os.path.splitext(os.path.basename(name or ""))[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:40]
    return stem or "image"


class DemoService:
    """One network behind the page.

    Args:
        net: LSeg network in eval mode (e.g. from :func:`mindcv_lseg.eval.model_io.create_eval_model`).
        model_name: shown on the page.
        limits: :class:`DemoLimits`.
        default_labels: labels pre-filled in the page and used for the warm-up.
        work_dir: folder for the mask files offered for download (a private temp folder if ``None``).
        max_label_sets: label-embedding cache entries kept per template set before the cache is cleared.

    Requests are serialised by a lock (the web server also queues them with concurrency 1).
    """

    def __init__(
        self,
        net,
        model_name: str,
        limits: DemoLimits = DemoLimits(),
        default_labels: Sequence[str] = DEFAULT_LABELS,
        work_dir: Optional[str] = None,
        max_label_sets: int = 256,
    ):
        self.net = net
        self.model_name = model_name
        self.limits = limits
        self.default_labels = tuple(default_labels)
        self.work_dir = work_dir or tempfile.mkdtemp(prefix="lseg_demo_")
        os.makedirs(self.work_dir, exist_ok=True)
        self.max_label_sets = int(max_label_sets)
        self._caches = {}
        self._lock = threading.Lock()
        self._request_dirs = deque()
        self._count = itertools.count(1)

    @classmethod
    def from_checkpoint(cls, model: str, ckpt_path: str, mode: int = 0, device_target: str = "CPU", **kwargs):
        """Set the MindSpore context, create ``model`` and load ``ckpt_path`` (raises ``ModelLoadError``)."""
        from ..eval.model_io import create_eval_model, setup_context

        setup_context(mode, device_target)
        return cls(create_eval_model(model, ckpt_path), model, **kwargs)

    # ------------------------------------------------------------------ input checks
    def parse_labels(self, text) -> Tuple[List[str], List[str]]:
        """Label text -> (labels, notes). Raises :class:`DemoInputError` (empty, too long, too many)."""
        from ..eval.api import parse_labels
        from ..text.labels import LabelSet

        try:
            labels = parse_labels(text if text is not None else "")
        except ValueError as e:
            raise DemoInputError(str(e)) from None
        if len(labels) > self.limits.max_labels:
            raise DemoInputError(f"{len(labels)} labels given; this server accepts at most {self.limits.max_labels}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            LabelSet.from_string(", ".join(labels), name="demo")  # duplicate labels warn
        return labels, [str(w.message).replace("label list ", "labels ") for w in caught]

    @staticmethod
    def parse_templates(text) -> Optional[Tuple[str, ...]]:
        """Prompt templates, one per line (``{}`` = the label); empty -> ``None`` (raw labels, as the reference)."""
        lines = [t.strip() for t in str(text or "").splitlines() if t.strip()]
        for t in lines:
            if t.count("{}") != 1 or "{" in t.replace("{}", "") or "}" in t.replace("{}", ""):
                raise DemoInputError(
                    f"prompt template {t!r} must contain the placeholder {{}} exactly once "
                    'and no other braces, e.g. "a photo of a {}."'
                )
        return tuple(lines) or None

    def read_image(self, path: str) -> Tuple[Image.Image, List[str]]:
        """Uploaded file -> (RGB image, notes), checking size and pixel count before decoding.

        Raises:
            DemoInputError: missing, too large, not an image, too many pixels, or undecodable.
        """
        from ..eval.api import load_image

        lim = self.limits
        if not path or not os.path.isfile(path):
            raise DemoInputError("no image: upload or drop a photo, or click an example")
        nbytes = os.path.getsize(path)
        if nbytes > lim.max_file_bytes:
            raise DemoInputError(
                f"the file is {nbytes / 2**20:.1f} MB; this server accepts at most " f"{lim.max_file_mb:g} MB"
            )
        try:
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
        except Image.DecompressionBombError:
            raise DemoInputError(f"the image has too many pixels (limit {lim.max_pixels / 1e6:g} MP)") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise DemoInputError(
                "the file is not an image this server can read (use PNG, JPEG, WebP, BMP or " "TIFF)"
            ) from None
        if w * h > lim.max_pixels:
            raise DemoInputError(
                f"the image is {w}x{h} = {w * h / 1e6:.1f} MP; this server accepts at most "
                f"{lim.max_pixels / 1e6:g} MP"
            )
        try:
            image = load_image(path)
        except (ValueError, OSError, Image.DecompressionBombError):
            raise DemoInputError("the image could not be decoded (truncated or corrupt file?)") from None
        notes = []
        if max(image.size) > lim.max_side:
            scale = lim.max_side / max(image.size)
            size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
            notes.append(
                f"the image was downscaled from {image.size[0]}x{image.size[1]} to {size[0]}x{size[1]} "
                f"(longest side limit {lim.max_side} px)"
            )
            image = image.resize(size, Image.BILINEAR)
        return image, notes

    # ------------------------------------------------------------------ inference
    def text_cache(self, templates: Optional[Tuple[str, ...]] = None):
        """The label-embedding cache for ``templates`` (one per template set; cleared when it grows too big)."""
        from ..eval.text_cache import TextEmbeddingCache

        cache = self._caches.get(templates)
        if cache is None or cache.misses >= self.max_label_sets:
            cache = self._caches[templates] = TextEmbeddingCache(
                self.net, model_id=self.model_name, templates=templates
            )
        return cache

    def segment(
        self,
        image: Image.Image,
        labels: Sequence[str],
        mode: str = "whole",
        templates: Optional[Tuple[str, ...]] = None,
    ):
        """:func:`mindcv_lseg.segment` with this service's network and cache, one request at a time."""
        from ..eval.api import segment

        with self._lock:
            return segment(self.net, image, list(labels), mode=mode, text_cache=self.text_cache(templates))

    def warm_up(self, image: Optional[Image.Image] = None, mode: str = "whole") -> float:
        """Compile the graphs and embed the default labels once; returns the seconds it took."""
        t0 = time.perf_counter()
        if image is None:
            image = Image.new("RGB", (384, 384), (127, 127, 127))
        self.segment(image, self.default_labels, mode=mode)
        return time.perf_counter() - t0

    def handle(
        self,
        image_path: Optional[str],
        labels_text,
        mode: str = "whole",
        templates_text: str = "",
        client_name: Optional[str] = None,
    ) -> DemoOutput:
        """One request of the page.

        Args:
            image_path: the uploaded file (in the web server's upload cache).
            labels_text: comma-separated labels.
            mode: ``whole``, ``slide`` or ``ms_flip``.
            templates_text: prompt templates, one per line (empty = off).
            client_name: the file name the client gave (only used, sanitised, for the download's name).

        Raises:
            DemoInputError: bad input; the message is safe to show.
        """
        from ..eval.inference import EVAL_MODES

        t0 = time.perf_counter()
        labels, notes = self.parse_labels(labels_text)  # cheap checks first
        if mode not in EVAL_MODES:
            raise DemoInputError(f"eval mode must be one of {', '.join(EVAL_MODES)}, got {mode!r}")
        templates = self.parse_templates(templates_text)
        image, image_notes = self.read_image(image_path)
        res = self.segment(image, labels, mode=mode, templates=templates)
        mask_path = self._write_mask(res, _safe_stem(client_name))
        counts = np.bincount(res.label_map.reshape(-1).astype(np.int64), minlength=len(labels))
        share = 100.0 * counts / max(1, res.label_map.size)
        from ..viz import get_palette

        pal = get_palette(len(labels))
        table = [
            [i, lab, "#%02x%02x%02x" % tuple(int(c) for c in pal[i]), round(float(share[i]), 2)]
            for i, lab in enumerate(labels)
        ]
        return DemoOutput(
            result=res,
            overlay=res.visualize(),
            mask_rgb=res.palette_image.convert("RGB"),
            mask_path=mask_path,
            table=table,
            notes=notes + image_notes,
            seconds=time.perf_counter() - t0,
        )

    def _write_mask(self, res, stem: str, keep: int = 8) -> str:
        """Write the palette PNG into a fresh request folder; only the last ``keep`` folders are kept."""
        from ..fileio import atomic_save

        folder = os.path.join(self.work_dir, f"request_{next(self._count):06d}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{stem}_mask.png")
        atomic_save(lambda p: res.palette_image.save(p, format="PNG"), path)
        self._request_dirs.append(folder)
        while len(self._request_dirs) > keep:
            shutil.rmtree(self._request_dirs.popleft(), ignore_errors=True)
        return path
