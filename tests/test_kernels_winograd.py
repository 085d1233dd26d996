"""The Winograd F(4x4, 3x3) convolution kernel (mindcv_lseg.kernels.winograd): the two primitives against a float64
direct convolution (every size around the 4x4 tile grid, decoder-sized channels) and against MindSpore's own Conv2D
and its autodiff gradient, the adjoint identity, the layers using them (SameConvGEMM / StridedConvGEMM) in GRAPH and
PYNATIVE mode, and the switch back to MindSpore's ops for exports."""

import numpy as np
import pytest
from _kernels import require_kernels

import mindspore as ms
from mindspore import Tensor, nn, ops

from mindcv_lseg.kernels.winograd import winograd_primitives
from mindcv_lseg.models.cpu_gemm import CpuGemmConv2d, SameConvGEMM, StridedConvGEMM
from mindcv_lseg.models.ops_impl import without_compiled_kernels

MODES = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}
# (batch, in channels, out channels, H, W): odd and even sizes, a single row/column, one pixel, one channel
SHAPES = [(1, 3, 5, 7, 9), (2, 8, 4, 6, 6), (1, 16, 16, 5, 1), (1, 1, 1, 1, 1), (1, 4, 6, 2, 3)]
# every remainder of H and W modulo the 4x4 tile, one- and two-tile images, 1 x N and N x 1
GRID_SIZES = [(h, w) for h in (1, 2, 3, 4, 5, 8) for w in (1, 3, 4, 6, 7, 9)] + [(13, 11), (1, 17), (17, 2)]
TOL = 2e-5  # relative to the largest output value: the transforms' sums round differently from the direct product


@pytest.fixture(scope="module")
def prims():
    return require_kernels(winograd_primitives(), "_lseg_gemm", "Winograd kernels")


@pytest.fixture(params=sorted(MODES))
def mode(request):
    old = ms.get_context("mode")
    ms.set_context(mode=MODES[request.param])
    yield request.param
    ms.set_context(mode=old)


def _data(shape, seed=0):
    b, c, o, h, w = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((b, o, h, w)).astype(np.float32)
    return x, weight, dy


def _reference(x, weight, dy, stride=1):
    """MindSpore's Conv2D: output, and the gradients of sum(output * dy) in x and weight."""
    k = weight.shape[-1]
    conv = ops.Conv2D(weight.shape[0], k, pad_mode="pad", pad=(k - 1) // 2, stride=stride)

    def loss(xx, ww):
        return (conv(xx, ww) * Tensor(dy)).sum()

    out = conv(Tensor(x), Tensor(weight)).asnumpy()
    dx, dw = ms.grad(loss, grad_position=(0, 1))(Tensor(x), Tensor(weight))
    return out, dx.asnumpy(), dw.asnumpy()


def _direct64(x, weight):
    """Float64 "same" 3x3 cross-correlation: x [B, C, H, W], weight [O, C, 3, 3] -> [B, O, H, W]."""
    b, c, h, w = x.shape
    padded = np.zeros((b, c, h + 2, w + 2))
    padded[:, :, 1:-1, 1:-1] = x
    out = np.zeros((b, weight.shape[0], h, w))
    for i in range(3):
        for j in range(3):
            out += np.einsum("oc,bchw->bohw", weight[:, :, i, j].astype(np.float64), padded[:, :, i : i + h, j : j + w])
    return out


def _adjoint64(dy, weight):
    """Float64 gradient in x of ``_direct64`` for the output gradient dy: the filters flipped, in/out swapped."""
    return _direct64(dy, np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)))


def _close(got, want):
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL * scale)


@pytest.mark.parametrize("shape", SHAPES)
def test_primitives_equal_conv2d_and_its_input_gradient(prims, mode, shape):
    conv3x3, conv3x3_adjoint = prims
    x, weight, dy = _data(shape)
    out, dx, _ = _reference(x, weight, dy)
    _close(conv3x3(Tensor(x), Tensor(weight)).asnumpy(), out)
    _close(conv3x3_adjoint(Tensor(dy), Tensor(weight)).asnumpy(), dx)


@pytest.mark.parametrize("size", GRID_SIZES)
def test_primitives_equal_float64_direct_convolution_on_every_tile_remainder(prims, mode, size):
    conv3x3, conv3x3_adjoint = prims
    x, weight, dy = _data((2, 5, 3) + size, seed=sum(size))
    _close(conv3x3(Tensor(x), Tensor(weight)).asnumpy(), _direct64(x, weight))
    _close(conv3x3_adjoint(Tensor(dy), Tensor(weight)).asnumpy(), _adjoint64(dy, weight))


def test_decoder_sized_error_against_float64(prims):
    """256 -> 256 channels on non-negative activations (the decoder's convolutions follow ReLUs) with He-scaled
    weights: the float32 error of the 36 transformed products stays at a few 1e-6 of the output's size
    (docs/cpu_kernels.md has the figures: ~4x the F(2x2) error, ~6x a direct float32 product's)."""
    conv3x3, conv3x3_adjoint = prims
    rng = np.random.default_rng(5)
    c = 256
    x = (2 * np.maximum(rng.standard_normal((1, c, 21, 22)), 0)).astype(np.float32)
    weight = (rng.standard_normal((c, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(np.float32)
    dy = (0.01 * rng.standard_normal((1, c, 21, 22))).astype(np.float32)
    for got, want in (
        (conv3x3(Tensor(x), Tensor(weight)).asnumpy(), _direct64(x, weight)),
        (conv3x3_adjoint(Tensor(dy), Tensor(weight)).asnumpy(), _adjoint64(dy, weight)),
    ):
        err = np.abs(got - want)
        assert err.max() <= 1e-5 * np.abs(want).max()
        assert err.mean() <= 5e-6 * np.abs(want).mean()


@pytest.mark.parametrize("shape", [(1, 6, 4, 9, 7), (3, 2, 5, 4, 4)])
def test_adjoint_is_the_transpose_of_the_convolution(prims, shape):
    """<conv(x), dy> = <x, adjoint(dy)> for the float32 kernels, up to their rounding."""
    conv3x3, conv3x3_adjoint = prims
    x, weight, dy = _data(shape, seed=6)
    lhs = np.sum(conv3x3(Tensor(x), Tensor(weight)).asnumpy().astype(np.float64) * dy)
    rhs = np.sum(x.astype(np.float64) * conv3x3_adjoint(Tensor(dy), Tensor(weight)).asnumpy())
    assert abs(lhs - rhs) <= 1e-5 * np.sum(np.abs(_direct64(x, weight) * dy))


def test_scratch_reuse_across_shapes(prims):
    """The scratch buffers are kept between calls: a large call, then a small one, then the large one again give
    the same values as fresh calls (no stale rows of the larger grid leak into the smaller)."""
    conv3x3, _ = prims
    big, small = _data((1, 7, 9, 15, 13), seed=7), _data((1, 7, 9, 3, 5), seed=8)
    first = conv3x3(Tensor(big[0]), Tensor(big[1])).asnumpy()
    _close(conv3x3(Tensor(small[0]), Tensor(small[1])).asnumpy(), _direct64(small[0], small[1]))
    np.testing.assert_array_equal(conv3x3(Tensor(big[0]), Tensor(big[1])).asnumpy(), first)


class _Loss(nn.Cell):
    def __init__(self, conv, dy):
        super().__init__()
        self.conv = conv
        self.dy = Tensor(dy)

    def construct(self, x, weight):
        return (self.conv(x, weight) * self.dy).sum()


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_same_conv_layer_values_and_gradients(prims, mode, shape):
    x, weight, dy = _data(shape, seed=1)
    layer = SameConvGEMM(shape[1], shape[2], kernel_size=3)
    assert layer.use_winograd
    out, dx, dw = _reference(x, weight, dy)
    _close(layer(Tensor(x), Tensor(weight)).asnumpy(), out)
    gx, gw = ms.grad(_Loss(layer, dy), grad_position=(0, 1))(Tensor(x), Tensor(weight))
    _close(gx.asnumpy(), dx)
    _close(gw.asnumpy(), dw)


# (batch, in, out, H, W, stride, kernel): the reassemble convolution's case and other strides / kernel sizes
STRIDED = [
    (1, 6, 4, 8, 6, 2, 3),
    (2, 3, 5, 4, 10, 2, 3),
    (1, 2, 3, 2, 2, 2, 3),
    (1, 3, 2, 8, 12, 4, 3),
    (1, 2, 4, 6, 8, 2, 5),
]


@pytest.mark.parametrize("case", STRIDED)
def test_strided_conv_layer_values_and_gradients(prims, mode, case):
    """StridedConvGEMM (taps from the polyphase components) against Conv2D and its autodiff gradients."""
    b, c, o, h, w, stride, k = case
    rng = np.random.default_rng(2)
    x = rng.standard_normal((b, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((o, c, k, k)).astype(np.float32)
    dy = rng.standard_normal((b, o, h // stride, w // stride)).astype(np.float32)
    layer = StridedConvGEMM(c, o, stride=stride, kernel_size=k)
    assert layer.use_winograd == (k == 3)
    out, dx, dw = _reference(x, weight, dy, stride=stride)
    _close(layer(Tensor(x), Tensor(weight)).asnumpy(), out)
    gx, gw = ms.grad(_Loss(layer, dy), grad_position=(0, 1))(Tensor(x), Tensor(weight))
    _close(gx.asnumpy(), dx)
    _close(gw.asnumpy(), dw)


def test_without_compiled_kernels_switches_to_the_gemm_form(prims):
    """Exports must not hold the kernel (a MINDIR with Custom ops does not load): the layer computes the same
    result with MindSpore's ops once switched."""
    conv = CpuGemmConv2d(4, 5, 3, padding=1, has_bias=True)
    x = Tensor(np.random.default_rng(3).standard_normal((1, 4, 6, 7)).astype(np.float32))
    with_kernel = conv(x).asnumpy()
    assert conv.conv.use_winograd
    without_compiled_kernels(conv)
    assert not conv.conv.use_winograd and not conv.conv.gemm.use_blas
    _close(conv(x).asnumpy(), with_kernel)


def test_float16_input_takes_the_gemm_form(prims):
    layer = SameConvGEMM(3, 2, kernel_size=3)
    x, weight, _ = _data((1, 3, 2, 5, 5), seed=4)
    out = layer(Tensor(x, ms.float16), Tensor(weight, ms.float16))
    assert out.dtype == ms.float16
    want, _, _ = _reference(x, weight, np.zeros((1, 2, 5, 5), np.float32))
    np.testing.assert_allclose(out.asnumpy().astype(np.float32), want, atol=0.05 * np.abs(want).max())
