"""Multi-head self-attention for inference as one MindSpore custom operator (``ops.Custom``, ``aot``, CPU).

The kernel is ``lseg_attention.cc``, compiled into the ``_lseg_gemm`` library (its two products per head go through
the same OpenBLAS sgemm). It reads q, k and v of every head in place from the qkv projection's output and writes the
heads in place into the output projection's input layout: the graph keeps no split, no head transposes and no
[B, heads, T, T] scores (for ViT-L/16 at 384x384 the transposes, softmax and split took 0.28 s of 4.0 s).
:class:`~mindcv_lseg.models.attention.LeanAttention` uses it in eval mode; training uses its ``AttentionCore``
(memory-lean backward). The primitive still has a backward pass (:func:`_bprop`, the same recomputation from q, k
and v with the BLAS products) so that a network differentiated in eval mode works too.
"""

from typing import Optional

from mindspore import ops

from . import gemm
from .gemm import library_op

__all__ = ["attention_kernel"]

# primitives, not functional ops: a custom backward function is compiled as a graph of its own, where the functional
# forms' cached primitives fail ("The func graph is empty")
_SPLIT3 = ops.Split(axis=-1, output_num=3)
_SOFTMAX = ops.Softmax(axis=-1)
_CONCAT = ops.Concat(axis=-1)
_ZEROS_LIKE = ops.ZerosLike()


def _out_shape(qkv, heads):
    return [qkv[0], qkv[1], qkv[2] // 3]


def _same_dtype(qkv, heads):
    return qkv


def _to_heads(x, b, t, heads, d):
    return x.reshape(b, t, heads, d).transpose(0, 2, 1, 3).reshape(b * heads, t, d)


def _from_heads(x, b, t, heads, d):
    return x.reshape(b, heads, t, d).transpose(0, 2, 1, 3).reshape(b, t, heads * d)


def _bprop(qkv, heads_marker, out, dout):
    """Gradient in qkv: with P = softmax(s q k^T), dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(dP P)),
    dQ = s dS K, dK = dS^T (s Q)."""
    b, t, c3 = qkv.shape
    heads = heads_marker.shape[0]
    c = c3 // 3
    d = c // heads
    scale = d**-0.5
    q, k, v = _SPLIT3(qkv)
    q = _to_heads(q * scale, b, t, heads, d)
    k, v = _to_heads(k, b, t, heads, d), _to_heads(v, b, t, heads, d)
    grad = _to_heads(dout, b, t, heads, d)
    attn = _SOFTMAX(gemm.GEMM_NT(q, k))
    dv = gemm.GEMM_TN(attn, grad)
    dattn = gemm.GEMM_NT(grad, v)
    dscores = attn * (dattn - ops.BroadcastTo(dattn.shape)((dattn * attn).sum(axis=-1, keepdims=True)))
    dq = gemm.GEMM_NN(dscores, k) * scale
    dk = gemm.GEMM_TN(dscores, q)
    dqkv = _CONCAT((_from_heads(dq, b, t, heads, d), _from_heads(dk, b, t, heads, d), _from_heads(dv, b, t, heads, d)))
    return dqkv, _ZEROS_LIKE(heads_marker)


def attention_kernel() -> Optional[ops.Custom]:
    """``attention(qkv [B, T, 3C], heads [H]) -> [B, T, C]`` (only the length of ``heads`` is read; float32), or
    None when the kernel library cannot be used (another device than CPU, or see ``gemm_backend().reason``)."""
    return library_op("LsegAttention", _out_shape, _same_dtype, bprop=_bprop)
