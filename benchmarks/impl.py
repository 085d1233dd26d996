"""Eager ``impl="lean"`` vs ``impl="native"`` on this machine, in one run: forward and one training step.

Each (impl, measurement) runs in its own process (own peak RSS), GRAPH mode, random weights, batch 1:

- forward: ``net(x, text)`` on 1x3xSxS with 5 labels (text encoded once beforehand), ``--size`` S (default 384,
  the parity / deploy size); ``lean``: median of ``--runs`` after the first call, ``native``: median of
  ``--native_runs`` after the first (default 0: the first call only, whose few seconds of graph compilation are
  small beside its minutes of kxk convolutions);
- train step: one SGD-momentum update through ``build_train_cells`` (loss with the impl's backward), crop
  ``--train_size`` (default 128), 5 labels; the first step includes compilation, the median of the later ones
  does not.

The figure to read is the native/lean ratio printed last: other processes on the machine slow both sides alike.
MindSpore 2.10's CPU kxk convolution is ~100x slower than its GEMM form: one ``native`` forward at 384x384 takes
several minutes here, and a native training step at 384 (forward + backward, ~3x the forward, plus a long
compilation) would take the better part of an hour, so the training step is measured at a smaller crop by default.

    python benchmarks/impl.py                                   # lseg_vitb32: forward 384x384, train step 128
    python benchmarks/impl.py --size 128 --train_steps 2 --runs 1 --native_runs 1     # a quick look
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from bench_settings import LABELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def forward(model, impl, size, runs):
    import numpy as np

    import mindcv
    import mindspore as ms

    import mindcv_lseg  # noqa: F401

    ms.set_context(mode=ms.GRAPH_MODE)
    net = mindcv.create_model(model, weight_init=False, impl=impl)
    net.set_train(False)
    text = net.encode_text(LABELS)
    x = ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32))
    start = time.perf_counter()
    net(x, text).asnumpy()
    first = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        net(x, text).asnumpy()
        times.append(time.perf_counter() - start)
    return {"first_s": first, "median_s": statistics.median(times) if times else first}


def train_step(model, impl, size, steps):
    import numpy as np

    import mindcv
    import mindspore as ms

    import mindcv_lseg  # noqa: F401
    from mindcv_lseg.engine.loss import NetWithLoss, create_seg_loss
    from mindcv_lseg.engine.optim import create_seg_optimizer
    from mindcv_lseg.engine.train_step import build_train_cells

    ms.set_context(mode=ms.GRAPH_MODE)
    net = mindcv.create_model(model, weight_init=False, impl=impl)
    text = ms.Tensor(net.encode_text(LABELS).asnumpy())
    opt = create_seg_optimizer(net, [2.5e-4] * (steps + 2), momentum=0.9, weight_decay=1e-4)
    driver = build_train_cells(NetWithLoss(net, create_seg_loss("CE", 255, impl=impl), text), opt)
    rng = np.random.RandomState(0)
    x = ms.Tensor(rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32))
    y = ms.Tensor(rng.randint(0, len(LABELS), (1, size, size)).astype(np.int32))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        driver.step(x, y, True)[0].asnumpy()
        times.append(time.perf_counter() - start)
    rest = times[1:] or times
    return {"first_s": times[0], "median_s": statistics.median(rest)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lseg_vitb32")
    ap.add_argument("--size", type=int, default=384, help="forward input side (multiple of 32)")
    ap.add_argument("--train_size", type=int, default=128, help="training-step crop side (multiple of 32)")
    ap.add_argument("--runs", type=int, default=2, help="timed lean forward runs after the first")
    ap.add_argument("--native_runs", type=int, default=0, help="timed native forward runs after the first (0: first)")
    ap.add_argument("--train_steps", type=int, default=2, help="training steps (the first compiles)")
    ap.add_argument("--impls", nargs="+", default=["lean", "native"], choices=("lean", "native"))
    ap.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)  # impl, kind
    a = ap.parse_args()
    if a.one:
        impl, kind = a.one
        res = (
            forward(a.model, impl, a.size, a.runs if impl == "lean" else a.native_runs)
            if kind == "forward"
            else train_step(a.model, impl, a.train_size, a.train_steps)
        )
        res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print("RESULT " + json.dumps(res), flush=True)
        return
    print(
        f"{a.model}, batch 1, {len(LABELS)} labels, fp32, GRAPH mode, {os.cpu_count()} cores; forward at "
        f"{a.size}x{a.size} (native: median of {a.native_runs} after the first call, or the first call if 0), "
        f"training step at crop {a.train_size}x{a.train_size}"
    )
    print(f"{'impl':<7} {'measure':<11} {'first s':>9} {'median s':>9} {'peak RSS GB':>11}")
    results = {}
    for kind in ("forward", "train_step"):
        for impl in a.impls:
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--one",
                impl,
                kind,
                "--model",
                a.model,
                "--size",
                str(a.size),
                "--train_size",
                str(a.train_size),
                "--runs",
                str(a.runs),
                "--native_runs",
                str(a.native_runs),
                "--train_steps",
                str(a.train_steps),
            ]
            env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                print(f"{impl:<7} {kind:<11} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
                continue
            res = results[(impl, kind)] = json.loads(line[0][7:])
            print(
                f"{impl:<7} {kind:<11} {res['first_s']:>9.2f} {res['median_s']:>9.2f} {res['peak_rss_gb']:>11.2f}",
                flush=True,
            )
    for kind in ("forward", "train_step"):
        if ("lean", kind) in results and ("native", kind) in results:
            ratio = results[("native", kind)]["median_s"] / results[("lean", kind)]["median_s"]
            size = a.size if kind == "forward" else a.train_size
            print(f"{kind} ({size}x{size}): native / lean time = {ratio:.2f}x")


if __name__ == "__main__":
    main()
