"""LSeg's logits: scaled cosine similarity of every pixel embedding with every label embedding.

The cell also owns the L2 normalisation (``normalize``), which ``LSeg.forward_features`` uses too.

:class:`CosineLogits` is differentiated automatically. :class:`LeanCosineLogits` (``impl="lean"``) has a
hand-written backward pass that keeps only its inputs: autodiff of the two L2 normalisations keeps about five
[B, C, H/2, W/2] tensors until the backward pass (118 MB each at 480x480 with C = 512), ~1 GB of a training step.
"""

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..kernels.gemm import BlasMatMul
from ..kernels.pixel import norm_kernels

__all__ = ["l2_normalize", "CosineLogits", "LeanCosineLogits"]


def l2_normalize(x: Tensor, axis: int) -> Tensor:
    """``x / ||x||`` along ``axis`` without epsilon, as the reference.

    Computed as ``x * (1 / ||x||)``: on CPU in GRAPH mode a broadcasting ``RealDiv`` holds about four times its
    output until the graph ends (0.6 GB in a ViT-B/32 training step at 480x480), a multiplication does not; the
    division left is that of the reduced norm (one value per pixel; MindSpore turns it into a ``Reciprocal``, which
    its ONNX exporter does not know, hence :meth:`CosineLogits.normalize` for ``impl="native"``). The two forms
    differ by float32 rounding only.
    """
    return x * _inv_norm(x, axis)


def _inv_norm(x: Tensor, axis: int) -> Tensor:
    """``1 / ||x||`` along ``axis`` (kept as a size-1 axis)."""
    return 1.0 / ops.sqrt((x * x).sum(axis=axis, keepdims=True))


class CosineLogits(nn.Cell):
    """``scale * <text_n / |text_n|, pixel / |pixel|>`` for every label n and pixel.

    Args:
        scale: the fixed logit scale (1/0.07).
        blas: compute the products through OpenBLAS where possible (:class:`~mindcv_lseg.kernels.gemm.BlasMatMul`;
            the lean implementation); False: MindSpore's BatchMatMul.

    Inputs: pixels [B, C, h, w] (raw pixel embeddings), text [B, N, C] (raw label embeddings per sample).
    Output: logits [B, N, h, w].
    """

    def __init__(self, scale: float, blas: bool = False):
        super().__init__()
        self.scale = scale
        self.text_matmul_pixels = BlasMatMul(blas=blas)

    def normalize(self, x: Tensor, axis: int) -> Tensor:
        """``x / ||x||`` along ``axis``, the reference's form (a plain division: exports to ONNX)."""
        return x / ops.sqrt((x * x).sum(axis=axis, keepdims=True))

    def construct(self, pixels: Tensor, text: Tensor) -> Tensor:
        b, c, h, w = pixels.shape
        image = self.normalize(pixels, 1)
        logits = self.text_matmul_pixels(self.normalize(text, -1), (self.scale * image).reshape(b, c, h * w))
        return logits.reshape(b, -1, h, w)


class LeanCosineLogits(CosineLogits):
    """:class:`CosineLogits` computed as ``scale * (text_n @ pixels) / ||pixels||`` (the pixel norm applied to the
    [N, h*w] product rather than to the [C, h*w] embeddings: N labels against C = 512 channels), with a hand-written
    backward pass that keeps only the inputs.

    With ``R = text_n @ X`` (text_n the unit label embeddings), ``inv = 1 / ||X||`` per pixel and ``G = dL/dlogits``:
    ``dR = scale * inv * G``, ``dX = text_n^T dR + X * k`` with ``k = -inv^3 * scale * sum_n(G * R)``, and for the
    text ``g = dR X^T``, ``dtext = (g - text_n <text_n, g>) / ||text||``. On CPU the per-pixel norm and ``X * k`` are
    compiled kernels (:func:`mindcv_lseg.kernels.pixel.norm_kernels`).
    """

    def __init__(self, scale: float):
        super().__init__(scale, blas=True)
        self.text_t_matmul = BlasMatMul(transpose_a=True)
        self.matmul_t = BlasMatMul(transpose_b=True)
        self.sum_labels = BlasMatMul()  # ones [1, N] @ [B, N, P]
        kernels = norm_kernels()
        self.use_kernels = kernels is not None  # switched off by ops_impl.without_compiled_kernels
        self.inv_norm_kernel, self.add_scaled_kernel = kernels if kernels is not None else (None, None)

    def normalize(self, x: Tensor, axis: int) -> Tensor:
        """:func:`l2_normalize` (no division of the full tensor; MindSpore's ONNX exporter lacks its Reciprocal)."""
        return l2_normalize(x, axis)

    def pixel_inv_norm(self, flat: Tensor) -> Tensor:
        """``1 / ||x||`` over the channels of flat [B, C, P] -> [B, 1, P]."""
        if self.use_kernels and flat.dtype == ms.float32:
            return self.inv_norm_kernel(flat)
        return _inv_norm(flat, 1)

    def construct(self, pixels: Tensor, text: Tensor) -> Tensor:
        b, c, h, w = pixels.shape
        flat = pixels.reshape(b, c, h * w)
        raw = self.text_matmul_pixels(self.normalize(text, -1), flat)  # [B, N, h*w]
        # broadcast explicitly (see the attention's backward)
        logits = raw * ops.BroadcastTo(raw.shape)(self.pixel_inv_norm(flat) * self.scale)
        return logits.reshape(b, -1, h, w)

    def bprop(self, pixels: Tensor, text: Tensor, out: Tensor, dout: Tensor):
        b, c, h, w = pixels.shape
        flat = ops.depend(pixels, dout).reshape(b, c, h * w)  # recompute in the backward pass, not before
        grad = dout.reshape(b, -1, h * w)  # [B, N, P]
        text_inv_norm = _inv_norm(text, -1)  # [B, N, 1]
        text_unit = text * text_inv_norm
        raw = self.text_matmul_pixels(text_unit, flat)  # [B, N, P]
        inv = self.pixel_inv_norm(flat)  # [B, 1, P]
        d_raw = grad * ops.BroadcastTo(grad.shape)(inv * self.scale)
        ones = ops.ones((1, grad.shape[1]), grad.dtype)
        k = -(inv * inv) * self.sum_labels(ones, d_raw * raw)  # [B, 1, P]
        d_flat = self.text_t_matmul(text_unit, d_raw)  # [B, C, P]
        if self.use_kernels and flat.dtype == ms.float32:
            dpixels = self.add_scaled_kernel(d_flat, flat, k)
        else:
            dpixels = d_flat + flat * ops.BroadcastTo(flat.shape)(k)
        g_text = self.matmul_t(d_raw, flat)  # [B, N, C]
        dtext = (g_text - text_unit * (text_unit * g_text).sum(axis=-1, keepdims=True)) * text_inv_norm
        return dpixels.reshape(b, c, h, w), dtext
