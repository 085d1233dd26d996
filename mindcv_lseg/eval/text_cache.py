"""Label-embedding cache: ``net.encode_text(labels)`` computed once per label set.

The CLIP text tower is the same for every image, so evaluating 2,000 images (or an image folder) with one label set
runs it once. Optionally the features are also stored on disk as ``.npy`` keyed by the model name, the checkpoint
identity (absolute path, size and modification time) and the labels (+ prompt templates), so a second process skips
the text tower too.

Prompt templates (off by default, as in the reference, which feeds the raw labels): with ``templates=("a photo of
a {}.",)`` every label is formatted with each template, each embedding is L2-normalised and the normalised
embeddings are averaged (prompt ensembling). The network L2-normalises text features itself, so with a single
template this equals the raw features of the formatted text up to scale.
"""

import hashlib
import json
import os
import re
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..fileio import atomic_save

__all__ = ["TextEmbeddingCache", "checkpoint_identity", "encode_labels", "check_templates"]


def check_templates(templates: Optional[Sequence[str]]) -> Optional[Tuple[str, ...]]:
    """Check prompt templates: each must be a string with exactly one ``{}`` field (the label) and no other field.

    ``{{`` and ``}}`` stand for literal braces (``str.format`` rules).

    Raises:
        ValueError: naming the template and what is wrong (``{x}``, two ``{}``, a lone ``{``, no ``{}``).
    """
    import string

    if not templates:
        return None
    out = []
    for t in templates:
        if not isinstance(t, str):
            raise ValueError(f"prompt template {t!r} is not a string")
        try:
            fields = [f for _, f, spec, conv in string.Formatter().parse(t) if f is not None]
            specs = [(spec, conv) for _, f, spec, conv in string.Formatter().parse(t) if f is not None]
        except ValueError as e:
            raise ValueError(
                f"prompt template {t!r} is malformed ({e}); write literal braces as '{{{{' and " "'}}'"
            ) from None
        if fields.count("") != 1 or any(fields) or any(spec or conv for spec, conv in specs):
            others = [f"{{{f}}}" for f in fields if f]
            problem = (
                f"has the field(s) {', '.join(others)}"
                if others
                else (
                    f"has {fields.count('')} '{{}}' fields"
                    if fields.count("") != 1
                    else "has a format spec or conversion in its '{}'"
                )
            )
            raise ValueError(
                f"prompt template {t!r} {problem}: a template needs exactly one '{{}}' placeholder "
                "where the label goes (e.g. 'a photo of a {}.'); write literal braces as '{{' and '}}'"
            )
        out.append(t)
    return tuple(out)


def checkpoint_identity(path: Optional[str]) -> str:
    """Cheap identity of a checkpoint file: ``abspath|size|mtime_ns`` (``""`` for none).

    Hashing a 1.7 GB file would take longer than the text tower; a file rewritten in place with the same size and
    modification time would not be noticed (delete the cache directory in that case).
    """
    if not path:
        return ""
    p = os.path.abspath(path)
    try:
        st = os.stat(p)
        return f"{p}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return p


def encode_labels(net, labels: Sequence[str], templates: Optional[Sequence[str]] = None) -> np.ndarray:
    """Text features ``[N, C]`` float32 of ``labels`` (raw ``encode_text`` output, or the template ensemble)."""
    labels = list(labels)
    if not templates:
        feats = net.encode_text(labels)
        return np.asarray(feats.asnumpy() if hasattr(feats, "asnumpy") else feats, dtype=np.float32)
    templates = list(check_templates(templates))
    texts = [t.format(lab) for lab in labels for t in templates]
    feats = net.encode_text(texts)
    feats = np.asarray(feats.asnumpy() if hasattr(feats, "asnumpy") else feats, dtype=np.float32)
    feats = feats.reshape(len(labels), len(templates), -1)
    feats = feats / np.linalg.norm(feats, axis=-1, keepdims=True)
    return feats.mean(axis=1).astype(np.float32)


class TextEmbeddingCache:
    """Memoise text features per label set (and optionally on disk).

    Args:
        net: network with ``encode_text(list_of_str) -> Tensor [N, C]``.
        model_id: identifies the weights, e.g. ``f"{model_name}|{checkpoint_identity(ckpt)}"``; part of the disk key.
        cache_dir: directory for ``.npy`` files; ``None`` keeps the cache in memory only.
        templates: optional prompt templates (see module docstring); ``None`` = raw labels (reference).

    Call ``cache(labels)`` to get a MindSpore float32 Tensor ``[N, C]``; ``hits``/``misses``/``disk_hits`` count
    how each request was served.
    """

    def __init__(
        self, net, model_id: str = "", cache_dir: Optional[str] = None, templates: Optional[Sequence[str]] = None
    ):
        self.net = net
        self.model_id = str(model_id)
        self.cache_dir = cache_dir
        self.templates = check_templates(templates)
        self._mem: Dict[Tuple, np.ndarray] = {}
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0

    def key(self, labels: Sequence[str]) -> str:
        payload = json.dumps(
            {"model": self.model_id, "labels": list(labels), "templates": self.templates},
            ensure_ascii=False,
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]

    def disk_path(self, labels: Sequence[str]) -> Optional[str]:
        if not self.cache_dir:
            return None
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.model_id.split("|")[0])[:40] or "model"
        return os.path.join(self.cache_dir, f"text_{slug}_{self.key(labels)}.npy")

    def features(self, labels: Sequence[str]) -> np.ndarray:
        """float32 numpy ``[N, C]`` for ``labels`` (computed at most once per process / disk cache)."""
        labels = tuple(labels)
        mem_key = (labels, self.templates)
        if mem_key in self._mem:
            self.hits += 1
            return self._mem[mem_key]
        path = self.disk_path(labels)
        feats = None
        if path and os.path.isfile(path):
            try:
                loaded = np.load(path, allow_pickle=False)
                if loaded.ndim == 2 and loaded.shape[0] == len(labels):
                    feats = loaded.astype(np.float32)
                    self.disk_hits += 1
            except (OSError, ValueError):
                feats = None  # unreadable cache entry: recompute and overwrite
        if feats is None:
            self.misses += 1
            feats = encode_labels(self.net, labels, self.templates)
            if path:
                self._save(path, feats)
        self._mem[mem_key] = feats
        return feats

    def __call__(self, labels: Sequence[str]):
        import mindspore as ms

        return ms.Tensor(self.features(labels), ms.float32)

    @staticmethod
    def _save(path: str, feats: np.ndarray) -> None:
        atomic_save(lambda tmp: np.save(tmp, feats), path)
