"""Visualisation of label maps: palette, colorize, overlay and a legend panel (PIL only).

* :func:`get_palette` — deterministic, distinct RGB colours (``[256, 3]`` uint8): hues stepped by the golden ratio
  with alternating saturation/brightness, so neighbouring class ids get clearly different colours (like the ADE20K
  palette, but generated, not copied).
* :func:`colorize` — label map ``[H, W]`` -> P-mode PIL image whose palette index equals the class id.
* :func:`overlay` — alpha blend of the image and the colour map.
* :func:`add_legend` — appends a panel (colour swatch + label name per line) to the right of the overlay (below it
  for tall narrow images), drawn with PIL's default font.
"""

import colorsys
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["get_palette", "colorize", "overlay", "add_legend", "visualize", "compare_panel"]

_GOLDEN = 0.618033988749895


def get_palette(num_colors: int = 256) -> np.ndarray:
    """Deterministic distinct colours ``[num_colors, 3]`` uint8 (all different for ``num_colors <= 256``)."""
    colors = []
    seen = set()
    i = 0
    while len(colors) < num_colors:
        h = (0.05 + i * _GOLDEN) % 1.0
        s = (0.85, 0.55, 0.95, 0.7)[(i // 3) % 4]
        v = (0.95, 0.75, 0.6)[i % 3]
        rgb = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, v))
        i += 1
        if rgb in seen:
            continue
        seen.add(rgb)
        colors.append(rgb)
    return np.array(colors, dtype=np.uint8)


def colorize(label_map: np.ndarray, palette: Optional[np.ndarray] = None) -> Image.Image:
    """Label map ``[H, W]`` (ids ``0..255``) -> P-mode PIL image (pixel value = class id, palette = colours)."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"label map must be 2-D [H, W], got shape {label_map.shape}")
    if label_map.size and (label_map.min() < 0 or label_map.max() > 255):
        raise ValueError("a palette image holds class ids 0..255 only; save larger label sets as 16-bit PNG")
    pal = get_palette(256) if palette is None else np.asarray(palette, dtype=np.uint8)
    img = Image.fromarray(label_map.astype(np.uint8), mode="P")
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: len(pal)] = pal[:256]
    img.putpalette(full.reshape(-1).tolist())
    return img


def overlay(
    image: Image.Image, label_map: np.ndarray, alpha: float = 0.5, palette: Optional[np.ndarray] = None
) -> Image.Image:
    """``(1 - alpha) * image + alpha * colour(label_map)`` as an RGB PIL image of the image's size."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    pal = get_palette(256) if palette is None else np.asarray(palette, dtype=np.uint8)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    label_map = np.asarray(label_map)
    if label_map.shape != rgb.shape[:2]:
        raise ValueError(f"label map {label_map.shape} does not match the image size {rgb.shape[:2]}")
    color = pal[np.clip(label_map, 0, len(pal) - 1)].astype(np.float32)
    out = (1.0 - alpha) * rgb + alpha * color
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def add_legend(
    image: Image.Image,
    labels: Sequence[str],
    palette: Optional[np.ndarray] = None,
    font_size: Optional[int] = None,
    present: Optional[Sequence[int]] = None,
) -> Image.Image:
    """Append a legend panel (one row per label: colour swatch + name) to an RGB image.

    Args:
        image: the overlay.
        labels: label names; row ``i`` uses palette colour ``i``.
        palette: colours (default :func:`get_palette`).
        font_size: text size in pixels (default scales with the image, 12..24).
        present: optional class ids present in the prediction; absent labels are drawn in grey text.

    Returns:
        New RGB image: the panel is to the right for landscape/square images, below for tall images; the canvas
        grows if the legend is taller/wider than the image.
    """
    pal = get_palette(256) if palette is None else np.asarray(palette, dtype=np.uint8)
    image = image.convert("RGB")
    w, h = image.size
    fs = font_size or int(min(24, max(12, min(w, h) / 20)))
    font = _font(fs)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_h = fs + max(4, fs // 3)
    sw = fs  # swatch size
    pad = max(6, fs // 2)
    text_w = max([int(probe.textlength(str(lab), font=font)) for lab in labels] + [1])
    item_w = sw + pad // 2 + text_w + pad
    below = h > w * 1.2
    if below:
        cols = max(1, (w - pad) // item_w)
        rows = -(-len(labels) // cols)
        panel_w, panel_h = max(w, cols * item_w + pad), rows * row_h + 2 * pad
        canvas = Image.new("RGB", (panel_w, h + panel_h), (255, 255, 255))
        canvas.paste(image, (0, 0))
        ox, oy = pad, h + pad
    else:
        rows = max(1, (h - 2 * pad) // row_h)
        rows = min(rows, len(labels)) if labels else 1
        cols = -(-len(labels) // rows) if labels else 1
        panel_w = cols * item_w + pad
        canvas = Image.new("RGB", (w + panel_w, max(h, rows * row_h + 2 * pad)), (255, 255, 255))
        canvas.paste(image, (0, 0))
        ox, oy = w + pad, pad
    draw = ImageDraw.Draw(canvas)
    present_set = None if present is None else set(int(p) for p in present)
    for i, lab in enumerate(labels):
        r, c = (i // cols, i % cols) if below else (i % rows, i // rows)
        x, y = ox + c * item_w, oy + r * row_h
        color = tuple(int(v) for v in pal[i % len(pal)])
        draw.rectangle([x, y, x + sw - 1, y + sw - 1], fill=color, outline=(0, 0, 0))
        fill = (0, 0, 0) if present_set is None or i in present_set else (150, 150, 150)
        draw.text((x + sw + pad // 2, y + sw / 2), str(lab), fill=fill, font=font, anchor="lm")
    return canvas


def visualize(
    image: Image.Image,
    label_map: np.ndarray,
    labels: Sequence[str],
    alpha: float = 0.5,
    palette: Optional[np.ndarray] = None,
) -> Image.Image:
    """Overlay + legend in one call (legend rows greyed out for labels absent from ``label_map``)."""
    ov = overlay(image, label_map, alpha, palette)
    return add_legend(ov, labels, palette, present=np.unique(label_map).tolist())


def _caption(image: Image.Image, text: str) -> Image.Image:
    fs = int(min(20, max(11, image.size[0] / 12)))
    font = _font(fs)
    bar = fs + 8
    canvas = Image.new("RGB", (image.size[0], image.size[1] + bar), (255, 255, 255))
    canvas.paste(image, (0, bar))
    ImageDraw.Draw(canvas).text((4, bar / 2), text, fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


def compare_panel(
    image: Image.Image,
    gt_map: Optional[np.ndarray],
    pred_map: np.ndarray,
    labels: Sequence[str],
    alpha: float = 1.0,
    ignore_index: int = 255,
    gap: int = 4,
) -> Image.Image:
    """``[image | ground truth | prediction] + legend`` in one RGB image (captions on top).

    ``alpha=1`` (default) draws solid class colours, easiest to compare; lower values blend in the image.

    Ground-truth pixels equal to ``ignore_index`` are shown untinted. ``gt_map=None`` omits the middle panel.
    """
    image = image.convert("RGB")
    panels = [_caption(image, "image")]
    if gt_map is not None:
        gt = np.asarray(gt_map)
        valid = gt != ignore_index
        ov = np.asarray(overlay(image, np.where(valid, gt, 0), alpha)).copy()
        ov[~valid] = np.asarray(image)[~valid]
        panels.append(_caption(Image.fromarray(ov), "ground truth"))
    panels.append(_caption(overlay(image, pred_map, alpha), "prediction"))
    w = sum(p.size[0] for p in panels) + gap * (len(panels) - 1)
    h = max(p.size[1] for p in panels)
    strip = Image.new("RGB", (w, h), (255, 255, 255))
    x = 0
    for p in panels:
        strip.paste(p, (x, 0))
        x += p.size[0] + gap
    present = set(np.unique(pred_map).tolist())
    if gt_map is not None:
        present |= set(np.unique(np.asarray(gt_map)[np.asarray(gt_map) != ignore_index]).tolist())
    return add_legend(strip, labels, present=sorted(present))
