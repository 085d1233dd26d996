"""Image/mask reading, mode conversion, label mapping and their errors (mindcv_lseg.data.io)."""

import numpy as np
import pytest
from PIL import Image

from mindcv_lseg.data import SegDataError, map_mask, read_image, read_mask


def _save(arr, path, mode=None):
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return str(path)


def test_read_rgb_png_exact(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = read_image(_save(a, tmp_path / "a.png"))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, a)


def test_grayscale_rgba_palette_16bit_become_rgb(tmp_path):
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = read_image(_save(g, tmp_path / "g.png"))
    np.testing.assert_array_equal(out, np.stack([g, g, g], -1))

    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0  # alpha is dropped
    out = read_image(_save(rgba, tmp_path / "rgba.png", "RGBA"))
    assert (out == [10, 20, 30]).all()

    p = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.save(tmp_path / "p.png")
    out = read_image(str(tmp_path / "p.png"))
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [0, 0, 255]

    v16 = np.array([[0, 257, 65535, 32896]], np.uint16)
    Image.fromarray(v16).save(tmp_path / "g16.png")
    out = read_image(str(tmp_path / "g16.png"))
    assert out[0, :, 0].tolist() == [0, 1, 255, 128] and out.shape == (1, 4, 3)


def test_float_image_rejected(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(SegDataError, match=r"f\.tif: unsupported image mode 'F'"):
        read_image(str(tmp_path / "f.tif"))


def test_truncated_and_garbage_and_missing(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / "full.jpg"
    Image.fromarray(a).save(full, quality=95)
    data = full.read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(SegDataError, match=r"cannot read image .*trunc\.jpg.*truncated"):
        read_image(str(tmp_path / "trunc.jpg"))
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(SegDataError, match=r"cannot read image .*junk\.png"):
        read_image(str(tmp_path / "junk.png"))
    with pytest.raises(SegDataError, match=r"image file not found: .*nope\.png"):
        read_image(str(tmp_path / "nope.png"))


def test_read_mask_modes(tmp_path):
    m = np.array([[0, 1, 2], [255, 7, 3]], np.uint8)
    np.testing.assert_array_equal(read_mask(_save(m, tmp_path / "l.png")), m.astype(np.int32))
    p = Image.fromarray(m, "P")
    p.putpalette(list(range(256)) * 3)
    p.save(tmp_path / "p.png")
    out = read_mask(str(tmp_path / "p.png"))  # palette indices are the ids, not the colours
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, m)
    m16 = np.array([[0, 300, 1000]], np.uint16)
    Image.fromarray(m16).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(read_mask(str(tmp_path / "m16.png")), [[0, 300, 1000]])


def test_rgb_and_float_masks_rejected(tmp_path):
    _save(np.zeros((3, 3, 3), np.uint8), tmp_path / "rgb.png")
    with pytest.raises(SegDataError, match=r"mask .*rgb\.png is a RGB colour image; masks must be single-channel"):
        read_mask(str(tmp_path / "rgb.png"))
    Image.fromarray(np.zeros((3, 3), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(SegDataError, match=r"mask .*f\.tif has non-integer mode 'F'"):
        read_mask(str(tmp_path / "f.tif"))


def test_map_mask_plain_with_ignore():
    raw = np.array([[0, 1, 2], [255, 2, 0]], np.int32)
    out = map_mask(raw, 3, mask_ignore_index=255, ignore_index=255)
    np.testing.assert_array_equal(out, [[0, 1, 2], [255, 2, 0]])
    out = map_mask(raw, 3, mask_ignore_index=255, ignore_index=-1)
    np.testing.assert_array_equal(out, [[0, 1, 2], [-1, 2, 0]])
    assert out.dtype == np.int32


def test_map_mask_reduce_zero_label():
    raw = np.array([[0, 1, 150], [2, 0, 255]], np.int32)
    out = map_mask(raw, 150, reduce_zero_label=True, mask_ignore_index=255, ignore_index=255)
    np.testing.assert_array_equal(out, [[255, 0, 149], [1, 255, 255]])
    # without a file ignore value, 255 is an out-of-range id
    with pytest.raises(
        SegDataError, match=r"ids outside the label set: 255 \(1 pixels\).*valid mask values are 1\.\.150"
    ):
        map_mask(raw, 150, reduce_zero_label=True, mask_ignore_index=None, path="x.png")


def test_map_mask_out_of_range_names_file_and_values():
    raw = np.array([[0, 6, 9], [9, 1, 255]], np.int32)
    with pytest.raises(
        SegDataError,
        match=r"mask m/7\.png contains ids outside the label set: 6, 9 \(3 pixels\); "
        r"the label set has 6 classes, so valid mask values are 0\.\.5; "
        r"ignored values: 255",
    ):
        map_mask(raw, 6, path="m/7.png")
