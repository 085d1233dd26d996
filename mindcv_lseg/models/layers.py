"""Convolutions computed as matrix products (GEMMs).

On CPU, MindSpore 2.10's Conv2d / Conv2dTranspose kernels run at ~0.2 GFLOP/s for any kernel larger than 1x1
(measured here: a 3x3 256->256 conv on 96x96 takes ~60 s), while MatMul runs at tens of GFLOP/s. These cells
keep PyTorch's parameter layout (``weight`` [out, in, kh, kw] for convs, [in, out, k, k] for the transposed conv)
so checkpoints map one to one, and compute the same sums through 1x1 convolutions (GEMMs) and ``matmul``.
See ``benchmarks/forward.py`` for the effect.
"""
import math

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import HeUniform, Uniform, initializer

__all__ = ["FastConv2d", "PatchConvTranspose2d", "patchify_linear"]


def _init_bias(fan_in: int, channels: int) -> Parameter:
    bound = 1 / math.sqrt(fan_in)
    return Parameter(initializer(Uniform(bound), (channels,), ms.float32), name="bias")


class FastConv2d(nn.Cell):
    """2-D convolution (zero padding, no dilation, groups 1) computed with one 1x1 convolution (a GEMM).

    MindSpore's CPU kxk convolution is ~100x slower than its 1x1 one, and so are its padding and 2-D window
    slicing kernels, while contiguous 1-D slices and concatenation are fast. For the "same" case
    (stride 1, padding (k-1)/2) the input is laid out as rows of width W + 2p whose zero tail doubles as the next
    row's left padding; every tap is then a contiguous shift of that flat array, the k*k shifts are concatenated
    along channels and contracted with one 1x1 convolution, and the 2p junk columns are cut off. Stride s keeps every
    s-th pixel of the stride-1 result (H and W must be multiples of s). Only "same" padding is supported.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as PyTorch ``nn.Conv2d``.
        has_bias: add a bias.

    Parameters: ``weight`` [out, in, k, k] (PyTorch layout, He-uniform init), ``bias`` [out].
    Input [B, in, H, W] -> output [B, out, H/s, W/s].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 has_bias: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.has_bias = has_bias
        if 2 * padding + 1 != kernel_size:
            raise ValueError(f"FastConv2d supports 'same' padding only (padding = (kernel_size - 1) / 2), got "
                             f"kernel_size={kernel_size}, padding={padding}")
        self.weight = Parameter(
            initializer(HeUniform(math.sqrt(5)), (out_channels, in_channels, kernel_size, kernel_size), ms.float32),
            name="weight",
        )
        fan_in = in_channels * kernel_size * kernel_size
        self.bias = _init_bias(fan_in, out_channels) if has_bias else None

    def _same(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k, p = self.kernel_size, self.padding
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
        cols = ops.concat(taps, axis=1).reshape(b, k * k * c, h, row)  # tap-major channels
        weight = self.weight.transpose(0, 2, 3, 1).reshape(self.out_channels, k * k * c, 1, 1)
        return ops.split(ops.conv2d(cols, weight), (w, 2 * p), axis=3)[0]

    def _strided(self, x: Tensor) -> Tensor:
        # the stride-s output is every s-th pixel of the stride-1 output; picked with reshape + split, because
        # MindSpore 2.10's StridedSliceGrad fails on strided 4-D slices (out-of-bounds error / hang in GRAPH mode)
        full = self._same(x)
        b, o, h, w = full.shape
        s = self.stride
        full = full.reshape(b, o, h // s, s, w // s, s)
        full = ops.split(full, (1, s - 1), axis=3)[0]
        full = ops.split(full, (1, s - 1), axis=5)[0]
        return full.reshape(b, o, h // s, w // s)

    def construct(self, x: Tensor) -> Tensor:
        out = self._same(x) if self.stride == 1 else self._strided(x)
        if self.has_bias:
            out = out + self.bias.reshape(1, -1, 1, 1)
        return out


class PatchConvTranspose2d(nn.Cell):
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

    def construct(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k = self.kernel_size
        rows = x.reshape(b, c, h * w).transpose(0, 2, 1)  # [B, h*w, in]
        out = ops.matmul(rows, self.weight.reshape(c, -1))  # [B, h*w, out*k*k]
        out = out.reshape(b, h, w, self.out_channels, k, k).transpose(0, 3, 1, 4, 2, 5)
        out = out.reshape(b, self.out_channels, h * k, w * k)
        if self.has_bias:
            out = out + self.bias.reshape(1, -1, 1, 1)
        return out


def patchify_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """A conv with kernel = stride = p and no padding (ViT patch embedding) as space-to-depth + matmul.

    x [B, C, H, W], weight [D, C, p, p], bias [D] -> tokens [B, (H/p)*(W/p), D] in row-major grid order.
    """
    b, c, h, w = x.shape
    d, _, p, _ = weight.shape
    gh, gw = h // p, w // p
    x = x[:, :, : gh * p, : gw * p].reshape(b, c, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5)
    x = x.reshape(b, gh * gw, c * p * p)
    return ops.matmul(x, weight.reshape(d, -1).T) + bias
