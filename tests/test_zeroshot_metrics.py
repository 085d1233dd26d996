"""Zero-shot (HSNet protocol) metrics on hand-computed cases: per-episode bg/fg intersection and union, pooling per
class, mIoU over all fold classes (a class never seen counts 0, empty masks), FB-IoU, exact rank merge."""

import numpy as np
import pytest

from mindcv_lseg.eval.zeroshot_metrics import ZeroShotMeter, episode_inter_union, format_zeroshot_table

PRED = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]])
GT = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])


def test_episode_counts_by_hand():
    inter, union = episode_inter_union(PRED, GT)
    # fg: pred 3, gt 3, both 2 -> union 4; bg: pred 6, gt 6, both 5 -> union 7
    np.testing.assert_array_equal(inter, [5, 2])
    np.testing.assert_array_equal(union, [7, 4])


def test_ignored_pixels_count_nowhere():
    ignore = np.zeros((3, 3), bool)
    ignore[0, 1] = True  # predicted foreground, true background, boundary
    ignore[2, 2] = True  # background in both
    inter, union = episode_inter_union(PRED, GT, ignore)
    # 7 valid pixels: fg pred 2, gt 3, both 2 -> union 3; bg pred 5, gt 4, both 4 -> union 5
    np.testing.assert_array_equal(inter, [4, 2])
    np.testing.assert_array_equal(union, [5, 3])


def test_empty_masks():
    inter, union = episode_inter_union(np.zeros((2, 2), int), np.zeros((2, 2), int))
    np.testing.assert_array_equal(inter, [4, 0])
    np.testing.assert_array_equal(union, [4, 0])
    inter, union = episode_inter_union(np.ones((2, 2), int), np.zeros((2, 2), int))  # all false positives
    np.testing.assert_array_equal(inter, [0, 0])
    np.testing.assert_array_equal(union, [4, 4])


def _histc_reference(pred, gt, ignore=None):
    """The reference's formulation: 255 marks ignore in both, 2-bin histograms over [0, 1]."""
    pred, gt = pred.astype(np.float64).copy(), gt.astype(np.float64).copy()
    if ignore is not None:
        gt[ignore] = 255
        pred[gt == 255] = 255
    hist = lambda v: np.histogram(v, bins=2, range=(0, 1))[0]  # noqa: E731  (255 falls outside)
    inter = hist(pred[pred == gt])
    union = hist(pred) + hist(gt) - inter
    return inter, union


def test_random_episodes_agree_with_histogram_formulation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pred = rng.integers(0, 2, (17, 23))
        gt = rng.integers(0, 2, (17, 23))
        ignore = (rng.random((17, 23)) < 0.1) & (gt == 0)
        for ig in (None, ignore):
            inter, union = episode_inter_union(pred, gt, ig)
            ref_i, ref_u = _histc_reference(pred, gt, ig)
            np.testing.assert_array_equal(inter, ref_i)
            np.testing.assert_array_equal(union, ref_u)


def test_miou_counts_unseen_and_empty_classes_as_zero():
    meter = ZeroShotMeter([0, 1, 2], ["a", "b", "c"])
    meter.update(0, PRED, GT)  # fg 2/4
    meter.update(1, np.zeros((2, 2)), np.zeros((2, 2)))  # empty in both: I = U = 0 -> 0
    m = meter.compute()  # class 2 never seen
    assert m["mIoU"] == pytest.approx((2 / 4 + 0 + 0) / 3)
    # FB-IoU: pooled bg (5 + 4) / (7 + 4), pooled fg 2 / 4
    assert m["FB_IoU"] == pytest.approx(0.5 * (9 / 11 + 2 / 4))
    assert [r["episodes"] for r in m["per_class"]] == [1, 1, 0]
    assert m["classes_without_episodes"] == ["c"]
    assert m["num_episodes"] == 2


def test_pooling_is_per_class_not_per_episode():
    meter = ZeroShotMeter([7])
    meter.update(7, PRED, GT)  # fg 2 / 4
    meter.update(7, np.ones((2, 2)), np.ones((2, 2)))  # fg 4 / 4
    assert meter.compute()["mIoU"] == pytest.approx((2 + 4) / (4 + 4))  # not (0.5 + 1) / 2


def test_unknown_class_and_shape_errors():
    meter = ZeroShotMeter([5, 6])
    with pytest.raises(ValueError, match="not one of this fold's test classes"):
        meter.update(4, PRED, GT)
    with pytest.raises(ValueError, match="differ in shape"):
        episode_inter_union(PRED, GT[:2])


def test_allreduce_merges_ranks_exactly():
    rng = np.random.default_rng(1)
    episodes = [(int(rng.integers(0, 3)), rng.integers(0, 2, (9, 9)), rng.integers(0, 2, (9, 9))) for _ in range(10)]
    whole = ZeroShotMeter([0, 1, 2])
    ranks = [ZeroShotMeter([0, 1, 2]), ZeroShotMeter([0, 1, 2])]
    for i, (c, p, g) in enumerate(episodes):
        whole.update(c, p, g)
        ranks[i % 2].update(c, p, g)
    from mindcv_lseg.eval.metrics import split_int64_to_float32

    parts = [split_int64_to_float32(np.concatenate([m.counts.reshape(-1), m.episodes])) for m in ranks]
    total = parts[0] + parts[1]
    for m in ranks:
        m.allreduce(group_size=2, allreduce_fn=lambda x: total)
        np.testing.assert_array_equal(m.counts, whole.counts)
        np.testing.assert_array_equal(m.episodes, whole.episodes)
        assert m.compute()["mIoU"] == whole.compute()["mIoU"]


def test_table_prints_reference_summary_line():
    meter = ZeroShotMeter([0, 1, 2], ["aeroplane", "bicycle", "bird"])
    meter.update(0, PRED, GT)
    text = format_zeroshot_table(meter.compute(), fold=0)
    assert text.splitlines()[-1] == "Fold 0, 0-shot: mIoU 16.67, FB-IoU 60.71"  # 0.5 * (5/7 + 2/4)
    assert "aeroplane" in text and "50.00" in text
