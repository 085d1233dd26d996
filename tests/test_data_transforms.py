"""Joint image/mask transforms: alignment (position-encoded images), padding, sizes, normalisation, determinism."""

import numpy as np
import pytest

from mindcv_lseg.data import TrainTransform, ValTransform, normalize

CELL = 16  # grid cell size in pixels


def _grid_pair(h=96, w=128):
    """Mask = coarse grid cell id; image encodes the same id in R (column) and G (row)."""
    yy, xx = np.mgrid[0:h, 0:w]
    row, col = yy // CELL, xx // CELL
    mask = (row * 16 + col).astype(np.int32)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = col * 24 + 12
    img[..., 1] = row * 24 + 12
    img[..., 2] = 77
    return img, mask


def _decode(img_chw):
    """Normalised float image -> grid id per pixel (rounded)."""
    u8 = (img_chw * 0.5 + 0.5) * 255.0
    col = np.rint((u8[0] - 12) / 24).astype(np.int64)
    row = np.rint((u8[1] - 12) / 24).astype(np.int64)
    return row * 16 + col


def _agreement(img, mask, ignore=255):
    valid = mask != ignore
    return float((_decode(img)[valid] == mask[valid]).mean()), valid


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_image_and_mask_aligned(seed):
    img, mask = _grid_pair()
    t = TrainTransform(base_size=128, crop_size=96, scale_range=(0.5, 2.0), ignore_index=255)
    out_img, out_mask = t(img, mask, np.random.default_rng(seed))
    assert out_img.shape == (3, 96, 96) and out_img.dtype == np.float32
    assert out_mask.shape == (96, 96) and out_mask.dtype == np.int32
    agree, valid = _agreement(out_img, out_mask)
    assert valid.sum() > 0
    # bilinear blur only touches cell borders: the vast majority of pixels must decode to their mask id
    assert agree > 0.85, agree


def test_misalignment_is_detected():
    """Negative control: flipping only the image must break agreement (so the test above can fail)."""
    img, mask = _grid_pair()
    agree, _ = _agreement(normalize(img[:, ::-1].copy()), mask)
    assert agree < 0.2
    agree, _ = _agreement(normalize(img), mask)
    assert agree == 1.0


def test_flip_happens_and_is_joint():
    img, mask = _grid_pair(64, 64)
    t = TrainTransform(base_size=64, crop_size=64, scale_range=(1.0, 1.0))
    flipped = 0
    for s in range(20):
        oi, om = t(img, mask, np.random.default_rng(s))
        if om[0, 0] == mask[0, -1]:
            flipped += 1
            np.testing.assert_array_equal(om, mask[:, ::-1])
            np.testing.assert_array_equal(oi, normalize(img[:, ::-1].copy()))
        else:
            np.testing.assert_array_equal(om, mask)
    assert 3 <= flipped <= 17


def test_padding_values_image_minus_one_mask_ignore():
    img = np.full((20, 40, 3), 200, np.uint8)
    mask = np.full((20, 40), 3, np.int32)
    # long side fixed at 40 (scale 1.0): image 20x40 padded to 48x48
    t = TrainTransform(base_size=40, crop_size=48, scale_range=(1.0, 1.0), hflip=False, ignore_index=255)
    oi, om = t(img, mask, np.random.default_rng(0))
    assert oi.shape == (3, 48, 48)
    assert (om[:20, :40] == 3).all() and (om[20:] == 255).all() and (om[:, 40:] == 255).all()
    assert np.allclose(oi[:, 20:], -1.0) and np.allclose(oi[:, :, 40:], -1.0)
    assert np.allclose(oi[:, :20, :40], (200 / 255 - 0.5) / 0.5)


def test_scale_range_matches_reference_long_side():
    """Long side drawn from randint(int(0.5*base), int(2.0*base)) inclusive; short side int(x + 0.5)."""
    t = TrainTransform(base_size=520, crop_size=480)
    assert (t.long_min, t.long_max) == (260, 1040)
    # crop 80 > any scaled size (<= 40): the whole resized mask sits in the top-left corner, the rest is padding
    t = TrainTransform(base_size=20, crop_size=80, scale_range=(0.5, 2.0), hflip=True, ignore_index=255)
    img = np.zeros((30, 60, 3), np.uint8)
    mask = np.zeros((30, 60), np.int32)
    sizes = set()
    for s in range(8):
        _, om = t(img, mask, np.random.default_rng(s))
        ref = np.random.default_rng(s)
        ref.random()  # the flip draw
        long_side = int(ref.integers(10, 40, endpoint=True))
        short_side = int(30 * long_side / 60 + 0.5)
        valid = om != 255
        assert valid.sum() == long_side * short_side
        assert valid[:short_side, :long_side].all()
        sizes.add(long_side)
    assert len(sizes) > 3


def test_val_original_and_resize_crop():
    img, mask = _grid_pair(96, 128)
    oi, om = ValTransform("original")(img, mask)
    assert oi.shape == (3, 96, 128) and (om == mask).all()
    oi, om = ValTransform("resize_crop", crop_size=64)(img, mask)
    # short side 96 -> 64, long 128 -> int(128*64/96)=85; centre crop x1 = round((85-64)/2) = 10 (banker's: 10.5->10)
    assert oi.shape == (3, 64, 64) and om.shape == (64, 64)
    agree, _ = _agreement(oi, om)
    assert agree > 0.85
    with pytest.raises(ValueError, match="unknown val mode"):
        ValTransform("whole")


def test_normalize_exact():
    x = np.array([[[0, 255, 128]]], np.uint8)
    out = normalize(x)
    assert out.shape == (3, 1, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [-1.0, 1.0, (128 / 255 - 0.5) / 0.5], rtol=0, atol=1e-7)


def test_normalize_imagenet_statistics_match_the_zero_shot_fixture():
    from _paths import fixture_file

    from mindcv_lseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    with np.load(fixture_file("parity", "expected_zs_clip_resnet101_seed0.npz")) as ref:  # torchvision's result
        np.testing.assert_array_equal(normalize(ref["image_uint8"], IMAGENET_MEAN, IMAGENET_STD)[None], ref["input"])


def test_train_transform_deterministic_given_rng():
    img, mask = _grid_pair()
    t = TrainTransform(base_size=128, crop_size=64)
    a = t(img, mask, np.random.default_rng([5, 1, 3]))
    b = t(img, mask, np.random.default_rng([5, 1, 3]))
    c = t(img, mask, np.random.default_rng([5, 2, 3]))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="crop_size must be positive"):
        TrainTransform(crop_size=0)
    with pytest.raises(ValueError, match="scale_range"):
        TrainTransform(scale_range=(2.0, 0.5))


def test_hflip_is_a_probability_as_in_mindcv():
    """``hflip`` = flip probability (mindcv's key); True/False of the earlier API mean 0.5/0 (same random stream)."""
    img, mask = _grid_pair(32, 64)

    def flips(hflip, seeds=range(200)):
        t = TrainTransform(base_size=64, crop_size=(32, 64), scale_range=(1.0, 1.0), hflip=hflip)
        out = []
        for s in seeds:
            _, om = t(img, mask, np.random.default_rng(s))
            assert np.array_equal(om, mask) or np.array_equal(om, mask[:, ::-1])
            out.append(bool(np.array_equal(om, mask[:, ::-1])))
        return out

    assert not any(flips(0.0)) and all(flips(1.0))
    half = flips(0.5)
    assert 70 < sum(half) < 130 and flips(True) == half and not any(flips(False))
    assert 20 < sum(flips(0.2)) < 60
    with pytest.raises(ValueError, match="probability"):
        TrainTransform(hflip=1.5)
