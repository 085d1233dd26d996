"""Inference core: whole / slide / ms_flip against a straightforward numpy re-computation of the procedure.

A deterministic fake network with a spatially varying, position-dependent (not translation- or flip-equivariant)
output makes every windowing, padding, flipping or resizing mistake visible.
"""

import math

import numpy as np
import pytest

import mindspore as ms

from mindcv_lseg.eval import inference as I
from mindcv_lseg.eval.text_cache import TextEmbeddingCache, checkpoint_identity

N_CLS = 3


def fake_logits(x):
    """numpy [1,3,H,W] -> [1,N,H,W]: channel mixing + neighbour term + absolute-position term."""
    _, _, h, w = x.shape
    a = np.array([[0.7, -0.2, 0.4], [-0.5, 0.9, 0.1], [0.3, 0.3, -0.8]], np.float32)
    ii = np.arange(h, dtype=np.float32)[:, None]
    jj = np.arange(w, dtype=np.float32)[None, :]
    right = np.concatenate([x[:, :, :, 1:], x[:, :, :, -1:]], axis=3)  # depends on the right neighbour
    out = np.einsum("nc,bchw->bnhw", a, x) + 0.5 * np.einsum("nc,bchw->bnhw", a[::-1], right)
    pos = np.stack([np.sin(0.21 * ii + 0.05 * jj * (n + 1)) for n in range(N_CLS)])[None]
    return (out + 0.3 * pos).astype(np.float32)


class FakeNet:
    """``net(x, text) -> Tensor`` recording the input shapes."""

    def __init__(self):
        self.shapes = []

    def __call__(self, x, text):
        self.shapes.append(tuple(x.shape))
        return ms.Tensor(fake_logits(x.asnumpy()))

    def encode_text(self, labels):
        self.encoded = getattr(self, "encoded", 0) + 1
        return ms.Tensor(np.stack([np.full(4, len(l), np.float32) + np.arange(4) for l in labels]))


# ---------------- independent numpy re-implementation -------------------------------------------------------------
def np_resize_ac(x, oh, ow):
    """Bilinear align_corners=True in float32 with float32 source coordinates (as PyTorch's CPU kernel)."""
    f = np.float32

    def axis(o, i):
        s = f(0) if o <= 1 else f(i - 1) / f(o - 1)
        src = (s * np.arange(o, dtype=f)).astype(f)
        i0 = np.minimum(src.astype(np.int64), i - 1)
        i1 = np.minimum(i0 + 1, i - 1)
        l1 = (src - i0.astype(f)).astype(f)
        return i0, i1, (f(1) - l1).astype(f), l1

    y0, y1, a0, a1 = axis(oh, x.shape[2])
    x0, x1, b0, b1 = axis(ow, x.shape[3])
    r0, r1 = x[:, :, y0], x[:, :, y1]
    return (
        a0[:, None] * (b0 * r0[:, :, :, x0] + b1 * r0[:, :, :, x1])
        + a1[:, None] * (b0 * r1[:, :, :, x0] + b1 * r1[:, :, :, x1])
    ).astype(f)


def np_net(x, flip):
    out = fake_logits(x)
    if flip:
        out = out + fake_logits(x[:, :, :, ::-1].copy())[:, :, :, ::-1]
    return out


def np_pad_to(x, size):
    h, w = x.shape[2:]
    canvas = np.full((1, 3, max(h, size), max(w, size)), -1.0, np.float32)
    canvas[:, :, :h, :w] = x
    return canvas


def np_one_scale(img, crop, stride, flip):
    """Per-scale sliding window with count normalisation (one window if it fits)."""
    h, w = img.shape[2:]
    if max(h, w) <= crop:
        return np_net(np_pad_to(img, crop), flip)[:, :, :h, :w]
    big = np_pad_to(img, crop)
    ph, pw = big.shape[2:]
    acc = np.zeros((1, N_CLS, ph, pw), np.float32)
    cnt = np.zeros((ph, pw), np.float32)
    h0 = 0
    while True:
        w0 = 0
        while True:
            win = big[:, :, h0 : h0 + crop, w0 : w0 + crop]
            vh, vw = win.shape[2:]
            acc[:, :, h0 : h0 + vh, w0 : w0 + vw] += np_net(np_pad_to(win, crop), flip)[:, :, :vh, :vw]
            cnt[h0 : h0 + vh, w0 : w0 + vw] += 1
            if w0 + crop >= pw:
                break
            w0 += stride
        if h0 + crop >= ph:
            break
        h0 += stride
    return (acc / cnt)[:, :, :h, :w]


def np_multi_scale(img, scales, base, crop, stride, flip):
    h, w = img.shape[2:]
    total = np.zeros((1, N_CLS, h, w), np.float32)
    for s in scales:
        long_side = math.ceil(base * s)
        if h > w:
            nh, nw = long_side, int(w * long_side / h + 0.5)
        else:
            nh, nw = int(h * long_side / w + 0.5), long_side
        out = np_one_scale(np_resize_ac(img, nh, nw), crop, stride, flip)
        total += np_resize_ac(out, h, w)
    return total


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    u8 = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return I.normalize_image(u8)


# ---------------- tests ----------------------------------------------------------------------------------------------
def test_normalize_matches_totensor_normalize():
    u8 = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_array_equal(
        I.normalize_image(u8)[0, :, 0, 0], ((np.array([0, 128, 255], np.float32) / 255) - 0.5) / 0.5
    )


def test_pad_to_multiple_and_crop_size():
    x = np.arange(2 * 33 * 70, dtype=np.float32).reshape(1, 2, 33, 70)
    p = I.pad_to_multiple(x, 32, value=-1.0)
    assert p.shape == (1, 2, 64, 96)
    np.testing.assert_array_equal(p[:, :, :33, :70], x)
    assert np.all(p[:, :, 33:] == -1) and np.all(p[:, :, :, 70:] == -1)
    same = np.zeros((1, 3, 64, 32), np.float32)
    assert I.pad_to_multiple(same) is same  # nothing to pad: the array itself
    assert I.pad_image(x, 48).shape == (1, 2, 48, 70)  # at least the crop size, never cropped


def test_resize_matches_numpy_align_corners_true():
    x = _image(37, 53)
    np.testing.assert_allclose(I.resize_bilinear(x, 80, 61), np_resize_ac(x, 80, 61), atol=2e-6)
    np.testing.assert_allclose(I.resize_bilinear(x, 20, 30), np_resize_ac(x, 20, 30), atol=2e-6)


def test_reference_sizes_and_grid():
    # reference long sides for base 520: 260, 390, 520, 650, 780, 910
    assert [I.scaled_size(400, 600, 520, s)[2] for s in I.REFERENCE_SCALES] == [260, 390, 520, 650, 780, 910]
    assert I.scaled_size(400, 600, 520, 0.75)[:2] == (260, 390)  # short = int(400*390/600 + 0.5)
    assert I.scaled_size(600, 400, 520, 1.0)[:2] == (520, 347)  # h > w: height is the long side
    assert I.InferenceConfig(mode="ms_flip").resolved().stride == 320
    grid = I.window_grid(520, 700, 480, 320)  # h: 2 windows, w: ceil(220/320)+1 = 2
    assert grid == [(0, 480, 0, 480), (0, 480, 320, 700), (320, 520, 0, 480), (320, 520, 320, 700)]


def test_whole_equals_network_logits_and_pads_to_32():
    net = FakeNet()
    x = _image(64, 96)
    out = I.run_inference(net, x, None, I.InferenceConfig(mode="whole"))
    np.testing.assert_array_equal(out, fake_logits(x))
    x2 = _image(50, 70, seed=1)
    out2 = I.run_inference(net, x2, None, I.InferenceConfig(mode="whole"))
    padded = np.full((1, 3, 64, 96), -1.0, np.float32)
    padded[:, :, :50, :70] = x2
    np.testing.assert_array_equal(out2, fake_logits(padded)[:, :, :50, :70])
    assert net.shapes[-1] == (1, 3, 64, 96)


@pytest.mark.parametrize("hw", [(100, 150), (150, 70), (64, 64), (40, 50)])
def test_slide_native_matches_numpy(hw):
    net = FakeNet()
    x = _image(*hw, seed=2)
    cfg = I.InferenceConfig(mode="slide", crop_size=64, stride=42)
    out = I.run_inference(net, x, None, cfg)
    ref = np_one_scale(x, 64, 42, flip=False)
    assert out.shape == (1, N_CLS) + hw
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert set(net.shapes) == {(1, 3, 64, 64)}  # every forward is crop x crop


@pytest.mark.parametrize("hw", [(70, 90), (90, 61), (75, 75)])
def test_ms_flip_matches_numpy(hw):
    net = FakeNet()
    x = _image(*hw, seed=3)
    cfg = I.InferenceConfig(mode="ms_flip", base_size=80, crop_size=64, stride=42)
    out = I.run_inference(net, x, None, cfg)
    ref = np_multi_scale(x, I.REFERENCE_SCALES, 80, 64, 42, flip=True)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    assert set(net.shapes) == {(1, 3, 64, 64)}
    # long sides 40, 60 (one window), 80, 100, 120, 140 (sliding); flip doubles every forward
    n_windows = 0
    for s in I.REFERENCE_SCALES:
        nh, nw, _, _ = I.scaled_size(hw[0], hw[1], 80, s)
        n_windows += 1 if max(nh, nw) <= 64 else len(I.window_grid(max(nh, 64), max(nw, 64), 64, 42))
    assert len(net.shapes) == 2 * n_windows


def test_flip_is_a_sum_of_raw_logits():
    net = FakeNet()
    x = _image(64, 64, seed=4)
    out = I.run_inference(net, x, None, I.InferenceConfig(mode="whole", flip=True))
    expected = fake_logits(x) + fake_logits(x[:, :, :, ::-1].copy())[:, :, :, ::-1]
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="eval mode must be one of"):
        I.InferenceConfig(mode="multi")
    with pytest.raises(ValueError, match="scales"):
        I.InferenceConfig(mode="ms_flip", scales=[])
    for mode in ("slide", "ms_flip"):  # the window is the network input
        with pytest.raises(ValueError, match="crop_size 100 .* multiple of 32"):
            I.InferenceConfig(mode=mode, crop_size=100)
    assert I.InferenceConfig(mode="whole", crop_size=100).crop_size == 100  # unused by whole (pads to 32)
    with pytest.raises(ValueError, match="one normalised image"):
        I.run_inference(FakeNet(), np.zeros((2, 3, 8, 8), np.float32), None)


def test_text_cache_memory_and_disk(tmp_path):
    net = FakeNet()
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"x")
    model_id = "lseg_tiny_test|" + checkpoint_identity(str(ckpt))
    cache = TextEmbeddingCache(net, model_id=model_id, cache_dir=str(tmp_path / "cache"))
    a = cache(["sky", "tree"])
    b = cache(["sky", "tree"])
    assert net.encoded == 1 and cache.hits == 1 and cache.misses == 1
    np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    cache(["tree", "sky"])  # order matters: a different label set
    assert net.encoded == 2
    files = list((tmp_path / "cache").glob("text_lseg_tiny_test_*.npy"))
    assert len(files) == 2
    # a new process (new cache object) with the same model/labels reads the disk entry
    cache2 = TextEmbeddingCache(net, model_id=model_id, cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(cache2(["sky", "tree"]).asnumpy(), a.asnumpy())
    assert net.encoded == 2 and cache2.disk_hits == 1
    # another checkpoint identity -> another key -> recomputed
    cache3 = TextEmbeddingCache(net, model_id="lseg_tiny_test|other", cache_dir=str(tmp_path / "cache"))
    cache3(["sky", "tree"])
    assert net.encoded == 3


def test_prompt_template_ensemble():
    net = FakeNet()
    cache = TextEmbeddingCache(net, templates=("a photo of a {}.", "{}"))
    feats = cache.features(["sky"])
    e1 = np.full(4, len("a photo of a sky."), np.float32) + np.arange(4)
    e2 = np.full(4, len("sky"), np.float32) + np.arange(4)
    expected = (e1 / np.linalg.norm(e1) + e2 / np.linalg.norm(e2)) / 2
    np.testing.assert_allclose(feats[0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="placeholder"):
        TextEmbeddingCache(net, templates=("a photo",)).features(["sky"])


def test_inference_config_from_args_reads_the_eval_keys():
    from types import SimpleNamespace

    args = SimpleNamespace(
        eval_mode="slide", eval_scales=[1.0], eval_flip=True, base_size=520, crop_size=480, eval_stride=320
    )
    cfg = I.InferenceConfig.from_args(args, max_whole_pixels=7)
    assert (cfg.mode, cfg.scales, cfg.flip, cfg.base_size, cfg.crop_size, cfg.stride) == (
        "slide",
        (1.0,),
        True,
        520,
        480,
        320,
    )
    assert cfg.max_whole_pixels == 7
    with pytest.raises(ValueError, match="multiple of 32"):
        I.InferenceConfig.from_args(SimpleNamespace(**{**vars(args), "crop_size": 100}))
