"""Memory options and memory-shaped formulations: ``recompute`` (same loss and gradients, config key, clear error
without a ViT) and the division-free L2 normalisation."""

import numpy as np
import pytest
from _kernels import require_kernels

import mindcv
import mindspore as ms
from mindspore import nn

import mindcv_lseg  # noqa: F401  (registers the lseg_* entries)
from mindcv_lseg.engine.config import parse_args
from mindcv_lseg.engine.loss import LeanSegCrossEntropy, NetWithLoss, SegCrossEntropy, create_seg_loss
from mindcv_lseg.engine.trainer import build_network
from mindcv_lseg.models.lseg import LSeg
from mindcv_lseg.models.similarity import CosineLogits, LeanCosineLogits, l2_normalize


@pytest.fixture(autouse=True)
def _pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def _loss_and_grads(recompute: bool):
    ms.set_seed(0)
    net = mindcv.create_model("lseg_tiny_test", impl="lean", recompute=recompute)
    net.set_train(True)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32))
    labels = rng.integers(0, 3, (2, 64, 64)).astype(np.int32)
    labels[0, :5] = 255  # some ignored pixels
    text = net.encode_text(["cat", "a red car", "sky"])
    loss_net = NetWithLoss(net, create_seg_loss("CE", 255, impl="lean"), text)
    weights = net.trainable_params()
    loss, grads = ms.value_and_grad(loss_net, None, weights)(x, ms.Tensor(labels))
    return net, float(loss.asnumpy()), {p.name: g.asnumpy() for p, g in zip(weights, grads)}


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_recompute_gives_the_same_loss_and_gradients(mode):
    ms.set_context(mode=mode)
    plain, loss, grads = _loss_and_grads(False)
    net, loss_rc, grads_rc = _loss_and_grads(True)
    assert not plain.recompute_blocks and net.recompute_blocks
    assert all(getattr(b, "_recompute_cell", None) is not None for b in net.encoder.vit.blocks)
    assert all(getattr(b, "_recompute_cell", None) is None for b in plain.encoder.vit.blocks)
    assert loss_rc == pytest.approx(loss, rel=1e-6)
    assert sorted(grads_rc) == sorted(grads) and len(grads) > 50
    for name, g in grads.items():
        scale = max(np.abs(g).max(), 1e-6)
        assert np.abs(grads_rc[name] - g).max() <= 1e-6 * scale, name
    assert any(np.abs(g).max() > 0 for name, g in grads.items() if name.startswith("encoder.vit.blocks"))


def test_recompute_without_a_vit_is_refused():
    with pytest.raises(ValueError, match=r"recompute=True recomputes the ViT blocks, but the image encoder Identity"):
        LSeg(
            image_encoder=nn.Identity(),
            reassemble_channels=(8, 8, 8, 8),
            features=8,
            text_width=16,
            text_layers=1,
            text_heads=2,
            embed_dim=16,
            recompute=True,
        )


def test_recompute_config_key_reaches_the_model(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: lseg_tiny_test\nrecompute: true\n")
    args = parse_args(["-c", str(cfg)])
    assert args.recompute is True
    assert build_network(args).recompute_blocks
    assert parse_args(["--model", "lseg_tiny_test"]).recompute is False
    assert not build_network(parse_args(["--model", "lseg_tiny_test"])).recompute_blocks


class _Normalize(nn.Cell):
    def construct(self, x):
        return l2_normalize(x, 1)


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_l2_normalize_is_x_over_its_norm(mode):
    """x * (1 / ||x||) (no RealDiv of the full tensor, which holds memory in CPU graphs) = x / ||x|| to rounding."""
    x = np.random.default_rng(1).normal(size=(2, 16, 5, 7)).astype(np.float32)
    ms.set_context(mode=mode)
    out = _Normalize()(ms.Tensor(x)).asnumpy()
    want = x.astype(np.float64) / np.sqrt((x.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose((out.astype(np.float64) ** 2).sum(axis=1), 1.0, rtol=1e-6)


class _Loss(nn.Cell):
    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def construct(self, x, y):
        return self.loss(x, y)


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_lean_loss_forward_equals_cross_entropy(mode):
    """The lean loss's gather form of the forward = ops.cross_entropy's (SegCrossEntropy) = the numpy formula."""
    rng = np.random.RandomState(1)
    logits = (rng.randn(2, 5, 6, 7) * 4).astype(np.float32)
    labels = rng.randint(0, 5, (2, 6, 7))
    labels[rng.rand(2, 6, 7) < 0.3] = 255
    x, y = ms.Tensor(logits), ms.Tensor(labels.astype(np.int32))
    ms.set_context(mode=mode)
    lean = float(_Loss(LeanSegCrossEntropy(255))(x, y).asnumpy())
    plain = float(_Loss(SegCrossEntropy(255))(x, y).asnumpy())
    valid = labels != 255
    lse = np.log(np.exp(logits.astype(np.float64)).sum(1))
    picked = np.take_along_axis(logits, np.where(valid, labels, 0)[:, None], 1)[:, 0]
    assert lean == pytest.approx(plain, rel=1e-6)
    assert lean == pytest.approx(float(((lse - picked) * valid).sum() / valid.sum()), rel=1e-6)
    all_ignored = _Loss(LeanSegCrossEntropy(255))(x, ms.Tensor(np.full_like(labels, 255, dtype=np.int32)))
    assert float(all_ignored.asnumpy()) == 0.0


class _Weighted(nn.Cell):
    def __init__(self, cell, weight):
        super().__init__()
        self.cell = cell
        self.weight = weight

    def construct(self, a, b):
        return (self.cell(a, b) * self.weight).sum()


@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_lean_cosine_logits_values_and_gradients_equal_autodiff(mode, kernels):
    """LeanCosineLogits: the logits of CosineLogits, and its hand-written backward = autodiff of CosineLogits
    (pixels and text), also checked against the closed-form gradient in float64; with the compiled per-pixel
    kernels and with MindSpore's ops."""
    rng = np.random.default_rng(4)
    pixels = rng.normal(size=(2, 6, 3, 5)).astype(np.float32)
    text = rng.normal(size=(2, 4, 6)).astype(np.float32)
    weight = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)  # loss = sum(weight * logits)
    p, t, wt = ms.Tensor(pixels), ms.Tensor(text), ms.Tensor(weight)
    ms.set_context(mode=mode)
    lean, auto = LeanCosineLogits(1 / 0.07), CosineLogits(1 / 0.07)
    if kernels:
        require_kernels(lean.use_kernels, "_lseg_pixel", "per-pixel kernels")
    lean.use_kernels = kernels
    # lean normalises as x * (1/||x||), native as x / ||x||: equal to float32 rounding
    np.testing.assert_allclose(lean(p, t).asnumpy(), auto(p, t).asnumpy(), rtol=1e-5, atol=1e-5)
    got = ms.grad(_Weighted(lean, wt), grad_position=(0, 1))(p, t)
    want = ms.grad(_Weighted(auto, wt), grad_position=(0, 1))(p, t)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-4, atol=1e-5)
    # the formula in float64: d/dp of scale * <t_n/|t_n|, p/|p|> summed with the weights
    u = pixels.reshape(2, 6, 15).astype(np.float64)
    norm = np.linalg.norm(u, axis=1, keepdims=True)
    tu = text / np.linalg.norm(text, axis=-1, keepdims=True)
    g = np.einsum("bnc,bnk->bck", tu, weight.reshape(2, 4, 15)) / 0.07
    dp = (g - (u / norm) * ((u / norm) * g).sum(1, keepdims=True)) / norm
    np.testing.assert_allclose(got[0].asnumpy(), dp.reshape(pixels.shape), rtol=1e-4, atol=1e-5)
