"""The LayerNorm kernel of the lean layers against MindSpore's LayerNorm, in one run: forward, and forward + backward
(gradients in x, gamma and beta), float32, CPU, GRAPH mode.

    python benchmarks/layernorm.py                       # [577, 1024] and [901, 1024] (ViT-L/16 at 384, 480)
    python benchmarks/layernorm.py --rows 770 --channels 512 --eps 1e-5    # CLIP's text tower, 10 labels

Each graph chains ``--layers`` LayerNorm cells, ``x = ln_i(x)``, so the figure is per LayerNorm call with the graph
launch spread over them. Medians of ``--runs`` after warm-up calls, kernel and MindSpore interleaved in one process:
the ratio is what to read when other processes share the machine.
"""

import argparse
import sys

from bench_settings import alternate_medians


def build(lean: bool, channels: int, layers: int, eps: float):
    import mindspore as ms
    from mindspore import nn

    from mindcv_lseg.models.normalization import LeanLayerNorm

    class Chain(nn.Cell):
        def __init__(self):
            super().__init__()
            cls = LeanLayerNorm if lean else nn.LayerNorm
            self.norms = nn.CellList([cls((channels,), epsilon=eps) for _ in range(layers)])

        def construct(self, x):
            for norm in self.norms:
                x = norm(x)
            return x

    class Loss(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def construct(self, x):
            return self.net(x).sum()

    net = Chain()
    if lean and not net.norms[0].use_kernels:
        raise SystemExit("the LayerNorm kernels are not available here (see the notice above); nothing to compare")
    return net, ms.grad(Loss(net), grad_position=0, weights=net.trainable_params())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[577, 901], help="tokens per call (default 577 901)")
    ap.add_argument("--channels", type=int, default=1024)
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--layers", type=int, default=12, help="LayerNorm cells per graph (default 12)")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args(argv)

    import numpy as np

    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    print(
        f"LayerNorm over {args.channels} channels, float32, GRAPH mode, {args.layers} layers per graph, median of "
        f"{args.runs} runs; ms per LayerNorm call"
    )
    print(f"{'rows':>6} | {'pass':<16} | {'MindSpore':>9} | {'kernel':>9} | {'ratio':>6}")
    for rows in args.rows:
        x = ms.Tensor(np.random.default_rng(rows).standard_normal((1, rows, args.channels)).astype(np.float32))
        nets = {lean: build(lean, args.channels, args.layers, args.eps) for lean in (False, True)}
        for index, what in enumerate(("forward", "forward+backward")):
            calls = [(lambda fn=nets[lean][index]: _sync(fn(x))) for lean in (False, True)]
            medians = alternate_medians(calls, warmup=2, runs=args.runs)  # the first warm-up call compiles
            ms_time, kernel_time = (seconds / args.layers * 1e3 for seconds in medians)
            print(f"{rows:>6} | {what:<16} | {ms_time:>9.3f} | {kernel_time:>9.3f} | {ms_time / kernel_time:>5.1f}x")
    sys.stdout.flush()


def _sync(out):
    """Wait for the result (MindSpore runs asynchronously)."""
    leaves = out if isinstance(out, (tuple, list)) else (out,)
    for leaf in leaves:
        if isinstance(leaf, (tuple, list)):
            _sync(leaf)
        else:
            leaf.asnumpy()


if __name__ == "__main__":
    main()
