"""3x3 "same" convolutions by Winograd's F(4x4, 3x3) as MindSpore custom operators (``ops.Custom``, ``aot``, CPU).

The kernel is ``lseg_winograd.cc``, compiled into the same library as the BLAS products (:mod:`.gemm`) because its
36 products per image go through the same OpenBLAS sgemm. It does 4x fewer multiply-adds than the direct product,
with no tap matrix in memory. Two primitives:

- ``conv3x3(x, w)``: x [B, C, H, W], w [O, C, 3, 3] -> [B, O, H, W], stride 1, zero padding 1 (cross-correlation,
  as ``nn.Conv2d``);
- ``conv3x3_adjoint(dy, w)``: dy [B, O, H, W] -> dx [B, C, H, W], the gradient of ``conv3x3`` in x (the filters
  flipped in space and transposed inside the kernel: no ``ReverseV2``/``Transpose`` in the graph).

Neither has a backward of its own: the layers that use them (:class:`~mindcv_lseg.models.cpu_gemm.SameConvGEMM`)
write their backward pass from these two and a BLAS product for the weight gradient. Rounding: a few 1e-6 of the
output's size, ~6x a direct float32 product's (docs/cpu_kernels.md; the tests bound it against a float64
convolution and ``ops.Conv2D``).
"""

from typing import Optional, Tuple

from .gemm import library_op

__all__ = ["winograd_primitives"]


def _conv_shape(x, w):
    return [x[0], w[0], x[2], x[3]]


def _adjoint_shape(dy, w):
    return [dy[0], w[1], dy[2], dy[3]]


def _same_dtype(x, w):
    return x


def winograd_primitives() -> Optional[Tuple]:
    """``(conv3x3, conv3x3_adjoint)`` primitives, or None on another device than CPU or when the kernel library
    cannot be used (the reason is in ``gemm_backend().reason`` and was printed once)."""
    conv = library_op("LsegConv3x3", _conv_shape, _same_dtype)
    if conv is None:
        return None
    return conv, library_op("LsegConv3x3Adjoint", _adjoint_shape, _same_dtype)
