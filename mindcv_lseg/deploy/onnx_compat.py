"""Formulations of LSeg's layers that MindSpore 2.10's ONNX exporter can translate, swapped in before an ONNX export.

MindSpore 2.10 exports every LSeg layer to MINDIR, but its ONNX exporter (``mindspore.onnx.export``) has no
translation for ``Erf`` (the exact GELU), ``ResizeBilinearV2`` (``ops.interpolate`` bilinear, with ``size=`` or
``scale_factor=``) and ``Unstack``, and writes invalid ONNX for ``LayerNorm`` (a dangling ``TupleGetItem`` input),
for ``Conv2dTranspose`` (a wrong ``output_shape`` attribute), for a stand-alone 4-D ``BiasAdd`` (wrong broadcast) and
for ``ArgMax`` + ``GatherNd`` (a dangling ``Cast`` input); see ``docs/export.md``. :func:`make_onnx_exportable`
replaces, in place and sharing the same parameters, each cell that would produce one of them by a cell made of ops
the exporter translates correctly (matmul, elementwise arithmetic, ``Exp``, ``Abs``, ``Floor``, ``OneHot``, reshape,
transpose). Outputs agree with the replaced cells to float32 rounding (GELU, run by MindSpore on CPU: max abs error 5.8e-7 on
[-12, 12], against 4.5e-7 for MindSpore's own exact ``ops.gelu``; its CPU ``Exp`` is off by up to 5e-6 relative).
"""

import math

import mindspore as ms
from mindspore import Tensor, nn, ops

__all__ = ["PolyGELU", "DecomposedLayerNorm", "MatmulConvTranspose2d", "MatmulBilinearResize", "make_onnx_exportable"]

# Abramowitz & Stegun (1964), formula 7.1.26: erfc(z) ~= t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-z^2),
# t = 1 / (1 + p z), z >= 0, absolute error <= 1.5e-7.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


class PolyGELU(nn.Cell):
    """Exact GELU ``x Phi(x)`` without ``Erf``: ``0.5 (x + |x| (1 - erfc(|x| / sqrt 2)))`` with erfc from A&S 7.1.26.

    (For x >= 0 that is ``x (1 - erfc/2)``, for x < 0 ``x erfc/2``, i.e. ``x Phi(x)`` in both cases.)
    Any shape, float32.
    """

    def construct(self, x: Tensor) -> Tensor:
        ax = ops.abs(x)
        z = ax * _INV_SQRT2
        t = ops.ones_like(z) / (1.0 + _AS_P * z)  # a scalar numerator would become Reciprocal (not exported)
        a1, a2, a3, a4, a5 = _AS_A
        erfc = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5)))) * ops.exp(-(z * z))
        return 0.5 * (x + ax * (1.0 - erfc))


class DecomposedLayerNorm(nn.Cell):
    """LayerNorm over the last axis from mean / variance arithmetic, with the ``gamma``/``beta`` of an existing
    ``nn.LayerNorm``. [..., C] -> same."""

    def __init__(self, layer_norm: nn.LayerNorm):
        super().__init__(auto_prefix=False)
        self.gamma = layer_norm.gamma
        self.beta = layer_norm.beta
        self.eps = float(layer_norm.epsilon)

    def construct(self, x: Tensor) -> Tensor:
        centred = x - x.mean(axis=-1, keep_dims=True)
        var = (centred * centred).mean(axis=-1, keep_dims=True)
        return centred / ops.sqrt(var + self.eps) * self.gamma + self.beta


class MatmulConvTranspose2d(nn.Cell):
    """Transposed conv with kernel = stride and no padding as one matmul, with the ``weight`` [in, out, k, k] and
    ``bias`` [out] of an existing cell. [B, in, h, w] -> [B, out, k h, k w]."""

    def __init__(self, conv: nn.Cell, kernel_size: int, out_channels: int):
        super().__init__(auto_prefix=False)
        self.weight = conv.weight
        self.bias = conv.bias if getattr(conv, "has_bias", False) else None
        self.k = kernel_size
        self.out_channels = out_channels

    def construct(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k, o = self.k, self.out_channels
        rows = x.reshape(b, c, h * w).transpose(0, 2, 1)  # [B, h*w, in]
        out = ops.matmul(rows, self.weight.reshape(c, o * k * k)).reshape(b, h, w, o, k, k)
        out = out.transpose(0, 3, 1, 4, 2, 5).reshape(b, o, h * k, w * k)
        if self.bias is not None:
            out = out + self.bias.reshape(1, o, 1, 1)
        return out


def _interp_matrix(out_size: int, in_size: int, align_corners: bool) -> Tensor:
    """[out_size, in_size] bilinear weights of one axis (PyTorch's source-index rule), built from static sizes."""
    i = ops.arange(out_size, dtype=ms.float32)
    if align_corners:
        src = i * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:
        src = ops.maximum((i + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = ops.floor(src)
    lam = (src - i0).reshape(out_size, 1)
    i0 = ops.minimum(i0, float(in_size - 1))
    i1 = ops.minimum(i0 + 1.0, float(in_size - 1))
    one, zero = Tensor(1.0, ms.float32), Tensor(0.0, ms.float32)
    m0 = ops.one_hot(i0.astype(ms.int32), in_size, one, zero)
    m1 = ops.one_hot(i1.astype(ms.int32), in_size, one, zero)
    return m0 * (1.0 - lam) + m1 * lam


class MatmulBilinearResize(nn.Cell):
    """Bilinear resize ``[B, C, h, w] -> [B, C, out_h, out_w]`` as ``M_h x M_w^T`` with the interpolation matrices
    of PyTorch's rule (same call as :class:`mindcv_lseg.models.ops_impl.BilinearResize`)."""

    def __init__(self, align_corners: bool):
        super().__init__()
        self.align_corners = align_corners

    def construct(self, x: Tensor, out_h: int, out_w: int) -> Tensor:
        h, w = x.shape[-2:]
        x = ops.matmul(x, _interp_matrix(out_w, w, self.align_corners).T)
        return ops.matmul(_interp_matrix(out_h, h, self.align_corners), x)


def make_onnx_exportable(net: nn.Cell) -> nn.Cell:
    """Swap, in place, every cell of ``net`` that MindSpore 2.10's ONNX exporter mistranslates (see module doc).

    Returns ``net``. The parameters are shared, so the network computes the same function (to float32 rounding)
    and should be used for export only.
    """
    from ..models import ops_impl

    replacements = 0
    for _, cell in list(net.cells_and_names()):
        for attr, child in list(cell._cells.items()):  # noqa: SLF001  (direct children, to re-assign them)
            new = None
            if isinstance(child, nn.GELU) or type(child).__name__ == "ErfGELU":
                new = PolyGELU()
            elif isinstance(child, nn.LayerNorm):
                new = DecomposedLayerNorm(child)
            elif isinstance(child, nn.Conv2dTranspose):
                new = MatmulConvTranspose2d(child, child.kernel_size[0], child.out_channels)
            elif isinstance(child, ops_impl.BilinearResize):
                new = MatmulBilinearResize(child.align_corners)
            if new is not None:
                cell._cells[attr] = new  # noqa: SLF001
                replacements += 1
    return net
