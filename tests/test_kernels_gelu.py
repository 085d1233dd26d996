"""The one-pass GELU kernels (mindcv_lseg.kernels.gelu) behind the lean ErfGELU: values and gradients against the
exact GELU in float64 and against MindSpore's ``ops.gelu`` autodiff, GRAPH and PYNATIVE; the fallbacks."""

import math

import numpy as np
import pytest
from _kernels import require_kernels, run_script

import mindspore as ms
from mindspore import Tensor, nn, ops

from mindcv_lseg.kernels import library
from mindcv_lseg.kernels.gelu import gelu_kernels
from mindcv_lseg.models.activations import ErfGELU

_erf = np.vectorize(math.erf)


@pytest.fixture(scope="module")
def kernels():
    return require_kernels(gelu_kernels(), "_lseg_gelu", "GELU kernels")


def _inputs(shape, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 3
    x.flat[:6] = [0.0, -0.0, 9.5, -9.5, 1e-8, -40.0]  # zero, saturation, tiny, far tail
    return x


def _gelu64(x):
    x = x.astype(np.float64)
    return x * 0.5 * (1 + _erf(x / math.sqrt(2)))


def _dgelu64(x):
    x = x.astype(np.float64)
    return 0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


class _Loss(nn.Cell):
    def __init__(self, act, weight):
        super().__init__()
        self.act = act
        self.weight = weight

    def construct(self, x):
        return (self.act(x) * self.weight).sum()


class _NativeGelu(nn.Cell):
    def construct(self, x):
        return ops.gelu(x, approximate="none")


@pytest.mark.parametrize("mode", ["graph", "pynative"])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 11), (2, 577, 64)])
def test_values_and_gradient(kernels, mode, shape):
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    x = _inputs(shape)
    weight = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    act = ErfGELU()
    assert act.use_kernels
    out = act(Tensor(x)).asnumpy()
    np.testing.assert_allclose(out, _gelu64(x), rtol=2e-6, atol=2e-6)
    grad = ms.grad(_Loss(act, Tensor(weight)))(Tensor(x)).asnumpy()
    np.testing.assert_allclose(grad, weight * _dgelu64(x), rtol=2e-6, atol=2e-6)
    native_grad = ms.grad(_Loss(_NativeGelu(), Tensor(weight)))(Tensor(x)).asnumpy()
    np.testing.assert_allclose(grad, native_grad, rtol=1e-5, atol=1e-5)


def test_float16_input_takes_mindsporess_ops(kernels):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], np.float16)
    out = ErfGELU()(Tensor(x))
    assert out.dtype == ms.float16
    np.testing.assert_allclose(out.asnumpy().astype(np.float64), _gelu64(x), atol=2e-3)


_FALLBACK = """
import numpy as np, mindspore as ms
from mindspore import Tensor
from mindcv_lseg.kernels import library
{patch}
from mindcv_lseg.models.activations import ErfGELU
acts = [ErfGELU() for _ in range(3)]
x = np.linspace(-3, 3, 7, dtype=np.float32)
print("use_kernels", acts[0].use_kernels, float(np.abs(acts[0](Tensor(x)).asnumpy()).sum()))
"""


def _run(patch, env_extra):
    return run_script(_FALLBACK.format(patch=patch), "mindcv-lseg: GELU kernels", env_extra)


def test_missing_library_falls_back_with_one_notice():
    stdout, notices = _run(
        "_find = library.library_path\nlibrary.library_path = lambda stem: None if stem == '_lseg_gelu' else _find(stem)",
        {},
    )
    assert "use_kernels False" in stdout
    assert len(notices) == 1 and "was not built" in notices[0], notices


def test_switch_off_is_silent():
    stdout, notices = _run("", {library.ENV_SWITCH: "0"})
    assert "use_kernels False" in stdout and notices == []
