"""The ONNX-exportable formulations compute what the cells they replace compute (same parameters)."""

import math

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn, ops

from mindcv_lseg.deploy.onnx_compat import (
    DecomposedLayerNorm,
    MatmulBilinearResize,
    MatmulConvTranspose2d,
    PolyGELU,
    make_onnx_exportable,
)
from mindcv_lseg.models.ops_impl import BilinearResize


def test_poly_gelu_matches_exact_gelu():
    x = np.concatenate([np.linspace(-12, 12, 20001), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    exact = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    got = PolyGELU()(ms.Tensor(x)).asnumpy().astype(np.float64)
    # A&S 7.1.26 (erfc error <= 1.5e-7) evaluated in float32 with MindSpore's CPU exp (relative error ~5e-6):
    # 5.8e-7 at most; MindSpore's own ops.gelu(approximate="none") is off by up to 4.5e-7 on the same points
    assert np.abs(got - exact).max() <= 1e-6
    assert got[-4] == 0.0 and got[-3] == 0.0 and abs(got[-2] - 5e-31) < 1e-36 and abs(got[-1] + 5e-31) < 1e-36


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("src, dst", [((6, 5), (12, 10)), ((12, 12), (15, 9)), ((7, 3), (7, 3)), ((1, 4), (3, 8))])
def test_matmul_resize_matches_interpolate(align_corners, src, dst):
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3) + src).astype(np.float32))
    ref = BilinearResize(align_corners, "native")(x, *dst).asnumpy()
    got = MatmulBilinearResize(align_corners)(x, *dst).asnumpy()
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=0)


def test_layer_norm_and_conv_transpose_share_parameters_and_values():
    rng = np.random.default_rng(1)
    ln = nn.LayerNorm((16,), epsilon=1e-6)
    ln.gamma.set_data(ms.Tensor(rng.uniform(0.5, 1.5, 16).astype(np.float32)))
    ln.beta.set_data(ms.Tensor(rng.standard_normal(16).astype(np.float32)))
    x = ms.Tensor(rng.standard_normal((2, 5, 16)).astype(np.float32) * 3 + 1)
    dln = DecomposedLayerNorm(ln)
    assert dln.gamma is ln.gamma and dln.beta is ln.beta
    np.testing.assert_allclose(dln(x).asnumpy(), ln(x).asnumpy(), atol=2e-6, rtol=0)
    conv = nn.Conv2dTranspose(8, 4, 4, stride=4, pad_mode="valid", has_bias=True)
    conv.bias.set_data(ms.Tensor(rng.standard_normal(4).astype(np.float32)))
    y = ms.Tensor(rng.standard_normal((1, 8, 3, 5)).astype(np.float32))
    mconv = MatmulConvTranspose2d(conv, 4, 4)
    assert mconv.weight is conv.weight
    np.testing.assert_allclose(mconv(y).asnumpy(), conv(y).asnumpy(), atol=2e-6, rtol=0)


def test_make_onnx_exportable_swaps_every_blocking_cell():
    import mindcv

    import mindcv_lseg  # noqa: F401

    net = mindcv.create_model("lseg_tiny_test", impl="native")
    params = {p.name: p for p in net.get_parameters()}
    make_onnx_exportable(net)
    kinds = {type(c) for _, c in net.cells_and_names()}
    assert not kinds & {nn.GELU, nn.LayerNorm, nn.Conv2dTranspose, BilinearResize}
    assert {PolyGELU, DecomposedLayerNorm, MatmulConvTranspose2d, MatmulBilinearResize} <= kinds
    after = list(net.get_parameters())
    assert len(after) == len(params) and all(p is params[p.name] for p in after)  # same Parameter objects
