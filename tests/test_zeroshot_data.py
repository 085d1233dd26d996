"""Zero-shot benchmark datasets on generated fake trees: episode order and counts, mask decoding (FSS threshold 128,
PASCAL 255 ignore, COCO class ids), COCO's legacy-RNG draws, shipped split lists and their overrides, errors and
partial-tree warnings."""

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from mindcv_lseg.data.fewshot import (
    Coco20iDataset,
    FSS1000Dataset,
    Pascal5iDataset,
    create_fewshot_dataset,
    nearest_resize,
    shipped_split_path,
)
from mindcv_lseg.data.fewshot_fake import make_fake_coco, make_fake_fss, make_fake_pascal
from mindcv_lseg.data.io import SegDataError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------------- shipped lists
def test_shipped_split_lists():
    with open(shipped_split_path("fss/test.txt"), encoding="utf-8") as f:
        fss = [line.strip() for line in f if line.strip()]
    assert len(fss) == len(set(fss)) == 240
    assert sorted(fss)[:2] == ["abe's_flyingfish", "accordion"]
    for fold, n in enumerate((346, 451, 725, 346)):
        with open(shipped_split_path(f"pascal/val/fold{fold}.txt"), encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
        assert len(lines) == n
        assert {int(line.rsplit("__", 1)[1]) - 1 for line in lines} == set(range(5 * fold, 5 * fold + 5))
    from mindcv_lseg.data.fewshot import _read_coco_split

    for fold in range(4):
        per_class = _read_coco_split(shipped_split_path(f"coco/val/fold{fold}.pkl"))
        assert all(per_class[fold + 4 * v] for v in range(20))
        assert all(p.startswith("val2014/COCO_val2014_") for p in per_class[fold])


# ------------------------------------------------------------------------------------------------- helpers
def test_nearest_resize_matches_torch_legacy_nearest():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for h, w, size in ((64, 64, 480), (375, 500, 480), (333, 481, 480), (7, 5, 11)):
        label = rng.integers(0, 255, (h, w))
        ref = torch.nn.functional.interpolate(
            torch.tensor(label[None, None], dtype=torch.float32), (size, size), mode="nearest"
        )[0, 0].numpy()
        np.testing.assert_array_equal(nearest_resize(label, size), ref)


# ------------------------------------------------------------------------------------------------- FSS-1000
def test_fss_episode_order_ids_and_count(tmp_path):
    make_fake_fss(str(tmp_path), classes=("zebra", "accordion", "bus"), images_per_class=10, size=32)
    ds = FSS1000Dataset(str(tmp_path), MEAN, STD, img_size=64)
    assert len(ds) == 30
    assert ds.class_ids == [760, 761, 762] and ds.class_names == ["accordion", "bus", "zebra"]
    assert ds.split_overridden
    order = [(os.path.relpath(p, tmp_path / "FSS-1000"), cid) for p, cid in ds.episode_list()]
    expected_files = ["1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]
    assert order == [
        (f"{name}/{k}.jpg", 760 + i) for i, name in enumerate(["accordion", "bus", "zebra"]) for k in expected_files
    ]


def test_fss_mask_threshold_and_image_transform(tmp_path):
    make_fake_fss(str(tmp_path), classes=("bus",), images_per_class=1, size=32)
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 8:16] = 127
    mask[:, 16:24] = 128
    mask[:, 24:] = 255
    Image.fromarray(mask).save(tmp_path / "FSS-1000" / "bus" / "1.png")
    ds = FSS1000Dataset(str(tmp_path), MEAN, STD, img_size=64)
    ep = ds.episode(0)
    assert ep.mask.shape == (64, 64) and ep.ignore is None and ep.class_name == "bus" and ep.class_id == 760
    np.testing.assert_array_equal(ep.mask[0], np.repeat([0, 0, 1, 1], 16))
    rgb = Image.open(tmp_path / "FSS-1000" / "bus" / "1.jpg").convert("RGB").resize((64, 64), Image.BILINEAR)
    expected = (np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255 - np.reshape(MEAN, (3, 1, 1))) / np.reshape(
        STD, (3, 1, 1)
    )
    np.testing.assert_allclose(ep.image, expected, atol=1e-6)
    assert ep.image.dtype == np.float32 and ep.image.shape == (3, 64, 64)


def test_fss_partial_tree_warns_and_full_list_is_shipped(tmp_path):
    make_fake_fss(str(tmp_path), classes=("accordion", "bus"), images_per_class=2, size=16, write_splits=False)
    with pytest.warns(UserWarning, match="238 of the 240 test classes have no folder"):
        ds = FSS1000Dataset(str(tmp_path), MEAN, STD, img_size=32)
    assert not ds.split_overridden
    assert len(ds.class_ids) == 240 and len(ds) == 4
    assert {cid for _, cid in ds.episode_list()} == {
        760 + ds.class_names.index("accordion"),
        760 + ds.class_names.index("bus"),
    }


def test_fss_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="FSS-1000 data root not found"):
        FSS1000Dataset(str(tmp_path / "nope"), MEAN, STD)
    (tmp_path / "other").mkdir()
    with pytest.raises(SegDataError, match=r"has no FSS-1000/ folder \(found: other\); expected layout"):
        FSS1000Dataset(str(tmp_path), MEAN, STD)
    (tmp_path / "FSS-1000").mkdir()
    with pytest.raises(SegDataError, match="none of the 240 test classes"):
        FSS1000Dataset(str(tmp_path), MEAN, STD)
    # the FSS-1000 folder itself is accepted as the root
    make_fake_fss(str(tmp_path), classes=("bus",), images_per_class=1, size=16)
    assert len(FSS1000Dataset(str(tmp_path / "FSS-1000"), MEAN, STD, img_size=32)) == 1


def test_bad_episode_file_is_named(tmp_path):
    make_fake_fss(str(tmp_path), classes=("bus",), images_per_class=1, size=16)
    (tmp_path / "FSS-1000" / "bus" / "1.png").write_bytes(b"not a png")
    ds = FSS1000Dataset(str(tmp_path), MEAN, STD, img_size=32)
    with pytest.raises(SegDataError, match=r"cannot read mask .*1\.png"):
        ds.episode(0)


# ------------------------------------------------------------------------------------------------- PASCAL-5i
def test_pascal_cycles_through_the_list_and_decodes_ignore(tmp_path):
    lines = make_fake_pascal(str(tmp_path), fold=1, images_per_class=2, size=32)
    ds = Pascal5iDataset(str(tmp_path), MEAN, STD, fold=1, img_size=48)
    assert len(ds) == 1000 and ds.class_ids == [5, 6, 7, 8, 9]
    assert ds.class_names == ["bus", "car", "cat", "chair", "cow"]
    eps = ds.episode_list()
    for i in (0, 9, 10, 999):
        name, cls = lines[i % len(lines)].split("__")
        assert os.path.basename(eps[i][0]) == name + ".jpg" and eps[i][1] == int(cls) - 1
    ep = ds.episode(3)  # line 3: class 7 (1-based 7 -> id 6 ... check against the label file itself)
    raw = np.asarray(Image.open(eps[3][0].replace("JPEGImages", "SegmentationClassAug")[:-4] + ".png"))
    label = nearest_resize(raw, 48)
    np.testing.assert_array_equal(ep.ignore, label == 255)
    np.testing.assert_array_equal(ep.mask, (label == ep.class_id + 1).astype(np.uint8))
    assert ep.ignore.any() and ep.mask.any() and not (ep.ignore & (ep.mask == 1)).any()


def test_pascal_partial_tree_and_shipped_list(tmp_path):
    lines = make_fake_pascal(str(tmp_path), fold=0, images_per_class=2, size=16)
    for line in lines:
        if line.endswith("__01"):
            os.remove(tmp_path / "VOC2012" / "JPEGImages" / (line.split("__")[0] + ".jpg"))
    with pytest.warns(
        UserWarning,
        match=r"200 of 1000 episodes have missing files .* 1 of the 5 test classes " r"have no episode left: aeroplane",
    ):
        ds = Pascal5iDataset(str(tmp_path), MEAN, STD, fold=0, img_size=32)
    assert len(ds) == 800 and ds.total_episodes == 1000
    os.remove(tmp_path / "splits" / "pascal" / "val" / "fold0.txt")  # shipped list: none of its images exist
    with pytest.raises(SegDataError, match=r"none of the 1000 episodes of .*pascal/val/fold0\.txt"):
        Pascal5iDataset(str(tmp_path), MEAN, STD, fold=0)


def test_pascal_bad_split_line_and_fold(tmp_path):
    make_fake_pascal(str(tmp_path), fold=0, size=16)
    (tmp_path / "splits" / "pascal" / "val" / "fold0.txt").write_text("2007_000033__01\n2007_000061__09\n")
    with pytest.raises(SegDataError, match=r"fold0\.txt, line 2: '2007_000061__09' is not"):
        Pascal5iDataset(str(tmp_path), MEAN, STD, fold=0)
    with pytest.raises(ValueError, match="fold must be 0, 1, 2 or 3"):
        Pascal5iDataset(str(tmp_path), MEAN, STD, fold=4)


# ------------------------------------------------------------------------------------------------- COCO-20i
def _reference_draws(per_class, class_ids, n):
    """The reference's calls on numpy's *global* legacy RNG after ``np.random.seed(0)``."""
    state = np.random.get_state()
    try:
        np.random.seed(0)
        out = []
        for _ in range(n):
            c = np.random.choice(class_ids, 1, replace=False)[0]
            out.append((int(c), str(np.random.choice(per_class[c], 1, replace=False)[0])))
        return out
    finally:
        np.random.set_state(state)


def test_coco_draws_match_global_legacy_rng_seeded_0():
    from mindcv_lseg.data.fewshot import _read_coco_split

    per_class = _read_coco_split(shipped_split_path("coco/val/fold2.pkl"))
    ids = [2 + 4 * v for v in range(20)]
    draws = Coco20iDataset.draw_episodes(per_class, ids, 1000, seed=0)
    assert draws == _reference_draws(per_class, ids, 1000)
    assert len({c for c, _ in draws}) == 20


def test_coco_fake_tree_episodes_and_masks(tmp_path):
    per_class = make_fake_coco(str(tmp_path), fold=3, images_per_class=2, size=24)
    ds = Coco20iDataset(str(tmp_path), MEAN, STD, fold=3, img_size=32)
    assert len(ds) == 1000 and ds.class_ids == list(range(3, 80, 4))
    ids = list(range(3, 80, 4))
    expected = [(str(tmp_path / "COCO2014" / rel), c) for c, rel in _reference_draws(per_class, ids, 1000)]
    assert ds.episode_list() == expected
    ep = ds.episode(0)
    raw = np.asarray(Image.open(expected[0][0].replace("COCO2014", "COCO2014/annotations", 1)[:-4] + ".png"))
    np.testing.assert_array_equal(ep.mask, (nearest_resize(raw, 32) == ep.class_id + 1).astype(np.uint8))
    assert ep.mask.any() and ep.ignore is None
    assert ep.class_name == ds.class_names[ids.index(ep.class_id)]


def test_coco_split_pickle_runs_no_code(tmp_path):
    make_fake_coco(str(tmp_path), fold=0, images_per_class=1, size=16)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "splits" / "coco" / "val" / "fold0.pkl", "wb") as f:
        pickle.dump({0: [Evil()]}, f)
    with pytest.raises(SegDataError, match="only dicts of lists of paths are accepted"):
        Coco20iDataset(str(tmp_path), MEAN, STD, fold=0)


def test_factory_names_and_errors(tmp_path):
    make_fake_fss(str(tmp_path), classes=("bus",), images_per_class=1, size=16)
    assert isinstance(create_fewshot_dataset("fss1000", str(tmp_path), img_size=32), FSS1000Dataset)
    with pytest.raises(ValueError, match="unknown zero-shot benchmark 'ade'"):
        create_fewshot_dataset("ade", str(tmp_path))
    with pytest.raises(SegDataError, match="has no VOC2012/ folder"):
        create_fewshot_dataset("pascal5i", str(tmp_path))
