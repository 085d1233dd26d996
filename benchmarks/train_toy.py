"""Toy training curve: ``configs/lseg_toy.yaml`` (lseg_tiny_test on the generated toy set) from scratch.

Records val mIoU and training loss per epoch against wall-clock time (including graph compilation) and reports
the time at which val mIoU first reaches the target (default 0.9). Writes ``OUT/curve.json`` and the trainer's own
``metrics.csv`` / ``curves.png``.

    python benchmarks/train_toy.py [--out output/bench_toy] [--target 0.9] [extra train.py flags ...]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "output", "bench_toy"))
    ap.add_argument("--data_dir", default=os.path.join(ROOT, "data", "toy"))
    ap.add_argument("--target", type=float, default=0.9)
    args, extra = ap.parse_known_args()
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "train.py"),
        "-c",
        os.path.join(ROOT, "configs", "lseg_toy.yaml"),
        "--data_dir",
        args.data_dir,
        "--ckpt_save_dir",
        args.out,
        "--progress_bar",
        "false",
        *extra,
    ]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ROOT)
    wall = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"training failed with exit code {r.returncode}")
    with open(os.path.join(args.out, "metrics.json")) as f:
        rows = json.load(f)
    hit = next((row for row in rows if (row.get("val_miou") or 0) >= args.target), None)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "command": " ".join(cmd),
        "wall_time_s": wall,
        "target_miou": args.target,
        "reached_at_epoch": hit["epoch"] if hit else None,
        "reached_after_s": hit["elapsed"] if hit else None,
        "best_val_miou": max((row.get("val_miou") or 0) for row in rows),
        "curve": [{k: row.get(k) for k in ("epoch", "elapsed", "train_loss", "val_miou", "lr")} for row in rows],
    }
    with open(os.path.join(args.out, "curve.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"{'epoch':>5} {'time_s':>7} {'loss':>7} {'val_mIoU':>8}")
    for row in result["curve"]:
        v = row["val_miou"]
        print(f"{row['epoch']:>5} {row['elapsed']:>7.1f} {row['train_loss']:>7.4f} {'' if v is None else f'{v:8.4f}'}")
    if hit:
        print(f"val mIoU >= {args.target} at epoch {hit['epoch']} after {hit['elapsed']:.0f} s (wall {wall:.0f} s)")
    else:
        print(f"val mIoU did not reach {args.target} (best {result['best_val_miou']:.4f}; wall {wall:.0f} s)")


if __name__ == "__main__":
    main()
