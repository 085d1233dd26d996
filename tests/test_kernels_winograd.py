"""The Winograd F(2x2, 3x3) convolution kernel (mindcv_lseg.kernels.winograd): the two primitives and the layers
using them (SameConvGEMM / StridedConvGEMM), values and gradients against MindSpore's own Conv2D in GRAPH and
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
    conv = ops.Conv2D(weight.shape[0], 3, pad_mode="pad", pad=1, stride=stride)

    def loss(xx, ww):
        return (conv(xx, ww) * Tensor(dy)).sum()

    out = conv(Tensor(x), Tensor(weight)).asnumpy()
    dx, dw = ms.grad(loss, grad_position=(0, 1))(Tensor(x), Tensor(weight))
    return out, dx.asnumpy(), dw.asnumpy()


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


def test_strided_conv_layer_input_gradient(prims, mode):
    b, c, o, h, w = 1, 6, 4, 8, 6
    rng = np.random.default_rng(2)
    x = rng.standard_normal((b, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((b, o, h // 2, w // 2)).astype(np.float32)
    layer = StridedConvGEMM(c, o, stride=2, kernel_size=3)
    assert layer.use_winograd
    out, dx, dw = _reference(x, weight, dy, stride=2)
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
