"""``impl="native"`` vs ``impl="lean"``: selection, identical parameters, same outputs, same training step."""

import numpy as np
import pytest

import mindcv
import mindspore as ms
from mindcv.models.vit import Attention
from mindspore import nn

import mindcv_lseg  # noqa: F401  (registers the lseg_* entries)
from mindcv_lseg.engine.loss import LeanSegCrossEntropy, NetWithLoss, SegCrossEntropy, create_seg_loss
from mindcv_lseg.models.activations import ErfGELU
from mindcv_lseg.models.attention import LeanAttention
from mindcv_lseg.models.cpu_gemm import CpuGemmConv2d, CpuGemmConvTranspose2d
from mindcv_lseg.models.ops_impl import NativeAttention, current_impl, resolve_impl


@pytest.fixture(autouse=True)
def _pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize(
    "impl, device, want",
    [
        ("auto", "CPU", "lean"),
        ("auto", "GPU", "native"),
        ("auto", "Ascend", "native"),
        ("native", "CPU", "native"),
        ("lean", "Ascend", "lean"),
        ("lean", "GPU", "lean"),
    ],
)
def test_resolve_impl(impl, device, want):
    assert resolve_impl(impl, device) == want


def test_resolve_impl_rejects_bad_values():
    with pytest.raises(ValueError, match=r"impl must be one of 'auto', 'native', 'lean', got 'fast'"):
        resolve_impl("fast", "CPU")
    with pytest.raises(ValueError, match=r"impl='auto' needs a device target .* got 'TPU'"):
        resolve_impl("auto", "TPU")
    with pytest.raises(ValueError, match=r"impl must be one of 'auto', 'native', 'lean'"):
        mindcv.create_model("lseg_tiny_test", impl="Native")


def test_auto_is_lean_on_this_cpu():
    assert ms.get_context("device_target") == "CPU"
    assert current_impl("auto") == "lean"
    assert mindcv.create_model("lseg_tiny_test").impl == "lean"


def _cells(net, cls):
    return [name for name, cell in net.cells_and_names() if isinstance(cell, cls)]


@pytest.fixture(scope="module")
def nets():
    """The tiny model in both impls, the native one holding the lean one's weights."""
    ms.set_seed(0)
    lean = mindcv.create_model("lseg_tiny_test", impl="lean")
    native = mindcv.create_model("lseg_tiny_test", impl="native")
    not_loaded, _ = ms.load_param_into_net(native, {p.name: p for p in lean.get_parameters()}, strict_load=True)
    assert not_loaded == []
    return lean, native


def test_both_impls_have_identical_parameters(nets):
    lean, native = nets
    shapes = [(p.name, p.shape, p.requires_grad) for p in lean.get_parameters()]
    assert shapes == [(p.name, p.shape, p.requires_grad) for p in native.get_parameters()]
    names = [s[0] for s in shapes]
    assert "encoder.vit.blocks.0.attn.qkv.weight" in names and "scratch.layer1_rn.weight" in names


def test_native_uses_mindspore_and_mindcv_cells(nets):
    lean, native = nets
    lean_only = (CpuGemmConv2d, CpuGemmConvTranspose2d, LeanAttention, ErfGELU)
    for cls in lean_only:
        assert _cells(native, cls) == [], cls.__name__
        assert _cells(lean, cls), cls.__name__
    assert len(_cells(native, NativeAttention)) == 4 and all(
        isinstance(c, Attention) for _, c in native.cells_and_names() if isinstance(c, NativeAttention)
    )
    convs = [c for _, c in native.cells_and_names() if isinstance(c, nn.Conv2d)]
    assert any(c.kernel_size == (3, 3) and c.pad_mode == "pad" for c in convs)
    assert _cells(native, nn.Conv2dTranspose) and _cells(native, nn.GELU)


def test_native_attention_equals_mindcv_attention():
    ms.set_seed(1)
    ref = Attention(32, num_heads=4, qkv_bias=True)
    ref.set_train(False)
    native = NativeAttention(ref.qkv, ref.proj, 4)
    native.set_train(False)
    x = ms.Tensor(np.random.RandomState(0).randn(2, 7, 32).astype(np.float32))
    np.testing.assert_array_equal(native(x).asnumpy(), ref(x).asnumpy())


def _inputs(height=64, width=96):
    rng = np.random.RandomState(0)
    x = ms.Tensor(rng.randn(2, 3, height, width).astype(np.float32))
    labels = rng.randint(0, 3, (2, height, width)).astype(np.int32)
    labels[:, :5] = 255
    return x, ms.Tensor(labels)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_same_outputs(nets, mode):
    lean, native = nets
    ms.set_context(mode=mode)
    x, _ = _inputs()
    labels = ["cat", "a red car", "sky"]
    text_lean, text_native = lean.encode_text(labels), native.encode_text(labels)
    np.testing.assert_allclose(text_native.asnumpy(), text_lean.asnumpy(), atol=1e-5, rtol=0)
    out_lean, out_native = lean(x, text_lean).asnumpy(), native(x, text_lean).asnumpy()
    assert np.abs(out_lean).max() > 1.0
    np.testing.assert_allclose(out_native, out_lean, atol=2e-5, rtol=0)


def _loss_and_grads(net, impl):
    x, labels = _inputs()
    net.set_train(True)
    text = net.encode_text(["cat", "a red car", "sky"])
    loss_net = NetWithLoss(net, create_seg_loss("CE", 255, impl=impl), text)
    weights = [p for p in net.trainable_params()]
    loss, grads = ms.value_and_grad(loss_net, None, weights)(x, labels)
    net.set_train(False)
    return float(loss.asnumpy()), {p.name: g.asnumpy() for p, g in zip(weights, grads)}


@pytest.mark.slow
def test_one_training_step_gives_the_same_loss_and_gradients(nets):
    lean, native = nets
    ms.set_context(mode=ms.GRAPH_MODE)
    loss_lean, grads_lean = _loss_and_grads(lean, "lean")
    loss_native, grads_native = _loss_and_grads(native, "native")
    assert isinstance(create_seg_loss("CE", impl="lean"), LeanSegCrossEntropy)
    assert type(create_seg_loss("CE", impl="native")) is SegCrossEntropy
    assert loss_native == pytest.approx(loss_lean, rel=1e-5)
    assert sorted(grads_lean) == sorted(grads_native) and len(grads_lean) > 50
    for name, g in grads_lean.items():
        scale = max(np.abs(g).max(), 1e-6)
        err = np.abs(grads_native[name] - g).max()
        assert err <= 1e-4 * scale + 1e-7, f"{name}: max abs diff {err:.3g} (max |grad| {scale:.3g})"


@pytest.mark.parametrize("src, dst", [("lean", "native"), ("native", "lean")])
def test_checkpoint_from_one_impl_loads_into_the_other(tmp_path, src, dst):
    ms.set_seed(3)
    net = mindcv.create_model("lseg_tiny_test", impl=src)
    net.set_train(False)
    ckpt = tmp_path / f"{src}.ckpt"
    ms.save_checkpoint(net, str(ckpt))
    other = mindcv.create_model("lseg_tiny_test", impl=dst, checkpoint_path=str(ckpt))
    other.set_train(False)
    assert other.impl == dst
    x, _ = _inputs(64, 64)
    text = net.encode_text(["tree", "road"])
    np.testing.assert_allclose(other.encode_text(["tree", "road"]).asnumpy(), text.asnumpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(other(x, text).asnumpy(), net(x, text).asnumpy(), atol=2e-5, rtol=0)


@pytest.mark.slow
def test_native_attention_exports_to_onnx(tmp_path):
    """MindSpore 2.10's ONNX exporter has no Unstack (mindcv's Attention); the native attention avoids it."""
    ort = pytest.importorskip("onnxruntime")
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(2)
    ref = Attention(32, num_heads=4, qkv_bias=True)
    net = NativeAttention(ref.qkv, ref.proj, 4)
    net.set_train(False)
    x = np.random.RandomState(0).randn(1, 7, 32).astype(np.float32)
    ms.export(net, ms.Tensor(x), file_name=str(tmp_path / "attn"), file_format="ONNX")
    session = ort.InferenceSession(str(tmp_path / "attn.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, net(ms.Tensor(x)).asnumpy(), atol=1e-5, rtol=0)
    with pytest.raises(Exception, match="Unstack"):
        ms.export(ref, ms.Tensor(x), file_name=str(tmp_path / "mindcv_attn"), file_format="ONNX")
