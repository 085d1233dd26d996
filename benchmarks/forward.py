"""Forward latency and peak memory of the LSeg networks against the PyTorch original, in the same run.

Defaults: 1x3x384x384, 5 labels, batch 1, float32, CPU. Each (model, mode) runs in its own process so that its
peak RSS is its own; like the PyTorch figure it includes loading a checkpoint of the model (written once
beforehand, random weights). Per model, the PyTorch baseline (``benchmarks/torch_lseg.py``: the original's
forward in plain torch, checked against the parity fixture by ``tests/test_torch_baseline.py``) runs in a process
of its own at the same settings: random weights loaded from an in-memory copy in the official checkpoint layout,
``torch.set_num_threads`` = all cores, ``torch.inference_mode()``, tokenisation and text encoding in every call as
the original's forward does them. Ratios ours / PyTorch compare ``call`` (``net(x, net.encode_text(labels))``, text
included) with that, and peak RSS with peak RSS; only these same-run ratios mean anything on a shared machine.

    python benchmarks/forward.py                       # both models, GRAPH and PYNATIVE, 384x384, 5 labels
    python benchmarks/forward.py --models lseg_vitb32 --modes graph --size 480 640 --labels 150 --runs 3
    python benchmarks/forward.py --no-torch_baseline --mindcv_vit   # mindcv's classification ViT instead (384 only)
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

from bench_settings import LABELS, MAX_LABELS, TORCH_MODELS, input_size, labels_for, median_time

KERNEL_SETTINGS = {"on": ["on"], "off": ["off"], "both": ["on", "off"]}
BASELINES = {"lseg_vitl16_384": "vit_l_16_384", "lseg_vitb32": "vit_b_32_384", "lseg_tiny_test": None}
TORCH_BASELINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_lseg.py")


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


def measure(model, mode, size, num_labels, warmup, runs, ckpt="", mindcv_vit=False):
    """Runs in the child process; returns a dict of figures."""
    import numpy as np

    import mindcv
    import mindspore as ms

    import mindcv_lseg  # noqa: F401
    from mindcv_lseg.kernels.gemm import gemm_backend

    rss = {"import": _rss_gb()}  # RSS after each phase, GB (the peak is the last column)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    labels = labels_for(num_labels)
    h, w = size
    x = ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (1, 3, h, w)).astype(np.float32))
    start = time.perf_counter()
    net = mindcv.create_model(model, weight_init=False, checkpoint_path=ckpt)
    net.set_train(False)
    build = time.perf_counter() - start
    rss["build+load"] = _rss_gb()

    start = time.perf_counter()
    text = net.encode_text(labels)
    text.asnumpy()
    text_first = time.perf_counter() - start
    text_median = median_time(lambda: net.encode_text(labels).asnumpy(), 1, runs)
    rss["text"] = _rss_gb()

    start = time.perf_counter()
    net(x, text).asnumpy()
    first = time.perf_counter() - start
    rss["first forward"] = _rss_gb()
    forward = median_time(lambda: net(x, text).asnumpy(), max(warmup - 1, 0), runs)
    # one call as the original's forward: text encoding included
    call = median_time(lambda: net(x, net.encode_text(labels)).asnumpy(), 1, runs)
    result = dict(
        model=model,
        impl="mindspore",
        mode=mode,
        size=[h, w],
        labels=len(labels),
        build_s=build,
        text_first_s=text_first,
        text_s=text_median,
        first_forward_s=first,
        forward_s=forward,
        call_s=call,
        kernels_used=gemm_backend().ok,
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        rss_gb=rss,
    )  # before the mindcv baseline
    baseline = BASELINES.get(model)
    if mindcv_vit and baseline and size == (384, 384):  # mindcv's ViT only takes its own input size
        vit = mindcv.create_model(baseline, weight_init=False)
        vit.set_train(False)
        result["baseline"] = baseline
        result["baseline_forward_s"] = median_time(lambda: vit(x).asnumpy(), warmup, runs)
    return result


def _run_child(cmd, what, env=None):
    """Run ``cmd``; its last ``RESULT {json}`` line as a dict, or None (with the error on stderr)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        print(f"{what}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT ") :])


def _cell(value, fmt, unit):
    return "-" if value is None else format(value, fmt) + unit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["lseg_vitb32", "lseg_vitl16_384"])
    ap.add_argument("--modes", nargs="+", default=["graph", "pynative"], choices=["graph", "pynative"])
    ap.add_argument("--size", type=int, nargs="+", default=[384], metavar="SIZE", help="input H or H W (default 384)")
    ap.add_argument(
        "--labels", type=int, default=5, help=f"number of labels: 5 = {', '.join(LABELS)}; more = the first N ADE20K"
    )
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--torch_baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the PyTorch original (benchmarks/torch_lseg.py) per model in the same run (default: on)",
    )
    ap.add_argument(
        "--mindcv_vit", action="store_true", help="also time mindcv's classification ViT of the same size (384 only)"
    )
    ap.add_argument(
        "--kernels",
        choices=["on", "off", "both"],
        default="on",
        help="the lean layers' compiled kernels (mindcv_lseg/kernels: OpenBLAS GEMMs, GELU): on (default), off "
        "(MindSpore's own ops, MINDCV_LSEG_KERNELS=0) or both, one after the other in this run",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", default="", help=argparse.SUPPRESS)
    ap.add_argument("--save", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default="", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    try:
        size = input_size(args.size)
    except ValueError as e:
        ap.error(str(e))
    if not 1 <= args.labels <= MAX_LABELS:
        ap.error(f"--labels must be between 1 and {MAX_LABELS}, got {args.labels}")

    if args.save:
        write_checkpoint(args.models[0], args.ckpt)
        return 0
    if args.child:
        res = measure(
            args.models[0], args.modes[0], size, args.labels, args.warmup, args.runs, args.ckpt, args.mindcv_vit
        )
        print("RESULT " + json.dumps(res))
        return 0

    common = ["--size", str(size[0]), str(size[1]), "--labels", str(args.labels)]
    common += ["--warmup", str(args.warmup), "--runs", str(args.runs)]
    results, torch_results = [], {}
    tmp = tempfile.mkdtemp(prefix="lseg_bench_")
    for model in args.models:
        if args.torch_baseline and model not in TORCH_MODELS:
            print(f"{model}: no PyTorch baseline (it covers {', '.join(TORCH_MODELS)})", flush=True)
        elif args.torch_baseline:
            res = _run_child([sys.executable, TORCH_BASELINE, "--model", model, *common], f"{model} torch")
            if res:
                torch_results[model] = res
                results.append(res)
                print(json.dumps(res), flush=True)
        ckpt = os.path.join(tmp, model + ".ckpt")
        subprocess.run(
            [sys.executable, __file__, "--save", "--models", model, "--ckpt", ckpt], check=True, capture_output=True
        )
        for mode, kernels in [(m, k) for m in args.modes for k in KERNEL_SETTINGS[args.kernels]]:
            cmd = [sys.executable, __file__, "--child", "--models", model, "--modes", mode, "--ckpt", ckpt, *common]
            env = dict(os.environ, MINDCV_LSEG_KERNELS="1" if kernels == "on" else "0")
            res = _run_child(cmd + (["--mindcv_vit"] if args.mindcv_vit else []), f"{model} {mode}", env)
            if not res:
                continue
            res["kernels"] = kernels
            if model in torch_results:
                res["torch_call_s"] = torch_results[model]["forward_s"]
                res["torch_peak_rss_gb"] = torch_results[model]["peak_rss_gb"]
                res["time_ratio"] = res["call_s"] / res["torch_call_s"]
                res["rss_ratio"] = res["peak_rss_gb"] / res["torch_peak_rss_gb"]
            results.append(res)
            print(json.dumps(res), flush=True)
        os.remove(ckpt)
    os.rmdir(tmp)

    load = os.getloadavg()[0]
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, load average {load:.1f}"
        f"; input 1x3x{size[0]}x{size[1]}, {args.labels} labels; ratios are ours / PyTorch in this run"
    )
    print(
        "| model | mode | kernels | call, text incl. (median) | PyTorch original | time ratio | peak RSS (incl. loading) | "
        "PyTorch peak RSS | RSS ratio | forward, text precomputed | text alone | first call |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r["impl"] == "torch":
            continue
        print(
            f"| {r['model']} | {r['mode']} | {r['kernels']} | {r['call_s']:.2f} s | {_cell(r.get('torch_call_s'), '.2f', ' s')} "
            f"| {_cell(r.get('time_ratio'), '.2f', 'x')} | {r['peak_rss_gb']:.2f} GB "
            f"| {_cell(r.get('torch_peak_rss_gb'), '.2f', ' GB')} | {_cell(r.get('rss_ratio'), '.2f', 'x')} "
            f"| {r['forward_s']:.2f} s | {r['text_s']:.3f} s | {r['first_forward_s']:.1f} s |"
        )
    if args.mindcv_vit:
        for r in results:
            if "baseline" in r:
                print(f"  {r['model']} {r['mode']}: mindcv {r['baseline']} alone {r['baseline_forward_s']:.2f} s")
    print("\nRSS after each phase (GB; build+load = create_model with checkpoint_path):")
    for r in results:
        if r["impl"] != "torch":
            print(
                f"{r['model']} {r['mode']} kernels {r['kernels']}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in r["rss_gb"].items())
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
