"""LayerNorm for the CPU-lean layers: MindSpore's ``nn.LayerNorm`` with a compiled forward and backward pass.

MindSpore 2.10's CPU ``LayerNorm`` takes ~2.5 ms on a ViT-L/16 block's [577, 1024] tokens at 384x384 (48 calls per
forward) and its ``LayerNormGrad`` ~0.8 s of a ViT-L/16 training step. :class:`LeanLayerNorm` computes the same
values with the row-by-row kernels of :mod:`mindcv_lseg.kernels.layernorm` and a hand-written backward pass
that keeps only the layer's input. It is an ``nn.LayerNorm`` (same ``gamma``/``beta`` parameters, same attributes),
so checkpoints, mindcv's initialisation, the mixed-precision black list and the ONNX rewrite
(:mod:`mindcv_lseg.deploy.onnx_compat`) treat it as one.
"""

from typing import Sequence

import numpy as np

import mindspore as ms
from mindspore import Tensor, nn

from ..kernels.layernorm import LayerNormKernels, layernorm_kernels

__all__ = ["LayerNormCore", "LeanLayerNorm"]


class LayerNormCore(nn.Cell):
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` over the last axis through the compiled kernels, with the
    gradient in ``x``, ``gamma`` and ``beta`` from the backward kernel (mean and variance recomputed from ``x``).

    Inputs: x [..., C] float32, gamma [C], beta [C]. Output [..., C].
    """

    def __init__(self, kernels: LayerNormKernels, epsilon: float):
        super().__init__()
        self.forward = kernels.forward
        self.backward = kernels.backward
        self.eps = Tensor(np.array([epsilon], np.float32))

    def construct(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        return self.forward(x, gamma, beta, self.eps)

    def bprop(self, x: Tensor, gamma: Tensor, beta: Tensor, out: Tensor, dout: Tensor):
        dx, dgamma, dbeta = self.backward(x, dout, gamma, self.eps)
        return dx, dgamma, dbeta


class LeanLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis (PyTorch's ``nn.LayerNorm(C, eps)``) that runs the compiled kernels for
    float32 input on CPU (:class:`LayerNormCore`), MindSpore's ``ops.LayerNorm`` otherwise (float16 under mixed
    precision, other devices, no library, ``MINDCV_LSEG_KERNELS=0``, or ``use_kernels`` set False as
    :func:`~mindcv_lseg.models.ops_impl.without_compiled_kernels` does before an export).

    Args:
        normalized_shape: ``(C,)``: one axis, the last.
        epsilon: added to the variance (ViT: 1e-6, CLIP: 1e-5).

    Parameters: ``gamma`` [C] (ones), ``beta`` [C] (zeros), as ``nn.LayerNorm``. Input [..., C] -> same.
    """

    def __init__(self, normalized_shape: Sequence[int], epsilon: float = 1e-7):
        if not isinstance(normalized_shape, (tuple, list)) or len(normalized_shape) != 1:
            raise ValueError(
                f"LeanLayerNorm normalises the last axis only: normalized_shape must be (C,), got {normalized_shape!r}"
            )
        super().__init__(normalized_shape, epsilon=epsilon)
        kernels = layernorm_kernels()
        self.use_kernels = kernels is not None
        self.core = LayerNormCore(kernels, epsilon) if kernels is not None else None

    def construct(self, x: Tensor) -> Tensor:
        if self.use_kernels and x.dtype == ms.float32:
            return self.core(x, self.gamma, self.beta)
        y, _, _ = self.layer_norm(x, self.gamma.astype(x.dtype), self.beta.astype(x.dtype))
        return y
