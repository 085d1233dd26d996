"""Multi-head self-attention for the ViT encoder with a small training footprint in GRAPH mode.

mindcv's ``Attention`` is differentiated automatically. On CPU in GRAPH mode, MindSpore 2.10 keeps several
[B, heads, T, T] tensors per block until the backward pass: the scores and the softmax, and about four more
inside the softmax gradient. An implicitly broadcast binary op such as ``a - a.sum(-1, keepdims=True)`` holds
~3.7x its output for the whole graph. For ViT-L/16 at 480x480 one such tensor is 52 MB, so this costs about
0.3 GB per block.

:class:`LeanAttention` keeps mindcv's ``qkv`` and ``proj`` cells (same parameters, names and initialisation).
:class:`AttentionCore` computes ``softmax(q k^T) v`` with a hand-written backward that recomputes the softmax
from q and k when the gradient arrives and broadcasts explicitly. The scale is folded into q. For head_dim 64
(every LSeg ViT) the scale is 1/8, a power of two, so the forward is bit-identical to scaling the scores; for
other head sizes the two differ by float32 rounding only.
"""

import numpy as np

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..kernels.attention import attention_kernel
from ..kernels.gemm import BlasMatMul

__all__ = ["AttentionCore", "LeanAttention"]


class AttentionCore(nn.Cell):
    """``softmax(q k^T) v`` over the last two axes; q, k, v [B, heads, T, d] -> [B, heads, T, d].

    The products run per (batch, head) through OpenBLAS (:class:`~mindcv_lseg.kernels.gemm.BlasMatMul`, on
    [B*heads, T, d] views). Backward (from q, k, v only): ``P = softmax(q k^T)``, ``dV = P^T dO``,
    ``dP = dO V^T``, ``dS = P * (dP - rowsum(dP * P))``, ``dQ = dS K``, ``dK = dS^T Q``.
    """

    def __init__(self):
        super().__init__()
        self.q_matmul_k = BlasMatMul(transpose_b=True)
        self.attn_matmul_v = BlasMatMul()
        self.t_matmul = BlasMatMul(transpose_a=True)
        self.softmax = ops.Softmax(axis=-1)

    def _forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:  # on [B*heads, T, d]
        return self.attn_matmul_v(self.softmax(self.q_matmul_k(q, k)), v)

    def construct(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, h, t, d = q.shape
        return self._forward(q.reshape(b * h, t, d), k.reshape(b * h, t, d), v.reshape(b * h, t, d)).reshape(q.shape)

    def bprop(self, q: Tensor, k: Tensor, v: Tensor, out: Tensor, dout: Tensor):
        shape = q.shape
        b, h, t, d = shape
        q = ops.depend(q, dout).reshape(b * h, t, d)  # recompute the attention in the backward pass, not before
        k, v, dout = k.reshape(b * h, t, d), v.reshape(b * h, t, d), dout.reshape(b * h, t, d)
        attn = self.softmax(self.q_matmul_k(q, k))
        dv = self.t_matmul(attn, dout)
        dattn = self.q_matmul_k(dout, v)
        row = ops.BroadcastTo(dattn.shape)((dattn * attn).sum(axis=-1, keepdims=True))
        dscores = attn * (dattn - row)
        dq = self.attn_matmul_v(dscores, k)
        dk = self.t_matmul(dscores, q)
        return dq.reshape(shape), dk.reshape(shape), dv.reshape(shape)


class LeanAttention(nn.Cell):
    """``proj(softmax((x Wq)(x Wk)^T / sqrt(head_dim)) (x Wv))`` over ``num_heads`` heads.

    Args:
        qkv: Dense(C, 3C) whose output columns are q, k, v (each head-major), as in timm and mindcv.
        proj: Dense(C, C).
        num_heads: number of heads.
        proj_drop: dropout after ``proj`` (mindcv's ``Attention.proj_drop``); ``None``: none.

    Input x [B, T, C] -> output [B, T, C].

    On CPU (float32) the attention between the two projections is one compiled kernel with a compiled gradient
    (:mod:`mindcv_lseg.kernels.attention`); elsewhere (no kernel library, float16 under mixed precision)
    :class:`AttentionCore`.
    """

    def __init__(self, qkv: nn.Dense, proj: nn.Dense, num_heads: int, proj_drop: nn.Cell = None):
        super().__init__()
        self.qkv = qkv
        self.proj = proj
        self.proj_drop = proj_drop if proj_drop is not None else nn.Identity()
        self.num_heads = num_heads
        self.head_dim = qkv.in_channels // num_heads
        self.scale = self.head_dim**-0.5
        self.core = AttentionCore()
        self.fused = attention_kernel()
        self.use_fused = self.fused is not None  # switched off by ops_impl.without_compiled_kernels
        self.heads_marker = Tensor(np.zeros(num_heads, np.float32))  # the kernel reads the head count off its shape

    def _heads(self, x: Tensor, b: int, t: int) -> Tensor:
        return x.reshape(b, t, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)  # [B, heads, T, hd]

    def construct(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        if self.use_fused and x.dtype == ms.float32:
            return self.proj_drop(self.proj(self.fused(self.qkv(x), self.heads_marker)))
        q, k, v = ops.split(self.qkv(x), c, axis=-1)
        out = self.core(self._heads(q * self.scale, b, t), self._heads(k, b, t), self._heads(v, b, t))
        return self.proj_drop(self.proj(out.transpose(0, 2, 1, 3).reshape(b, t, c)))
