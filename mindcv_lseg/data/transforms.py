"""Joint image + mask transforms (numpy/PIL) following the reference recipe (PyTorch-Encoding ``base.py``).

All transforms take ``(image uint8 [H, W, 3], mask int32 [H, W], rng)`` and return
``(image float32 [3, h, w], mask int32 [h, w])``; ``rng`` is a ``numpy.random.Generator`` (the loader seeds one
per sample from ``(seed, epoch, index)``, so results do not depend on worker count or order).
"""

from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image

__all__ = ["normalize", "resize_pair", "TrainTransform", "ValTransform", "create_seg_transform"]

Size = Union[int, Sequence[int]]


def _pair(size: Size, what: str) -> Tuple[int, int]:
    """int or (h, w) -> (h, w) of positive ints."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        if len(size) != 2:
            raise ValueError(f"{what} must be an int or (height, width), got {size!r}")
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"{what} must be positive, got {size!r}")
    return h, w


#: LSeg's input statistics: ``(x / 255 - 0.5) / 0.5`` maps [0, 255] to [-1, 1]
LSEG_MEAN = LSEG_STD = (0.5, 0.5, 0.5)
#: ImageNet statistics (the zero-shot ResNet-101 network's input)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalize(image: np.ndarray, mean=LSEG_MEAN, std=LSEG_STD) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [3, H, W] as ``(x / 255 - mean) / std`` per channel, in float32 like torchvision's
    ``ToTensor`` + ``Normalize`` (the default maps 0 -> -1 and 255 -> 1). The one input normalisation of the package."""
    x = image.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize_pair(image: np.ndarray, mask: np.ndarray, out_h: int, out_w: int):
    """Resize image (bilinear, PIL) and mask (nearest) to ``(out_h, out_w)``."""
    if image.shape[:2] == (out_h, out_w):
        return image, mask
    img = np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.BILINEAR))
    msk = np.asarray(Image.fromarray(mask.astype(np.int32), mode="I").resize((out_w, out_h), Image.NEAREST))
    return img, msk.astype(np.int32)


def _flip_probability(hflip: Union[float, bool]) -> float:
    """mindcv's ``hflip`` probability; booleans of the earlier API mean 0.5 (on) / 0 (off)."""
    p = (0.5 if hflip else 0.0) if isinstance(hflip, bool) else float(hflip)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"hflip is a probability in [0, 1], got {hflip!r}")
    return p


class TrainTransform:
    """Reference training augmentation.

    1. horizontal flip with probability ``hflip`` (0.5 in the reference);
    2. random long side ``randint(int(lo * base_size), int(hi * base_size))`` inclusive (reference: 260..1040),
       short side scaled with ``int(x + 0.5)``; bilinear image, nearest mask;
    3. pad bottom/right to the crop size: image with 0 (-> -1 after normalisation), mask with ``ignore_index``;
    4. random ``crop_size`` crop; 5. :func:`normalize`.

    Args:
        base_size: reference long side (520 in the reference).
        crop_size: int or (h, w) (480 in the reference; multiples of 32 for LSeg).
        scale_range: (lo, hi) factors of ``base_size`` for the long side.
        hflip: flip probability, as mindcv's ``hflip`` (``True``/``False`` mean 0.5/0).
        ignore_index: mask value for padded pixels.
    """

    def __init__(
        self,
        base_size: int = 520,
        crop_size: Size = 480,
        scale_range=(0.5, 2.0),
        hflip: Union[float, bool] = 0.5,
        ignore_index: int = 255,
    ):
        if int(base_size) <= 0:
            raise ValueError(f"base_size must be positive, got {base_size}")
        lo, hi = (float(s) for s in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
        self.base_size = int(base_size)
        self.crop_h, self.crop_w = _pair(crop_size, "crop_size")
        self.long_min = max(1, int(self.base_size * lo))
        self.long_max = max(self.long_min, int(self.base_size * hi))
        self.hflip = _flip_probability(hflip)
        self.ignore_index = int(ignore_index)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        if self.hflip > 0 and rng.random() < self.hflip:
            image = image[:, ::-1]
            mask = mask[:, ::-1]
        h, w = mask.shape
        long_size = int(rng.integers(self.long_min, self.long_max, endpoint=True))
        if h > w:
            oh, ow = long_size, int(1.0 * w * long_size / h + 0.5)
        else:
            oh, ow = int(1.0 * h * long_size / w + 0.5), long_size
        oh, ow = max(oh, 1), max(ow, 1)
        image, mask = resize_pair(np.ascontiguousarray(image), np.ascontiguousarray(mask), oh, ow)
        ch, cw = self.crop_h, self.crop_w
        if oh < ch or ow < cw:
            ph, pw = max(ch - oh, 0), max(cw - ow, 0)
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0)
            mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=self.ignore_index)
        h, w = mask.shape
        y1 = int(rng.integers(0, h - ch, endpoint=True))
        x1 = int(rng.integers(0, w - cw, endpoint=True))
        image = image[y1 : y1 + ch, x1 : x1 + cw]
        mask = mask[y1 : y1 + ch, x1 : x1 + cw]
        return normalize(image), np.ascontiguousarray(mask, dtype=np.int32)

    def __repr__(self):
        return (
            f"TrainTransform(long side {self.long_min}..{self.long_max}, crop=({self.crop_h}, {self.crop_w}), "
            f"hflip={self.hflip}, ignore_index={self.ignore_index})"
        )


class ValTransform:
    """Validation transform.

    Modes:
        * ``"original"``: keep the original size (whole-image evaluation, the reference ``testval``); only
          normalise. Batches then need ``batch_size=1`` unless all images share a size.
        * ``"resize_crop"``: the reference ``val`` mode: resize so the short side is ``crop_size``
          (long side ``int`` truncation; bilinear image, nearest mask), then centre-crop ``crop_size``.

    Args:
        mode: ``"original"`` or ``"resize_crop"``.
        crop_size: int (square crop) for ``"resize_crop"``; ignored for ``"original"``.
    """

    MODES = ("original", "resize_crop")

    def __init__(self, mode: str = "original", crop_size: int = 480):
        if mode not in self.MODES:
            raise ValueError(f"unknown val mode {mode!r}; choose one of {self.MODES}")
        self.mode = mode
        self.crop_h, self.crop_w = _pair(crop_size, "crop_size")
        if self.mode == "resize_crop" and self.crop_h != self.crop_w:
            raise ValueError(f"val mode 'resize_crop' needs a square crop_size, got {crop_size!r}")

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng=None):
        if self.mode == "resize_crop":
            out = self.crop_h
            h, w = mask.shape
            if w > h:
                oh, ow = out, int(1.0 * w * out / h)
            else:
                oh, ow = int(1.0 * h * out / w), out
            image, mask = resize_pair(image, mask, oh, ow)
            y1 = int(round((oh - out) / 2.0))
            x1 = int(round((ow - out) / 2.0))
            image = image[y1 : y1 + out, x1 : x1 + out]
            mask = mask[y1 : y1 + out, x1 : x1 + out]
        return normalize(image), np.ascontiguousarray(mask, dtype=np.int32)

    def __repr__(self):
        return f"ValTransform(mode={self.mode!r}, crop_size={self.crop_h})"


def create_seg_transform(
    train: bool,
    base_size: int = 520,
    crop_size: Size = 480,
    scale_range=(0.5, 2.0),
    hflip: Union[float, bool] = 0.5,
    val_mode: str = "original",
    ignore_index: int = 255,
):
    """Build the training (:class:`TrainTransform`) or validation (:class:`ValTransform`) transform."""
    if train:
        return TrainTransform(
            base_size=base_size, crop_size=crop_size, scale_range=scale_range, hflip=hflip, ignore_index=ignore_index
        )
    return ValTransform(mode=val_mode, crop_size=crop_size)
