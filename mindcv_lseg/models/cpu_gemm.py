"""CPU-lean layers: convolutions computed as matrix products (GEMMs). Fast on CPU only.

On CPU, MindSpore 2.10's Conv2d / Conv2dTranspose kernels run at ~0.2 GFLOP/s for any kernel larger than 1x1
(measured here: a 3x3 256->256 conv on 96x96 takes ~60 s), while MatMul runs at tens of GFLOP/s. These cells
keep PyTorch's parameter layout (``weight`` [out, in, kh, kw] for convs, [in, out, k, k] for the transposed conv)
so checkpoints map one to one, and compute the same sums through 1x1 convolutions (GEMMs) and ``matmul``.
See ``benchmarks/forward.py`` for the effect. On Ascend/GPU the native cells are the fast path: these are only
built with ``impl="lean"`` (see :mod:`mindcv_lseg.models.ops_impl`).
"""

import math
from typing import Union

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import HeUniform, Uniform, initializer

from ..kernels.gemm import BlasLinear, BlasMatMul
from ..kernels.winograd import winograd_primitives

__all__ = [
    "linear",
    "conv1x1",
    "CpuGemmDense",
    "SameConvGEMM",
    "StridedConvGEMM",
    "CpuGemmConv2d",
    "CpuGemmConvTranspose2d",
    "CpuSubsampledConv1x1",
    "cpu_gemm_patchify",
]


def linear(x: Tensor, weight: Tensor, bias: Tensor, matmul: Union[BlasMatMul, BlasLinear]) -> Tensor:
    """``x @ op(weight) (+ bias)`` over the last axis: x [..., in] -> [..., out].

    ``matmul`` is the caller's :class:`~mindcv_lseg.kernels.gemm.BlasLinear` (weight [out, in], the
    PyTorch/``nn.Dense`` layout, and a ``bias`` [out]) or :class:`~mindcv_lseg.kernels.gemm.BlasMatMul` (with
    ``transpose_b=True`` the weight is [out, in], otherwise [in, out]; ``bias`` [out] or None).

    The leading axes are flattened into one GEMM. In GRAPH mode ``ops.matmul`` of an N-D tensor with a 2-D weight
    broadcasts the weight to every batch entry first (150 labels x CLIP's [512, 1536] qkv weight = 470 MB per
    layer, kept by the memory pool), so batched inputs must never reach it.

    A ``BlasLinear`` takes the bias into the GEMM kernel with the product; otherwise it is added with
    ``ops.bias_add``: on CPU in GRAPH mode an implicitly broadcasting binary op ``out + bias`` holds ~3.7x its
    output for the whole graph, while BiasAdd does not.
    """
    lead = x.shape[:-1]
    rows = x.reshape(-1, x.shape[-1])
    weight = weight.astype(x.dtype)  # float16 input under mixed precision
    if bias is None:
        out = matmul(rows, weight)
    elif isinstance(matmul, BlasLinear):
        out = matmul(rows, weight, bias.astype(x.dtype))
    else:
        out = ops.bias_add(matmul(rows, weight), bias.astype(x.dtype))
    return out.reshape(lead + (out.shape[-1],))


class CpuGemmDense(nn.Cell):
    """``nn.Dense`` (no activation) as one 2-D GEMM through OpenBLAS (:class:`~mindcv_lseg.kernels.gemm.BlasMatMul`).

    Same parameters as ``nn.Dense``: ``weight`` [out, in], ``bias`` [out]. Input [..., in] -> output [..., out].
    """

    def __init__(self, in_channels: int, out_channels: int, has_bias: bool = True):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.has_bias = has_bias
        self.weight = Parameter(initializer(HeUniform(math.sqrt(5)), (out_channels, in_channels), ms.float32), "weight")
        self.bias = _init_bias(in_channels, out_channels) if has_bias else None
        self.matmul = BlasLinear() if has_bias else BlasMatMul(transpose_b=True)

    def construct(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, self.matmul)


def conv1x1(x: Tensor, weight: Tensor, matmul: BlasMatMul) -> Tensor:
    """A 1x1 convolution without bias as one GEMM per image: x [B, C, H, W], weight [O, C, ...] -> [B, O, H, W].

    ``matmul`` is a :class:`~mindcv_lseg.kernels.gemm.BlasMatMul` without transposes.
    """
    b, c, h, w = x.shape
    o = weight.shape[0]
    return matmul(weight.reshape(o, c).astype(x.dtype), x.reshape(b, c, h * w)).reshape(b, o, h, w)


def subsample(x: Tensor, stride: int) -> Tensor:
    """Every ``stride``-th pixel of x [B, C, H, W] (H, W multiples of ``stride``) -> [B, C, H/s, W/s].

    Picked with reshape + split: MindSpore 2.10's gradient of a strided 4-D slice fails on CPU (out-of-bounds error,
    or a hang in GRAPH mode).
    """
    b, c, h, w = x.shape
    s = stride
    x = x.reshape(b, c, h // s, s, w // s, s)
    x = ops.Split(axis=3, output_num=s)(x)[0]  # primitives, not ops.split: usable in a hand-written bprop too
    x = ops.Split(axis=5, output_num=s)(x)[0]
    return x.reshape(b, c, h // s, w // s)


def _init_bias(fan_in: int, channels: int) -> Parameter:
    bound = 1 / math.sqrt(fan_in)
    return Parameter(initializer(Uniform(bound), (channels,), ms.float32), name="bias")


def _im2row(x: Tensor, kernel_size: int) -> Tensor:
    """The k*k taps of a zero-padded "same" window, concatenated tap-major along channels.

    x [B, C, H, W] -> [B, k*k*C, H, W + 2p] with p = (k-1)/2: the image is laid out as rows of width W + 2p whose
    zero tail doubles as the next row's left padding, so every tap is a contiguous shift of the flat array; the
    last 2p columns of each output row are junk (they straddle two image rows) and are cut off by the caller.
    """
    b, c, h, w = x.shape
    k = kernel_size
    p = (k - 1) // 2
    row = w + 2 * p
    flat = ops.concat((x, ops.zeros((b, c, h, 2 * p), x.dtype)), axis=3).reshape(b, c, h * row)
    margin = ops.zeros((b, c, p * row + p), x.dtype)
    flat = ops.concat((margin, flat, margin), axis=2)  # padded image, row-major, plus p spare zeros
    length = h * row
    taps = []
    for dy in range(k):
        for dx in range(k):
            start = dy * row + dx
            taps.append(flat[:, :, start : start + length])
    return ops.concat(taps, axis=1).reshape(b, k * k * c, h, row)


def _conv_same(x: Tensor, weight: Tensor, gemm: BlasMatMul) -> Tensor:
    """Stride-1 "same" convolution as one GEMM per image: x [B, C, H, W], weight [O, C, k, k] -> [B, O, H, W].

    ``gemm`` is a :class:`~mindcv_lseg.kernels.gemm.BlasMatMul` without transposes (a cell: functional ops cannot
    be used in a custom ``bprop``).
    """
    o, c, k, _ = weight.shape
    b, _, h, w = x.shape
    row = w + k - 1
    gemm_weight = weight.transpose(0, 2, 3, 1).reshape(o, k * k * c)  # tap-major, as _im2row
    out = gemm(gemm_weight, _im2row(x, k).reshape(b, k * k * c, h * row)).reshape(b, o, h, row)
    return ops.StridedSlice()(out, (0, 0, 0, 0), (b, o, h, w), (1, 1, 1, 1))  # cut the junk columns


def _phases(x: Tensor, stride: int) -> list:
    """The s*s polyphase components of x [B, C, H, W] (H, W multiples of s): ``phases[r * s + q]`` =
    x[:, :, r::s, q::s] [B, C, H/s, W/s].

    One transpose puts them one after the other and a split along that axis cuts contiguous blocks: for ViT-L/16's
    1024-channel 24x24 input 2.5x faster than splitting the two stride axes (:func:`subsample`'s way).
    """
    b, c, h, w = x.shape
    s = stride
    grouped = x.reshape(b, c, h // s, s, w // s, s).transpose(0, 3, 5, 1, 2, 4).reshape(b, s * s, c, h // s, w // s)
    parts = ops.Split(axis=1, output_num=s * s)(grouped)  # a primitive: usable in a hand-written bprop
    phases = []
    for i in range(s * s):
        phases.append(parts[i].reshape(b, c, h // s, w // s))
    return phases


def _strided_taps(x: Tensor, kernel_size: int, stride: int) -> Tensor:
    """The taps of the output pixels a stride-s "same" convolution keeps: [B, C, H, W] -> [B, k*k*C, (H/s) * R],
    tap-major as :func:`_im2row`, laid out as H/s rows of width R = W/s + dmax - dmin whose last R - W/s columns are
    junk (cut off by the caller).

    Output pixel (i, j) reads tap (a, b) at x[s*i + a - p, s*j + b - p] with p = (k-1)/2: pixel (i + da, j + db) of
    the polyphase component ((a - p) mod s, (b - p) mod s), da = floor((a - p) / s) in [dmin, dmax]. Each component
    is zero-padded by -dmin rows/columns before and dmax after and flattened with row width R, so every tap is a
    contiguous slice of it: no window or strided slicing of the k*k-times larger tap tensor (MindSpore's split of it
    took 30 ms for ViT-L/16's 1024-channel reassemble convolution).
    """
    b, c, h, w = x.shape
    k, s = kernel_size, stride
    p = (k - 1) // 2
    dmin, dmax = -((p + s - 1) // s), p // s  # floor(-p / s), floor(p / s)
    hs, ws = h // s, w // s
    pad = dmax - dmin
    row = ws + pad
    length = hs * row
    phases = _phases(x, s)
    flats = []  # the padded components, flattened: flats[r * s + q]
    for i in range(s * s):
        part = phases[i]
        if pad:  # -dmin zero columns left and dmax right: rows of width R
            pieces = [ops.zeros((b, c, hs, -dmin), x.dtype)] if dmin else []
            pieces.append(part)
            if dmax:
                pieces.append(ops.zeros((b, c, hs, dmax), x.dtype))
            part = ops.concat(pieces, axis=3)
        # -dmin zero rows before, dmax after, and `pad` spare zeros for the junk columns of the last row
        pieces = [ops.zeros((b, c, -dmin * row), x.dtype)] if dmin else []
        pieces.append(part.reshape(b, c, length))
        if pad:
            pieces.append(ops.zeros((b, c, dmax * row + pad), x.dtype))
        flats.append(ops.concat(pieces, axis=2) if pad else pieces[0])
    taps = []
    for a in range(k):
        for bb in range(k):
            start = ((a - p) // s - dmin) * row + (bb - p) // s - dmin
            flat = flats[((a - p) % s) * s + (bb - p) % s]
            taps.append(flat[:, :, start : start + length])
    return ops.concat(taps, axis=1)


def _strided_row(stride: int, kernel_size: int, width: int) -> int:
    """R of :func:`_strided_taps`: the row width of its layout for an input of width W."""
    p = (kernel_size - 1) // 2
    return width // stride + p // stride + (p + stride - 1) // stride


def _conv_strided(x: Tensor, weight: Tensor, gemm: BlasMatMul, stride: int) -> Tensor:
    """Stride-s "same" convolution, only the kept pixels computed: x [B, C, H, W] -> [B, O, H/s, W/s]."""
    o, c, k, _ = weight.shape
    b, _, h, w = x.shape
    hs, ws = h // stride, w // stride
    row = _strided_row(stride, k, w)
    gemm_weight = weight.transpose(0, 2, 3, 1).reshape(o, k * k * c)  # tap-major, as _im2row
    out = gemm(gemm_weight, _strided_taps(x, k, stride))
    if row == ws:
        return out.reshape(b, o, hs, ws)
    return ops.StridedSlice()(out.reshape(b, o, hs, row), (0, 0, 0, 0), (b, o, hs, ws), (1, 1, 1, 1))


def _zero_insert(x: Tensor, stride: int) -> Tensor:
    """[B, C, h, w] -> [B, C, h*s, w*s] holding x at the pixels (i*s, j*s) and zeros elsewhere (the adjoint of
    keeping every s-th pixel); built with concatenations, which are fast on CPU."""
    b, c, h, w = x.shape
    s = stride
    x = ops.concat((x.reshape(b, c, h, w, 1), ops.zeros((b, c, h, w, s - 1), x.dtype)), axis=4)
    x = ops.concat((x.reshape(b, c, h, 1, w * s), ops.zeros((b, c, h, s - 1, w * s), x.dtype)), axis=3)
    return x.reshape(b, c, h * s, w * s)


class SameConvGEMM(nn.Cell):
    """``_conv_same`` with a hand-written backward pass that keeps only the input for it.

    Differentiating the GEMM form automatically keeps the k*k-times larger tap matrix of every convolution until
    the backward pass (in GRAPH mode also its slices); for the decoder at 480x480 that is gigabytes. Here the
    backward rebuilds the taps from the input when it runs (after the output gradient exists) and computes
    ``dW = dY_rows . taps^T`` and ``dX = conv_same(dY, W rotated 180 degrees, in/out swapped)``.

    3x3 kernels on float32 CPU input use the Winograd kernel (:mod:`mindcv_lseg.kernels.winograd`) for the output
    and for ``dX`` instead: 4x fewer multiply-adds, no tap matrix, no flipped copy of the weight.

    Args:
        in_channels (C), out_channels (O): the convolution's channels.
        kernel_size (k): odd.

    Inputs: x [B, C, H, W], weight [O, C, k, k]. Output [B, O, H, W].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.gemm = BlasMatMul()
        self.gemm_input_grad = BlasMatMul()
        self.rows_by_taps = BlasMatMul(transpose_b=True)
        self.flip_taps = ops.ReverseV2(axis=(2, 3))
        prims = winograd_primitives() if kernel_size == 3 else None
        self.use_winograd = prims is not None  # switched off by ops_impl.without_compiled_kernels
        self.conv3x3, self.conv3x3_adjoint = prims if prims is not None else (None, None)

    def same(self, x: Tensor, weight: Tensor) -> Tensor:
        """The stride-1 convolution x [B, C, H, W] -> [B, O, H, W]."""
        if self.use_winograd and x.dtype == ms.float32:
            return self.conv3x3(x, weight)
        return _conv_same(x, weight, self.gemm)

    def same_input_grad(self, dout: Tensor, weight: Tensor) -> Tensor:
        """The gradient in x of :meth:`same` for the output gradient dout [B, O, H, W] -> [B, C, H, W]."""
        if self.use_winograd and dout.dtype == ms.float32:
            return self.conv3x3_adjoint(dout, weight)
        return _conv_same(dout, self.flip_taps(weight).transpose(1, 0, 2, 3), self.gemm_input_grad)

    def construct(self, x: Tensor, weight: Tensor) -> Tensor:
        return self.same(x, weight)

    def bprop(self, x: Tensor, weight: Tensor, out: Tensor, dout: Tensor):
        b, c, h, w = x.shape
        o, _, k, _ = weight.shape
        row = w + k - 1
        x = ops.depend(x, dout)  # rebuild the taps only in the backward pass
        taps = _im2row(x, k).reshape(b, k * k * c, h * row)
        dout_rows = ops.concat((dout, ops.zeros((b, o, h, k - 1), dout.dtype)), axis=3).reshape(b, o, h * row)
        dweight = self.rows_by_taps(dout_rows, taps).sum(axis=0).reshape(o, k, k, c).transpose(0, 3, 1, 2)
        return self.same_input_grad(dout, weight), dweight


class StridedConvGEMM(SameConvGEMM):
    """:class:`SameConvGEMM` with stride s, computing only the output pixels the stride keeps (s*s fewer than the
    stride-1 convolution). Backward: ``dW`` from the kept taps; ``dX`` = the stride-1 input gradient of dY spread
    onto the stride-1 grid (zeros elsewhere).

    Args:
        in_channels (C), out_channels (O): the convolution's channels.
        stride (s): H and W must be multiples of s.
        kernel_size (k): odd.

    Inputs: x [B, C, H, W], weight [O, C, k, k]. Output [B, O, H/s, W/s].
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel_size: int = 3):
        super().__init__(in_channels, out_channels, kernel_size)
        self.stride = stride

    def construct(self, x: Tensor, weight: Tensor) -> Tensor:
        return _conv_strided(x, weight, self.gemm, self.stride)

    def bprop(self, x: Tensor, weight: Tensor, out: Tensor, dout: Tensor):
        b, c, _, _ = x.shape
        o, _, k, _ = weight.shape
        x = ops.depend(x, dout)  # rebuild the taps only in the backward pass
        taps = _strided_taps(x, k, self.stride)  # rows of width R: dout gets zero junk columns to match
        _, _, hs, ws = dout.shape
        pad = _strided_row(self.stride, k, x.shape[3]) - ws
        dout_rows = dout if pad == 0 else ops.concat((dout, ops.zeros((b, o, hs, pad), dout.dtype)), axis=3)
        dweight = self.rows_by_taps(dout_rows.reshape(b, o, -1), taps).sum(axis=0)
        dweight = dweight.reshape(o, k, k, c).transpose(0, 3, 1, 2)
        return self.same_input_grad(_zero_insert(dout, self.stride), weight), dweight


class CpuGemmConv2d(nn.Cell):
    """2-D convolution (zero padding, no dilation, groups 1) computed with one 1x1 convolution (a GEMM).

    MindSpore's CPU kxk convolution is ~100x slower than its 1x1 one, and so are its padding and 2-D window
    slicing kernels, while contiguous 1-D slices and concatenation are fast. For the "same" case
    (stride 1, padding (k-1)/2) the k*k taps are gathered as contiguous shifts of a row-padded flat layout
    (``_im2row``) and contracted with one 1x1 convolution; the backward pass is hand-written
    (:class:`SameConvGEMM`) so training does not keep the taps. Stride s computes only every s-th pixel of the
    stride-1 result (H and W must be multiples of s). Only "same" padding is supported.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as PyTorch ``nn.Conv2d``.
        has_bias: add a bias.

    Parameters: ``weight`` [out, in, k, k] (PyTorch layout, He-uniform init), ``bias`` [out].
    Input [B, in, H, W] -> output [B, out, H/s, W/s].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        has_bias: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.has_bias = has_bias
        if 2 * padding + 1 != kernel_size:
            raise ValueError(
                f"CpuGemmConv2d supports 'same' padding only (padding = (kernel_size - 1) / 2), got "
                f"kernel_size={kernel_size}, padding={padding}"
            )
        self.weight = Parameter(
            initializer(HeUniform(math.sqrt(5)), (out_channels, in_channels, kernel_size, kernel_size), ms.float32),
            name="weight",
        )
        fan_in = in_channels * kernel_size * kernel_size
        self.bias = _init_bias(fan_in, out_channels) if has_bias else None
        if kernel_size == 1:
            self.conv = None
        elif stride == 1:
            self.conv = SameConvGEMM(in_channels, out_channels, kernel_size)
        else:
            self.conv = StridedConvGEMM(in_channels, out_channels, stride, kernel_size)
        self.matmul = BlasMatMul() if kernel_size == 1 else None

    def construct(self, x: Tensor) -> Tensor:
        if self.kernel_size == 1:  # a plain 1x1 convolution: nothing to gather; stride s = keep every s-th pixel
            out = conv1x1(x if self.stride == 1 else subsample(x, self.stride), self.weight, self.matmul)
        else:
            out = self.conv(x, self.weight.astype(x.dtype))  # float16 input under mixed precision
        if self.has_bias:
            out = ops.bias_add(out, self.bias.astype(out.dtype))  # see ``linear``
        return out


class CpuGemmConvTranspose2d(nn.Cell):
    """Transposed convolution with kernel = stride and no padding (non-overlapping patches), as a matmul.

    Parameters: ``weight`` [in, out, k, k] (PyTorch and MindSpore layout), ``bias`` [out].
    Input [B, in, h, w] -> output [B, out, k*h, k*w].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, has_bias: bool = True):
        super().__init__()
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.has_bias = has_bias
        self.weight = Parameter(
            initializer(HeUniform(math.sqrt(5)), (in_channels, out_channels, kernel_size, kernel_size), ms.float32),
            name="weight",
        )
        self.bias = _init_bias(out_channels * kernel_size * kernel_size, out_channels) if has_bias else None
        self.matmul = BlasMatMul()

    def construct(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k = self.kernel_size
        rows = x.reshape(b, c, h * w).transpose(0, 2, 1)  # [B, h*w, in]
        out = linear(rows, self.weight.reshape(c, -1), None, self.matmul)  # [B, h*w, out*k*k]
        out = out.reshape(b, h, w, self.out_channels, k, k).transpose(0, 3, 1, 4, 2, 5)
        out = out.reshape(b, self.out_channels, h * k, w * k)
        if self.has_bias:
            out = ops.bias_add(out, self.bias.astype(out.dtype))  # see ``linear``
        return out


def cpu_gemm_patchify(x: Tensor, weight: Tensor, bias: Tensor, matmul: BlasLinear) -> Tensor:
    """A conv with kernel = stride = p and no padding (ViT patch embedding) as space-to-depth + matmul.

    x [B, C, H, W], weight [D, C, p, p], bias [D] -> tokens [B, (H/p)*(W/p), D] in row-major grid order.
    ``matmul``: a :class:`~mindcv_lseg.kernels.gemm.BlasLinear`.
    """
    b, c, h, w = x.shape
    d, _, p, _ = weight.shape
    gh, gw = h // p, w // p
    # a conv drops the pixels beyond the last whole patch; sliced only then: the no-op slice cost ~10 ms on CPU
    if h != gh * p or w != gw * p:
        x = x[:, :, : gh * p, : gw * p]
    x = x.reshape(b, c, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5)
    x = x.reshape(b, gh * gw, c * p * p)
    return linear(x, weight.reshape(d, -1), bias, matmul)


class CpuSubsampledConv1x1(nn.Cell):
    """A 1x1 convolution with stride s and no bias, computed as "keep every s-th pixel, then a 1x1 conv".

    Same sums as the strided conv, without MindSpore's slow strided CPU kernel. H and W must be multiples of s.

    Args:
        in_channels, out_channels, stride: as the convolution it replaces.

    Parameter: ``weight`` [out, in, 1, 1] (``nn.Conv2d`` layout). [B, in, H, W] -> [B, out, H/s, W/s].
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.weight = Parameter(
            initializer(HeUniform(math.sqrt(5)), (out_channels, in_channels, 1, 1), ms.float32), name="weight"
        )
        self.matmul = BlasMatMul()

    def construct(self, x: Tensor) -> Tensor:
        return conv1x1(subsample(x, self.stride), self.weight, self.matmul)
