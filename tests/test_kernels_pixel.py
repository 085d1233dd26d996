"""The per-pixel kernels (mindcv_lseg.kernels.pixel): the channel L2 norm and the scaled add against numpy, in GRAPH
and PYNATIVE mode. (The cross-entropy gradient kernel is tested in test_engine_loss_optim.py, the cosine logits that
use these two in test_memory.py.)"""

import numpy as np
import pytest
from _kernels import require_kernels

import mindspore as ms
from mindspore import Tensor

from mindcv_lseg.kernels.pixel import norm_kernels


@pytest.fixture(scope="module")
def kernels():
    return require_kernels(norm_kernels(), "_lseg_pixel", "per-pixel kernels")


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
@pytest.mark.parametrize("shape", [(1, 512, 37), (2, 3, 1), (3, 1, 17)])
def test_inv_norm_and_add_scaled_equal_numpy(kernels, mode, shape):
    inv_norm, add_scaled = kernels
    ms.set_context(mode=mode)
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    a = rng.standard_normal(shape).astype(np.float32)
    k = rng.standard_normal((shape[0], 1, shape[2])).astype(np.float32)
    want = 1 / np.sqrt((x.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(inv_norm(Tensor(x)).asnumpy(), want, rtol=2e-6)
    np.testing.assert_allclose(add_scaled(Tensor(a), Tensor(x), Tensor(k)).asnumpy(), a + x * k, rtol=1e-6, atol=1e-6)


def test_inv_norm_of_a_zero_pixel_is_inf_as_the_reference(kernels):
    """No epsilon, as the reference's x / x.norm(): a zero embedding gives inf (then NaN logits), not a silent 0."""
    x = np.zeros((1, 4, 3), np.float32)
    x[0, :, 1] = 2.0
    out = kernels[0](Tensor(x)).asnumpy()
    assert np.isinf(out[0, 0, 0]) and out[0, 0, 1] == pytest.approx(0.25)
