"""The fused inference attention kernel (mindcv_lseg.kernels.attention) inside LeanAttention: eval-mode outputs
equal the differentiable path's in GRAPH and PYNATIVE mode, training mode does not use it (gradients flow), and
exports switch it off."""

import numpy as np
import pytest
from _kernels import require_kernels

import mindspore as ms
from mindspore import Tensor

from mindcv_lseg.kernels.attention import attention_kernel
from mindcv_lseg.models.attention import LeanAttention
from mindcv_lseg.models.cpu_gemm import CpuGemmDense
from mindcv_lseg.models.ops_impl import without_compiled_kernels


@pytest.fixture(scope="module", autouse=True)
def kernel():
    require_kernels(attention_kernel(), "_lseg_gemm", "attention kernel")


def _sum_of_squares(cell):
    """A scalar of the cell's output whose gradient exercises its backward pass."""
    return lambda inp: (cell(inp) ** 2).sum()


def _pair(c, heads):
    """Two LeanAttention cells sharing their projections: one with the kernel, one without."""
    fused = LeanAttention(CpuGemmDense(c, 3 * c), CpuGemmDense(c, c), heads)
    plain = LeanAttention(fused.qkv, fused.proj, heads)
    plain.use_fused = False
    assert fused.use_fused
    return fused, plain


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
@pytest.mark.parametrize("b,t,c,heads", [(2, 7, 16, 2), (1, 50, 64, 1), (1, 145, 96, 12)])
def test_eval_outputs_equal_the_differentiable_path(mode, b, t, c, heads):
    ms.set_context(mode=mode)
    fused, plain = _pair(c, heads)
    fused.set_train(False)
    plain.set_train(False)
    x = Tensor(np.random.default_rng(t).standard_normal((b, t, c)).astype(np.float32))
    np.testing.assert_allclose(fused(x).asnumpy(), plain(x).asnumpy(), rtol=0, atol=2e-6)


def test_training_mode_takes_the_differentiable_path():
    ms.set_context(mode=ms.GRAPH_MODE)
    fused, plain = _pair(16, 2)
    fused.set_train(True)
    plain.set_train(True)
    x = Tensor(np.random.default_rng(1).standard_normal((1, 9, 16)).astype(np.float32))
    got = ms.grad(_sum_of_squares(fused))(x).asnumpy()
    want = ms.grad(_sum_of_squares(plain))(x).asnumpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_gradients_in_eval_mode_go_through_the_kernels_backward(mode):
    """A network differentiated in eval mode (no set_train(True)) runs the kernel: its backward equals autodiff of
    the differentiable path."""
    ms.set_context(mode=mode)
    fused, plain = _pair(16, 2)
    fused.set_train(False)
    plain.set_train(False)
    x = Tensor(np.random.default_rng(2).standard_normal((2, 9, 16)).astype(np.float32))
    got = ms.grad(_sum_of_squares(fused), grad_position=0, weights=fused.trainable_params())(x)
    want = ms.grad(_sum_of_squares(plain), grad_position=0, weights=plain.trainable_params())(x)
    np.testing.assert_allclose(got[0].asnumpy(), want[0].asnumpy(), rtol=1e-4, atol=1e-5)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-4, atol=1e-5)


def test_exports_do_not_hold_the_kernel():
    fused, _ = _pair(16, 2)
    without_compiled_kernels(fused)
    assert not fused.use_fused
