"""evaluate_dataset (sharded ranks summed = single process) and tools/validate.py end to end on a tiny toy set."""

import json
import os
import sys

import numpy as np
import pytest

import mindspore as ms

from mindcv_lseg.eval import metrics as M
from mindcv_lseg.eval.evaluator import evaluate_dataset
from mindcv_lseg.eval.inference import InferenceConfig
from mindcv_lseg.text.labels import LabelSet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ColourNet:
    """Class k scores channel k of the image: the prediction is the argmax over RGB."""

    def encode_text(self, labels):
        return ms.Tensor(np.ones((len(labels), 2), np.float32))

    def __call__(self, x, text):
        return ms.Tensor(x.asnumpy()[:, : text.shape[0]])


class FakeDataset:
    def __init__(self, n=5):
        rng = np.random.default_rng(0)
        self.items = []
        for i in range(n):
            h, w = 20 + 4 * i, 30
            img = rng.uniform(-1, 1, (3, h, w)).astype(np.float32)
            mask = rng.integers(0, 3, (h, w)).astype(np.int32)
            mask[0] = 255
            self.items.append((img, mask))
        self.label_set = LabelSet("rgb", ["red", "green", "blue"])
        self.num_classes = 3
        self.ignore_index = 255

    def __len__(self):
        return len(self.items)

    def get_item(self, i):
        return self.items[i]


def test_evaluate_dataset_matches_direct_confusion_matrix():
    ds = FakeDataset()
    cm, metrics = evaluate_dataset(ColourNet(), ds, InferenceConfig(mode="whole"), progress=False)
    expected = sum(M.confusion_matrix(img.argmax(0), mask, 3, 255) for img, mask in ds.items)
    np.testing.assert_array_equal(cm, expected)
    assert metrics["mIoU"] == pytest.approx(M.miou_reference(expected))
    assert metrics["num_images"] == 5 and metrics["eval_config"]["mode"] == "whole"
    assert [r["name"] for r in metrics["per_class"]] == ["red", "green", "blue"]


def test_sharded_ranks_sum_to_single_process():
    ds = FakeDataset()
    full, _ = evaluate_dataset(ColourNet(), ds, progress=False)
    # simulate 2 ranks: each evaluates its shard; the all-reduce sums the float32 chunk tensors of both
    local = {}
    for rank in (0, 1):
        local[rank], _ = evaluate_dataset(
            ColourNet(), ds, rank=rank, group_size=2, progress=False, allreduce_fn=lambda parts: parts
        )  # identity: keep the local parts
    summed = lambda parts: M.split_int64_to_float32(local[0]) + M.split_int64_to_float32(local[1])  # noqa: E731
    cm0, m0 = evaluate_dataset(ColourNet(), ds, rank=0, group_size=2, progress=False, allreduce_fn=summed)
    assert not np.array_equal(local[0], full)
    np.testing.assert_array_equal(local[0] + local[1], full)
    np.testing.assert_array_equal(cm0, full)
    assert m0["num_pixels"] == int(full.sum())


def test_label_count_mismatch_raises():
    with pytest.raises(ValueError, match="2 labels for a dataset with 3 classes"):
        evaluate_dataset(ColourNet(), FakeDataset(), labels=["a", "b"], progress=False)


def test_validate_tool_end_to_end(tmp_path, capsys):
    import mindcv

    import mindcv_lseg  # noqa: F401
    from mindcv_lseg.data import make_toy_dataset

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import validate

    make_toy_dataset(str(tmp_path / "toy"), num_train=1, num_val=3, size=32)
    ckpt = tmp_path / "tiny.ckpt"
    ms.save_checkpoint(mindcv.create_model("lseg_tiny_test"), str(ckpt))
    out = tmp_path / "metrics"
    code = validate.main(
        [
            "--mode",
            "1",
            "--dataset",
            "toy",
            "--data_dir",
            str(tmp_path / "toy"),
            "--model",
            "lseg_tiny_test",
            "--ckpt_path",
            str(ckpt),
            "--eval_mode",
            "whole",
            "--eval_output",
            str(out),
            "--progress_bar",
            "false",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "mIoU (reference)" in captured.out and "mIoU (nanmean)" in captured.out and "yellow square" in captured.out
    data = json.loads((out / "metrics.json").read_text())
    cm = np.array(data["confusion_matrix"])
    assert cm.shape == (6, 6) and cm.sum() == 3 * 32 * 32  # the toy masks have no ignored pixels
    assert data["mIoU"] == pytest.approx(M.miou_reference(cm))
    assert (out / "per_class.csv").read_text().startswith("id,name,iou,acc,gt_pixels,pred_pixels")
    # bad input: missing checkpoint -> specific message, exit 2
    code = validate.main(
        [
            "--mode",
            "1",
            "--dataset",
            "toy",
            "--data_dir",
            str(tmp_path / "toy"),
            "--model",
            "lseg_tiny_test",
            "--ckpt_path",
            str(tmp_path / "none.ckpt"),
        ]
    )
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err
