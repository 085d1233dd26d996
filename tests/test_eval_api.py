"""segment() API and visualisation helpers (fake network: fast, no model needed)."""

import numpy as np
import pytest
from PIL import Image

import mindspore as ms

from mindcv_lseg import viz
from mindcv_lseg.eval import api


class TinyFakeNet:
    """Logits: label n scores ``x[n % 3] * (n + 1)`` (so colour channels decide the class); embeddings = x."""

    def __init__(self):
        self.text_calls = 0

    def encode_text(self, labels):
        self.text_calls += 1
        return ms.Tensor(np.eye(len(labels), 4, dtype=np.float32) + 1)

    def __call__(self, x, text):
        x = x.asnumpy()
        n = text.shape[0]
        return ms.Tensor(np.concatenate([x[:, k % 3 : k % 3 + 1] * (1 + 0.01 * k) for k in range(n)], axis=1))

    def forward_features(self, x):
        x = x.asnumpy()[:, :, ::2, ::2]
        return ms.Tensor(x / np.linalg.norm(x, axis=1, keepdims=True))


def _img():
    img = np.zeros((40, 60, 3), np.uint8)
    img[:20, :, 0] = 255  # red top -> label 0
    img[20:, :, 2] = 255  # blue bottom -> label 2
    return img


def test_palette_is_deterministic_and_distinct():
    p = viz.get_palette(256)
    assert p.shape == (256, 3) and p.dtype == np.uint8
    assert len({tuple(c) for c in p}) == 256
    np.testing.assert_array_equal(p[:10], viz.get_palette(10))
    # neighbouring ids differ clearly
    assert min(np.abs(p[i].astype(int) - p[i + 1]).sum() for i in range(20)) > 60


def test_colorize_and_overlay():
    lm = np.array([[0, 1], [2, 1]])
    im = viz.colorize(lm)
    assert im.mode == "P"
    np.testing.assert_array_equal(np.array(im), lm)
    np.testing.assert_array_equal(np.array(im.convert("RGB"))[1, 0], viz.get_palette(3)[2])
    base = Image.fromarray(np.full((2, 2, 3), 100, np.uint8))
    ov = np.array(viz.overlay(base, lm, alpha=0.25))
    c = viz.get_palette(3)[1].astype(float)
    np.testing.assert_array_equal(ov[0, 1], np.floor(0.75 * 100 + 0.25 * c + 0.5).astype(np.uint8))
    with pytest.raises(ValueError, match="does not match the image size"):
        viz.overlay(base, np.zeros((3, 3), int))


def test_legend_beside_wide_and_below_tall():
    labels = ["sky", "grass", "a rather long label"]
    wide = viz.add_legend(Image.new("RGB", (200, 100)), labels)
    assert wide.size[0] > 200 and wide.size[1] >= 100
    tall = viz.add_legend(Image.new("RGB", (100, 300)), labels)
    assert tall.size[1] > 300 and tall.size[0] >= 100
    for canvas, region in ((wide, np.array(wide)[:, 200:]), (tall, np.array(tall)[300:])):
        flat = region.reshape(-1, 3)
        for col in viz.get_palette(3):
            assert (flat == col).all(axis=1).any()
        assert (flat == 0).all(axis=1).any()  # black text drawn


def test_segment_all_input_kinds_agree(tmp_path):
    net = TinyFakeNet()
    arr = _img()
    Image.fromarray(arr).save(tmp_path / "x.png")
    results = [
        api.segment(net, src, "red, green, blue") for src in (arr, Image.fromarray(arr), str(tmp_path / "x.png"))
    ]
    for r in results:
        assert r.label_map.dtype == np.uint8 and r.label_map.shape == (40, 60)
        assert r.labels == ["red", "green", "blue"]
        np.testing.assert_array_equal(r.label_map, results[0].label_map)
        assert r.palette_image.mode == "P" and r.overlay.size == (60, 40)
    assert (results[0].label_map[:20] == 0).all() and (results[0].label_map[20:] == 2).all()
    assert results[0].visualize().size[0] > 60


def test_segment_modes_embeddings_and_cache():
    net = TinyFakeNet()
    cache = api.TextEmbeddingCache(net)
    r1 = api.segment(
        net, _img(), ["red", "green", "blue"], mode="slide", crop_size=32, text_cache=cache, return_embeddings=True
    )
    r2 = api.segment(
        net, _img(), ["red", "green", "blue"], mode="ms_flip", base_size=48, crop_size=32, text_cache=cache
    )
    assert net.text_calls == 1 and cache.hits == 1
    np.testing.assert_array_equal(r1.label_map, r2.label_map)
    assert r1.embeddings.shape == (3, 20, 30)
    assert r2.embeddings is None and r2.logits.shape == (3, 40, 60)


def test_load_image_and_labels_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found"):
        api.load_image(str(tmp_path / "nope.png"))
    (tmp_path / "bad.png").write_bytes(b"xx")
    with pytest.raises(ValueError, match="cannot read image"):
        api.load_image(str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="uint8"):
        api.load_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="no labels"):
        api.parse_labels(" ")
    with pytest.raises(ValueError, match="label 2 is empty"):
        api.parse_labels(["a", "b", ""])
    assert api.parse_labels(" dog , grass,other ") == ["dog", "grass", "other"]


def test_compare_panel_layout_and_ignore():
    img = Image.fromarray(np.full((30, 40, 3), 200, np.uint8))
    gt = np.zeros((30, 40), int)
    gt[:, 20:] = 1
    gt[0, 0] = 255  # ignored pixel stays untinted
    pred = np.ones((30, 40), int)
    panel = np.array(viz.compare_panel(img, gt, pred, ["a", "b", "c"]))
    pal = viz.get_palette(3)
    assert panel.shape[1] > 3 * 40  # three panels + legend
    top = int(np.argmax((panel[:, 2] == 200).all(axis=1)))  # first image row below the caption bar
    assert 10 <= top <= 30
    gt_panel = panel[top : top + 30, 44:84]
    np.testing.assert_array_equal(gt_panel[0, 0], [200, 200, 200])
    np.testing.assert_array_equal(gt_panel[5, 5], pal[0])
    np.testing.assert_array_equal(gt_panel[5, 30], pal[1])
    np.testing.assert_array_equal(panel[top + 5, 88 + 5], pal[1])  # prediction panel


def test_quickstart_pick_checkpoint(tmp_path):
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import quickstart

    (tmp_path / "m-0001.ckpt").write_bytes(b"1")
    (tmp_path / "m-0002.ckpt").write_bytes(b"2")
    assert quickstart.pick_checkpoint(str(tmp_path), "m").endswith("m-0002.ckpt")
    (tmp_path / "best.ckpt").write_bytes(b"b")
    assert quickstart.pick_checkpoint(str(tmp_path), "m").endswith("best.ckpt")
