"""Multi-head self-attention as two MindSpore custom operators (``ops.Custom``, ``aot``, CPU): the forward and its
gradient.

The kernels are in ``lseg_attention.cc``, compiled into the ``_lseg_gemm`` library. The forward reads q, k and v
of every head in place from the qkv projection's output and writes the heads in place into the output projection's
input layout: the graph keeps no split, no head transposes and no [B, heads, T, T] scores (for ViT-L/16 at 384x384
the transposes, softmax and split took 0.28 s of 4.0 s). The gradient recomputes the attention of each head from
qkv and returns the gradient in qkv in the same layout, so a training graph keeps nothing but qkv per block and
has no [B, heads, T, T] tensors at all (before: the scores, the softmax and the softmax gradient's products,
reductions and broadcasts per block). On a CPU with AVX-512 or AVX2 + FMA both share the heads out between the
threads of the kernels' pool and compute the products with their own register-tiled loops (head sizes that are a
multiple of 16); elsewhere they call the OpenBLAS sgemm per head. :class:`~mindcv_lseg.models.attention.LeanAttention` uses them in training and
inference; without the library it uses :class:`~mindcv_lseg.models.attention.AttentionCore`.
"""

from typing import Optional

from mindspore import ops

from .gemm import library_op

__all__ = ["attention_kernel"]

_ZEROS_LIKE = ops.ZerosLike()  # a primitive: a custom backward function is compiled as a graph of its own
_GRAD = None  # the gradient primitive, set by attention_kernel(); _bprop looks it up at graph build time


def _out_shape(qkv, heads):
    return [qkv[0], qkv[1], qkv[2] // 3]


def _same_dtype(*inputs):
    return inputs[0]


def _grad_shape(qkv, heads, dout):
    return qkv


def _bprop(qkv, heads_marker, out, dout):
    """Gradient in qkv, by the kernel ``LsegAttentionGrad``: with P = softmax(s q k^T), dV = P^T dO, dP = dO V^T,
    dS = P (dP - rowsum(dP P)), dQ = s dS K, dK = s dS^T Q (the attention is recomputed, nothing but qkv kept)."""
    return _GRAD(qkv, heads_marker, dout), _ZEROS_LIKE(heads_marker)


def attention_kernel() -> Optional[ops.Custom]:
    """``attention(qkv [B, T, 3C], heads [H]) -> [B, T, C]`` (only the length of ``heads`` is read; float32), or
    None when the kernel library cannot be used (another device than CPU, or see ``gemm_backend().reason``)."""
    global _GRAD
    _GRAD = library_op("LsegAttentionGrad", _grad_shape, _same_dtype)
    return library_op("LsegAttention", _out_shape, _same_dtype, bprop=_bprop)
