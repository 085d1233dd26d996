"""The LayerNorm kernels (mindcv_lseg.kernels.layernorm) behind the lean LeanLayerNorm: values and gradients (x,
gamma, beta) against float64 and against MindSpore's ``nn.LayerNorm`` autodiff, GRAPH and PYNATIVE; the layers
that use it (ViT, CLIP text tower) with the same parameters as native; the switches and fallbacks."""

import json

import numpy as np
import pytest
from _kernels import require_kernels, run_script

import mindspore as ms
from mindspore import Tensor, nn

from mindcv_lseg.deploy.onnx_compat import DecomposedLayerNorm, make_onnx_exportable
from mindcv_lseg.kernels import library
from mindcv_lseg.kernels.layernorm import layernorm_kernels
from mindcv_lseg.models.clip_text import CLIPTextEncoder
from mindcv_lseg.models.normalization import LeanLayerNorm
from mindcv_lseg.models.ops_impl import without_compiled_kernels
from mindcv_lseg.models.vit_encoder import ViTEncoder


@pytest.fixture(scope="module")
def kernels():
    return require_kernels(layernorm_kernels(), "_lseg_layernorm", "LayerNorm kernels")


def _pair(channels, eps, seed):
    """A LeanLayerNorm and an nn.LayerNorm with the same random gamma and beta."""
    rng = np.random.default_rng(seed)
    lean, native = LeanLayerNorm((channels,), epsilon=eps), nn.LayerNorm((channels,), epsilon=eps)
    for name in ("gamma", "beta"):
        value = Tensor(rng.standard_normal(channels).astype(np.float32))
        getattr(lean, name).set_data(value)
        getattr(native, name).set_data(value)
    return lean, native


class _Loss(nn.Cell):
    def __init__(self, norm, weight):
        super().__init__()
        self.norm = norm
        self.weight = weight

    def construct(self, x):
        return (self.norm(x) * self.weight).sum()


def _value_and_grads(norm, x, weight):
    """y, then the gradients of sum(y * weight) in x, gamma, beta."""
    y = norm(Tensor(x)).asnumpy()
    dx, (dgamma, dbeta) = ms.grad(_Loss(norm, Tensor(weight)), grad_position=0, weights=[norm.gamma, norm.beta])(
        Tensor(x)
    )
    return y, dx.asnumpy(), dgamma.asnumpy(), dbeta.asnumpy()


def _float64(x, gamma, beta, eps, weight):
    """LayerNorm and its gradients in float64 from the same float32 numbers."""
    x, gamma, beta, dy = (a.astype(np.float64) for a in (x, gamma, beta, weight))
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + np.float64(np.float32(eps)))
    xhat = (x - mean) * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    return xhat * gamma + beta, dx, (dy * xhat).sum(rows), dy.sum(rows)


def _close(got, want, rtol):
    """Agreement relative to the largest magnitude of ``want`` (float32 rounding of sums is relative to that)."""
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * max(np.abs(want).max(), 1.0))


@pytest.mark.parametrize("mode", ["graph", "pynative"])
@pytest.mark.parametrize("eps", [1e-5, 1e-6])
@pytest.mark.parametrize("shape", [(7, 37), (2, 5, 130), (1, 577, 1024)])
def test_values_and_gradients_equal_mindspores_layernorm(kernels, mode, eps, shape):
    """C = 37 and 130 are not multiples of the vector width; (2, 5, 130) has two leading axes; 577 x 1024 is a
    ViT-L/16 block at 384x384."""
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    rng = np.random.default_rng(shape[-1])
    x = (rng.standard_normal(shape) * 2 + rng.standard_normal(shape[:-1] + (1,))).astype(np.float32)
    weight = rng.standard_normal(shape).astype(np.float32)
    lean, native = _pair(shape[-1], eps, seed=len(shape))
    assert lean.use_kernels
    got = _value_and_grads(lean, x, weight)
    want = _value_and_grads(native, x, weight)
    exact = _float64(x, lean.gamma.asnumpy(), lean.beta.asnumpy(), eps, weight)
    for name, g, w, e in zip(("y", "dx", "dgamma", "dbeta"), got, want, exact):
        assert g.shape == w.shape, name
        _close(g, e, 1e-6)  # float32 rounding of the exact values
        _close(g, w, 1e-5)  # MindSpore's LayerNorm and its autodiff gradients


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_rows_with_a_large_mean_or_no_variance(kernels, mode):
    """A row far from zero (mean 1000, std 1: MindSpore's and PyTorch's float32 LayerNorms lose ~3e-5 there, the
    kernel's double-precision mean does not) and a constant row (variance 0: y = beta, finite gradients)."""
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 1024)).astype(np.float32)
    x[1] += 1000.0
    x[2] = x[2] * 1e-2 + 50.0
    x[3] = 7.0
    weight = rng.standard_normal(x.shape).astype(np.float32)
    lean, native = _pair(1024, 1e-6, seed=3)
    got = _value_and_grads(lean, x, weight)
    want = _value_and_grads(native, x, weight)
    exact = _float64(x, lean.gamma.asnumpy(), lean.beta.asnumpy(), 1e-6, weight)
    for name, g, w, e in zip(("y", "dx", "dgamma", "dbeta"), got, want, exact):
        assert np.isfinite(g).all(), name
        _close(g, e, 2e-6)
        assert np.abs(g - e).max() <= np.abs(w - e).max() + 1e-6 * np.abs(e).max(), name  # no worse than MindSpore
    np.testing.assert_allclose(got[0][3], lean.beta.asnumpy(), atol=1e-6)


def test_float16_input_takes_mindspores_layernorm(kernels):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    lean, native = _pair(24, 1e-5, seed=0)
    x = np.random.default_rng(0).standard_normal((3, 24)).astype(np.float16)
    out = lean(Tensor(x))
    assert out.dtype == ms.float16
    np.testing.assert_array_equal(out.asnumpy(), native(Tensor(x)).asnumpy())


def test_without_compiled_kernels_gives_mindspores_values(kernels):
    ms.set_context(mode=ms.GRAPH_MODE)
    lean, native = _pair(48, 1e-6, seed=1)
    x = np.random.default_rng(1).standard_normal((2, 9, 48)).astype(np.float32)
    holder = nn.SequentialCell([lean])
    assert without_compiled_kernels(holder) is holder and not lean.use_kernels
    np.testing.assert_array_equal(lean(Tensor(x)).asnumpy(), native(Tensor(x)).asnumpy())


def test_one_axis_only():
    with pytest.raises(ValueError, match=r"normalized_shape must be \(C,\)"):
        LeanLayerNorm((4, 8))


def test_onnx_rewrite_replaces_it(kernels):
    """ONNX exports use impl="native", but make_onnx_exportable also replaces a LeanLayerNorm (it is an
    nn.LayerNorm) by the decomposed form, with its parameters and epsilon."""
    lean, _ = _pair(16, 1e-6, seed=2)
    net = make_onnx_exportable(nn.SequentialCell([lean]))
    new = net._cells["0"]  # noqa: SLF001
    assert isinstance(new, DecomposedLayerNorm) and new.gamma is lean.gamma and new.eps == 1e-6


def _norms(net):
    return {name: cell for name, cell in net.cells_and_names() if isinstance(cell, nn.LayerNorm)}


@pytest.mark.parametrize(
    "build, eps",
    [
        (lambda impl: ViTEncoder(32, 16, 32, 2, 2, hooks=(0, 1), weight_init=False, impl=impl), 1e-6),
        (lambda impl: CLIPTextEncoder(vocab_size=64, context_length=8, width=32, layers=2, heads=2, impl=impl), 1e-5),
    ],
    ids=["vit", "clip_text"],
)
def test_lean_layers_use_it_with_native_parameters(kernels, build, eps):
    """Every LayerNorm of the lean ViT (norm1, norm2 of each block, the final norm) and of the lean text tower is a
    LeanLayerNorm with the reference's epsilon; native keeps nn.LayerNorm; parameter names and shapes agree."""
    lean, native = build("lean"), build("native")
    lean_norms, native_norms = _norms(lean), _norms(native)
    assert sorted(lean_norms) == sorted(native_norms) and len(lean_norms) >= 5
    assert all(type(c) is LeanLayerNorm and c.use_kernels and c.epsilon == eps for c in lean_norms.values())
    assert all(type(c) is nn.LayerNorm and c.epsilon == eps for c in native_norms.values())
    shapes = lambda net: {p.name: p.shape for p in net.get_parameters()}  # noqa: E731
    assert shapes(lean) == shapes(native)


_FALLBACK = """
import json
import numpy as np, mindspore as ms
from mindspore import Tensor
from mindcv_lseg.kernels import library
{patch}
from mindcv_lseg.models.normalization import LeanLayerNorm
norms = [LeanLayerNorm((5,), 1e-5) for _ in range(3)]
x = np.arange(10, dtype=np.float32).reshape(2, 5) ** 2
print("use_kernels", norms[0].use_kernels)
print(json.dumps(norms[0](Tensor(x)).asnumpy().tolist()))
"""


def _run(patch, env_extra):
    stdout, notices = run_script(_FALLBACK.format(patch=patch), "mindcv-lseg: LayerNorm kernels", env_extra)
    lines = stdout.splitlines()
    assert "use_kernels False" in lines, stdout
    x = np.arange(10, dtype=np.float64).reshape(2, 5) ** 2
    want = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(json.loads(lines[lines.index("use_kernels False") + 1]), want, rtol=1e-5)
    return notices


def test_missing_library_falls_back_with_one_notice():
    notices = _run(
        "_find = library.library_path\n"
        "library.library_path = lambda stem: None if stem == '_lseg_layernorm' else _find(stem)",
        {},
    )
    assert len(notices) == 1 and "was not built" in notices[0] and "MindSpore's LayerNorm" in notices[0], notices


def test_switch_off_is_silent():
    assert _run("", {library.ENV_SWITCH: "0"}) == []
