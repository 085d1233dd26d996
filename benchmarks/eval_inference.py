"""Inference-core cost per evaluation mode: network forwards, wall time and peak RSS for one image.

    python benchmarks/eval_inference.py --model lseg_vitb32 --size 512 683 --modes whole slide ms_flip

Random weights (speed does not depend on them). ``whole`` pads the image to a multiple of 32; ``slide`` and
``ms_flip`` always feed ``crop_size x crop_size`` (default 480) windows, so one compiled graph is reused.
The number of forwards of ``ms_flip`` on an ADE20K-sized image (~512x683) is what makes the reference protocol
expensive: multiply it by the per-forward time to estimate a full validation run.
"""

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lseg_vitb32")
    p.add_argument("--size", type=int, nargs=2, default=[512, 683], help="image height width")
    p.add_argument("--modes", nargs="+", default=["whole", "slide", "ms_flip"])
    p.add_argument("--crop_size", type=int, default=480)
    p.add_argument("--base_size", type=int, default=520)
    p.add_argument("--labels", type=int, default=150, help="number of labels (ADE20K: 150)")
    p.add_argument("--graph", type=int, default=1, help="1: GRAPH mode, 0: PYNATIVE")
    args = p.parse_args(argv)

    import numpy as np

    import mindcv
    import mindspore as ms

    import mindcv_lseg  # noqa: F401
    from mindcv_lseg.eval import inference as I

    ms.set_context(mode=ms.GRAPH_MODE if args.graph else ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    t = time.time()
    net = mindcv.create_model(args.model)
    net.set_train(False)
    print(f"{args.model}: created in {time.time() - t:.1f} s")
    t = time.time()
    text = net.encode_text([f"class {i}" for i in range(args.labels)])
    print(f"text features for {args.labels} labels: {time.time() - t:.2f} s (computed once per label set)")
    h, w = args.size
    x = I.normalize_image(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))

    calls = []
    orig = I._forward

    def counting(net_, xx, tt):
        t0 = time.time()
        out = orig(net_, xx, tt)
        calls.append((tuple(xx.shape), time.time() - t0))
        return out

    I._forward = counting
    rows = []
    for mode in args.modes:
        cfg = I.InferenceConfig(mode=mode, crop_size=args.crop_size, base_size=args.base_size)
        calls.clear()
        t = time.time()
        out = I.run_inference(net, x, text, cfg)
        total = time.time() - t
        shapes = sorted({s for s, _ in calls})
        steady = [d for _, d in calls[1:]] or [d for _, d in calls]
        rows.append((mode, len(calls), total, float(np.median(steady)), shapes, out.shape))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nimage {h}x{w}, crop {args.crop_size}, base {args.base_size}, {args.labels} labels, "
        f"{'GRAPH' if args.graph else 'PYNATIVE'} mode, {os.cpu_count()} CPUs"
    )
    print(f"{'mode':<8} {'forwards':>8} {'total s':>8} {'s/forward (median)':>19}  input shapes")
    for mode, n, total, med, shapes, _ in rows:
        print(f"{mode:<8} {n:>8} {total:>8.1f} {med:>19.2f}  {shapes}")
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
