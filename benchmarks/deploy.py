"""Exported graphs vs the eager network: one LSeg forward at 1x3x384x384 with 5 labels, text encoding included.

For each model, in this one run and each step in its own process (peak RSS is its own):

1. a checkpoint with random weights is written;
2. it is exported with ``tools/export.py``'s code (image 384x384, 5 labels) to ONNX (``impl="native"``) and to MINDIR
   (``impl="lean"``, the MindSpore-on-CPU choice; with ``--mindir_native`` also ``impl="native"``);
3. timed, median of ``--runs`` after warm-up, one call = ``encode_text(5 labels)`` + image graph + logits
   (cosine x logit scale, x2 bilinear upsampling):
   * ``eager lean``: ``mindcv.create_model(model, impl="lean")`` in GRAPH mode (the CPU default), the baseline;
   * ``MINDIR``: ``mindspore.load`` + ``nn.GraphCell`` (:mod:`mindcv_lseg.deploy`);
   * ``ONNX``: ONNX Runtime (CPU execution provider, default threads);
   * ``ONNX_plain`` (``--onnx_plain``): the same without :mod:`mindcv_lseg.deploy.onnx_optimize`'s rewrites (static
     ``[5, 77]`` text graph, image graph as MindSpore wrote it), to see what they save;
   * ``MINDIR native`` (``--mindir_native``, first call only): MindSpore's CPU kxk convolution kernels make this
     minutes per call.

Ratios are against eager lean measured in the same run, so they stay meaningful on a busy machine; absolute times
on this shared 2-core machine are not (see README). With ``--torch_baseline`` (on by default) the PyTorch original
(``benchmarks/torch_lseg.py``, random weights, all cores) is timed in its own process at the same settings, and the
table adds its time and each runtime's ratio to it.

    python benchmarks/deploy.py                                   # lseg_vitb32 and lseg_vitl16_384
    python benchmarks/deploy.py --models lseg_vitb32 --runs 3
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from bench_settings import LABELS, median_time  # noqa: E402  (beside this script)

SIZE = 384


def _peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def step_checkpoint(model, ckpt):
    import mindcv

    import mindcv_lseg  # noqa: F401
    from mindcv_lseg.checkpoint import save_checkpoint_atomic

    save_checkpoint_atomic(mindcv.create_model(model, weight_init=False, impl="lean"), ckpt)
    return {}


def step_export(model, ckpt, fmt, out_dir, impl, optimize=1):
    import mindspore as ms

    from mindcv_lseg.deploy import check_export_args, export_lseg

    ms.set_context(mode=ms.GRAPH_MODE)
    start = time.perf_counter()
    spec = check_export_args(model, ckpt, "both", fmt, (SIZE, SIZE), len(LABELS), out_dir, impl)
    export_lseg(spec, log=lambda *a: None, onnx_optimize=bool(optimize))
    size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    return {"export_s": time.perf_counter() - start, "export_peak_rss_gb": _peak_rss_gb(), "files_gb": size / 1e9}


def step_time(kind, model, ckpt, out_dir, warmup, runs):
    import numpy as np

    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    start = time.perf_counter()
    if kind == "eager_lean":
        import mindcv

        import mindcv_lseg  # noqa: F401

        net = mindcv.create_model(model, weight_init=False, checkpoint_path=ckpt, impl="lean")
        net.set_train(False)
        xt = ms.Tensor(x)

        def call():
            return net(xt, net.encode_text(LABELS)).asnumpy()

    else:
        from mindcv_lseg.deploy import load_deployed

        net = load_deployed(out_dir)

        def call():
            return net(x, net.encode_text(LABELS))

    load = time.perf_counter() - start
    start = time.perf_counter()
    out = call()
    first = time.perf_counter() - start
    assert out.shape == (1, len(LABELS), SIZE, SIZE)
    median = median_time(call, max(warmup - 1, 0), runs) if runs else first
    return {"load_s": load, "first_s": first, "median_s": median, "peak_rss_gb": _peak_rss_gb()}


def step_torch(model, warmup, runs):
    import torch_lseg

    res = torch_lseg.measure(model, (SIZE, SIZE), LABELS, warmup, runs)
    return dict(res, median_s=res["forward_s"])


def _child(args):
    step = args[0]
    fn = {"checkpoint": step_checkpoint, "export": step_export, "time": step_time, "torch": step_torch}[step]
    conv = [int(a) if a.isdigit() else a for a in args[1:]]
    print("RESULT " + json.dumps(fn(*conv)), flush=True)


def _run(*args):
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", *map(str, args)], capture_output=True, text=True
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"step {args[0]} {args[1:]} failed (exit {proc.returncode}):\n{tail}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["lseg_vitb32", "lseg_vitl16_384"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mindir_native", action="store_true", help="also export MINDIR with impl=native (one call)")
    p.add_argument(
        "--onnx_plain", action="store_true", help="also time the ONNX export without deploy/onnx_optimize.py's rewrites"
    )
    p.add_argument("--workdir", default="", help="keep checkpoints/exports here (default: a temp folder, removed)")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.add_argument(
        "--torch_baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the PyTorch original (benchmarks/torch_lseg.py) in this run (default: on)",
    )
    a = p.parse_args()
    import shutil

    work = a.workdir or tempfile.mkdtemp(prefix="lseg_bench_deploy_")
    os.makedirs(work, exist_ok=True)
    rows = []
    try:
        for model in a.models:
            ckpt = os.path.join(work, f"{model}.ckpt")
            if not os.path.isfile(ckpt):
                _run("checkpoint", model, ckpt)
            row = {"model": model}
            exports = {"MINDIR": ("MINDIR", "lean"), "ONNX": ("ONNX", "native")}
            if a.mindir_native:
                exports["MINDIR_native"] = ("MINDIR", "native")
            if a.onnx_plain:
                exports["ONNX_plain"] = ("ONNX", "native", 0)
            dirs = {kind: os.path.join(work, f"{model}_{kind.lower()}") for kind in exports}
            for kind, (fmt, impl, *optimize) in exports.items():
                row[f"export_{kind}"] = _run("export", model, ckpt, fmt, dirs[kind], impl, *optimize)
                print(
                    f"{model}: exported {kind} in {row[f'export_{kind}']['export_s']:.0f} s, peak RSS "
                    f"{row[f'export_{kind}']['export_peak_rss_gb']:.2f} GB",
                    flush=True,
                )
            for kind in ["eager_lean"] + list(exports):
                runs = 0 if kind == "MINDIR_native" else a.runs
                row[kind] = _run("time", kind, model, ckpt, dirs.get(kind, "-"), a.warmup, runs)
                print(
                    f"{model}: {kind:10s} median {row[kind]['median_s']:.3f} s  first {row[kind]['first_s']:.2f} s"
                    f"  peak RSS {row[kind]['peak_rss_gb']:.2f} GB",
                    flush=True,
                )
            if a.torch_baseline:
                try:
                    row["torch"] = _run("torch", model, a.warmup, a.runs)
                    print(f"{model}: PyTorch    median {row['torch']['median_s']:.3f} s", flush=True)
                except RuntimeError as e:
                    print(f"{model}: no PyTorch baseline: {e}", flush=True)
            rows.append(row)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(
        "\n| model | eager lean (GRAPH) | MINDIR lean (GraphCell) | ONNX Runtime (native) | "
        "peak RSS lean / MINDIR / ONNX |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        base = r["eager_lean"]["median_s"]
        cells = [f"{r[k]['median_s']:.2f} s ({r[k]['median_s'] / base:.2f}x)" for k in ("eager_lean", "MINDIR", "ONNX")]
        rss = " / ".join(f"{r[k]['peak_rss_gb']:.2f}" for k in ("eager_lean", "MINDIR", "ONNX"))
        print(f"| {r['model']} | {' | '.join(cells)} | {rss} GB |")
        if "ONNX_plain" in r:
            plain = r["ONNX_plain"]["median_s"]
            print(f"  ONNX without onnx_optimize's rewrites: {plain:.2f} s ({plain / base:.2f}x)")
        if "MINDIR_native" in r:
            print(f"  MINDIR native (GraphCell), one call: {r['MINDIR_native']['first_s']:.1f} s")
    if any("torch" in r for r in rows):
        print("\n| model | PyTorch original (same run) | its peak RSS | eager lean / MINDIR / ONNX vs PyTorch |")
        print("|---|---|---|---|")
        for r in (r for r in rows if "torch" in r):
            ref = r["torch"]["median_s"]
            ratios = " / ".join(f"{r[k]['median_s'] / ref:.2f}x" for k in ("eager_lean", "MINDIR", "ONNX"))
            print(f"| {r['model']} | {ref:.2f} s | {r['torch']['peak_rss_gb']:.2f} GB | {ratios} |")
    if a.json:
        from mindcv_lseg.fileio import atomic_write_text

        atomic_write_text(a.json, json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
