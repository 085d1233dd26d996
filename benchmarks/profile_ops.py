"""Where a forward pass spends its time, per operator type and per operator (MindSpore's profiler, CPU, GRAPH mode).

    python benchmarks/profile_ops.py --model lseg_vitl16_384 --size 384 --labels 5 --top 25

Random weights, 1x3xHxW input, the text features precomputed (this profiles the image graph). The shares are what
to read: absolute times depend on the machine's load. MINDCV_LSEG_KERNELS=0 profiles the lean layers on MindSpore's
own MatMul instead of the OpenBLAS kernels.
"""

import argparse
import csv
import glob
import os
import re
import sys
import tempfile
from collections import defaultdict

from bench_settings import input_size, labels_for


def profile(model: str, size, num_labels: int, runs: int, out_dir: str) -> str:
    """Profile ``runs`` forwards after two warm-up calls; returns the operator detail CSV MindSpore wrote."""
    import numpy as np

    import mindcv
    import mindspore as ms

    import mindcv_lseg  # noqa: F401

    ms.set_context(mode=ms.GRAPH_MODE)
    net = mindcv.create_model(model, weight_init=False)
    net.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (1, 3) + tuple(size)).astype(np.float32))
    text = net.encode_text(labels_for(num_labels))
    for _ in range(2):
        net(x, text).asnumpy()
    prof = ms.Profiler(output_path=out_dir)
    for _ in range(runs):
        net(x, text).asnumpy()
    prof.analyse()
    return operator_csv(out_dir)


def operator_csv(out_dir: str) -> str:
    """The operator detail CSV MindSpore's profiler wrote under ``out_dir``."""
    found = glob.glob(os.path.join(out_dir, "**", "cpu_op_detail_info_*.csv"), recursive=True)
    if not found:
        raise RuntimeError(f"the profiler wrote no cpu_op_detail_info_*.csv under {out_dir}")
    return found[0]


def summarise(detail_csv: str, runs: int, top: int, per: str = "forward", out=sys.stdout) -> None:
    """Print operator time per ``per`` (the CSV covers ``runs`` of them): per operator type, then the top
    operators."""
    with open(detail_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    per_op = [(float(r["op_total_time(ms)"]) / runs, r["op_type"], r["full_op_name"]) for r in rows]
    total = sum(t for t, _, _ in per_op)
    by_type = defaultdict(float)
    for t, kind, _ in per_op:
        by_type[kind] += t
    print(f"operator time per {per}: {total:.0f} ms (sum over operators; operators may overlap)", file=out)
    print(f"\n| operator type | ms per {per} | share |\n|---|---|---|", file=out)
    for kind, t in sorted(by_type.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| {kind} | {t:.1f} | {100 * t / total:.1f}% |", file=out)
    print(f"\n| operator | ms per {per} |\n|---|---|", file=out)
    for t, _, name in sorted(per_op, reverse=True)[:top]:
        print(f"| {name[-110:]} | {t:.1f} |", file=out)
    by_layer = defaultdict(lambda: [0.0, 0])
    for t, _, name in per_op:
        entry = by_layer[layer_of(name)]
        entry[0] += t
        entry[1] += 1
    print(f"\n| layer (repeated blocks summed) | ms per {per} | calls |\n|---|---|---|", file=out)
    for name, (t, n) in sorted(by_layer.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"| {name[-110:]} | {t:.1f} | {n / runs:g} |", file=out)


def layer_of(op_name: str) -> str:
    """An operator's name with the index of a repeated block (``blocks-CellList/7-Block`` -> ``*-Block``) and the
    operator counter (``-op12``) taken out, so that the same layer of every block falls into one row."""
    name = re.sub(r"CellList/\d+-", "CellList/*-", op_name)
    return re.sub(r"-op\d+$", "", name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="lseg_vitb32")
    ap.add_argument("--size", type=int, nargs="+", default=[384], help="input H or H W")
    ap.add_argument("--labels", type=int, default=5)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    try:
        size = input_size(args.size)
        labels_for(args.labels)
    except ValueError as e:
        ap.error(str(e))
    with tempfile.TemporaryDirectory(prefix="lseg_profile_") as out_dir:
        summarise(profile(args.model, size, args.labels, args.runs, out_dir), args.runs, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
