"""Activations with hand-written backward passes that keep training memory low in GRAPH mode.

MindSpore 2.10 builds the exact (erf) GELU, ``ops.gelu(x, approximate='none')``, from five elementwise primitives
(div, erf, add, mul, mul) and differentiates each one; on CPU in GRAPH mode the intermediates of that chain are
kept for the backward pass, about ten tensors of the activation's size per call (for ViT-L/16 at 480x480 roughly
150 MB per block, 3.6 GB in all). :class:`ErfGELU` computes the same forward values and defines its gradient
directly, so only its input is kept. ``benchmarks/train_step.py`` shows the effect.

No division: on CPU in GRAPH mode a ``RealDiv`` (``x / 2**0.5``) holds about four times its output until the graph
ends, even when nothing needs it later (ViT-L/16 at 384x384: 0.9 GB for the 24 GELUs of one forward), while a
multiplication by the reciprocal frees its memory as soon as it is consumed. ``x * (1/sqrt(2))`` is also what
PyTorch's CPU GELU computes (it differs from ``x / sqrt(2)`` by float32 rounding only).
"""

import math

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..kernels.gelu import gelu_kernels

__all__ = ["ErfGELU"]

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class ErfGELU(nn.Cell):
    """Exact GELU, ``x * Phi(x)`` with ``Phi(x) = (1 + erf(x / sqrt(2))) / 2`` (PyTorch ``nn.GELU()``).

    Forward: ``x * 0.5 * (1 + erf(x * (1/sqrt(2))))``, PyTorch's CPU formula (``ops.gelu(x, approximate='none')``
    divides by sqrt(2) instead, which differs by float32 rounding and costs memory in GRAPH mode, see above); on
    CPU in float32 as one-pass kernels for the forward and the backward (:mod:`mindcv_lseg.kernels.gelu`), else
    with MindSpore's ops. Backward: ``d/dx = Phi(x) + x * phi(x)`` with ``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``,
    recomputed from ``x``. Input and output: any shape.
    """

    def __init__(self):
        super().__init__()
        kernels = gelu_kernels()
        self.use_kernels = kernels is not None
        self.kernel = kernels.forward if kernels is not None else ops.erf
        self.kernel_grad = kernels.backward if kernels is not None else ops.mul

    def construct(self, x: Tensor) -> Tensor:
        if self.use_kernels and x.dtype == ms.float32:
            return self.kernel(x)
        return x * 0.5 * (ops.erf(x * _INV_SQRT2) + 1.0)

    def bprop(self, x: Tensor, out: Tensor, dout: Tensor):
        if self.use_kernels and x.dtype == ms.float32:
            return (self.kernel_grad(x, dout),)
        cdf = (ops.erf(x * _INV_SQRT2) + 1.0) * 0.5
        pdf = ops.exp(x * x * -0.5) * _INV_SQRT_2PI
        return (dout * (cdf + x * pdf),)
