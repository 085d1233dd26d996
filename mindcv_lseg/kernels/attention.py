"""Multi-head self-attention for inference as one MindSpore custom operator (``ops.Custom``, ``aot``, CPU).

The kernel is ``lseg_attention.cc``, compiled into the ``_lseg_gemm`` library (its two products per head go through
the same OpenBLAS sgemm). It reads q, k and v of every head in place from the qkv projection's output and writes the
heads in place into the output projection's input layout: the graph keeps no split, no head transposes and no
[B, heads, T, T] scores (for ViT-L/16 at 384x384 the transposes, softmax and split took 0.28 s of 4.0 s). It has no
backward pass: :class:`~mindcv_lseg.models.attention.LeanAttention` uses it only in eval mode.
"""

from typing import Optional

import mindspore as ms
from mindspore import ops

from .gemm import gemm_backend

__all__ = ["attention_kernel"]

_PRIM = None


def _out_shape(qkv, heads):
    return [qkv[0], qkv[1], qkv[2] // 3]


def _same_dtype(qkv, heads):
    return qkv


def attention_kernel() -> Optional[ops.Custom]:
    """``attention(qkv [B, T, 3C], heads [H]) -> [B, T, C]`` (only the length of ``heads`` is read; float32), or
    None when the kernel library cannot be used (another device than CPU, or see ``gemm_backend().reason``)."""
    global _PRIM
    backend = gemm_backend()
    if ms.get_context("device_target") != "CPU" or not backend.ok:
        return None
    if _PRIM is None:
        _PRIM = ops.Custom(
            f"{backend.path}:LsegAttention", out_shape=_out_shape, out_dtype=_same_dtype, func_type="aot"
        )
    return _PRIM
