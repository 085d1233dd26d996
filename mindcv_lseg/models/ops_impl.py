"""The one place where LSeg's two implementations of its layers differ: ``impl="native"`` and ``impl="lean"``.

``native``: MindSpore's and mindcv's own cells and ops with automatic differentiation everywhere -- ``nn.Conv2d``
(``pad_mode="pad"``, PyTorch layout), ``nn.Conv2dTranspose``, mindcv's ViT ``Attention`` and ``Mlp`` with the exact
GELU (``nn.GELU(approximate=False)``), ``ops.dense``, ``ops.cross_entropy``. The fast path on Ascend and GPU, and
what exports to MINDIR/ONNX.

``lean``: the CPU workarounds. MindSpore 2.10's CPU kxk convolution runs at ~0.1 GFLOP/s (a 3x3 256->256 conv on
96x96 takes ~55 s, its GEMM form well under a second), and automatic differentiation in GRAPH mode on CPU keeps many
activation-sized intermediates until the backward pass. The lean cells compute the same values as GEMMs
(:mod:`.cpu_gemm`) and with hand-written backward passes (:mod:`.attention`, :mod:`.activations`,
:mod:`.normalization`, the loss).

``auto`` resolves to ``lean`` on CPU and to ``native`` on Ascend/GPU (:func:`resolve_impl`).

Both implementations create the same parameters (names, shapes, layouts), so every checkpoint loads into both.
Every model file builds the layers that differ through the factories below; removing a workaround is a change here.
"""

from functools import partial
from typing import Optional

import mindspore as ms
from mindcv.models.vit import Attention
from mindspore import Tensor, nn, ops

from ..kernels.gemm import BlasLinear, BlasMatMul
from ..kernels.resize import KernelBilinearResize, resize_kernels
from .activations import ErfGELU
from .attention import LeanAttention
from .cpu_gemm import (
    CpuGemmConv2d,
    CpuGemmConvTranspose2d,
    CpuGemmDense,
    CpuSubsampledConv1x1,
    SameConvGEMM,
    cpu_gemm_patchify,
)
from .cpu_gemm import linear as gemm_linear
from .normalization import LeanLayerNorm

__all__ = [
    "IMPLS",
    "resolve_impl",
    "current_impl",
    "conv2d",
    "conv_transpose2d",
    "adapt_conv",
    "dense",
    "matmul",
    "without_compiled_kernels",
    "adapt_dense",
    "adapt_vit_block",
    "gelu_layer",
    "layer_norm_layer",
    "vit_attention",
    "PatchEmbedding",
    "Linear",
    "seg_cross_entropy",
    "NativeAttention",
    "BilinearResize",
]

IMPLS = ("auto", "native", "lean")
_DEVICES = ("CPU", "GPU", "Ascend")


def resolve_impl(impl: str, device_target: str) -> str:
    """``"native"`` or ``"lean"`` for an ``impl`` choice on a device target.

    Args:
        impl: ``"auto"``, ``"native"`` or ``"lean"``.
        device_target: ``"CPU"``, ``"GPU"`` or ``"Ascend"`` (as ``mindspore.get_context("device_target")``).

    Returns:
        ``impl`` itself unless it is ``"auto"``; for ``"auto"``: ``"lean"`` on CPU, ``"native"`` on GPU/Ascend.

    Raises:
        ValueError: unknown ``impl`` or (for ``"auto"``) unknown device target.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(repr(i) for i in IMPLS)}, got {impl!r}")
    if impl != "auto":
        return impl
    if device_target not in _DEVICES:
        raise ValueError(
            f"impl='auto' needs a device target in {_DEVICES}, got {device_target!r}; "
            f"pass impl='native' or impl='lean' explicitly"
        )
    return "lean" if device_target == "CPU" else "native"


def current_impl(impl: str) -> str:
    """:func:`resolve_impl` for the device target of the current MindSpore context."""
    if impl in ("native", "lean"):
        return impl
    return resolve_impl(impl, ms.get_context("device_target"))


def _check(impl: str) -> None:
    if impl not in ("native", "lean"):
        raise ValueError(f"a resolved impl ('native' or 'lean') is needed here, got {impl!r} (see resolve_impl)")


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    has_bias: bool = False,
    *,
    impl: str,
) -> nn.Cell:
    """Zero-padded 2-D convolution as PyTorch's ``nn.Conv2d(in, out, k, stride, padding, bias=has_bias)``.

    Parameters ``weight`` [out, in, k, k] and ``bias`` [out] in both implementations. lean: :class:`CpuGemmConv2d`
    ("same" padding only); native: ``nn.Conv2d(pad_mode="pad")``. Input [B, in, H, W] -> [B, out, H/s, W/s].
    """
    _check(impl)
    if impl == "lean":
        return CpuGemmConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, has_bias=has_bias)
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad", padding=padding, has_bias=has_bias
    )


def adapt_conv(conv: nn.Conv2d, impl: str) -> nn.Cell:
    """An existing mindcv ``nn.Conv2d`` (e.g. inside mindcv's ResNet) for ``impl``, with its weights kept.

    native: ``conv`` itself. lean: a kxk conv with "same" padding (or a stride-1 1x1 conv) becomes
    :class:`CpuGemmConv2d` (GEMMs through OpenBLAS), a strided 1x1 conv :class:`CpuSubsampledConv1x1`. Same
    ``weight`` [out, in, k, k] (and ``bias``) either way.
    """
    _check(impl)
    k, stride = conv.kernel_size[0], conv.stride[0]
    if impl == "native":
        return conv
    if k == 1 and stride > 1:
        lean = CpuSubsampledConv1x1(conv.in_channels, conv.out_channels, stride)
    else:
        lean = CpuGemmConv2d(
            conv.in_channels, conv.out_channels, k, stride=stride, padding=(k - 1) // 2, has_bias=conv.has_bias
        )
        if conv.has_bias:
            lean.bias.set_data(conv.bias.data)
    lean.weight.set_data(conv.weight.data)  # keep the initialisation (matters only when training from scratch)
    return lean


def matmul(transpose_a: bool = False, transpose_b: bool = False, *, impl: str) -> BlasMatMul:
    """``op(a) @ op(b)`` for 2-D or 3-D operands, a 2-D operand shared by the other's batch.

    lean: through OpenBLAS where possible; native: MindSpore's MatMul / BatchMatMul (see :class:`BlasMatMul`).
    """
    _check(impl)
    return BlasMatMul(transpose_a, transpose_b, blas=impl == "lean")


def without_compiled_kernels(net: nn.Cell) -> nn.Cell:
    """Make a built network use MindSpore's own ops instead of the package's compiled CPU kernels, in place (read
    when a graph compiles): for exported graphs, which must not depend on a local library (a MINDIR holding the
    kernels' ``Custom`` ops does not load), and for mixed precision (the kernels are float32-only). Returns ``net``."""
    from .similarity import LeanCosineLogits

    for _, cell in net.cells_and_names():
        if isinstance(cell, BlasMatMul):
            cell.use_blas = False
        elif isinstance(cell, (ErfGELU, LeanLayerNorm)):
            cell.use_kernels = False
        elif isinstance(cell, SameConvGEMM):
            cell.use_winograd = False
        elif isinstance(cell, LeanCosineLogits):
            cell.use_kernels = False
        elif isinstance(cell, LeanAttention):
            cell.use_fused = False
        elif isinstance(cell, BilinearResize):
            cell.use_kernels = False
    return net


def dense(in_channels: int, out_channels: int, has_bias: bool = True, *, impl: str) -> nn.Cell:
    """A fully connected layer (no activation): parameters ``weight`` [out, in] and ``bias`` [out] in both.

    lean: :class:`CpuGemmDense` (one 2-D GEMM through OpenBLAS); native: ``nn.Dense``. Input [..., in] -> [..., out].
    """
    _check(impl)
    if impl == "lean":
        return CpuGemmDense(in_channels, out_channels, has_bias=has_bias)
    return nn.Dense(in_channels, out_channels, has_bias=has_bias)


def adapt_dense(layer: nn.Dense, impl: str) -> nn.Cell:
    """An existing ``nn.Dense`` without activation (e.g. inside mindcv's ViT) for ``impl``, with its weights kept.

    native: ``layer`` itself; lean: a :class:`CpuGemmDense` holding the same values.
    """
    _check(impl)
    if impl == "native":
        return layer
    if layer.activation_flag:
        raise ValueError("adapt_dense: a Dense with an activation is not supported")
    lean = CpuGemmDense(layer.in_channels, layer.out_channels, has_bias=layer.has_bias)
    lean.weight.set_data(layer.weight.data)
    if layer.has_bias:
        lean.bias.set_data(layer.bias.data)
    return lean


def adapt_vit_block(block: nn.Cell, num_heads: int, impl: str, proj_drop: Optional[nn.Cell] = None) -> None:
    """Give a mindcv ViT ``Block`` the layers of ``impl`` in place: its attention (:func:`vit_attention`) and, for
    lean, the four ``nn.Dense`` of attention and MLP as :class:`CpuGemmDense`. Parameters keep names and values."""
    attn = block.attn
    attn.qkv = adapt_dense(attn.qkv, impl)
    attn.proj = adapt_dense(attn.proj, impl)
    block.attn = vit_attention(attn, num_heads, impl, proj_drop)
    block.mlp.fc1 = adapt_dense(block.mlp.fc1, impl)
    block.mlp.fc2 = adapt_dense(block.mlp.fc2, impl)


def conv_transpose2d(
    in_channels: int, out_channels: int, kernel_size: int, has_bias: bool = True, *, impl: str
) -> nn.Cell:
    """Transposed convolution with kernel = stride and no padding: [B, in, h, w] -> [B, out, k*h, k*w].

    Parameters ``weight`` [in, out, k, k] and ``bias`` [out]. lean: :class:`CpuGemmConvTranspose2d` (a matmul);
    native: ``nn.Conv2dTranspose(pad_mode="valid")``.
    """
    _check(impl)
    if impl == "lean":
        return CpuGemmConvTranspose2d(in_channels, out_channels, kernel_size, has_bias=has_bias)
    return nn.Conv2dTranspose(
        in_channels, out_channels, kernel_size, stride=kernel_size, pad_mode="valid", has_bias=has_bias
    )


def gelu_layer(impl: str):
    """The exact (erf) GELU as a cell class (mindcv's ``act_layer``). lean: :class:`ErfGELU` (hand-written
    backward); native: ``nn.GELU(approximate=False)``."""
    _check(impl)
    return ErfGELU if impl == "lean" else partial(nn.GELU, approximate=False)


def layer_norm_layer(impl: str, epsilon: float):
    """LayerNorm over the last axis as a cell class taking ``normalized_shape`` (mindcv's ``norm_layer``), with
    ``epsilon``. lean: :class:`LeanLayerNorm` (compiled forward and backward on CPU); native: ``nn.LayerNorm``.
    Both hold ``gamma`` and ``beta`` [C]."""
    _check(impl)
    return partial(LeanLayerNorm if impl == "lean" else nn.LayerNorm, epsilon=epsilon)


class NativeAttention(Attention):
    """mindcv's ViT ``Attention`` whose ``construct`` splits q, k, v by slicing instead of ``Unstack``.

    Same cells and parameters (``qkv``, ``proj``, identity ``q_norm``/``k_norm``, dropouts) and the same arithmetic
    as mindcv's (scores scaled after ``q k^T``, softmax in float32, autodiff); MindSpore 2.10's ONNX exporter has no
    ``Unstack``, so the original cannot be exported. Input x [B, T, C] -> [B, T, C].

    Args:
        qkv: Dense(C, 3C) of an existing mindcv ``Attention`` (kept, with its weights).
        proj: Dense(C, C) of it.
        num_heads: number of heads.
    """

    def __init__(self, qkv: nn.Dense, proj: nn.Dense, num_heads: int):
        super().__init__(qkv.in_channels, num_heads, qkv_bias=qkv.has_bias)
        self.qkv = qkv
        self.proj = proj

    def _heads(self, x: Tensor, b: int, n: int) -> Tensor:
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)  # [B, heads, T, hd]

    def construct(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x)
        q = self.q_norm(self._heads(qkv[:, :, :c], b, n))
        k = self.k_norm(self._heads(qkv[:, :, c : 2 * c], b, n))
        v = self._heads(qkv[:, :, 2 * c :], b, n)
        attn = self.mul(self.q_matmul_k(q, k), self.scale)
        attn = ops.softmax(attn.astype(ms.float32), axis=-1).astype(v.dtype)
        attn = self.attn_drop(attn)
        out = self.attn_matmul_v(attn, v).transpose(0, 2, 1, 3).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


def vit_attention(attn: Attention, num_heads: int, impl: str, proj_drop: Optional[nn.Cell] = None) -> nn.Cell:
    """Replacement for a mindcv ViT block's ``attn``, reusing its ``qkv``/``proj`` cells (same parameters).

    lean: :class:`LeanAttention` (hand-written attention backward); native: :class:`NativeAttention`.
    ``proj_drop``: dropout after ``proj`` (mindcv's ``Attention.proj_drop``), ``None`` for none.
    """
    _check(impl)
    if impl == "lean":
        return LeanAttention(attn.qkv, attn.proj, num_heads, proj_drop=proj_drop)
    native = NativeAttention(attn.qkv, attn.proj, num_heads)
    if proj_drop is not None:
        native.proj_drop = proj_drop
    return native


class PatchEmbedding(nn.Cell):
    """ViT patch embedding: the conv with kernel = stride = p and no padding of mindcv's ``patch_embed.proj``.

    The parameters stay in mindcv's ``patch_embed.proj`` and are passed in. lean: space-to-depth + one matmul
    (:func:`cpu_gemm_patchify`); native: ``ops.conv2d``.
    Inputs: x [B, C, H, W] (H, W multiples of p), weight [D, C, p, p], bias [D].
    Output: tokens [B, (H/p)*(W/p), D] in row-major grid order.
    """

    def __init__(self, patch_size: int, impl: str):
        super().__init__()
        _check(impl)
        self.lean = impl == "lean"
        self.patch_size = patch_size
        self.matmul = BlasLinear() if self.lean else None

    def construct(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        if self.lean:
            return cpu_gemm_patchify(x, weight, bias, self.matmul)
        out = ops.conv2d(x, weight, bias, stride=self.patch_size)
        b, d, gh, gw = out.shape
        return out.reshape(b, d, gh * gw).transpose(0, 2, 1)


class Linear(nn.Cell):
    """``x W^T + b`` over the last axis, for weights held as parameters elsewhere (CLIP's ``in_proj_weight``).

    Inputs: x [..., in], weight [out, in] (PyTorch layout), bias [out]. Output [..., out].
    lean: leading axes flattened into one 2-D GEMM + ``bias_add`` (GRAPH mode on CPU otherwise broadcasts the
    weight over the batch, see :func:`~.cpu_gemm.linear`); native: ``ops.dense``.
    """

    def __init__(self, impl: str):
        super().__init__()
        _check(impl)
        self.lean = impl == "lean"
        self.matmul = BlasLinear() if self.lean else None

    def construct(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        if self.lean:
            return gemm_linear(x, weight, bias, self.matmul)
        return ops.dense(x, weight, bias)


def seg_cross_entropy(ignore_index: int, impl: str) -> nn.Cell:
    """The training loss (mean pixel cross-entropy with ``ignore_index``). lean: hand-written backward
    (:class:`~mindcv_lseg.engine.loss.LeanSegCrossEntropy`); native: autodiff of ``ops.cross_entropy``."""
    from ..engine.loss import LeanSegCrossEntropy, SegCrossEntropy

    _check(impl)
    return LeanSegCrossEntropy(ignore_index) if impl == "lean" else SegCrossEntropy(ignore_index)


class BilinearResize(nn.Cell):
    """Bilinear resize ``[B, C, h, w] -> [B, C, out_h, out_w]`` (PyTorch's ``F.interpolate(mode="bilinear")``).

    native: ``ops.interpolate``. lean: for float32 on CPU the compiled kernel with its hand-written backward
    (:mod:`mindcv_lseg.kernels.resize`; MindSpore's ``ResizeBilinearGrad`` is slow on CPU), else ``ops.interpolate``
    as well. A cell rather than a function so that an exporter can swap in a formulation its format supports
    (MindSpore 2.10's ONNX exporter has no ``ResizeBilinearV2``, see :mod:`mindcv_lseg.deploy.onnx_compat`).

    Args:
        align_corners: PyTorch's ``align_corners`` (True: the decoder's and the head's x2 upsampling; False:
            half-pixel centres, the ViT position-embedding resize).
        impl: ``"native"`` or ``"lean"``.
    """

    def __init__(self, align_corners: bool, impl: str):
        super().__init__()
        _check(impl)
        self.align_corners = align_corners
        kernels = resize_kernels(align_corners) if impl == "lean" else None
        self.use_kernels = kernels is not None  # switched off by without_compiled_kernels
        self.kernel = KernelBilinearResize(kernels) if kernels is not None else None

    def construct(self, x: Tensor, out_h: int, out_w: int) -> Tensor:
        if self.use_kernels and x.dtype == ms.float32:
            # the kernel reads the output size off the markers' lengths
            return self.kernel(x, ops.zeros((out_h,), ms.float32), ops.zeros((out_w,), ms.float32))
        return ops.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=self.align_corners)


def cosine_logits(scale: float, impl: str) -> nn.Cell:
    """LSeg's logits (scaled cosine similarity of pixels and labels). lean: hand-written backward
    (:class:`~mindcv_lseg.models.similarity.LeanCosineLogits`); native: autodiff."""
    from .similarity import CosineLogits, LeanCosineLogits

    _check(impl)
    return LeanCosineLogits(scale) if impl == "lean" else CosineLogits(scale)
