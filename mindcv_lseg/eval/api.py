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
from PIL import Image

from .. import viz
from ..data.io import IMAGE_EXTS, read_image, to_rgb_array
from ..fileio import atomic_save
from .inference import InferenceConfig, normalize_image, pad_to_multiple, plan_inference, run_inference
from .text_cache import TextEmbeddingCache

__all__ = ["SegResult", "load_image", "parse_labels", "segment", "pixel_embeddings", "save_result", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = IMAGE_EXTS  # the datasets' list: one reader, one list


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
        mode: the inference mode that ran (``"slide"`` when a ``"whole"`` request was above the pixel budget).
        notes: what was changed for this image (e.g. the switch to sliding windows, a ``max_size`` resize).

    With ``max_size``, ``logits`` and ``embeddings`` are at the reduced size; ``label_map`` and the images are at the
    input's size (the label map is enlarged with nearest-neighbour interpolation).
    """

    label_map: np.ndarray
    palette_image: Optional[Image.Image]
    overlay: Image.Image
    labels: List[str]
    image: Image.Image
    logits: np.ndarray = field(repr=False)
    embeddings: Optional[np.ndarray] = field(default=None, repr=False)
    mode: str = "whole"
    notes: List[str] = field(default_factory=list)

    def visualize(self) -> Image.Image:
        """The overlay with a legend (colour swatch + label name) appended."""
        return viz.add_legend(self.overlay, self.labels, present=np.unique(self.label_map).tolist())


def load_image(image: Union[str, os.PathLike, Image.Image, np.ndarray]) -> Image.Image:
    """PIL image / ``[H, W(, 3|4)]`` uint8 or uint16 array / path -> RGB PIL image.

    Files are read by :func:`mindcv_lseg.data.io.read_image` (EXIF orientation applied), the reader of the datasets,
    so grayscale, palette, RGBA and 16-bit images are converted exactly as in training and validation.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable image, or the array has the wrong shape/dtype.
    """
    if isinstance(image, Image.Image):
        return Image.fromarray(to_rgb_array(image), mode="RGB")
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        if (
            image.ndim not in (2, 3)
            or (image.ndim == 3 and image.shape[2] != 3)
            or image.dtype not in (np.uint8, np.uint16)
        ):
            raise ValueError(
                f"image array must be uint8 [H, W, 3] (RGB), [H, W] grayscale or uint16 grayscale, "
                f"got {image.dtype} {image.shape}"
            )
        if image.dtype == np.uint16:
            if image.ndim != 2:
                raise ValueError(f"uint16 image arrays must be grayscale [H, W], got {image.shape}")
            image = np.rint(image / 257.0).astype(np.uint8)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        return Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    if isinstance(image, (str, os.PathLike)):
        return Image.fromarray(read_image(os.fspath(image), exif_transpose=True), mode="RGB")
    raise TypeError(f"image must be a path, a PIL image or a uint8 array, got {type(image).__name__}")


def parse_labels(labels: Union[str, Sequence[str]], context_length: int = 77) -> List[str]:
    """Check labels: comma-separated string or list -> list of stripped labels that fit the tokenizer, via
    :class:`mindcv_lseg.text.LabelSet` (which checks every label).

    Raises:
        ValueError: no labels, an empty label, a label with a line break or another control character, or a label
            longer than ``context_length`` tokens. TypeError: a label that is not a string.
    """
    from ..text.labels import LabelSet

    label_set = LabelSet.from_string(labels) if isinstance(labels, str) else LabelSet("custom", list(labels))
    return list(label_set.check_token_length(context_length).labels)


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
    xp = pad_to_multiple(x, size_divisor, pad_value)
    ph, pw = xp.shape[2:]
    from ..compile_notice import announce_compile

    done = announce_compile(net, "embedding", xp.shape, "net.forward_features is a second graph")
    feats = _features_cell(net)(ms.Tensor(np.ascontiguousarray(xp), ms.float32))
    feats = feats.asnumpy() if hasattr(feats, "asnumpy") else np.asarray(feats)
    done()
    fh, fw = feats.shape[2], feats.shape[3]
    return feats[0, :, : -(-h * fh // ph), : -(-w * fw // pw)].astype(np.float32)


def segment(
    net,
    image,
    labels: Union[str, Sequence[str]],
    mode: str = "whole",
    return_embeddings: bool = False,
    templates: Optional[Sequence[str]] = None,
    text_cache: Optional[TextEmbeddingCache] = None,
    config: Optional[InferenceConfig] = None,
    alpha: float = 0.5,
    max_size: Optional[int] = None,
    **config_overrides,
) -> SegResult:
    """Segment one image with free-text labels.

    Args:
        net: LSeg network (``net(x, text) -> logits``, ``net.encode_text``, ``net.forward_features``), in eval mode.
        image: path, PIL image, or uint8 ``[H, W, 3]`` RGB array (read by :func:`load_image`).
        labels: list of labels or a comma-separated string; id ``i`` in the result is ``labels[i]``.
        mode: ``"whole"``, ``"slide"`` or ``"ms_flip"`` (see :mod:`mindcv_lseg.eval.inference`). ``"whole"`` on an
            image above ``config.max_whole_pixels`` runs as ``"slide"`` (``result.mode``/``result.notes`` say so).
        return_embeddings: also return per-pixel embeddings.
        templates: prompt templates such as ``("a photo of a {}.",)`` (ensembled); off by default (reference).
        text_cache: reuse text features across calls (created on the fly if None).
        config: full :class:`InferenceConfig` (overrides ``mode``).
        alpha: overlay opacity of the class colours.
        max_size: if the image's long side is larger, segment a copy resized (bilinear) to this long side.
        **config_overrides: ``scales``, ``flip``, ``base_size``, ``crop_size``, ``stride``, ``max_whole_pixels``.

    Returns:
        :class:`SegResult`.
    """
    labels = parse_labels(labels)
    pil = load_image(image)
    cfg = config if config is not None else InferenceConfig(mode=mode, **config_overrides)
    if max_size is not None and int(max_size) <= 0:
        raise ValueError(f"max_size must be a positive number of pixels, got {max_size}")
    if text_cache is None:
        text_cache = TextEmbeddingCache(net, templates=templates)
    elif templates is not None and tuple(templates) != text_cache.templates:
        raise ValueError("templates differ from those of the given text_cache")
    text = text_cache(labels)
    notes = []
    work = pil
    if max_size is not None and max(pil.size) > int(max_size):
        f = int(max_size) / max(pil.size)
        size = (max(1, round(pil.size[0] * f)), max(1, round(pil.size[1] * f)))
        work = pil.resize(size, Image.BILINEAR)
        notes.append(f"resized {pil.size[0]}x{pil.size[1]} -> {size[0]}x{size[1]} (max_size {int(max_size)})")
    cfg, note = plan_inference(cfg, work.size[1], work.size[0])
    if note:
        if return_embeddings:  # embeddings come from one whole forward: same memory as "whole"
            raise ValueError(
                f"per-pixel embeddings of a {work.size[0]}x{work.size[1]} image need one forward of the "
                f"whole image, above the budget of {cfg.max_whole_pixels / 1e6:.1f} MP: pass max_size "
                "(--max_size) to segment a smaller copy"
            )
        notes.append(note)
    x = normalize_image(np.asarray(work))
    logits = run_inference(net, x, text, cfg)[0]
    label_map = np.argmax(logits, axis=0)  # first-max tie-breaking, as torch.argmax / the reference
    label_map = label_map.astype(np.uint8 if len(labels) <= 256 else np.int32)
    if work is not pil:
        label_map = np.asarray(Image.fromarray(label_map).resize(pil.size, Image.NEAREST)).astype(label_map.dtype)
    pal_img = viz.colorize(label_map) if len(labels) <= 256 else None
    ov = viz.overlay(pil, label_map, alpha)
    emb = pixel_embeddings(net, x) if return_embeddings else None
    return SegResult(
        label_map=label_map,
        palette_image=pal_img,
        overlay=ov,
        labels=labels,
        image=pil,
        logits=logits,
        embeddings=emb,
        mode=cfg.mode,
        notes=notes,
    )


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
