"""Training-step cost of the full models: step time and peak memory at batch 1, crop 480 (fp32, GRAPH mode).

One subprocess per model (so the peak RSS is that model's): build with ``weight_init=False``, embed 150 labels,
run the engine's train cell (loss + SGD-momentum update, decoder 10x lr) for a few steps on random data.
The first step includes graph compilation and is reported separately; the step time is the median of the rest.

    python benchmarks/train_step.py [--models lseg_vitb32 lseg_vitl16_384] [--steps 3] [--crop 480] \
        [--gradient_accumulation_steps 2] [--recompute] [--profile]

``--profile`` runs MindSpore's profiler over the steps after the first and prints where a step spends its time, per
operator type (as ``benchmarks/profile_ops.py`` does for the forward).
"""

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one(
    model: str,
    steps: int,
    crop: int,
    batch: int,
    num_labels: int,
    mode: int,
    accum: int,
    recompute: bool = False,
    profile: bool = False,
) -> dict:
    import numpy as np

    import mindcv
    import mindspore as ms

    sys.path.insert(0, ROOT)
    import mindcv_lseg.models  # noqa: F401
    from mindcv_lseg.engine.loss import NetWithLoss, create_seg_loss
    from mindcv_lseg.engine.optim import create_seg_optimizer
    from mindcv_lseg.engine.train_step import build_train_cells

    ms.set_context(mode=ms.GRAPH_MODE if mode == 0 else ms.PYNATIVE_MODE)
    t0 = time.time()
    net = mindcv.create_model(model, weight_init=False, recompute=recompute)
    build = time.time() - t0
    text = ms.Tensor(net.encode_text([f"label {i}" for i in range(num_labels)]).asnumpy())
    opt = create_seg_optimizer(net, [2.5e-4] * (steps + 2), momentum=0.9, weight_decay=1e-4)
    loss_fn = create_seg_loss("CE", 255, impl=net.impl)
    driver = build_train_cells(NetWithLoss(net, loss_fn, text), opt, grad_accumulation=accum)
    driver.set_train(True)  # as the trainer does (batch statistics, dropout; the training path of every layer)
    rng = np.random.RandomState(0)
    x = ms.Tensor(rng.uniform(-1, 1, (batch, 3, crop, crop)).astype(np.float32))
    y = ms.Tensor(rng.randint(0, num_labels, (batch, crop, crop)).astype(np.int32))
    times, prof = [], None
    for i in range(steps):  # with accumulation, a step is one micro-batch; every accum-th one also updates
        if profile and i == 1:
            prof_dir = tempfile.mkdtemp(prefix="lseg_train_profile_")
            prof = ms.Profiler(output_path=prof_dir)
        t = time.time()
        driver.step(x, y, (i + 1) % accum == 0)[0].asnumpy()
        times.append(time.time() - t)
    if prof is not None:
        from profile_ops import operator_csv, summarise

        prof.analyse()
        summarise(operator_csv(prof_dir), steps - 1, 30, per="step", out=sys.stderr)
        shutil.rmtree(prof_dir, ignore_errors=True)
    rest = sorted(times[1:]) or times
    return {
        "model": model,
        "batch": batch,
        "crop": crop,
        "labels": num_labels,
        "accum": accum,
        "recompute": recompute,
        "build_s": build,
        "first_step_s": times[0],
        "step_s_median": rest[len(rest) // 2],
        "steps": steps,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lseg_vitb32", "lseg_vitl16_384"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--crop", type=int, default=480)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--labels", type=int, default=150)
    ap.add_argument("--mode", type=int, default=0)
    ap.add_argument(
        "--gradient_accumulation_steps",
        type=int,
        default=1,
        help="micro-batches per update (the paper config: 2); steps alternate accumulate / update",
    )
    ap.add_argument("--recompute", action="store_true", help="recompute the ViT blocks in the backward pass")
    ap.add_argument("--profile", action="store_true", help="profile the steps after the first, per operator type")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        accum = a.gradient_accumulation_steps
        res = one(a.one, a.steps, a.crop, a.batch, a.labels, a.mode, accum, a.recompute, a.profile)
        print("RESULT " + json.dumps(res), flush=True)
        return
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, fp32, "
        f"{'GRAPH' if a.mode == 0 else 'PYNATIVE'}, gradient accumulation {a.gradient_accumulation_steps}"
        f"{', recompute' if a.recompute else ''}"
    )
    print(f"{'model':<18} {'batch':>5} {'crop':>5} {'first step s':>12} {'step s':>8} {'peak RSS GB':>11}")
    for m in a.models:
        r = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                m,
                "--steps",
                str(a.steps),
                "--crop",
                str(a.crop),
                "--batch",
                str(a.batch),
                "--labels",
                str(a.labels),
                "--mode",
                str(a.mode),
                "--gradient_accumulation_steps",
                str(a.gradient_accumulation_steps),
            ]
            + (["--recompute"] if a.recompute else [])
            + (["--profile"] if a.profile else []),
            capture_output=True,
            text=True,
        )
        if a.profile:
            print("\n".join(ln for ln in r.stderr.splitlines() if ln.startswith(("|", "operator time"))))
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
        if r.returncode != 0 or not line:
            print(f"{m:<18} failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:] }")
            continue
        res = json.loads(line[0][7:])
        print(
            f"{m:<18} {res['batch']:>5} {res['crop']:>5} {res['first_step_s']:>12.1f} {res['step_s_median']:>8.2f} "
            f"{res['peak_rss_gb']:>11.2f}"
        )


if __name__ == "__main__":
    main()
