"""Folder and ADE20K adapters on small generated trees: layout, label mapping, bad input."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from mindcv_lseg.data import ADE20KSegDataset, FolderSegDataset, SegDataError, create_seg_dataset, create_seg_loader


def _img(path, h=12, w=16, value=None, mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(abs(hash(os.path.basename(str(path)))) % 1000)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if value is None else np.full((h, w, 3), value, np.uint8)
    Image.fromarray(a).convert(mode).save(path)
    return a


def _mask(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8), "L").save(path)


def _folder(root, n=4, h=12, w=16, classes=("sky", "grass", "road")):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("\n".join(classes) + "\n")
    for i in range(n):
        _img(os.path.join(root, "images", f"s{i}.jpg"), h, w)
        m = np.full((h, w), i % len(classes), np.uint8)
        m[0, 0] = 255
        _mask(os.path.join(root, "masks", f"s{i}.png"), m)
    return str(root)


def _ade(root, split="training", values=((0, 1), (150, 2))):
    base = os.path.join(root, "ADEChallengeData2016")
    for i, vals in enumerate(values):
        _img(os.path.join(base, "images", split, f"ADE_{split}_{i:08d}.jpg"), 8, 10)
        m = np.zeros((8, 10), np.uint8)
        m[:4] = vals[0]
        m[4:] = vals[1]
        _mask(os.path.join(base, "annotations", split, f"ADE_{split}_{i:08d}.png"), m)
    return base


def test_folder_all_and_label_mapping(tmp_path):
    root = _folder(tmp_path / "d")
    ds = FolderSegDataset(root)
    assert len(ds) == 4 and ds.num_classes == 3 and ds.label_set.labels == ("sky", "grass", "road")
    img, mask = ds.load(2)
    assert img.dtype == np.uint8 and img.shape == (12, 16, 3)
    assert mask.dtype == np.int32 and mask[0, 0] == 255 and (mask.ravel()[1:] == 2).all()
    assert ds.sample_name(2) == "s2"
    x, m = ds[2]  # no transform: normalised only
    assert x.shape == (3, 12, 16) and x.dtype == np.float32 and m.shape == (12, 16)


def test_folder_reduce_zero_label_and_custom_ignore(tmp_path):
    root = _folder(tmp_path / "d", n=1, classes=("a", "b"))
    _mask(os.path.join(root, "masks", "s0.png"), [[0, 1, 2, 7]] * 2)
    _img(os.path.join(root, "images", "s0.jpg"), 2, 4)
    ds = FolderSegDataset(root, reduce_zero_label=True, mask_ignore_index=7, ignore_index=-1)
    np.testing.assert_array_equal(ds.load(0)[1], [[-1, 0, 1, -1]] * 2)
    with pytest.raises(ValueError, match="ignore_index=1 collides with a class id"):
        FolderSegDataset(root, ignore_index=1)
    from mindcv_lseg.data import TrainTransform

    with pytest.raises(
        ValueError, match="transform pads masks with ignore_index=255 but the dataset uses " "ignore_index=-1"
    ):
        FolderSegDataset(root, ignore_index=-1, transform=TrainTransform(ignore_index=255))


def test_folder_split_file_and_split_dirs(tmp_path):
    root = _folder(tmp_path / "d", n=4)
    os.makedirs(os.path.join(root, "splits"))
    with open(os.path.join(root, "splits", "val.txt"), "w") as f:
        f.write("s3\ns1.jpg\n\n")
    ds = FolderSegDataset(root, "val")
    assert [ds.sample_name(i) for i in range(len(ds))] == ["s3", "s1"]  # file order kept
    # images/<split>/ sub-folders
    root2 = tmp_path / "e"
    _folder(root2, n=0)
    _img(str(root2 / "images" / "train" / "a" / "x.png"), 4, 4)
    _mask(str(root2 / "masks" / "train" / "a" / "x.png"), np.zeros((4, 4)))
    ds = FolderSegDataset(str(root2), "train")
    assert len(ds) == 1 and ds.samples[0][1].endswith(os.path.join("masks", "train", "a", "x.png"))
    with pytest.raises(SegDataError, match=r"split 'test' not found in .*: expected images/test/ or splits/test.txt"):
        FolderSegDataset(root, "test")


def test_ade20k_layout_and_reduce_zero_label(tmp_path):
    _ade(tmp_path, "training", values=((0, 1), (150, 2)))
    _ade(tmp_path, "validation", values=((5, 0),))
    ds = ADE20KSegDataset(str(tmp_path), "train")  # parent of ADEChallengeData2016 is accepted
    assert len(ds) == 2 and ds.label_set.name == "ade20k_150" and ds.ignore_index == 255
    m0 = ds.load(0)[1]
    assert (m0[:4] == 255).all() and (m0[4:] == 0).all()  # 0 -> ignore, 1 -> 0
    m1 = ds.load(1)[1]
    assert (m1[:4] == 149).all() and (m1[4:] == 1).all()  # 150 -> 149 ("flag"), 2 -> 1
    val = ADE20KSegDataset(
        os.path.join(str(tmp_path), "ADEChallengeData2016"), "validation", label_set="ade20k_150_full", ignore_index=-1
    )
    m = val.load(0)[1]
    assert (m[:4] == 4).all() and (m[4:] == -1).all()
    assert val.label_set[44] == "chest of drawers"
    ds2 = create_seg_dataset("ade20k", str(tmp_path), "val")
    assert len(ds2) == 1 and type(ds2.transform).__name__ == "ValTransform"


def test_ade20k_out_of_range_value(tmp_path):
    _ade(tmp_path, "training", values=((151, 1),))
    ds = ADE20KSegDataset(str(tmp_path), "train")
    with pytest.raises(SegDataError, match=r"ADE_training_00000000\.png contains ids outside the label set: 151"):
        ds.load(0)


# ---------------------------------------------------------------------------------------------- bad input
def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"dataset root not found: {tmp_path / 'nope'}")):
        FolderSegDataset(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="ADE20K root not found"):
        ADE20KSegDataset(str(tmp_path / "nope"))


def test_missing_classes_txt_and_subfolders(tmp_path):
    root = _folder(tmp_path / "d", n=1)
    os.remove(os.path.join(root, "classes.txt"))
    with pytest.raises(SegDataError, match="no classes.txt in dataset root"):
        FolderSegDataset(root)
    os.makedirs(tmp_path / "x" / "images")
    with pytest.raises(SegDataError, match="has no masks/ folder"):
        FolderSegDataset(str(tmp_path / "x"), label_set="a, b")


def test_empty_split(tmp_path):
    root = _folder(tmp_path / "d", n=0)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    with pytest.raises(SegDataError, match=r"split None of .*d is empty: no image/mask pairs"):
        FolderSegDataset(root)
    os.makedirs(os.path.join(root, "splits"))
    open(os.path.join(root, "splits", "train.txt"), "w").close()
    with pytest.raises(SegDataError, match=r"split file .*train\.txt is empty"):
        FolderSegDataset(root, "train")


def test_image_without_mask_and_reverse(tmp_path):
    root = _folder(tmp_path / "d", n=3)
    os.remove(os.path.join(root, "masks", "s1.png"))
    with pytest.raises(SegDataError, match=r"images without a mask in .*masks.*: .*s1\.jpg"):
        FolderSegDataset(root)
    with pytest.warns(UserWarning, match=r"skipping 1 sample\(s\): images without a mask"):
        ds = FolderSegDataset(root, skip_bad=True)
    assert len(ds) == 2 and ds.skipped_files[0].endswith("s1.jpg")

    root2 = _folder(tmp_path / "e", n=3)
    os.remove(os.path.join(root2, "images", "s2.jpg"))
    with pytest.raises(SegDataError, match=r"masks without an image .*: .*s2\.png"):
        FolderSegDataset(root2)
    # split file listing a missing image
    os.makedirs(os.path.join(root2, "splits"))
    with open(os.path.join(root2, "splits", "train.txt"), "w") as f:
        f.write("s0\ns2\n")
    with pytest.raises(SegDataError, match=r"train\.txt lists images that do not exist .*: s2"):
        FolderSegDataset(root2, "train")


def test_jpeg_mask_rejected(tmp_path):
    root = _folder(tmp_path / "d", n=2)
    os.remove(os.path.join(root, "masks", "s1.png"))
    Image.fromarray(np.zeros((12, 16), np.uint8), "L").save(os.path.join(root, "masks", "s1.jpg"))
    with pytest.raises(SegDataError, match=r"JPEG masks .*: .*s1\.jpg\. Save masks as PNG"):
        FolderSegDataset(root)


def test_duplicate_stems(tmp_path):
    root = _folder(tmp_path / "d", n=1)
    _img(os.path.join(root, "images", "s0.png"))
    with pytest.raises(SegDataError, match=r"two files for sample 's0'"):
        FolderSegDataset(root)


def test_mask_size_mismatch(tmp_path):
    root = _folder(tmp_path / "d", n=2)
    _mask(os.path.join(root, "masks", "s1.png"), np.zeros((12, 15)))
    ds = FolderSegDataset(root)
    ds.load(0)
    with pytest.raises(SegDataError, match=r"mask .*s1\.png is 15x12 \(WxH\) but image .*s1\.jpg is 16x12"):
        ds.load(1)


def test_rgb_mask_and_out_of_set_id(tmp_path):
    root = _folder(tmp_path / "d", n=2)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(os.path.join(root, "masks", "s0.png"))
    _mask(os.path.join(root, "masks", "s1.png"), np.full((12, 16), 3))
    ds = FolderSegDataset(root)
    with pytest.raises(SegDataError, match=r"mask .*s0\.png is a RGB colour image"):
        ds.load(0)
    with pytest.raises(SegDataError, match=r"mask .*s1\.png contains ids outside the label set: 3 .*3 classes"):
        ds.load(1)
    bad = ds.validate()
    assert [i for i, _ in bad] == [0, 1]


def test_truncated_image_and_converted_modes(tmp_path):
    root = _folder(tmp_path / "d", n=3)
    p = os.path.join(root, "images", "s0.jpg")
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 2])
    _img(os.path.join(root, "images", "s1.jpg"), mode="L")  # grayscale: converted
    os.remove(os.path.join(root, "images", "s2.jpg"))
    _img(os.path.join(root, "images", "s2.png"), mode="RGBA")  # RGBA: converted
    ds = FolderSegDataset(root)
    with pytest.raises(SegDataError, match=r"cannot read image .*s0\.jpg"):
        ds.load(0)
    assert ds.load(1)[0].shape == (12, 16, 3)
    assert ds.load(2)[0].shape == (12, 16, 3)


@pytest.mark.parametrize("workers", [1, 2])
def test_errors_surface_from_loader_as_seg_data_error(tmp_path, workers):
    root = _folder(tmp_path / "d", n=4)
    _mask(os.path.join(root, "masks", "s2.png"), np.full((12, 16), 9))
    ds = FolderSegDataset(root)
    loader = create_seg_loader(ds, batch_size=1, num_workers=workers)
    with pytest.raises(SegDataError, match=r"s2\.png contains ids outside the label set: 9") as ei:
        for _ in loader:
            pass
    assert "Traceback" not in str(ei.value) and "C++" not in str(ei.value)


def test_skip_bad_in_loader_replaces_and_counts(tmp_path):
    root = _folder(tmp_path / "d", n=4)
    _mask(os.path.join(root, "masks", "s1.png"), np.full((12, 16), 9))
    ds = FolderSegDataset(root, skip_bad=True)
    loader = create_seg_loader(ds, batch_size=1, return_index=True, output_numpy=True)
    with pytest.warns(UserWarning, match=r"skip_bad: mask .*s1\.png contains ids outside.*using sample 2 instead"):
        got = [int(b[2][0]) for b in loader]
    assert got == [0, 2, 2, 3]
    assert ds.num_skipped == 1 and ds.skipped_files[-1].endswith("s1.jpg")
