"""High-level Python API: ``segment(net, image, labels)`` (in the spirit of PaddleHub's ``segment``).

Example::

    import mindcv, mindcv_lseg
    from mindcv_lseg.eval import segment
    net = mindcv.create_model("lseg_vitl16_384", checkpoint_path="lseg_l16.ckpt"); net.set_train(False)
    res = segment(net, "photo.jpg", ["dog", "grass", "other"], mode="ms_flip")
    res.label_map            # uint8 [H, W], id i = labels[i]
    res.palette_image.save("mask.png"); res.visualize().save("overlay.png")
"""
import os
import weakref
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import viz
from ..fileio import atomic_save
from .inference import InferenceConfig, normalize_image, run_inference
from .text_cache import TextEmbeddingCache

__all__ = ["SegResult", "load_image", "parse_labels", "segment", "pixel_embeddings", "save_result",
           "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


@dataclass
class SegResult:
    """Result of :func:`segment`.

    Attributes:
        label_map: ``[H, W]`` class ids in label order (uint8 if ``len(labels) <= 256`` else int32).
        palette_image: P-mode PIL image of ``label_map`` (pixel value = class id) — ``None`` for > 256 labels.
        overlay: RGB PIL image, the input blended with the class colours (same size as the input).
        labels: the labels, id ``i`` = ``labels[i]``.
        image: the input as RGB PIL image.
        logits: float32 ``[N, H, W]`` summed raw logits of the chosen mode.
        embeddings: optional float32 ``[C, ceil(H/2), ceil(W/2)]`` L2-normalised per-pixel embeddings
            (``net.forward_features`` of the whole image, single scale).
    """

    label_map: np.ndarray
    palette_image: Optional[Image.Image]
    overlay: Image.Image
    labels: List[str]
    image: Image.Image
    logits: np.ndarray = field(repr=False)
    embeddings: Optional[np.ndarray] = field(default=None, repr=False)

    def visualize(self) -> Image.Image:
        """The overlay with a legend (colour swatch + label name) appended."""
        return viz.add_legend(self.overlay, self.labels, present=np.unique(self.label_map).tolist())


def load_image(image: Union[str, os.PathLike, Image.Image, np.ndarray]) -> Image.Image:
    """PIL image / ``[H, W, 3]`` uint8 array / path -> RGB PIL image (EXIF orientation applied for files).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable image, or the array has the wrong shape/dtype.
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 [H, W, 3] (RGB), got {image.dtype} {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image[:, :, :3]), mode="RGB")
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image not found: {path}")
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"cannot read image {path}: not a valid image file ({e.__class__.__name__}: {e})") \
                from None
    raise TypeError(f"image must be a path, a PIL image or a uint8 array, got {type(image).__name__}")


def parse_labels(labels: Union[str, Sequence[str]], context_length: int = 77) -> List[str]:
    """Check labels: comma-separated string or list -> list of stripped, non-empty labels that fit the tokenizer.

    Raises:
        ValueError: no labels, an empty label, or a label longer than ``context_length`` tokens.
    """
    from ..text.tokenizer import tokenize

    if isinstance(labels, str):
        items = labels.split(",")
    else:
        items = list(labels)
    if not items or (len(items) == 1 and not str(items[0]).strip()):
        raise ValueError("no labels given: pass a comma-separated list such as \"dog, grass, other\"")
    out = []
    for i, lab in enumerate(items):
        if not isinstance(lab, str):
            raise ValueError(f"label {i} is a {type(lab).__name__} ({lab!r}), not a string")
        lab = lab.strip()
        if not lab:
            raise ValueError(f"label {i} is empty in {labels!r} (check for doubled or trailing commas)")
        out.append(lab)
    for i, lab in enumerate(out):
        try:
            tokenize([lab], context_length=context_length)
        except ValueError as e:
            raise ValueError(f"label {i} is too long for the CLIP text encoder: {e}") from None
    return out


_FEATURE_CELLS = weakref.WeakKeyDictionary()


def _features_cell(net):
    """A Cell whose ``construct`` is ``net.forward_features`` (compiled as one graph in GRAPH mode), cached per net;
    for a network that is not a Cell (an exported graph, :mod:`mindcv_lseg.deploy`) its own ``forward_features``."""
    from mindspore import nn

    if not isinstance(net, nn.Cell):
        return net.forward_features
    cell = _FEATURE_CELLS.get(net)
    if cell is None:
        class _ForwardFeatures(nn.Cell):
            def __init__(self, inner):
                super().__init__(auto_prefix=False)
                self.inner = inner

            def construct(self, x):
                return self.inner.forward_features(x)

        cell = _ForwardFeatures(net)
        cell.set_train(False)
        _FEATURE_CELLS[net] = cell
    return cell


def pixel_embeddings(net, x: np.ndarray, size_divisor: int = 32, pad_value: float = -1.0) -> np.ndarray:
    """``net.forward_features`` of the whole normalised image ``[1, 3, H, W]`` -> ``[C, ceil(H/2), ceil(W/2)]``."""
    import mindspore as ms

    _, _, h, w = x.shape
    d = size_divisor
    ph, pw = -(-h // d) * d, -(-w // d) * d
    xp = np.pad(x, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)), constant_values=np.float32(pad_value))
    feats = _features_cell(net)(ms.Tensor(np.ascontiguousarray(xp), ms.float32))
    feats = feats.asnumpy() if hasattr(feats, "asnumpy") else np.asarray(feats)
    fh, fw = feats.shape[2], feats.shape[3]
    return feats[0, :, : -(-h * fh // ph), : -(-w * fw // pw)].astype(np.float32)


def segment(net, image, labels: Union[str, Sequence[str]], mode: str = "whole", return_embeddings: bool = False,
            templates: Optional[Sequence[str]] = None, text_cache: Optional[TextEmbeddingCache] = None,
            config: Optional[InferenceConfig] = None, alpha: float = 0.5, **config_overrides) -> SegResult:
    """Segment one image with free-text labels.

    Args:
        net: LSeg network (``net(x, text) -> logits``, ``net.encode_text``, ``net.forward_features``), in eval mode.
        image: path, PIL image, or uint8 ``[H, W, 3]`` RGB array.
        labels: list of labels or a comma-separated string; id ``i`` in the result is ``labels[i]``.
        mode: ``"whole"``, ``"slide"`` or ``"ms_flip"`` (see :mod:`mindcv_lseg.eval.inference`).
        return_embeddings: also return per-pixel embeddings.
        templates: prompt templates such as ``("a photo of a {}.",)`` (ensembled); off by default (reference).
        text_cache: reuse text features across calls (created on the fly if None).
        config: full :class:`InferenceConfig` (overrides ``mode``).
        alpha: overlay opacity of the class colours.
        **config_overrides: ``scales``, ``flip``, ``base_size``, ``crop_size``, ``stride`` for the config.

    Returns:
        :class:`SegResult`.
    """
    labels = parse_labels(labels)
    pil = load_image(image)
    cfg = config if config is not None else InferenceConfig(mode=mode, **config_overrides)
    if text_cache is None:
        text_cache = TextEmbeddingCache(net, templates=templates)
    elif templates is not None and tuple(templates) != text_cache.templates:
        raise ValueError("templates differ from those of the given text_cache")
    text = text_cache(labels)
    x = normalize_image(np.asarray(pil))
    logits = run_inference(net, x, text, cfg)[0]
    label_map = np.argmax(logits, axis=0)  # first-max tie-breaking, as torch.argmax / the reference
    label_map = label_map.astype(np.uint8 if len(labels) <= 256 else np.int32)
    pal_img = viz.colorize(label_map) if len(labels) <= 256 else None
    ov = viz.overlay(pil, label_map, alpha)
    emb = pixel_embeddings(net, x) if return_embeddings else None
    return SegResult(label_map=label_map, palette_image=pal_img, overlay=ov, labels=labels, image=pil,
                     logits=logits, embeddings=emb)


def save_result(result: SegResult, out_dir: str, name: str, save_embeddings: bool = False) -> List[str]:
    """Write ``NAME_mask.png`` (P-mode, pixel = label id), ``NAME_overlay.png`` (overlay + legend) and, if asked and
    present, ``NAME_emb.npy`` (float32 ``[C, h, w]``) into ``out_dir``, atomically. Returns the paths written."""
    paths = []
    mask_path = os.path.join(out_dir, f"{name}_mask.png")
    if result.palette_image is not None:
        atomic_save(lambda p: result.palette_image.save(p, format="PNG"), mask_path)
    else:  # > 256 labels: 16-bit grayscale ids
        atomic_save(lambda p: Image.fromarray(result.label_map.astype(np.uint16)).save(p, format="PNG"), mask_path)
    paths.append(mask_path)
    ov_path = os.path.join(out_dir, f"{name}_overlay.png")
    atomic_save(lambda p: result.visualize().save(p, format="PNG"), ov_path)
    paths.append(ov_path)
    if save_embeddings and result.embeddings is not None:
        emb_path = os.path.join(out_dir, f"{name}_emb.npy")

        def _save_npy(p):
            with open(p, "wb") as f:
                np.save(f, result.embeddings)

        atomic_save(_save_npy, emb_path)
        paths.append(emb_path)
    return paths
