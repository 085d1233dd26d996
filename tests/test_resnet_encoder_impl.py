"""``ResNetEncoder`` (the image encoder of ``lseg_rn101``) in both op implementations: same parameters, same stages."""

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from mindcv_lseg.models.cpu_gemm import CpuGemmConv2d, CpuSubsampledConv1x1
from mindcv_lseg.models.ops_impl import adapt_conv
from mindcv_lseg.models.resnet_encoder import ResNetEncoder


def _cells(net, cls):
    return [name for name, cell in net.cells_and_names() if isinstance(cell, cls)]


@pytest.fixture(scope="module")
def encoders():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    lean = ResNetEncoder((1, 1, 1, 1), impl="lean")
    native = ResNetEncoder((1, 1, 1, 1), impl="native")
    not_loaded, _ = ms.load_param_into_net(native, {p.name: p for p in lean.get_parameters()}, strict_load=True)
    assert not not_loaded
    lean.set_train(False)
    native.set_train(False)
    return lean, native


def test_same_parameter_names_and_shapes(encoders):
    lean, native = encoders
    assert [(p.name, p.shape) for p in lean.get_parameters()] == [(p.name, p.shape) for p in native.get_parameters()]


def test_native_keeps_mindcvs_convs_and_lean_replaces_them(encoders):
    lean, native = encoders
    assert _cells(native, CpuGemmConv2d) == [] and _cells(native, CpuSubsampledConv1x1) == []
    assert "resnet.conv1" in _cells(lean, CpuGemmConv2d) and "resnet.layer1.0.conv2" in _cells(lean, CpuGemmConv2d)
    assert "resnet.layer2.0.down_sample.0" in _cells(lean, CpuSubsampledConv1x1)
    assert "resnet.layer1.0.conv1" in _cells(lean, CpuGemmConv2d)  # stride-1 1x1 convs: GEMMs through OpenBLAS
    assert _cells(lean, nn.Conv2d) == []


def test_same_stage_outputs(encoders):
    lean, native = encoders
    x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32))
    outs_lean, outs_native = lean(x), native(x)
    for level, (a, b, channels) in enumerate(zip(outs_lean, outs_native, ResNetEncoder.OUT_CHANNELS)):
        assert a.shape == b.shape == (1, channels, 64 // 4 // 2**level, 64 // 4 // 2**level)
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-4, atol=1e-4)


def test_adapt_conv_keeps_the_weights():
    conv = nn.Conv2d(4, 6, 3, stride=2, pad_mode="pad", padding=1, has_bias=True)
    lean = adapt_conv(conv, "lean")
    assert isinstance(lean, CpuGemmConv2d)
    np.testing.assert_array_equal(lean.weight.asnumpy(), conv.weight.asnumpy())
    np.testing.assert_array_equal(lean.bias.asnumpy(), conv.bias.asnumpy())
    assert adapt_conv(conv, "native") is conv
    with pytest.raises(ValueError, match="a resolved impl"):
        adapt_conv(conv, "fast")
