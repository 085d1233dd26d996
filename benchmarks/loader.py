"""Loader throughput: images/s of the training pipeline (reference augmentation, crop 480) for 1 vs 2 workers.

Generates an ADE20K-layout tree of random 512x683 JPEG images + PNG masks in a temp folder, then times full
epochs of ``create_seg_loader`` (decode + flip + rescale [260, 1040] + pad + crop 480 + normalise + batch).

    python benchmarks/loader.py [--num-images 192] [--batch-size 4] [--workers 1 2] [--epochs 2]

Each epoch creates a fresh MindSpore iterator, so worker processes are started per epoch; the start-up (time to
the first batch) is reported separately from the epoch throughput.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mindcv_lseg.data import create_seg_dataset, create_seg_loader  # noqa: E402


def make_tree(root, n, h=512, w=683, seed=0):
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "ADEChallengeData2016")
    for split in ("training",):
        os.makedirs(os.path.join(base, "images", split), exist_ok=True)
        os.makedirs(os.path.join(base, "annotations", split), exist_ok=True)
        for i in range(n):
            # smooth-ish content so JPEG sizes resemble photos
            small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
            img.save(os.path.join(base, "images", split, f"ADE_{split}_{i:08d}.jpg"), quality=90)
            m = rng.integers(0, 151, (h // 32, w // 32), dtype=np.uint8)
            Image.fromarray(m, "L").resize((w, h), Image.NEAREST).save(
                os.path.join(base, "annotations", split, f"ADE_{split}_{i:08d}.png")
            )
    return root


def time_loader(ds, batch_size, workers, epochs):
    loader = create_seg_loader(ds, batch_size, shuffle=True, num_workers=workers, drop_remainder=True)
    rates, firsts = [], []
    for e in range(epochs + 1):
        t0 = time.perf_counter()
        n = 0
        for img, mask in loader:
            if n == 0:
                first = time.perf_counter() - t0
            n += img.shape[0]
        dt = time.perf_counter() - t0
        if e > 0:  # epoch 0 is warm-up (page cache)
            rates.append(n / dt)
            firsts.append(first)
    assert tuple(img.shape[1:]) == (3, 480, 480) and tuple(mask.shape[1:]) == (480, 480)
    return rates, firsts


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=192)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    a = p.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python "
        f"{platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_tree(tmp, a.num_images)
        print(f"generated {a.num_images} images 512x683 in {time.perf_counter() - t0:.1f}s")
        ds = create_seg_dataset("ade20k", tmp, "train", base_size=520, crop_size=480)
        # single-sample cost, in-process
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for i in range(min(16, len(ds))):
            ds.get_item(i, rng)
        per = (time.perf_counter() - t0) / min(16, len(ds))
        print(f"one sample in-process (read + augment): {per * 1000:.1f} ms -> {1 / per:.1f} images/s")
        for w in a.workers:
            rates, firsts = time_loader(ds, a.batch_size, w, a.epochs)
            print(
                f"workers={w}: {statistics.median(rates):.1f} images/s (median of {len(rates)} epochs of "
                f"{len(ds)} images: {', '.join(f'{r:.1f}' for r in rates)}), batch {a.batch_size}, crop 480; "
                f"first batch after {statistics.median(firsts):.2f} s"
            )
        if hasattr(os, "getloadavg"):
            print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
