"""Small generated trees in the FSS-1000 / PASCAL-5i / COCO-20i layouts, for tests and a toy run of the zero-shot
evaluation. They are random shapes on noise, NOT the benchmarks: numbers measured on them mean nothing.

    python -m mindcv_lseg.data.fewshot_fake fss /tmp/fake_fss        # then tools/validate.py ... --data_dir /tmp/fake_fss

Each tree carries its own ``splits/`` override (the shipped lists name thousands of files the fake tree lacks),
unless ``write_splits=False``.
"""

import argparse
import os
import pickle
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

__all__ = ["make_fake_fss", "make_fake_pascal", "make_fake_coco", "FAKE_FSS_CLASSES"]

FAKE_FSS_CLASSES = ("abe's_flyingfish", "accordion", "american_alligator")


def _scene(rng: np.random.Generator, size: int, value: int, background: int = 0):
    """Noise image uint8 [size, size, 3] and label uint8 [size, size] with one rectangle of ``value``."""
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    label = np.full((size, size), background, np.uint8)
    h, w = rng.integers(size // 4, size // 2, 2)
    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
    label[y : y + h, x : x + w] = value
    image[label == value] = image[label == value] // 4 + np.array([180, 40, 40], np.uint8)
    return image, label


def make_fake_fss(
    root: str,
    classes: Sequence[str] = FAKE_FSS_CLASSES,
    images_per_class: int = 10,
    size: int = 64,
    seed: int = 0,
    write_splits: bool = True,
) -> str:
    """``root/FSS-1000/<class>/<k>.jpg`` + ``<k>.png`` (grey 0 / 255), k = 1..images_per_class."""
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = os.path.join(root, "FSS-1000", name)
        os.makedirs(folder, exist_ok=True)
        for k in range(1, images_per_class + 1):
            image, label = _scene(rng, size, 255)
            Image.fromarray(image).save(os.path.join(folder, f"{k}.jpg"), quality=95)
            Image.fromarray(label).save(os.path.join(folder, f"{k}.png"))
    if write_splits:
        os.makedirs(os.path.join(root, "splits", "fss"), exist_ok=True)
        with open(os.path.join(root, "splits", "fss", "test.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(classes) + "\n")
    return root


def make_fake_pascal(
    root: str, fold: int = 0, images_per_class: int = 2, size: int = 64, seed: int = 0, write_splits: bool = True
) -> List[str]:
    """``root/VOC2012/{JPEGImages,SegmentationClassAug}`` with ``images_per_class`` images per test class of
    ``fold``; labels hold the class (1-based), 0 background and a 255 border around the object. Returns the split
    lines ``<name>__<cls>`` (also written to ``splits/pascal/val/fold{fold}.txt``)."""
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, "VOC2012")
    os.makedirs(os.path.join(voc, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(voc, "SegmentationClassAug"), exist_ok=True)
    lines = []
    for cls in range(5 * fold + 1, 5 * fold + 6):
        for k in range(images_per_class):
            name = f"2099_{cls:02d}{k:04d}"
            image, label = _scene(rng, size, cls)
            border = np.zeros_like(label, bool)
            obj = label == cls
            border[1:, :] |= obj[1:, :] != obj[:-1, :]
            border[:, 1:] |= obj[:, 1:] != obj[:, :-1]
            label[border] = 255
            Image.fromarray(image).save(os.path.join(voc, "JPEGImages", name + ".jpg"), quality=95)
            Image.fromarray(label).save(os.path.join(voc, "SegmentationClassAug", name + ".png"))
            lines.append(f"{name}__{cls:02d}")
    if write_splits:
        os.makedirs(os.path.join(root, "splits", "pascal", "val"), exist_ok=True)
        with open(os.path.join(root, "splits", "pascal", "val", f"fold{fold}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return lines


def make_fake_coco(
    root: str, fold: int = 0, images_per_class: int = 2, size: int = 64, seed: int = 0, write_splits: bool = True
) -> Dict[int, List[str]]:
    """``root/COCO2014/val2014/*.jpg`` + ``annotations/val2014/*.png`` for the 20 test classes of ``fold``; returns
    (and writes as ``splits/coco/val/fold{fold}.pkl``) the dict class id -> image paths (all 80 keys)."""
    rng = np.random.default_rng(seed)
    coco = os.path.join(root, "COCO2014")
    os.makedirs(os.path.join(coco, "val2014"), exist_ok=True)
    os.makedirs(os.path.join(coco, "annotations", "val2014"), exist_ok=True)
    per_class: Dict[int, List[str]] = {c: [] for c in range(80)}
    for cid in range(fold, 80, 4):
        for k in range(images_per_class):
            rel = f"val2014/COCO_val2014_{cid:04d}{k:08d}.jpg"
            image, label = _scene(rng, size, cid + 1)
            Image.fromarray(image).save(os.path.join(coco, rel), quality=95)
            Image.fromarray(label).save(os.path.join(coco, "annotations", rel[:-4] + ".png"))
            per_class[cid].append(rel)
    if write_splits:
        os.makedirs(os.path.join(root, "splits", "coco", "val"), exist_ok=True)
        with open(os.path.join(root, "splits", "coco", "val", f"fold{fold}.pkl"), "wb") as f:
            pickle.dump(per_class, f)
    return per_class


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("benchmark", choices=["fss", "pascal", "coco"])
    ap.add_argument("root")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args(argv)
    if args.benchmark == "fss":
        make_fake_fss(args.root, size=args.size)
    elif args.benchmark == "pascal":
        make_fake_pascal(args.root, args.fold, size=args.size)
    else:
        make_fake_coco(args.root, args.fold, size=args.size)
    print(f"wrote a fake {args.benchmark} tree (random shapes, not the benchmark) to {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
