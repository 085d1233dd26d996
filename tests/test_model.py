"""LSeg network: registry entries, shapes of the full variants, the input-size error, frozen CLIP, layers."""

import math

import numpy as np
import pytest

import mindcv
import mindspore as ms
from mindspore import nn, ops

import mindcv_lseg
from mindcv_lseg.kernels.gemm import BlasLinear, BlasMatMul
from mindcv_lseg.models.activations import ErfGELU
from mindcv_lseg.models.cpu_gemm import CpuGemmConv2d, CpuGemmConvTranspose2d, CpuGemmDense, cpu_gemm_patchify, linear
from mindcv_lseg.models.decoder import SpatialRegBlock
from mindcv_lseg.models.lseg import LOGIT_SCALE
from mindcv_lseg.models.ops_impl import adapt_dense


def _param_count(net, prefix=""):
    return sum(int(np.prod(p.shape)) for n, p in net.parameters_and_names() if n.startswith(prefix))


def test_entries_registered_with_mindcv():
    names = mindcv.list_models("lseg_*")
    assert {"lseg_vitl16_384", "lseg_vitb32", "lseg_tiny_test"} <= set(names)
    cfg = mindcv.models.registry.get_pretrained_cfg("lseg_vitl16_384")
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["input_size"] == (3, 480, 480)


def test_pretrained_true_explains_conversion():
    with pytest.raises(ValueError, match="tools/convert.py"):
        mindcv.create_model("lseg_tiny_test", pretrained=True)


def test_mindcv_create_model_arguments():
    """mindcv's train.py passes num_classes, in_channels, drop_rate, drop_path_rate: accepted, the drop rates reach
    the ViT; num_classes is ignored (open vocabulary); features_only is refused with an explanation."""
    ms.set_seed(0)
    net = mindcv.create_model("lseg_tiny_test", num_classes=1000, in_channels=3, drop_rate=0.5, drop_path_rate=0.3)
    blocks = net.encoder.vit.blocks
    assert type(blocks[0].drop_path1).__name__ == "Identity"  # linear rule: 0 at the first block
    assert [round(1 - b.drop_path1.keep_prob, 4) for b in blocks[1:]] == [0.1, 0.2, 0.3]
    assert net.encoder.vit.use_pos_drop and blocks[0].attn.proj_drop is not None
    x = ms.Tensor(np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32))
    text = net.encode_text(["a", "b"])
    net.set_train(False)
    a, b = net(x, text).asnumpy(), net(x, text).asnumpy()
    np.testing.assert_array_equal(a, b)  # no dropout in eval mode
    net.set_train(True)
    assert not np.allclose(net(x, text).asnumpy(), a)  # dropout active in training
    plain = mindcv.create_model("lseg_tiny_test", drop_rate=None, drop_path_rate=None)  # mindcv's defaults
    assert type(plain.encoder.vit.blocks[3].drop_path1).__name__ == "Identity" and not plain.encoder.vit.use_pos_drop
    with pytest.raises(ValueError, match="features_only=True is not supported.*forward_features"):
        mindcv.create_model("lseg_tiny_test", features_only=True)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        mindcv.create_model("lseg_tiny_test", checkpoint_path=str(tmp_path / "nope.ckpt"))


@pytest.fixture(scope="module", params=["lseg_vitl16_384", "lseg_vitb32"])
def full_net(request):
    net = mindcv.create_model(request.param, weight_init=False)
    net.set_train(False)
    return request.param, net


# reference element counts per part (docs/reference_numerics.md, "Checkpoint layout"): timm ViT, act_postprocess,
# scratch
REFERENCE_COUNTS = {
    "lseg_vitl16_384": (304_715_752, 1_025_000, 22_815_232, 16_336_400),
    "lseg_vitb32": (88_297_192, 769_000, 7_599_168, 13_166_096),
}


@pytest.mark.slow  # real-size networks
def test_full_variants_parameter_counts(full_net):
    name, net = full_net
    vit, head, reassemble, scratch = REFERENCE_COUNTS[name]
    # not built here: the ViT's ImageNet head, refinenet4.resConfUnit1 (never called by the reference: two 3x3
    # convs and two BatchNorms) and the 16 BatchNorm num_batches_tracked counters
    unused_rcu = 2 * 256 * 256 * 9 + 2 * 4 * 256
    assert _param_count(net, "encoder.vit.") == vit - head
    assert _param_count(net, "encoder.reassemble.") == reassemble
    assert _param_count(net, "scratch.") == scratch - unused_rcu - 16
    # text tower: CLIP ViT-B/32 text transformer (63.43M)
    assert (
        _param_count(net, "clip_text.")
        == 49408 * 512
        + 77 * 512
        + 12 * (4 * 512 + 3 * 512 * 512 + 3 * 512 + 512 * 512 + 512 + 2048 * 512 + 2048 + 512 * 2048 + 512)
        + 2 * 512
        + 512 * 512
    )


@pytest.mark.slow  # real-size networks, ViT-L/16 at 480x480
def test_full_variants_intermediate_shapes(full_net):
    """Hooked tokens and pyramid at 480x480 (docs/reference_numerics.md, "Forward pass"), without the decoder."""
    name, net = full_net
    tokens = 901 if name == "lseg_vitl16_384" else 226
    x = ms.Tensor(np.zeros((1, 3, 480, 480), np.float32))
    hooked = net.encoder.vit(x)
    assert [t.shape for t in hooked] == [(1, tokens, net.encoder.vit.embed_dim)] * 4
    pyramid = net.encoder.reassemble(hooked, 30 if tokens == 901 else 15, 30 if tokens == 901 else 15)
    widths = (256, 512, 1024, 1024) if name == "lseg_vitl16_384" else (96, 192, 384, 768)
    assert [p.shape for p in pyramid] == [(1, c, 480 // s, 480 // s) for c, s in zip(widths, (4, 8, 16, 32))]


@pytest.fixture(scope="module")
def tiny():
    net = mindcv.create_model("lseg_tiny_test")
    net.set_train(False)
    return net


def test_forward_shapes_and_contract(tiny):
    x = ms.Tensor(np.random.default_rng(0).normal(size=(2, 3, 64, 96)).astype(np.float32))
    text = tiny.encode_text(["sky", "tree", "a photo of a cat"])
    assert text.shape == (3, 64) and text.dtype == ms.float32
    logits = tiny(x, text)
    assert logits.shape == (2, 3, 64, 96) and logits.dtype == ms.float32
    feats = tiny.forward_features(x).asnumpy()
    assert feats.shape == (2, 64, 32, 48)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    # logits = scale * cosine, then bilinear x2 (align_corners=True keeps the corner pixels)
    t = text.asnumpy() / np.linalg.norm(text.asnumpy(), axis=1, keepdims=True)
    low = LOGIT_SCALE * np.einsum("bchw,nc->bnhw", feats, t)
    out = logits.asnumpy()
    np.testing.assert_allclose(out[:, :, 0, 0], low[:, :, 0, 0], atol=1e-5)
    np.testing.assert_allclose(out[:, :, -1, -1], low[:, :, -1, -1], atol=1e-5)
    assert np.abs(out).max() <= LOGIT_SCALE * (1 + 1e-5)


def test_logit_scale_is_fixed_and_not_saved(tiny):
    assert math.isclose(LOGIT_SCALE, 1 / 0.07, rel_tol=1e-7)
    assert not any("logit_scale" in n for n, _ in tiny.parameters_and_names())


@pytest.mark.parametrize("size", [(48, 64), (64, 80), (100, 64)])
def test_input_size_not_multiple_of_32(tiny, size):
    text = tiny.encode_text(["a", "b"])
    x = ms.Tensor(np.zeros((1, 3, *size), np.float32))
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny(x, text)
    with pytest.raises(ValueError, match=f"{size[0]}x{size[1]}"):
        tiny.forward_features(x)


def test_clip_text_is_frozen(tiny):
    clip = [n for n, _ in tiny.parameters_and_names() if n.startswith("clip_text.")]
    assert clip, "the text tower has parameters"
    trainable = {p.name for p in tiny.trainable_params()}
    assert not trainable & set(clip)
    assert all(n.startswith(("encoder.", "scratch.")) for n in trainable)


def test_encode_text_errors(tiny):
    with pytest.raises(ValueError, match="at least one label"):
        tiny.encode_text([])
    with pytest.raises(ValueError, match="too long"):
        tiny.encode_text(["word " * 80])


def _torch_like_conv(x, w, b, stride, pad):
    """Direct-sum reference convolution in float64."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))).astype(np.float64)
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for dy in range(k):
        for dx in range(k):
            patch = x[:, :, dy : dy + stride * (oh - 1) + 1 : stride, dx : dx + stride * (ow - 1) + 1 : stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, dy, dx])
    return out + (0 if b is None else b.reshape(1, -1, 1, 1))


@pytest.mark.parametrize(
    "k, stride, pad, bias",
    [(3, 1, 1, False), (3, 2, 1, True), (1, 1, 0, True), (5, 1, 2, True), (1, 2, 0, True), (5, 2, 2, False)],
)
def test_fast_conv_matches_direct_convolution(k, stride, pad, bias):
    rng = np.random.default_rng(1)
    conv = CpuGemmConv2d(5, 7, k, stride=stride, padding=pad, has_bias=bias)
    x = rng.normal(size=(2, 5, 12, 10)).astype(np.float32)
    out = conv(ms.Tensor(x)).asnumpy()
    ref = _torch_like_conv(x, conv.weight.asnumpy(), conv.bias.asnumpy() if bias else None, stride, pad)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # same as MindSpore's own kernel
    ms_conv = ops.conv2d(ms.Tensor(x), conv.weight, stride=stride, pad_mode="pad", padding=pad)
    np.testing.assert_allclose(
        out - (conv.bias.asnumpy().reshape(1, -1, 1, 1) if bias else 0), ms_conv.asnumpy(), atol=1e-5
    )


def test_patch_conv_transpose_matches_mindspore():
    rng = np.random.default_rng(2)
    layer = CpuGemmConvTranspose2d(6, 4, 2)
    ref = nn.Conv2dTranspose(6, 4, 2, stride=2, pad_mode="valid", has_bias=True)
    ref.weight.set_data(layer.weight.value())
    ref.bias.set_data(layer.bias.value())
    x = ms.Tensor(rng.normal(size=(2, 6, 3, 5)).astype(np.float32))
    np.testing.assert_allclose(layer(x).asnumpy(), ref(x).asnumpy(), atol=1e-5)


@pytest.mark.parametrize("h, w", [(32, 64), (35, 70)])
def test_cpu_gemm_patchify_matches_strided_conv(h, w):
    """Whole patches, and a size that is no multiple of the patch (the conv drops the pixels beyond the last patch)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 3, h, w)).astype(np.float32)
    weight = rng.normal(size=(8, 3, 16, 16)).astype(np.float32)
    b = rng.normal(size=(8,)).astype(np.float32)
    tokens = cpu_gemm_patchify(ms.Tensor(x), ms.Tensor(weight), ms.Tensor(b), BlasLinear()).asnumpy()
    ref = _torch_like_conv(x, weight, b, 16, 0)  # [1, 8, 2, 4]
    np.testing.assert_allclose(tokens, ref.reshape(1, 8, 8).transpose(0, 2, 1), atol=1e-4)


@pytest.mark.parametrize("arch_option, depth", [(1, 1), (2, 2), (1, 3)])
def test_spatial_regularisation_block(arch_option, depth):
    block = SpatialRegBlock(arch_option, depth, "relu")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 3, 6, 5)).astype(np.float32)
    w, b = block.depthwise.depthwise.weight.asnumpy(), block.depthwise.depthwise.bias.asnumpy()

    def once(v):
        dw = _torch_like_conv(v.reshape(3, 1, 6, 5), w, b, 1, 1).reshape(1, 3, 6, 5)
        return dw + v.max(axis=1, keepdims=True) if arch_option == 1 else dw

    ref = x.astype(np.float64)
    for _ in range(depth - 1):
        ref = np.maximum(once(ref), 0)
    ref = once(ref)
    np.testing.assert_allclose(block(ms.Tensor(x)).asnumpy(), ref, atol=1e-5)


def test_tiny_with_spatial_block_builds_and_runs():
    net = mindcv_lseg.LSeg(
        **{**mindcv_lseg.models.lseg.ARCH_CFGS["lseg_tiny_test"], "arch_option": 2, "block_depth": 2}
    )
    names = [n for n, _ in net.parameters_and_names()]
    assert "scratch.head_block.depthwise.depthwise.weight" in names
    out = net(ms.Tensor(np.zeros((1, 3, 64, 64), np.float32)), net.encode_text(["x", "y"]))
    assert out.shape == (1, 2, 64, 64)


def test_text_encoder_runs_only_up_to_the_end_token(tiny):
    """Causal attention: the features from the shortened sequence equal those over all 77 positions."""
    labels = ["sky", "a photo of a small red car parked next to the tree"]
    tokens = tiny.tokenize(labels)
    full = tiny.clip_text(ms.Tensor(tokens, ms.int32)).asnumpy()
    short = tiny.encode_text(labels).asnumpy()
    np.testing.assert_allclose(short, full, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(tiny.encode_text(["sky"]).asnumpy(), full[:1], atol=1e-5, rtol=1e-5)


def test_used_text_length_rounds_up_to_a_power_of_two():
    """The columns up to the last end token (the largest id of a row), as a power of two >= the shortest length
    and <= the context length: few compiled shapes, 4 columns for one-word labels."""
    from mindcv_lseg.models.lseg import used_text_length

    def tokens(*ends):  # rows with the end token (49407) at these columns, zeros after it
        out = np.zeros((len(ends), 77), np.int32)
        for row, end in enumerate(ends):
            out[row, 0], out[row, 1:end], out[row, end] = 49406, 100, 49407
        return out

    assert used_text_length(tokens(2), 4) == 4  # "sky": start, word, end
    assert used_text_length(tokens(2, 4), 4) == 8  # 5 columns used
    assert used_text_length(tokens(7), 4) == 8
    assert used_text_length(tokens(8), 4) == 16
    assert used_text_length(tokens(2), 16) == 16
    assert used_text_length(tokens(40, 3), 4) == 64
    assert used_text_length(tokens(70), 4) == 77  # never beyond the context


def test_encode_text_batches_labels(tiny):
    """More labels than one text batch (32 + 8 rows here, the 8 padded from 5): same features as one at a time."""
    labels = [f"thing number {i}" for i in range(37)]
    together = tiny.encode_text(labels).asnumpy()
    assert together.shape == (37, tiny.embed_dim)
    for i in (0, 31, 32, 36):
        np.testing.assert_allclose(together[i], tiny.encode_text([labels[i]]).asnumpy()[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k, stride, pad", [(3, 1, 1), (3, 2, 1), (5, 1, 2), (1, 1, 0), (1, 2, 0), (7, 2, 3)])
def test_fast_conv_gradients_match_mindspore_conv(k, stride, pad):
    """Input and parameter gradients of the GEMM convolution (hand-written backward for k > 1) equal the native
    kernel's autodiff (regression: strided-slice grads failed)."""
    rng = np.random.default_rng(5)
    conv = CpuGemmConv2d(4, 6, k, stride=stride, padding=pad, has_bias=True)
    x = ms.Tensor(rng.normal(size=(2, 4, 8, 12)).astype(np.float32))
    params = conv.trainable_params()
    target = ms.Tensor(rng.normal(size=(2, 6, 8 // stride, 12 // stride)).astype(np.float32))

    def ours(x):
        return ((conv(x) - target) ** 2).sum()

    def native(x):
        out = ops.conv2d(x, conv.weight, stride=stride, pad_mode="pad", padding=pad) + conv.bias.reshape(1, -1, 1, 1)
        return ((out - target) ** 2).sum()

    for _ in range(3):  # the broken version failed / hung from the fourth GRAPH step on; PYNATIVE failed at once
        got_x, got_params = ms.grad(ours, grad_position=0, weights=params)(x)
    want_x, want_params = ms.grad(native, grad_position=0, weights=params)(x)
    np.testing.assert_allclose(got_x.asnumpy(), want_x.asnumpy(), rtol=1e-4, atol=1e-4)
    assert len(got_params) == len(want_params) == 2
    for g, w in zip(got_params, want_params):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-4, atol=1e-3)


def test_same_conv_gemm_backward_in_graph_mode():
    """The hand-written backward compiles inside a GRAPH-mode cell and matches PYNATIVE autodiff of the native conv."""
    rng = np.random.default_rng(7)
    conv = CpuGemmConv2d(3, 5, 3, padding=1)
    x = ms.Tensor(rng.normal(size=(1, 3, 6, 7)).astype(np.float32))

    class Loss(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def construct(self, x):
            return (self.net(x) * self.net(x)).sum()

    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        got_x, (got_w,) = ms.jit(ms.grad(Loss(conv), grad_position=0, weights=conv.trainable_params()))(x)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)

    def native(x):
        out = ops.conv2d(x, conv.weight, pad_mode="pad", padding=1)
        return (out * out).sum()

    want_x, (want_w,) = ms.grad(native, grad_position=0, weights=conv.trainable_params())(x)
    np.testing.assert_allclose(got_x.asnumpy(), want_x.asnumpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_w.asnumpy(), want_w.asnumpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.slow  # compiles a training graph
def test_tiny_train_steps_run_in_graph_mode():
    """Several optimizer steps of the whole tiny network compile and run in GRAPH mode; the loss decreases."""
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = mindcv.create_model("lseg_tiny_test")
        text = net.encode_text(["a", "b", "c"])
        rng = np.random.default_rng(6)
        x = ms.Tensor(rng.normal(size=(2, 3, 64, 64)).astype(np.float32))
        y = ms.Tensor(rng.integers(0, 3, (2, 64, 64)).astype(np.int32))
        loss_fn = nn.CrossEntropyLoss(ignore_index=255)
        opt = nn.SGD(net.trainable_params(), learning_rate=0.05)

        def forward(x, y):
            return loss_fn(net(x, text), y)

        step = ms.value_and_grad(forward, None, opt.parameters)
        losses = []
        for _ in range(6):
            loss, grads = step(x, y)
            opt(grads)
            losses.append(float(loss.asnumpy()))
        assert losses[-1] < losses[0]
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_erf_gelu_matches_mindspore_gelu_values_and_gradient(mode):
    """Forward = PyTorch's formula x/2 (1 + erf(x / sqrt 2)) to float32 precision (ops.gelu divides by sqrt 2, the
    fallback multiplies by 1/sqrt 2, the one-pass kernel differs in the last bits, e.g. in the far negative tail
    where 1 + erf cancels); gradient = autodiff of ops.gelu = Phi(x) + x phi(x)."""
    x_np = np.linspace(-6, 6, 241, dtype=np.float32).reshape(1, 241)
    x = ms.Tensor(x_np)
    act = ErfGELU()

    def ours(v):
        return act(v).sum()

    def autodiff(v):
        return ops.gelu(v, approximate="none").sum()

    ms.set_context(mode=mode)
    try:
        out = act(x).asnumpy()
        grad = ms.grad(ours)(x).asnumpy()
        want_auto = ms.grad(autodiff)(x).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    xd = x_np.astype(np.float64)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(xd / math.sqrt(2)))
    np.testing.assert_allclose(out, ops.gelu(x, approximate="none").asnumpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out, xd * cdf, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad, want_auto, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, cdf + xd * np.exp(-xd * xd / 2) / math.sqrt(2 * math.pi), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("product", ["matmul", "matmul_nt", "blas_linear"])
def test_linear_flattens_leading_axes(product):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 4, 5)).astype(np.float32)
    w = rng.normal(size=(5, 2)).astype(np.float32)
    b = rng.normal(size=(2,)).astype(np.float32)
    weight = w if product == "matmul" else w.T.copy()  # [in, out] or [out, in] (nn.Dense layout)
    matmul = BlasLinear() if product == "blas_linear" else BlasMatMul(transpose_b=product == "matmul_nt")
    out = linear(ms.Tensor(x), ms.Tensor(weight), ms.Tensor(b), matmul).asnumpy()
    assert out.shape == (3, 4, 2)
    np.testing.assert_allclose(out, x @ w + b, rtol=1e-5, atol=1e-5)
    if product != "blas_linear":
        no_bias = linear(ms.Tensor(x), ms.Tensor(weight), None, matmul).asnumpy()
        np.testing.assert_allclose(no_bias, x @ w, rtol=1e-5, atol=1e-5)


def test_cpu_gemm_dense_matches_nn_dense():
    rng = np.random.default_rng(9)
    ref = nn.Dense(6, 4, has_bias=True)
    layer = adapt_dense(ref, "lean")
    assert isinstance(layer, CpuGemmDense) and adapt_dense(ref, "native") is ref
    np.testing.assert_array_equal(layer.weight.asnumpy(), ref.weight.asnumpy())
    x = ms.Tensor(rng.normal(size=(2, 3, 6)).astype(np.float32))
    np.testing.assert_allclose(layer(x).asnumpy(), ref(x).asnumpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_lean_attention_matches_mindcv_attention(mode):
    """Same parameters as mindcv's Attention: the same forward to float32 rounding (the lean products run through
    OpenBLAS, mindcv's through MindSpore's BatchMatMul: same sums in another order), and the hand-written backward
    gives the autodiff gradients of mindcv's version (input and all four parameters)."""
    from mindcv.models.vit import Attention

    from mindcv_lseg.models.attention import LeanAttention

    rng = np.random.default_rng(9)
    ref = Attention(128, num_heads=2, qkv_bias=True)
    lean = LeanAttention(ref.qkv, ref.proj, 2)
    x = ms.Tensor(rng.normal(size=(2, 7, 128)).astype(np.float32))
    target = ms.Tensor(rng.normal(size=(2, 7, 128)).astype(np.float32))
    params = ref.trainable_params()

    def loss_ref(x):
        return ((ref(x) - target) ** 2).sum()

    def loss_lean(x):
        return ((lean(x) - target) ** 2).sum()

    ms.set_context(mode=mode)
    try:
        np.testing.assert_allclose(lean(x).asnumpy(), ref(x).asnumpy(), rtol=1e-5, atol=1e-6)
        got_x, got_p = ms.grad(loss_lean, grad_position=0, weights=params)(x)
        want_x, want_p = ms.grad(loss_ref, grad_position=0, weights=params)(x)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    np.testing.assert_allclose(got_x.asnumpy(), want_x.asnumpy(), rtol=1e-4, atol=1e-4)
    assert len(got_p) == len(want_p) == 4
    for g, w in zip(got_p, want_p):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-4, atol=1e-4)
