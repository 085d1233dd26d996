"""End-to-end quickstart on the generated toy set — no downloads, CPU only.

    pip install -e . && python tools/quickstart.py

1. generates the toy dataset (``mindcv_lseg.data.make_toy_dataset``) into ``data/toy``;
2. trains ``configs/lseg_toy.yaml`` (the tiny LSeg) with ``tools/train.py``;
3. validates the best checkpoint with ``tools/validate.py`` (prints the per-class IoU/Acc table);
4. writes ``image | ground truth | prediction`` panels with a legend for a few validation images.

Outputs go to ``mindcv_lseg.quickstart.QUICKSTART_OUT_DIR`` (``output/quickstart``),
where ``tools/demo.py`` and ``tools/validate.py`` (without arguments) find them. It is the quickstart's own folder:
``tools/train.py -c configs/lseg_toy.yaml`` writes to ``output/lseg_toy`` and never touches it. Running the quickstart again starts over in that folder (it deletes the
previous quickstart's results: ``train.py --overwrite``). Options: ``--epochs N`` (shorter/longer run),
``--num_images K`` (panels), ``--config``, ``--data_dir``, ``--out_dir``.
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from mindcv_lseg.engine.run_dir import find_run_files  # noqa: E402

MARKER = ".lseg_quickstart"  # marks a folder whose results the quickstart wrote (and may replace)


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _run(cmd) -> None:
    print("$ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=os.getcwd())
    if r.returncode != 0:
        raise SystemExit(f"quickstart: step failed with exit code {r.returncode}: {' '.join(cmd)}")


def pick_checkpoint(out_dir: str, model: str) -> str:
    """``best.ckpt`` if present, else the newest periodic ``{model}-NNNN.ckpt`` (see ``mindcv_lseg.quickstart``)."""
    from mindcv_lseg.quickstart import find_checkpoint

    ckpt = find_checkpoint(out_dir, model)
    if ckpt is None:
        raise SystemExit(f"quickstart: training wrote no checkpoint into {out_dir}")
    return ckpt


def write_panels(model: str, ckpt: str, data_dir: str, out_dir: str, num_images: int, ignore_index: int):
    """Segment the first ``num_images`` validation images and save comparison panels; returns the paths."""
    import numpy as np
    from PIL import Image

    from mindcv_lseg.data import create_seg_dataset
    from mindcv_lseg.eval import InferenceConfig, TextEmbeddingCache, segment
    from mindcv_lseg.eval.model_io import create_eval_model, setup_context
    from mindcv_lseg.fileio import atomic_save
    from mindcv_lseg.viz import compare_panel

    setup_context(0, "CPU")
    ds = create_seg_dataset("toy", data_dir, "val", transform=None, ignore_index=ignore_index)
    labels = list(ds.label_set.labels)
    net = create_eval_model(model, ckpt)
    cache = TextEmbeddingCache(net)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in range(min(num_images, len(ds))):
        image, gt = ds.load(i)
        res = segment(net, image, labels, config=InferenceConfig(mode="whole"), text_cache=cache)
        panel = compare_panel(Image.fromarray(image), gt, res.label_map, labels, ignore_index=ignore_index)
        path = os.path.join(out_dir, f"{ds.sample_name(i)}_panel.png")
        atomic_save(lambda p: panel.save(p, format="PNG"), path)
        acc = float(np.mean(res.label_map[gt != ignore_index] == gt[gt != ignore_index]))
        print(f"  {path}  (pixel accuracy {100 * acc:.1f} %)")
        paths.append(path)
    return paths


def main(argv=None) -> int:
    from mindcv_lseg.quickstart import QUICKSTART_DATA_DIR, QUICKSTART_OUT_DIR

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "lseg_toy.yaml"))
    p.add_argument("--data_dir", default=None, help=f"toy data folder (default: {QUICKSTART_DATA_DIR})")
    p.add_argument(
        "--out_dir",
        default=None,
        help=f"run folder (default: {QUICKSTART_OUT_DIR}; re-running the " "quickstart replaces its results there)",
    )
    p.add_argument("--epochs", type=int, default=None, help="override the config's epoch_size")
    p.add_argument("--num_images", type=int, default=4, help="validation images to draw")
    args = p.parse_args(argv)

    from mindcv_lseg.engine.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data_dir = args.data_dir or QUICKSTART_DATA_DIR
    out_dir = args.out_dir or QUICKSTART_OUT_DIR
    model = cfg.get("model", "lseg_tiny_test")
    ignore_index = cfg.get("ignore_index", 255)
    t0 = time.time()

    _banner(f"1/4 toy dataset -> {data_dir}")
    from mindcv_lseg.data import make_toy_dataset

    make_toy_dataset(data_dir)
    print(
        f"  {len(os.listdir(os.path.join(data_dir, 'images')))} images, classes: "
        + ", ".join(open(os.path.join(data_dir, "classes.txt"), encoding="utf-8").read().split("\n")[:-1])
    )

    _banner(f"2/4 training {os.path.relpath(args.config)} -> {out_dir}")
    train = [
        sys.executable,
        os.path.join(ROOT, "tools", "train.py"),
        "-c",
        args.config,
        "--data_dir",
        data_dir,
        "--ckpt_save_dir",
        out_dir,
    ]
    marker = os.path.join(out_dir, MARKER)
    if os.path.isfile(marker):
        train.append("--overwrite")  # our own earlier results; a folder of another run is refused by train.py
    elif not find_run_files(out_dir):
        os.makedirs(out_dir, exist_ok=True)
        with open(marker, "w", encoding="utf-8") as f:
            f.write("written by tools/quickstart.py; re-running it replaces the results in this folder\n")
    if args.epochs:
        train += ["--epoch_size", str(args.epochs)]
    _run(train)
    ckpt = pick_checkpoint(out_dir, model)

    _banner(f"3/4 validation of {ckpt}")
    _run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "validate.py"),
            "-c",
            args.config,
            "--data_dir",
            data_dir,
            "--ckpt_save_dir",
            out_dir,
            "--ckpt_path",
            ckpt,
            "--eval_mode",
            "whole",
        ]
    )

    _banner("4/4 predictions on validation images")
    panels = write_panels(model, ckpt, data_dir, os.path.join(out_dir, "overlays"), args.num_images, ignore_index)
    print(
        f"\nquickstart done in {(time.time() - t0) / 60:.1f} min: checkpoint {ckpt}, metrics in "
        f"{os.path.join(out_dir, 'validate_whole')}, {len(panels)} panels in {os.path.join(out_dir, 'overlays')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
