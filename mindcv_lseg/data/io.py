"""Reading images and masks with specific errors, and mapping raw mask values to training ids."""

import os
from typing import Optional

import numpy as np
from PIL import Image

__all__ = [
    "SegDataError",
    "ImageNotFoundError",
    "to_rgb_array",
    "read_image",
    "read_mask",
    "map_mask",
    "IMAGE_EXTS",
    "MASK_EXTS",
]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MASK_EXTS = (".png", ".tif", ".tiff", ".bmp")


class SegDataError(ValueError):
    """A problem with one input file or with the dataset layout. The message names the file."""


# image modes PIL converts to RGB without loss of meaning
_CONVERTIBLE_IMAGE_MODES = {"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr", "La", "RGBa"}
_INT16_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_INT_MASK_MODES = {"L", "P", "1", "I;16", "I;16B", "I;16L", "I;16N", "I"}


class ImageNotFoundError(SegDataError, FileNotFoundError):
    """The image or mask file does not exist (also a ``FileNotFoundError``)."""


def _open(path: str, what: str) -> Image.Image:
    if not os.path.isfile(path):
        raise ImageNotFoundError(f"{what} file not found: {path}")
    try:
        im = Image.open(path)
        im.load()  # decode now: truncated/corrupt files fail here, not later
    except Image.DecompressionBombError as e:
        raise SegDataError(
            f"cannot read {what} {path}: it is too large to decode safely ({e}); downscale it " "first"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise SegDataError(
            f"cannot read {what} {path}: {e} (unreadable or truncated file; re-export or remove it)"
        ) from None
    return im


def to_rgb_array(im: Image.Image, name: str = "<image>") -> np.ndarray:
    """A decoded PIL image -> RGB ``uint8 [H, W, 3]``, the one conversion every reader of the package uses.

    Grayscale, palette, CMYK and RGBA images are converted to RGB (alpha is dropped). 16-bit grayscale is scaled
    to 8 bits (``round(v / 257)``; PIL's own ``convert("RGB")`` would clip it to white). Float (mode ``F``) images
    are rejected: their value range is unknown.

    Raises:
        SegDataError: unconvertible mode (the message names ``name``).
    """
    mode = im.mode
    if mode == "RGB":
        arr = np.asarray(im, dtype=np.uint8)
    elif mode in _CONVERTIBLE_IMAGE_MODES:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    elif mode in _INT16_MODES:
        v = np.asarray(im).astype(np.int64)
        if v.ndim != 2 or (v.size and (v.min() < 0 or v.max() > 65535)):
            raise SegDataError(f"image {name}: mode {mode} with values outside 0..65535 cannot be converted to RGB")
        g = np.rint(v / 257.0).astype(np.uint8)
        arr = np.stack([g, g, g], axis=-1)
    else:
        raise SegDataError(
            f"image {name}: unsupported image mode {mode!r} (e.g. float images); "
            "convert it to 8-bit RGB (or grayscale) PNG/JPEG"
        )
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise SegDataError(f"image {name}: decoded to an unexpected shape {arr.shape}")
    return np.ascontiguousarray(arr)


def read_image(path: str, exif_transpose: bool = False) -> np.ndarray:
    """Read an image file as RGB ``uint8 [H, W, 3]`` (conversion: :func:`to_rgb_array`).

    This is the package's one image reader: the datasets, ``tools/infer.py`` and ``segment()`` all use it.

    Args:
        path: image file.
        exif_transpose: apply the EXIF orientation (inference: photos as shown by viewers). Off for datasets:
            masks carry none, so rotating only the image would misalign the pair.

    Raises:
        ImageNotFoundError: no such file (a ``SegDataError`` and a ``FileNotFoundError``).
        SegDataError: unreadable/truncated, too large to decode safely, or unconvertible image (names the file).
    """
    im = _open(path, "image")
    if exif_transpose:
        from PIL import ImageOps

        im = ImageOps.exif_transpose(im)
    return to_rgb_array(im, path)


def read_mask(path: str) -> np.ndarray:
    """Read a single-channel integer class-id mask as ``int32 [H, W]`` (raw file values).

    Accepted: 8-bit grayscale (``L``), palette (``P``: the palette indices are the ids), 1-bit, 16/32-bit
    integer. Rejected with a specific message: RGB/RGBA/LA colour masks and float masks.
    """
    im = _open(path, "mask")
    mode = im.mode
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LA", "PA", "La", "RGBa"):
        raise SegDataError(
            f"mask {path} is a {mode} colour image; masks must be single-channel PNGs whose pixel "
            "values are class ids (mode L, P or 16-bit). Convert colour-coded masks to ids first"
        )
    if mode not in _INT_MASK_MODES:
        raise SegDataError(
            f"mask {path} has non-integer mode {mode!r}; masks must hold integer class ids "
            "(8/16-bit single-channel PNG)"
        )
    arr = np.asarray(im)
    if arr.ndim != 2:
        raise SegDataError(f"mask {path} decoded to shape {arr.shape}; expected a single channel [H, W]")
    return arr.astype(np.int32)


def map_mask(
    raw: np.ndarray,
    num_classes: int,
    *,
    reduce_zero_label: bool = False,
    mask_ignore_index: Optional[int] = 255,
    ignore_index: int = 255,
    path: str = "<mask>",
) -> np.ndarray:
    """Map raw file values to training ids.

    * pixels equal to ``mask_ignore_index`` (file value; ``None`` = no such value) -> ``ignore_index``;
    * with ``reduce_zero_label``: file value 0 -> ``ignore_index`` and ``v`` -> ``v - 1`` (ADE20K convention);
    * every other value must be a class id in ``[0, num_classes)`` after the shift, else ``SegDataError``.

    Args:
        raw: int array [H, W] of file values.
    Returns:
        int32 [H, W] with values in ``[0, num_classes) ∪ {ignore_index}``.
    """
    m = raw.astype(np.int64, copy=False)
    ignore = np.zeros(m.shape, dtype=bool) if mask_ignore_index is None else (m == mask_ignore_index)
    if reduce_zero_label:
        ignore |= m == 0
        m = m - 1
    bad = ~ignore & ((m < 0) | (m >= num_classes))
    if bad.any():
        vals = np.unique(raw[bad])
        shown = ", ".join(str(int(v)) for v in vals[:10]) + (", ..." if len(vals) > 10 else "")
        lo, hi = (1, num_classes) if reduce_zero_label else (0, num_classes - 1)
        ign = [] if mask_ignore_index is None else [str(mask_ignore_index)]
        if reduce_zero_label:
            ign.insert(0, "0")
        ign_txt = f"; ignored values: {', '.join(ign)}" if ign else ""
        raise SegDataError(
            f"mask {path} contains ids outside the label set: {shown} ({int(bad.sum())} pixels); "
            f"the label set has {num_classes} classes, so valid mask values are {lo}..{hi}{ign_txt}. "
            "Check classes.txt, reduce_zero_label and ignore_index"
        )
    out = np.where(ignore, ignore_index, m).astype(np.int32)
    return out
