"""The bilinear resize kernel (``impl="lean"`` ``BilinearResize``) against MindSpore's ``ops.interpolate``
(``impl="native"``), forward and forward + backward, GRAPH mode, in one run.

Cases (LSeg's resizes): the decoder's x2 upsampling ``[1, 256, 96, 96] -> [1, 256, 192, 192]`` (align_corners=True;
ViT-L/16 at 384x384), the ViT-L/16 position-embedding resize for a 480x480 crop ``[1, 1024, 24, 24] ->
[1, 1024, 30, 30]`` (align_corners=False), and the logits' x2 upsampling at 480x480 with 150 labels
``[1, 150, 240, 240] -> [1, 150, 480, 480]`` (align_corners=True). The backward is the gradient of the resize alone
(``GradOperation(sens_param=True)`` with a given output gradient).

The two implementations are timed alternately, call by call, and the medians compared: other processes on the
machine slow both alike, so read the ratio.

    python benchmarks/resize.py [--runs 30]
"""

import argparse

from bench_settings import alternate_medians

CASES = (
    ("decoder x2", (1, 256, 96, 96), (192, 192), True),
    ("pos-embed 24->30", (1, 1024, 24, 24), (30, 30), False),
    ("logits x2", (1, 150, 240, 240), (480, 480), True),
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed calls of each implementation per case")
    args = parser.parse_args(argv)

    import numpy as np

    import mindspore as ms
    from mindspore import Tensor, nn, ops

    from mindcv_lseg.models.ops_impl import BilinearResize

    ms.set_context(mode=ms.GRAPH_MODE)

    class Resize(nn.Cell):
        def __init__(self, align_corners, impl, size):
            super().__init__()
            self.resize = BilinearResize(align_corners, impl)
            self.size = size

        def construct(self, x):
            return self.resize(x, self.size[0], self.size[1])

    grad = ops.GradOperation(sens_param=True)
    print("case | shape | forward kernel / interpolate (ms) | ratio | fwd+bwd kernel / interpolate (ms) | ratio")
    for name, shape, size, align_corners in CASES:
        rng = np.random.default_rng(0)
        x = Tensor(rng.standard_normal(shape).astype(np.float32))
        dy = Tensor(rng.standard_normal(shape[:2] + size).astype(np.float32))
        lean, native = Resize(align_corners, "lean", size), Resize(align_corners, "native", size)
        if not lean.resize.use_kernels:
            raise SystemExit("the resize kernels are not available here (see the notice above)")
        fwd = alternate_medians([lambda: lean(x).asnumpy(), lambda: native(x).asnumpy()], 2, args.runs)
        lean_grad, native_grad = grad(lean), grad(native)
        both = alternate_medians(
            [lambda: lean_grad(x, dy).asnumpy(), lambda: native_grad(x, dy).asnumpy()], 2, args.runs
        )
        print(
            f"{name} | {list(shape)} -> {list(size)}, align_corners={align_corners} | "
            f"{fwd[0] * 1e3:.2f} / {fwd[1] * 1e3:.2f} | {fwd[1] / fwd[0]:.1f}x | "
            f"{both[0] * 1e3:.2f} / {both[1] * 1e3:.2f} | {both[1] / both[0]:.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
