"""The bilinear resize kernels (mindcv_lseg.kernels.resize) behind the lean BilinearResize: values and gradients
against MindSpore's ``ops.interpolate`` and its autodiff (GRAPH and PYNATIVE, both ``align_corners``, up, down and
non-integer factors, B > 1), the raw primitives' argument checks, the switch to ``ops.interpolate`` for exports and
float16, and the fallback when the library is missing or switched off."""


import numpy as np
import pytest
from _kernels import require_kernels, run_script

import mindspore as ms
from mindspore import Tensor, nn, ops

from mindcv_lseg.kernels import library
from mindcv_lseg.kernels.resize import resize_kernels
from mindcv_lseg.models.ops_impl import BilinearResize, without_compiled_kernels

# (input [B, C, h, w], output (H, W)): x2 (the decoder), the position-embedding 24 -> 30, non-integer up and down
# factors, a different factor per axis, same size, one pixel to many and many to one
SHAPES = [
    ((1, 4, 12, 12), (24, 24)),
    ((1, 3, 24, 24), (30, 30)),
    ((2, 3, 9, 11), (20, 7)),
    ((2, 2, 13, 17), (6, 5)),
    ((3, 2, 30, 30), (24, 24)),
    ((2, 2, 5, 9), (5, 9)),
    ((1, 2, 1, 1), (3, 4)),
    ((1, 2, 4, 3), (1, 1)),
]


@pytest.fixture(scope="module")
def kernels():
    return {ac: require_kernels(resize_kernels(ac), "_lseg_resize", "resize kernels") for ac in (True, False)}


class _Loss(nn.Cell):
    """sum(resize(x) * weight): its gradient in x is the resize's transpose applied to ``weight``."""

    def __init__(self, resize, size, weight):
        super().__init__()
        self.resize = resize
        self.size = size
        self.weight = weight

    def construct(self, x):
        return (self.resize(x, self.size[0], self.size[1]) * self.weight).sum()


def _data(shape, size, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    weight = rng.standard_normal(shape[:2] + size).astype(np.float32)
    return x, weight


def _ulps(*arrays):
    """A tolerance of a few float32 rounding steps of the largest magnitude involved."""
    return 4 * np.finfo(np.float32).eps * max(float(np.abs(a).max()) for a in arrays)


@pytest.mark.parametrize("mode", ["graph", "pynative"])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shape, size", SHAPES)
def test_values_and_gradient_match_interpolate(kernels, mode, align_corners, shape, size):
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    x, weight = _data(shape, size, seed=sum(shape) + sum(size))
    lean, native = BilinearResize(align_corners, "lean"), BilinearResize(align_corners, "native")
    assert lean.use_kernels and not native.use_kernels
    out = lean(Tensor(x), *size).asnumpy()
    want = ops.interpolate(Tensor(x), size=size, mode="bilinear", align_corners=align_corners).asnumpy()
    assert out.shape == want.shape == shape[:2] + size
    np.testing.assert_allclose(out, want, rtol=0, atol=_ulps(x))
    grad = ms.grad(_Loss(lean, size, Tensor(weight)))(Tensor(x)).asnumpy()
    want_grad = ms.grad(_Loss(native, size, Tensor(weight)))(Tensor(x)).asnumpy()
    assert grad.shape == x.shape
    # a gradient entry sums up to (H/h + 1) * (W/w + 1) terms
    terms = (size[0] / shape[2] + 1) * (size[1] / shape[3] + 1)
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=_ulps(weight) * terms)


@pytest.mark.parametrize("align_corners", [True, False])
def test_known_values(kernels, align_corners):
    """A ramp along the width, resized 2 -> 4: the corner-aligned positions 0, 1/3, 2/3, 1, the half-pixel ones
    0, 0.25, 0.75, 1 (clamped at the borders); and one row of its transpose."""
    x = np.array([[[[0.0, 3.0]]]], np.float32)
    marks = Tensor(np.zeros(1, np.float32)), Tensor(np.zeros(4, np.float32))
    out = kernels[align_corners].forward(Tensor(x), *marks).asnumpy()
    want = [0.0, 1.0, 2.0, 3.0] if align_corners else [0.0, 0.75, 2.25, 3.0]
    np.testing.assert_allclose(out[0, 0, 0], want, rtol=1e-6)
    dy = np.array([[[[1.0, 10.0, 100.0, 1000.0]]]], np.float32)
    dx = kernels[align_corners].backward(Tensor(dy), Tensor(np.zeros(1, np.float32)), Tensor(np.zeros(2, np.float32)))
    weights = np.array(
        [[1, 2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3, 1]] if align_corners else [[1, 0.75, 0.25, 0], [0, 0.25, 0.75, 1]]
    )
    np.testing.assert_allclose(dx.asnumpy()[0, 0, 0], weights @ dy[0, 0, 0], rtol=1e-6)


def test_primitive_rejects_inconsistent_arguments(kernels):
    """The kernel checks what it is given: a marker that is not 1-D (return code 13) or a float16 input (12) is
    refused, not read out of bounds."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    forward = kernels[True].forward
    mark = Tensor(np.zeros(3, np.float32))
    x = Tensor(np.ones((1, 1, 2, 2), np.float32))
    with pytest.raises(RuntimeError, match=r"LsegResizeBilinearAC\) is 13"):
        forward(x, Tensor(np.zeros((3, 1), np.float32)), mark).asnumpy()
    with pytest.raises(RuntimeError, match=r"LsegResizeBilinearAC\) is 12"):
        forward(x.astype(ms.float16), mark, mark).asnumpy()


def test_float16_and_exports_take_interpolate(kernels):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    x = np.random.default_rng(3).standard_normal((1, 2, 5, 6)).astype(np.float16)
    lean = BilinearResize(True, "lean")
    out = lean(Tensor(x), 10, 12)
    assert out.dtype == ms.float16
    want = ops.interpolate(Tensor(x), size=(10, 12), mode="bilinear", align_corners=True)
    np.testing.assert_array_equal(out.asnumpy(), want.asnumpy())

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.up = BilinearResize(True, "lean")

        def construct(self, x):
            return self.up(x, 8, 8)

    ms.set_context(mode=ms.GRAPH_MODE)  # as an export compiles it
    net = without_compiled_kernels(Net())
    assert not net.up.use_kernels
    x32 = Tensor(x.astype(np.float32))
    want = ops.interpolate(x32, size=(8, 8), mode="bilinear", align_corners=True)
    np.testing.assert_array_equal(net(x32).asnumpy(), want.asnumpy())  # MindSpore's own op, bit for bit


def test_every_resize_of_the_lean_model_uses_the_kernel(kernels):
    """The position-embedding resize, the four fusion blocks' and the logits' x2 upsamplings."""
    import mindcv  # the package's models are registered: mindcv_lseg is imported above

    resizes = {
        impl: [
            (name, cell)
            for name, cell in mindcv.create_model("lseg_tiny_test", impl=impl).cells_and_names()
            if isinstance(cell, BilinearResize)
        ]
        for impl in ("lean", "native")
    }
    names = sorted(name for name, _ in resizes["lean"])
    assert names == sorted(name for name, _ in resizes["native"])
    assert len(names) == 6 and "upsample" in names and "encoder.vit.pos_resize" in names, names
    assert all(cell.use_kernels for _, cell in resizes["lean"])
    assert not any(cell.use_kernels for _, cell in resizes["native"])


def test_native_never_loads_the_kernels():
    assert BilinearResize(False, "native").kernel is None
    with pytest.raises(ValueError, match="resolved impl"):
        BilinearResize(False, "auto")


_FALLBACK = """
import numpy as np, mindspore as ms
from mindspore import Tensor
from mindcv_lseg.kernels import library
{patch}
from mindcv_lseg.models.ops_impl import BilinearResize
cells = [BilinearResize(ac, "lean") for ac in (True, False, True)]
x = Tensor(np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3))
print("use_kernels", any(c.use_kernels for c in cells), float(cells[0](x, 4, 5).asnumpy().sum()))
"""


def _expected_sum():
    x = Tensor(np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3))
    return float(ops.interpolate(x, size=(4, 5), mode="bilinear", align_corners=True).asnumpy().sum())


def _run(patch, env_extra):
    return run_script(_FALLBACK.format(patch=patch), "mindcv-lseg: bilinear resize", env_extra)


def test_missing_library_falls_back_with_one_notice():
    stdout, notices = _run(
        "_find = library.library_path\n"
        "library.library_path = lambda stem: None if stem == '_lseg_resize' else _find(stem)",
        {},
    )
    assert stdout.split()[:2] == ["use_kernels", "False"]
    assert float(stdout.split()[2]) == pytest.approx(_expected_sum(), rel=1e-6)
    assert len(notices) == 1 and "was not built" in notices[0], notices


def test_switch_off_is_silent():
    stdout, notices = _run("", {library.ENV_SWITCH: "0"})
    assert stdout.split()[:2] == ["use_kernels", "False"] and notices == []
    assert float(stdout.split()[2]) == pytest.approx(_expected_sum(), rel=1e-6)
