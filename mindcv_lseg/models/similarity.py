"""LSeg's logits: scaled cosine similarity of every pixel embedding with every label embedding.

The cell also owns the L2 normalisation (``normalize``), which ``LSeg.forward_features`` uses too.

:class:`CosineLogits` is differentiated automatically. :class:`LeanCosineLogits` (``impl="lean"``) has a
hand-written backward pass that keeps only its inputs: autodiff of the two L2 normalisations keeps about five
[B, C, H/2, W/2] tensors until the backward pass (118 MB each at 480x480 with C = 512), ~1 GB of a training step.
"""

from mindspore import Tensor, nn, ops

from ..kernels.gemm import BlasMatMul

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
    """:class:`CosineLogits` with a hand-written backward pass (recomputes the normalisations from the inputs).

    With ``u = p / |p|``, ``g = dL/du``: ``dL/dp = (g - u <u, g>) / |p|`` (likewise for the text), where
    ``g_pixels = scale * text_n^T dlogits`` and ``g_text = scale * dlogits u^T``.
    """

    def __init__(self, scale: float):
        super().__init__(scale, blas=True)
        self.text_t_matmul = BlasMatMul(transpose_a=True)
        self.matmul_t = BlasMatMul(transpose_b=True)

    def normalize(self, x: Tensor, axis: int) -> Tensor:
        """:func:`l2_normalize` (no division of the full tensor; MindSpore's ONNX exporter lacks its Reciprocal)."""
        return l2_normalize(x, axis)

    def bprop(self, pixels: Tensor, text: Tensor, out: Tensor, dout: Tensor):
        b, c, h, w = pixels.shape
        flat = ops.depend(pixels, dout).reshape(b, c, h * w)  # recompute in the backward pass, not before
        dflat = dout.reshape(b, -1, h * w)  # [B, N, h*w]
        full = ops.BroadcastTo(flat.shape)  # broadcast explicitly (see the attention's backward)
        inv_norm = full(_inv_norm(flat, 1))  # [B, C, h*w]
        unit = flat * inv_norm
        text_inv_norm = _inv_norm(text, -1)  # [B, N, 1]
        text_unit = text * text_inv_norm
        g = self.text_t_matmul(text_unit, dflat) * self.scale  # [B, C, h*w]
        dpixels = (g - unit * full((unit * g).sum(axis=1, keepdims=True))) * inv_norm
        g_text = self.matmul_t(dflat, unit) * self.scale  # [B, N, C]
        dtext = (g_text - text_unit * (text_unit * g_text).sum(axis=-1, keepdims=True)) * text_inv_norm
        return dpixels.reshape(b, c, h, w), dtext
