"""Loader: batch shapes/dtypes, seeded determinism independent of workers, sharding, exact resume."""

import os

import numpy as np
import pytest
from PIL import Image

from mindcv_lseg.data import (
    EpochShardSampler,
    FolderSegDataset,
    SegDataError,
    TrainTransform,
    create_seg_dataset,
    create_seg_loader,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """10 samples of 24x32 (plus one 20x32 in split 'odd'), 3 classes, mask = class pattern."""
    root = tmp_path_factory.mktemp("loader") / "d"
    os.makedirs(root / "images")
    os.makedirs(root / "masks")
    (root / "classes.txt").write_text("a\nb\nc\n")
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / "images" / f"{i:02d}.png")
        m = (np.arange(24 * 32).reshape(24, 32) + i) % 3
        Image.fromarray(m.astype(np.uint8), "L").save(root / "masks" / f"{i:02d}.png")
    return str(root)


def _ds(root, **kw):
    return FolderSegDataset(root, transform=TrainTransform(base_size=32, crop_size=16, **kw))


def _collect(loader):
    return [tuple(np.asarray(x) for x in b) for b in loader]


def test_batch_shapes_dtypes(tree):
    loader = create_seg_loader(_ds(tree), batch_size=4, shuffle=True, drop_remainder=True)
    assert loader.steps_per_epoch == 2 and len(loader) == 2
    batches = list(loader)
    assert len(batches) == 2
    img, mask = batches[0]
    assert tuple(img.shape) == (4, 3, 16, 16) and str(img.dtype) == "Float32"
    assert tuple(mask.shape) == (4, 16, 16) and str(mask.dtype) == "Int32"
    a = img.asnumpy()
    assert a.min() >= -1.0 and a.max() <= 1.0
    assert set(np.unique(mask.asnumpy())) <= {0, 1, 2, 255}
    # without drop_remainder the last batch is partial
    loader = create_seg_loader(_ds(tree), batch_size=4, output_numpy=True)
    assert [b[0].shape[0] for b in loader] == [4, 4, 2]


def test_determinism_and_worker_independence(tree):
    a = _collect(create_seg_loader(_ds(tree), 2, shuffle=True, seed=3, return_index=True, num_workers=1))
    b = _collect(create_seg_loader(_ds(tree), 2, shuffle=True, seed=3, return_index=True, num_workers=2))
    c = _collect(create_seg_loader(_ds(tree), 2, shuffle=True, seed=4, return_index=True, num_workers=1))
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert [int(i) for x in a for i in x[2]] != [int(i) for x in c for i in x[2]]  # order depends on the seed
    assert sorted(int(i) for x in a for i in x[2]) == list(range(10))


def test_epochs_differ_and_set_epoch_reproduces(tree):
    loader = create_seg_loader(_ds(tree), 5, shuffle=True, seed=1, return_index=True, output_numpy=True)
    e0, e1 = _collect(loader), _collect(loader)
    assert loader.epoch == 2
    assert [x[2].tolist() for x in e0] != [x[2].tolist() for x in e1]
    loader.set_epoch(1)
    again = _collect(loader)
    for x, y in zip(e1, again):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


def test_resume_mid_epoch_is_exact(tree):
    full = create_seg_loader(_ds(tree), 2, shuffle=True, seed=7, output_numpy=True, drop_remainder=True)
    ref = _collect(full) + _collect(full)  # epochs 0 and 1, 5 steps each
    resumed = create_seg_loader(
        _ds(tree), 2, shuffle=True, seed=7, output_numpy=True, drop_remainder=True, start_epoch=0, start_step=3
    )
    assert len(resumed) == 2
    got = _collect(resumed) + _collect(resumed)
    assert len(got) == 2 + 5
    for x, y in zip(ref[3:], got):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])
    with pytest.raises(ValueError, match="invalid resume point"):
        resumed.set_epoch(0, start_step=99)


def test_raw_pipeline_serves_consecutive_epochs(tree):
    loader = create_seg_loader(_ds(tree), 5, shuffle=True, seed=2, return_index=True, output_numpy=True)
    ref = [[b[2].tolist() for b in _collect(loader)] for _ in range(3)]
    loader.set_epoch(0)
    it = loader.pipeline.create_tuple_iterator(num_epochs=3, output_numpy=True)
    got = [[b[2].tolist() for b in it] for _ in range(3)]
    it.stop()
    assert got == ref


@pytest.mark.parametrize("drop", [False, True])
def test_sharding_disjoint_and_complete(drop):
    n, shards, bs = 11, 3, 2
    parts = []
    for sid in range(shards):
        s = EpochShardSampler(n, bs, shuffle=True, seed=5, num_shards=shards, shard_id=sid, drop_remainder=drop)
        parts.append([k % n for k in s])
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat))  # disjoint
    if drop:
        assert [len(p) for p in parts] == [2, 2, 2]  # equal whole batches per shard
    else:
        assert sorted(flat) == list(range(n))  # complete
        assert [len(p) for p in parts] == [4, 4, 3]


def test_sharded_loaders_cover_dataset(tree):
    seen = []
    for sid in range(2):
        loader = create_seg_loader(
            _ds(tree), 2, shuffle=True, seed=0, num_shards=2, shard_id=sid, return_index=True, output_numpy=True
        )
        seen.append([int(i) for b in loader for i in b[2]])
    assert set(seen[0]).isdisjoint(seen[1]) and sorted(seen[0] + seen[1]) == list(range(10))


def test_whole_image_batching_of_different_sizes_is_a_clear_error(tree, tmp_path):
    root = tmp_path / "v"
    os.makedirs(root / "images")
    os.makedirs(root / "masks")
    (root / "classes.txt").write_text("a\nb\n")
    for i, (h, w) in enumerate([(8, 8), (8, 12)]):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.zeros((h, w), np.uint8), "L").save(root / "masks" / f"{i}.png")
    ds = create_seg_dataset("folder", str(root), None, transform="val")
    assert [tuple(b[0].shape) for b in create_seg_loader(ds, 1)] == [(1, 3, 8, 8), (1, 3, 8, 12)]
    with pytest.raises(SegDataError, match="cannot batch 2 samples of different sizes.*batch_size=1"):
        list(create_seg_loader(ds, 2))


def test_bad_loader_args(tree):
    with pytest.raises(ValueError, match="fewer than one full batch"):
        create_seg_loader(_ds(tree), 8, num_shards=2, drop_remainder=True)
    with pytest.raises(ValueError, match="shard_id"):
        create_seg_loader(_ds(tree), 1, num_shards=2, shard_id=2)


def test_resume_at_epoch_end_moves_to_next_epoch_and_break_advances(tree):
    loader = create_seg_loader(
        _ds(tree), 5, shuffle=True, seed=2, return_index=True, output_numpy=True, start_epoch=0, start_step=2
    )
    assert loader.epoch == 1 and len(loader) == 2
    for _ in loader:
        break  # an abandoned epoch counts as consumed
    assert loader.epoch == 2
    ref = create_seg_loader(_ds(tree), 5, shuffle=True, seed=2, return_index=True, output_numpy=True, start_epoch=2)
    assert [b[2].tolist() for b in loader] == [b[2].tolist() for b in ref]
