"""Inference core: whole-image, sliding-window and multi-scale + flip evaluation of an LSeg network.

The multi-scale + flip path reproduces the reference evaluator (lang-seg ``LSeg_MultiEvalModule`` /
PyTorch-Encoding ``MultiEvalModule``) step by step:

* for every scale ``s``: ``long_size = ceil(base_size * s)``; the other side is ``int(short * long_size / long + 0.5)``
  (the height is the long side only if ``h > w``);
* the **normalised** image tensor is resized with bilinear ``align_corners=True``;
* if ``long_size <= crop_size``: pad bottom/right to ``crop_size x crop_size`` with ``-1.0`` (= ``-mean/std``), one
  forward, crop back;
* else sliding window: pad to at least ``crop_size`` in each dimension if needed, windows of ``crop_size`` with
  ``stride = int(crop_size * 2/3)`` (320 for 480), every window padded to ``crop_size x crop_size`` with ``-1``,
  logits accumulated over the valid region and divided by the per-pixel window count;
* ``module_inference(x) = net(x) + flip_w(net(flip_w(x)))`` — a sum of RAW logits, no softmax;
* the per-scale logits are resized to the image size (bilinear, ``align_corners=True``) and summed over scales.

The network is called as ``net(x, text_features)`` with ``x`` float32 ``[1, 3, crop, crop]`` (always the same
shape, so a compiled graph is reused) and returns logits ``[1, N, crop, crop]``. Accumulation is done in float32
numpy, as the reference does in float32 torch; resizes use ``mindspore.ops.interpolate`` (bilinear,
``align_corners=True``), which agrees with PyTorch's ``F.interpolate`` to ~1 ulp on this machine.

Modes (:class:`InferenceConfig`):

* ``"whole"``: one forward of the whole image (padded bottom/right with ``-1`` to a multiple of ``size_divisor``, the
  logits cropped back); equals ``net(x, text)`` when the size is already a multiple of 32.
* ``"slide"``: the reference per-scale procedure at the image's native resolution (``scales=None``), or at the given
  scales around ``base_size``; flip off by default.
* ``"ms_flip"``: the reference evaluator (scales ``[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]``, flip on, base 520, crop 480).
"""

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "EVAL_MODES",
    "REFERENCE_SCALES",
    "InferenceConfig",
    "normalize_image",
    "resize_bilinear",
    "pad_image",
    "pad_bottom_right",
    "pad_to_multiple",
    "flip_w",
    "scaled_size",
    "window_grid",
    "module_inference",
    "whole_inference",
    "scale_inference",
    "multi_scale_inference",
    "run_inference",
    "plan_inference",
    "LargeImageWarning",
    "DEFAULT_MAX_WHOLE_PIXELS",
]

EVAL_MODES = ("whole", "slide", "ms_flip")
# "whole" runs one forward over the whole (padded) image: its memory grows with the pixel count (the 3x3 decoder
# convolutions at H/2 x W/2) and, through attention, with its square. Above this many pixels it slides 480 windows.
DEFAULT_MAX_WHOLE_PIXELS = 1024 * 1024


class LargeImageWarning(UserWarning):
    """An image was too large for ``"whole"`` inference and was processed with sliding windows instead."""


REFERENCE_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@dataclass(frozen=True)
class InferenceConfig:
    """How to turn an image into logits.

    Args:
        mode: ``"whole"``, ``"slide"`` or ``"ms_flip"``.
        scales: scales around ``base_size``; ``None`` means: native resolution for ``"slide"``, the reference list
            for ``"ms_flip"``; ignored by ``"whole"``.
        flip: add horizontally flipped logits; ``None`` means True for ``"ms_flip"``, False otherwise.
        base_size: long side at scale 1.0 (reference 520).
        crop_size: window / network input size (reference 480; a multiple of 32).
        stride: window stride; ``None`` means ``int(crop_size * 2 / 3)`` (reference 320).
        pad_value: value of padded pixels in the normalised image (``-mean/std = -1.0``).
        size_divisor: ``"whole"`` pads the image to a multiple of this.
        max_whole_pixels: pixel budget of ``"whole"`` (padded ``H * W``); a larger image is processed as ``"slide"``
            at its native resolution (windows of ``crop_size``), see :func:`plan_inference`. ``None`` = no limit.
    """

    mode: str = "whole"
    scales: Optional[Tuple[float, ...]] = None
    flip: Optional[bool] = None
    base_size: int = 520
    crop_size: int = 480
    stride: Optional[int] = None
    pad_value: float = -1.0
    size_divisor: int = 32
    max_whole_pixels: Optional[int] = DEFAULT_MAX_WHOLE_PIXELS

    def __post_init__(self):
        if self.mode not in EVAL_MODES:
            raise ValueError(f"eval mode must be one of {', '.join(EVAL_MODES)}, got {self.mode!r}")
        if self.scales is not None:
            scales = tuple(float(s) for s in self.scales)
            if not scales or min(scales) <= 0:
                raise ValueError(f"scales must be a non-empty list of positive numbers, got {self.scales!r}")
            object.__setattr__(self, "scales", scales)
        if int(self.crop_size) <= 0 or int(self.base_size) <= 0:
            raise ValueError(f"crop_size and base_size must be positive, got {self.crop_size}, {self.base_size}")
        if self.mode != "whole" and int(self.crop_size) % self.size_divisor:
            raise ValueError(
                f"crop_size {self.crop_size} is the network input of the {self.mode!r} windows and "
                f"must be a multiple of {self.size_divisor}"
            )
        if self.stride is not None and int(self.stride) <= 0:
            raise ValueError(f"stride must be positive, got {self.stride}")
        if self.max_whole_pixels is not None and int(self.max_whole_pixels) <= 0:
            raise ValueError(f"max_whole_pixels must be positive (or None for no limit), got {self.max_whole_pixels}")

    @classmethod
    def from_args(cls, args, **overrides) -> "InferenceConfig":
        """The evaluation settings of a parsed tool/trainer config (``eval_mode``, ``eval_scales``, ``eval_flip``,
        ``base_size``, ``crop_size``, ``eval_stride``); ``overrides`` set other fields (e.g. ``max_whole_pixels``)."""
        fields = dict(
            mode=args.eval_mode,
            scales=args.eval_scales,
            flip=args.eval_flip,
            base_size=args.base_size,
            crop_size=args.crop_size,
            stride=args.eval_stride,
        )
        fields.update(overrides)
        return cls(**fields)

    def resolved(self) -> "InferenceConfig":
        """Copy with the ``None`` defaults filled in for the mode."""
        scales = self.scales
        if scales is None and self.mode == "ms_flip":
            scales = REFERENCE_SCALES
        flip = self.flip if self.flip is not None else self.mode == "ms_flip"
        stride = self.stride if self.stride is not None else int(self.crop_size * 2.0 / 3.0)
        return replace(self, scales=scales, flip=bool(flip), stride=int(stride))


def normalize_image(image: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` -> float32 ``[1, 3, H, W]`` as ``(x / 255 - 0.5) / 0.5`` (ToTensor + Normalize(0.5)),
    see :func:`mindcv_lseg.data.transforms.normalize`."""
    from ..data.transforms import normalize

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image array [H, W, 3], got shape {image.shape}")
    return normalize(image)[None]


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with ``align_corners=True`` of float32 ``[B, C, h, w]`` -> ``[B, C, height, width]``."""
    if x.shape[2] == height and x.shape[3] == width:
        return x  # torch's interpolate to the same size with align_corners=True is the identity too
    import mindspore as ms
    from mindspore import ops

    y = ops.interpolate(
        ms.Tensor(np.ascontiguousarray(x, dtype=np.float32)),
        size=(int(height), int(width)),
        mode="bilinear",
        align_corners=True,
    )
    return y.asnumpy()


def pad_bottom_right(x: np.ndarray, height: int, width: int, value: float = -1.0) -> np.ndarray:
    """Pad ``[B, C, h, w]`` bottom/right with ``value`` to ``[B, C, height, width]`` (``x`` itself if no padding)."""
    ph, pw = height - x.shape[2], width - x.shape[3]
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="constant", constant_values=np.float32(value))


def pad_image(x: np.ndarray, crop_size: int, value: float = -1.0) -> np.ndarray:
    """Pad ``[B, C, h, w]`` bottom/right with ``value`` up to at least ``crop_size`` in each dimension."""
    return pad_bottom_right(x, max(crop_size, x.shape[2]), max(crop_size, x.shape[3]), value)


def pad_to_multiple(x: np.ndarray, multiple: int = 32, value: float = -1.0) -> np.ndarray:
    """Pad ``[B, C, h, w]`` bottom/right with ``value`` to the next multiple of ``multiple`` (LSeg needs 32)."""
    d = max(int(multiple), 1)
    return pad_bottom_right(x, -(-x.shape[2] // d) * d, -(-x.shape[3] // d) * d, value)


def flip_w(x: np.ndarray) -> np.ndarray:
    """Horizontal flip of ``[..., W]`` (contiguous copy)."""
    return np.ascontiguousarray(x[..., ::-1])


def scaled_size(h: int, w: int, base_size: int, scale: float) -> Tuple[int, int, int, int]:
    """Reference resize rule. Returns ``(height, width, long_size, short_size)`` for one scale."""
    long_size = int(math.ceil(base_size * scale))
    if h > w:
        height = long_size
        width = int(1.0 * w * long_size / h + 0.5)
        short_size = width
    else:
        width = long_size
        height = int(1.0 * h * long_size / w + 0.5)
        short_size = height
    return height, width, long_size, short_size


def window_grid(ph: int, pw: int, crop_size: int, stride: int):
    """Sliding windows ``(h0, h1, w0, w1)`` over a padded ``ph x pw`` image (reference grid)."""
    h_grids = int(math.ceil(1.0 * (ph - crop_size) / stride)) + 1
    w_grids = int(math.ceil(1.0 * (pw - crop_size) / stride)) + 1
    out = []
    for idh in range(h_grids):
        for idw in range(w_grids):
            h0, w0 = idh * stride, idw * stride
            out.append((h0, min(h0 + crop_size, ph), w0, min(w0 + crop_size, pw)))
    return out


def _forward(net, x: np.ndarray, text) -> np.ndarray:
    import mindspore as ms

    from ..compile_notice import announce_compile

    done = announce_compile(net, "forward", x.shape, "first call at this size")
    out = net(ms.Tensor(np.ascontiguousarray(x, dtype=np.float32)), text)
    done()
    out = out.asnumpy() if hasattr(out, "asnumpy") else np.asarray(out)
    if out.ndim != 4 or out.shape[0] != x.shape[0] or out.shape[2:] != x.shape[2:]:
        raise RuntimeError(
            f"network returned logits of shape {out.shape} for an input of shape {x.shape}; "
            f"expected [B, N, H, W] at the input resolution"
        )
    return out.astype(np.float32, copy=False)


def module_inference(net, x: np.ndarray, text, flip: bool) -> np.ndarray:
    """``net(x) + flip_w(net(flip_w(x)))`` if ``flip`` else ``net(x)`` (raw logits, float32)."""
    out = _forward(net, x, text)
    if flip:
        out = out + flip_w(_forward(net, flip_w(x), text))
    return out


def whole_inference(
    net, x: np.ndarray, text, flip: bool = False, size_divisor: int = 32, pad_value: float = -1.0
) -> np.ndarray:
    """One forward of the whole normalised image ``[1, 3, H, W]`` -> logits ``[1, N, H, W]``.

    The image is padded bottom/right with ``pad_value`` to a multiple of ``size_divisor`` and the logits cropped
    back (nothing is padded when the size is already a multiple).
    """
    _, _, h, w = x.shape
    return module_inference(net, pad_to_multiple(x, size_divisor, pad_value), text, flip)[:, :, :h, :w]


def scale_inference(
    net, cur: np.ndarray, text, crop_size: int, stride: int, flip: bool, pad_value: float = -1.0
) -> np.ndarray:
    """Reference per-scale body on an already resized image ``[1, 3, height, width]`` -> ``[1, N, height, width]``.

    Every network input is ``crop_size x crop_size``.
    """
    _, _, height, width = cur.shape
    long_size, short_size = max(height, width), min(height, width)
    if long_size <= crop_size:
        pad_img = pad_image(cur, crop_size, pad_value)
        return module_inference(net, pad_img, text, flip)[:, :, :height, :width]
    pad_img = pad_image(cur, crop_size, pad_value) if short_size < crop_size else cur
    _, _, ph, pw = pad_img.shape
    outputs = None
    count_norm = np.zeros((1, 1, ph, pw), dtype=np.float32)
    for h0, h1, w0, w1 in window_grid(ph, pw, crop_size, stride):
        crop = pad_image(pad_img[:, :, h0:h1, w0:w1], crop_size, pad_value)
        out = module_inference(net, crop, text, flip)
        if outputs is None:
            outputs = np.zeros((1, out.shape[1], ph, pw), dtype=np.float32)
        outputs[:, :, h0:h1, w0:w1] += out[:, :, : h1 - h0, : w1 - w0]
        count_norm[:, :, h0:h1, w0:w1] += 1
    assert (count_norm == 0).sum() == 0
    outputs = outputs / count_norm
    return outputs[:, :, :height, :width]


def multi_scale_inference(
    net,
    x: np.ndarray,
    text,
    scales: Sequence[float],
    base_size: int,
    crop_size: int,
    stride: int,
    flip: bool,
    pad_value: float = -1.0,
) -> np.ndarray:
    """Reference multi-scale (+ flip) evaluator: logits ``[1, N, H, W]`` summed over ``scales``."""
    if x.shape[0] != 1:
        raise ValueError(f"multi-scale inference takes one image at a time, got batch {x.shape[0]}")
    _, _, h, w = x.shape
    scores = None
    for scale in scales:
        height, width, _, _ = scaled_size(h, w, base_size, scale)
        cur = resize_bilinear(x, height, width)
        outputs = scale_inference(net, cur, text, crop_size, stride, flip, pad_value)
        score = resize_bilinear(outputs, h, w)
        scores = score.copy() if scores is None else scores + score
    return scores


def plan_inference(cfg: InferenceConfig, height: int, width: int) -> Tuple[InferenceConfig, Optional[str]]:
    """The config that will actually run for an image of ``height x width``, and a note if it differs from ``cfg``.

    ``"whole"`` above ``cfg.max_whole_pixels`` (counted after padding to ``size_divisor``) becomes ``"slide"`` at
    native resolution with the same flip setting: the memory then depends on ``crop_size``, not on the image.
    """
    d = max(int(cfg.size_divisor), 1)
    padded = (-(-height // d) * d) * (-(-width // d) * d)
    if cfg.mode == "whole" and cfg.max_whole_pixels is not None and padded > cfg.max_whole_pixels:
        slide = replace(cfg, mode="slide", scales=None)
        note = (
            f"{width}x{height} image ({padded / 1e6:.1f} MP padded) is above the whole-image budget of "
            f"{cfg.max_whole_pixels / 1e6:.1f} MP: using sliding {cfg.crop_size}x{cfg.crop_size} windows "
            "(eval_mode slide) instead"
        )
        return slide, note
    return cfg, None


def run_inference(net, x: np.ndarray, text, cfg: InferenceConfig = InferenceConfig()) -> np.ndarray:
    """Logits ``[1, N, H, W]`` (float32 numpy) of one normalised image ``x`` ``[1, 3, H, W]`` under ``cfg``.

    ``"whole"`` on an image above ``cfg.max_whole_pixels`` runs as ``"slide"`` (:func:`plan_inference`) and says so
    with a :class:`LargeImageWarning`.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected one normalised image [1, 3, H, W], got shape {x.shape}")
    cfg, note = plan_inference(cfg, x.shape[2], x.shape[3])
    if note:
        import warnings

        warnings.warn(note, LargeImageWarning, stacklevel=2)
    cfg = cfg.resolved()
    if cfg.mode == "whole":
        return whole_inference(net, x, text, cfg.flip, cfg.size_divisor, cfg.pad_value)
    if cfg.scales is None:  # "slide" at native resolution
        return scale_inference(net, x, text, cfg.crop_size, cfg.stride, cfg.flip, cfg.pad_value)
    return multi_scale_inference(
        net, x, text, cfg.scales, cfg.base_size, cfg.crop_size, cfg.stride, cfg.flip, cfg.pad_value
    )
