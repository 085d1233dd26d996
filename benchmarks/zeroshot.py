"""Time per zero-shot episode of ``lseg_rn101`` at 480x480 (the benchmarks' protocol), and the convolution choice.

An episode is what ``tools/validate.py`` does per query: read + resize + normalise the image and mask, the text pair
(cached after the first episode of a class), the forward pass, argmax and the metric update. It runs on a generated
FSS-style tree (224x224 images, as FSS-1000) with random weights (weights do not change the cost). Each mode runs in
its own process; the first episode (GRAPH compile) is timed separately. In the same process a MindSpore float32
MatMul (2048^3) is timed as a machine-speed baseline, so figures from a busy machine can be compared (ratio).

    python benchmarks/zeroshot.py                      # GRAPH and PYNATIVE, 3 timed episodes each
    python benchmarks/zeroshot.py --conv               # also: mindcv nn.Conv2d vs the GEMM convs used by the encoder
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))


def _matmul_gflops(runs=3):
    import numpy as np

    import mindspore as ms
    from mindspore import ops

    a = ms.Tensor(np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32))
    ops.matmul(a, a).asnumpy()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        ops.matmul(a, a).asnumpy()
        times.append(time.perf_counter() - t)
    return 2 * 2048**3 / statistics.median(times) / 1e9


def child(mode: str, episodes: int) -> dict:
    import mindcv
    import mindspore as ms

    import mindcv_lseg  # noqa: F401
    from mindcv_lseg.data.fewshot import FSS1000Dataset
    from mindcv_lseg.data.fewshot_fake import make_fake_fss
    from mindcv_lseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from mindcv_lseg.eval.zeroshot import evaluate_zeroshot

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    baseline = _matmul_gflops()
    with tempfile.TemporaryDirectory() as root:
        make_fake_fss(root, classes=("bus",), images_per_class=episodes + 1, size=224)
        ds = FSS1000Dataset(root, IMAGENET_MEAN, IMAGENET_STD, img_size=480)
        t = time.perf_counter()
        net = mindcv.create_model("lseg_rn101")
        net.set_train(False)
        build = time.perf_counter() - t
        t = time.perf_counter()
        evaluate_zeroshot(net, ds, progress=False, max_episodes=1)  # compile (GRAPH) + text pair
        first = time.perf_counter() - t
        ds._episodes = ds._episodes[1:]
        m = evaluate_zeroshot(net, ds, progress=False)
    baseline_after = _matmul_gflops()
    return {
        "mode": mode,
        "episodes_timed": m["num_episodes"],
        "seconds_per_episode": m["seconds_per_episode"],
        "first_episode_s": round(first, 2),
        "build_model_s": round(build, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "matmul_gflops_before_after": [round(baseline, 1), round(baseline_after, 1)],
    }


def conv_choice() -> dict:
    """mindcv's nn.Conv2d against the encoder's GEMM convolutions, on layer-1/2-sized ResNet maps (PYNATIVE)."""
    import numpy as np

    import mindspore as ms
    from mindspore import nn

    from mindcv_lseg.models.cpu_gemm import CpuGemmConv2d, CpuSubsampledConv1x1

    ms.set_context(mode=ms.PYNATIVE_MODE)

    def timed(fn, x, runs=2):
        fn(x).asnumpy()
        t = time.perf_counter()
        for _ in range(runs):
            fn(x).asnumpy()
        return round((time.perf_counter() - t) / runs, 3)

    x64 = ms.Tensor(np.random.default_rng(0).random((1, 64, 120, 120), np.float32))
    x256 = ms.Tensor(np.random.default_rng(0).random((1, 256, 120, 120), np.float32))
    return {
        "3x3 64->64 @120x120: nn.Conv2d s": timed(nn.Conv2d(64, 64, 3, pad_mode="pad", padding=1), x64, 1),
        "3x3 64->64 @120x120: CpuGemmConv2d s": timed(CpuGemmConv2d(64, 64, 3, padding=1), x64),
        "1x1/2 256->512 @120x120: nn.Conv2d s": timed(nn.Conv2d(256, 512, 1, stride=2), x256, 1),
        "1x1/2 256->512 @120x120: CpuSubsampledConv1x1 s": timed(CpuSubsampledConv1x1(256, 512, 2), x256),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["graph", "pynative"], choices=["graph", "pynative"])
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--conv", action="store_true", help="also time nn.Conv2d against the GEMM convolutions")
    ap.add_argument("--child", choices=["graph", "pynative", "conv"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        out = conv_choice() if args.child == "conv" else child(args.child, args.episodes)
        print("RESULT " + json.dumps(out))
        return 0
    jobs = list(args.modes) + (["conv"] if args.conv else [])
    for job in jobs:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", job, "--episodes", str(args.episodes)], capture_output=True, text=True
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{job}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        print(json.dumps(json.loads(lines[-1][7:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
