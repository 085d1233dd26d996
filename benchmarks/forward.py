"""Forward latency and peak memory of the LSeg networks (issue: 1x3x384x384, 5 labels, batch 1, fp32, CPU).

Each (model, mode) runs in its own process so that peak RSS is its own; like the PyTorch reference figure it
includes loading a checkpoint of the model (written once beforehand, random weights). In the same process, after
the RSS reading, mindcv's plain classification ViT of the same size is timed as a baseline, so figures from a noisy
machine can be compared.

    python benchmarks/forward.py                       # both models, GRAPH and PYNATIVE
    python benchmarks/forward.py --models lseg_vitb32 --modes graph --runs 3
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

BASELINES = {"lseg_vitl16_384": "vit_l_16_384", "lseg_vitb32": "vit_b_32_384", "lseg_tiny_test": None}
LABELS = ["other", "sky", "tree", "car", "person"]


def _median_time(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_gb():
    """Resident set size of this process now, in GB (VmRSS of /proc/self/status; 0 where there is none)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1e6
    except (OSError, StopIteration):
        return 0.0


def write_checkpoint(model, path):
    """Runs in a child process: save a randomly initialised ``model`` to ``path``."""
    import mindcv

    import mindcv_lseg  # noqa: F401
    from mindcv_lseg.checkpoint import save_checkpoint_atomic

    save_checkpoint_atomic(mindcv.create_model(model, weight_init=False), path)


def measure(model, mode, size, warmup, runs, ckpt=""):
    """Runs in the child process; returns a dict of figures."""
    import numpy as np

    import mindcv
    import mindspore as ms

    import mindcv_lseg  # noqa: F401

    rss = {"import": _rss_gb()}  # RSS after each phase, GB (the peak is the last column)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    x = ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32))
    start = time.perf_counter()
    net = mindcv.create_model(model, weight_init=False, checkpoint_path=ckpt)
    net.set_train(False)
    build = time.perf_counter() - start
    rss["build+load"] = _rss_gb()

    start = time.perf_counter()
    text = net.encode_text(LABELS)
    text.asnumpy()
    text_first = time.perf_counter() - start
    text_median = _median_time(lambda: net.encode_text(LABELS).asnumpy(), 1, runs)
    rss["text"] = _rss_gb()

    start = time.perf_counter()
    net(x, text).asnumpy()
    first = time.perf_counter() - start
    rss["first forward"] = _rss_gb()
    forward = _median_time(lambda: net(x, text).asnumpy(), max(warmup - 1, 0), runs)
    result = dict(
        model=model,
        mode=mode,
        size=size,
        build_s=build,
        text_first_s=text_first,
        text_s=text_median,
        first_forward_s=first,
        forward_s=forward,
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        rss_gb=rss,
    )  # before the baseline
    baseline = BASELINES.get(model)
    if baseline and size == 384:  # mindcv's ViT only takes its own input size
        vit = mindcv.create_model(baseline, weight_init=False)
        vit.set_train(False)
        result["baseline"] = baseline
        result["baseline_forward_s"] = _median_time(lambda: vit(x).asnumpy(), warmup, runs)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["lseg_vitb32", "lseg_vitl16_384"])
    ap.add_argument("--modes", nargs="+", default=["graph", "pynative"], choices=["graph", "pynative"])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", default="", help=argparse.SUPPRESS)
    ap.add_argument("--save", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default="", help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    if args.save:
        write_checkpoint(args.models[0], args.ckpt)
        return 0
    if args.child:
        print(
            "RESULT " + json.dumps(measure(args.models[0], args.modes[0], args.size, args.warmup, args.runs, args.ckpt))
        )
        return 0

    results = []
    tmp = tempfile.mkdtemp(prefix="lseg_bench_")
    for model in args.models:
        ckpt = os.path.join(tmp, model + ".ckpt")
        subprocess.run(
            [sys.executable, __file__, "--save", "--models", model, "--ckpt", ckpt], check=True, capture_output=True
        )
        for mode in args.modes:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--models",
                model,
                "--modes",
                mode,
                "--size",
                str(args.size),
                "--warmup",
                str(args.warmup),
                "--runs",
                str(args.runs),
                "--ckpt",
                ckpt,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{model} {mode}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            res = json.loads(lines[-1][len("RESULT ") :])
            results.append(res)
            print(json.dumps(res), flush=True)
        os.remove(ckpt)
    os.rmdir(tmp)

    load = os.getloadavg()[0]
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, load average {load:.1f}"
    )
    print(
        "| model | mode | forward (median) | text, 5 labels | peak RSS (incl. loading) | mindcv ViT alone "
        "(baseline) | first call |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        base = f"{r['baseline_forward_s']:.2f} s ({r['baseline']})" if "baseline" in r else "-"
        print(
            f"| {r['model']} | {r['mode']} | {r['forward_s']:.2f} s | {r['text_s']:.3f} s | {r['peak_rss_gb']:.2f} GB "
            f"| {base} | {r['first_forward_s']:.1f} s |"
        )
    print("\nRSS after each phase (GB; build+load = create_model with checkpoint_path):")
    for r in results:
        print(f"{r['model']} {r['mode']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["rss_gb"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
