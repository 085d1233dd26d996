"""A deterministic toy segmentation set, written in the generic folder layout.

Scenes: a sky band on top (blue gradient, light cloud noise) over a ground made of up to three slanted strips of
grass (green, high-frequency texture), water (dark teal, horizontal ripples) and road (grey asphalt grain),
with 0-2 red circles and 0-2 yellow squares on top, plus per-image brightness jitter and Gaussian pixel noise.
Class ids follow the built-in ``"toy"`` label set: 0 sky, 1 grass, 2 water, 3 road, 4 red circle, 5 yellow square.

    python -m mindcv_lseg.data.toy --out DIR [--num-train 96 --num-val 24 --size 128 --seed 0]

Every image depends only on ``(seed, split, index)``: the same arguments always give byte-identical files.
"""

import argparse
import os
import sys
from typing import Tuple

import numpy as np
from PIL import Image

from ..fileio import atomic_save, atomic_write_text
from ..text.labels import TOY_LABELS

__all__ = ["make_toy_scene", "make_toy_dataset", "TOY_CLASSES"]

TOY_CLASSES = TOY_LABELS
SKY, GRASS, WATER, ROAD, CIRCLE, SQUARE = range(6)
_SPLIT_IDS = {"train": 1, "val": 2}


def make_toy_scene(rng: np.random.Generator, size: Tuple[int, int] = (128, 128)):
    """Draw one scene.

    Args:
        rng: random generator (all randomness comes from it).
        size: (height, width).

    Returns:
        (image uint8 [H, W, 3], mask uint8 [H, W] with ids 0..5)
    """
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mask = np.zeros((h, w), np.uint8)
    img = np.zeros((h, w, 3), np.float32)

    # sky: vertical blue gradient + soft cloud noise
    horizon = int(h * rng.uniform(0.25, 0.5)) + (rng.uniform(-0.08, 0.08) * (xx - w / 2)).astype(np.int32)
    sky = yy < horizon
    t = yy / max(h - 1, 1)
    cloud = _smooth_noise(rng, h, w, cell=max(h // 6, 2))
    img[..., 0] = 90 + 60 * t + 60 * cloud
    img[..., 1] = 150 + 50 * t + 60 * cloud
    img[..., 2] = 235 + 15 * cloud
    mask[sky] = SKY

    # ground: 1-3 slanted strips, each grass / water / road
    n_strips = int(rng.integers(1, 4))
    kinds = rng.permutation([GRASS, WATER, ROAD])[:n_strips]
    cuts = np.sort(rng.uniform(0.15, 0.85, size=n_strips - 1)) * w
    slants = rng.uniform(-0.6, 0.6, size=n_strips - 1)
    strip = np.zeros((h, w), np.int32)
    for c, s in zip(cuts, slants):
        strip += (xx > c + s * (yy - h / 2)).astype(np.int32)
    ground = ~sky
    for k, kind in enumerate(kinds):
        region = ground & (strip == k)
        mask[region] = kind
        img[region] = _texture(kind, rng, yy, xx, h, w)[region]

    # shapes on top: red circles, yellow squares
    for _ in range(int(rng.integers(0, 3))):
        r = rng.uniform(0.07, 0.16) * min(h, w)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        mask[disk] = CIRCLE
        shade = 1.0 - 0.35 * np.sqrt(((yy - cy + r / 3) ** 2 + (xx - cx + r / 3) ** 2)) / (1.5 * r)
        img[disk] = np.stack([215 * shade, 30 * shade, 35 * shade], -1)[disk]
    for _ in range(int(rng.integers(0, 3))):
        a = rng.uniform(0.12, 0.28) * min(h, w)
        y0, x0 = rng.uniform(0, h - a), rng.uniform(0, w - a)
        sq = (yy >= y0) & (yy < y0 + a) & (xx >= x0) & (xx < x0 + a)
        mask[sq] = SQUARE
        img[sq] = np.array([240, 215, 40], np.float32) + 12 * ((xx[sq] - x0) / a)[:, None]

    img *= rng.uniform(0.85, 1.15)  # global brightness
    img += rng.normal(0, 8.0, size=img.shape)  # sensor noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def _smooth_noise(rng, h, w, cell):
    """Bilinearly upsampled coarse noise in [0, 1], shape [h, w]."""
    gh, gw = h // cell + 2, w // cell + 2
    coarse = (rng.random((gh, gw)) * 255).astype(np.uint8)
    up = Image.fromarray(coarse).resize((gw * cell, gh * cell), Image.BILINEAR)
    return np.asarray(up, np.float32)[:h, :w] / 255.0


def _texture(kind, rng, yy, xx, h, w):
    """Full-frame texture [h, w, 3] float for a ground class."""
    if kind == GRASS:
        blades = rng.random((h, w)).astype(np.float32)
        base = np.array([55, 150, 45], np.float32)
        return base + (blades[..., None] - 0.5) * np.array([40, 90, 30], np.float32)
    if kind == WATER:
        phase = rng.uniform(0, 2 * np.pi)
        ripple = np.sin(yy * rng.uniform(0.7, 1.1) + 0.15 * xx + phase)
        base = np.array([20, 85, 120], np.float32)
        return base + ripple[..., None] * np.array([10, 25, 30], np.float32)
    # road: grey asphalt grain
    grain = _smooth_noise(rng, h, w, cell=2)
    out = np.repeat((95 + 40 * grain)[..., None], 3, axis=-1)
    return out


def make_toy_dataset(
    root: str, num_train: int = 96, num_val: int = 24, size: int = 128, seed: int = 0, overwrite: bool = False
) -> str:
    """Write the toy set to ``root`` in the folder layout (``images/``, ``masks/``, ``classes.txt``, ``splits/``).

    Args:
        root: output folder (created). If it already holds a toy set made with the same arguments, nothing is
            rewritten; a non-empty folder with other content raises unless ``overwrite``.
        num_train, num_val: number of scenes per split (names ``train_0000``, ``val_0000``, ...).
        size: image side in pixels (square; 128 suits a quick CPU run).
        seed: base seed; scene ``i`` of split ``s`` uses ``default_rng([seed, split_id(s), i])``.

    Returns:
        ``root``.
    """
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ValueError(f"need num_train, num_val >= 0 and at least one scene, got {num_train}, {num_val}")
    if size < 16:
        raise ValueError(f"toy size must be >= 16 pixels, got {size}")
    stamp = f"mindcv_lseg toy set v1: num_train={num_train} num_val={num_val} size={size} seed={seed}\n"
    stamp_path = os.path.join(root, "TOY_SET.txt")
    if os.path.isfile(stamp_path) and open(stamp_path, encoding="utf-8").read() == stamp and not overwrite:
        return root
    if os.path.isdir(root) and os.listdir(root) and not overwrite and not os.path.isfile(stamp_path):
        raise FileExistsError(
            f"toy set output folder {root} is not empty and holds no toy set; choose an empty "
            "or new folder (data_dir / --data_dir), or empty this one"
        )
    for sub in ("images", "masks", "splits"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for split, n in (("train", num_train), ("val", num_val)):
        names = []
        for i in range(n):
            name = f"{split}_{i:04d}"
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
            img, mask = make_toy_scene(rng, (size, size))
            for folder, im in (("images", Image.fromarray(img, "RGB")), ("masks", Image.fromarray(mask, "L"))):
                atomic_save(lambda p, im=im: im.save(p, format="PNG"), os.path.join(root, folder, name + ".png"))
            names.append(name)
        atomic_write_text(os.path.join(root, "splits", f"{split}.txt"), "".join(x + "\n" for x in names))
    atomic_write_text(os.path.join(root, "classes.txt"), "".join(x + "\n" for x in TOY_CLASSES))
    atomic_write_text(stamp_path, stamp)
    return root


def main(argv=None):
    p = argparse.ArgumentParser(description="Write the deterministic mindcv_lseg toy segmentation set.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-train", type=int, default=96)
    p.add_argument("--num-val", type=int, default=24)
    p.add_argument("--size", type=int, default=128, help="image side (pixels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    a = p.parse_args(argv)
    try:
        make_toy_dataset(a.out, a.num_train, a.num_val, a.size, a.seed, overwrite=a.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"toy set written to {a.out}: {a.num_train} train + {a.num_val} val images of {a.size}x{a.size}, "
        f"classes: {', '.join(TOY_CLASSES)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
