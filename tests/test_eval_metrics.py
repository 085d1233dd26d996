"""Metric tests on hand-computed confusion matrices (no MindSpore needed)."""

import csv
import json

import numpy as np
import pytest

from mindcv_lseg.eval import metrics as M


def test_confusion_matrix_hand_computed_with_ignore():
    #          gt:  0  0  1  1  2  255  -1
    target = np.array([0, 0, 1, 1, 2, 255, -1])
    pred = np.array([0, 1, 1, 1, 0, 2, 2])
    cm = M.confusion_matrix(pred, target, 3, ignore_index=255)
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, expected)


def test_metrics_hand_computed_with_absent_class():
    # 4 classes, class 3 absent from GT and prediction.
    cm = np.array([[3, 1, 0, 0], [0, 2, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]])
    # pixAcc = (3+2+0)/8
    assert M.pixel_accuracy(cm) == pytest.approx(5 / 8, abs=1e-12)
    # IoU0 = 3/(4+5-3)=1/2 ; IoU1 = 2/(2+3-2)=2/3 ; IoU2 = 0/(2+0-0)=0 ; IoU3: union 0 -> 0 (reference) / NaN
    iou = M.class_iou(cm)
    np.testing.assert_allclose(iou, [1 / 2, 2 / 3, 0.0, 0.0], atol=1e-12)
    assert M.miou_reference(cm) == pytest.approx((1 / 2 + 2 / 3) / 4, abs=1e-12)
    assert M.miou_nanmean(cm) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3, abs=1e-12)
    # Acc0 = 3/4, Acc1 = 2/2, Acc2 = 0/2, Acc3 NaN
    acc = M.class_accuracy(cm)
    np.testing.assert_allclose(acc[:3], [0.75, 1.0, 0.0])
    assert np.isnan(acc[3])
    assert M.mean_accuracy(cm) == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    m = M.compute_metrics(cm, ["a", "b", "c", "d"])
    assert m["per_class"][3] == {
        "id": 3,
        "name": "d",
        "iou": 0.0,
        "acc": m["per_class"][3]["acc"],
        "gt_pixels": 0,
        "pred_pixels": 0,
    }
    assert m["per_class"][0]["gt_pixels"] == 4 and m["per_class"][0]["pred_pixels"] == 5
    text = M.format_table(m)
    assert "mIoU (reference)" in text and "mIoU (nanmean)" in text and "  d  " in text


def test_class_predicted_but_absent_in_gt_counts_in_nanmean():
    cm = np.array([[1, 1], [0, 0]])  # class 1 only predicted: union 1, IoU 0 -> included by nanmean
    assert M.miou_nanmean(cm) == pytest.approx(0.25)
    assert M.miou_reference(cm) == pytest.approx(0.25)


def _reference_batch_metrics(pred, target, nclass):
    """Straight re-implementation of PyTorch-Encoding utils/metrics.py (target -1 = unlabeled)."""
    pred = pred.astype(np.int64) + 1
    target = target.astype(np.int64) + 1
    labeled = int((target > 0).sum())
    correct = int(((pred == target) * (target > 0)).sum())
    pred = pred * (target > 0).astype(pred.dtype)
    inter = pred * (pred == target)
    a_inter, _ = np.histogram(inter, bins=nclass, range=(1, nclass))
    a_pred, _ = np.histogram(pred, bins=nclass, range=(1, nclass))
    a_lab, _ = np.histogram(target, bins=nclass, range=(1, nclass))
    return correct, labeled, a_inter, a_pred + a_lab - a_inter


def test_matches_reference_histogram_implementation():
    rng = np.random.default_rng(0)
    k = 7
    cm_acc = M.ConfusionMatrix(k, ignore_index=-1)
    tot_c = tot_l = 0
    tot_i = np.zeros(k)
    tot_u = np.zeros(k)
    for _ in range(4):
        target = rng.integers(-1, k - 1, size=(13, 17))  # class k-1 never in GT; -1 unlabeled
        pred = rng.integers(0, k - 2, size=(13, 17))  # class k-1 never predicted either
        cm_acc.update(pred, target)
        c, l_, i, u = _reference_batch_metrics(pred, target, k)
        tot_c += c
        tot_l += l_
        tot_i += i
        tot_u += u
    ref_pixacc = tot_c / (np.spacing(1) + tot_l)
    ref_miou = (tot_i / (np.spacing(1) + tot_u)).mean()
    m = cm_acc.compute()
    assert m["pixAcc"] == pytest.approx(ref_pixacc, rel=1e-12)
    assert m["mIoU"] == pytest.approx(ref_miou, rel=1e-12)
    assert m["mIoU_nanmean"] > m["mIoU"]  # one absent class excluded


def test_bad_inputs_raise_specific_errors():
    with pytest.raises(ValueError, match="class id 5 but there are only 3 classes"):
        M.confusion_matrix(np.zeros(3), np.array([0, 5, 255]), 3)
    with pytest.raises(ValueError, match="shape"):
        M.confusion_matrix(np.zeros(3), np.zeros(4), 3)
    with pytest.raises(ValueError, match="prediction ids"):
        M.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_float32_split_merge_is_exact_beyond_2_pow_24():
    rng = np.random.default_rng(1)
    ranks = [rng.integers(0, 2**40, size=(5, 5), dtype=np.int64) for _ in range(3)]
    ranks[0][0, 0] = 2**24 + 1  # not representable in float32
    expected = sum(ranks)

    def fake_allreduce_factory(all_parts):
        def fn(local):
            total = np.zeros_like(local, dtype=np.float32)
            for p in all_parts:
                total = (total + p).astype(np.float32)  # float32 sum, as the collective does
            return total

        return fn

    parts = [M.split_int64_to_float32(r) for r in ranks]
    assert all(p.dtype == np.float32 for p in parts)
    got = M.allreduce_confusion_matrix(ranks[0], group_size=3, allreduce_fn=fake_allreduce_factory(parts))
    np.testing.assert_array_equal(got, expected)
    # a plain float32 sum would not be exact
    naive = sum(r.astype(np.float32) for r in ranks).astype(np.int64)
    assert not np.array_equal(naive, expected)


def test_allreduce_single_process_is_identity():
    cm = np.arange(9).reshape(3, 3)
    np.testing.assert_array_equal(M.allreduce_confusion_matrix(cm, group_size=1), cm)


def test_save_csv_json_roundtrip(tmp_path):
    cm = np.array([[3, 1], [0, 0]])
    m = M.compute_metrics(cm, ["sky", "tree"])
    M.save_metrics_json(m, str(tmp_path / "m.json"), extra={"eval_mode": "whole"})
    M.save_metrics_csv(m, str(tmp_path / "m.csv"))
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["eval_mode"] == "whole"
    assert data["confusion_matrix"] == [[3, 1], [0, 0]]
    assert data["per_class"][1]["acc"] is None  # NaN -> null
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert rows[0]["name"] == "sky" and float(rows[0]["iou"]) == pytest.approx(0.75)
    assert rows[1]["acc"] == ""
    summary = {r["name"]: r["iou"] for r in rows if r["id"] == ""}
    assert float(summary["pixAcc"]) == pytest.approx(0.75)
    assert float(summary["mIoU"]) == pytest.approx(0.375)
    assert not list(tmp_path.glob(".tmp_*"))
