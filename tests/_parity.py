"""The strict acceptance tier of the parity tests, in one place: float32 logits against the reference's."""

import numpy as np


def assert_strict_tier(logits: np.ndarray, ref: np.ndarray, ref_pred: np.ndarray = None, what: str = "") -> None:
    """Max abs error <= 1e-4 and mean abs error <= 5e-6 on logits [1, N, H, W], and the argmax may differ from the
    reference's (``ref_pred``, default ``ref.argmax(1)[0]``) only where the reference's top-2 margin is below twice
    the max error (a nearly tied pixel)."""
    prefix = f"{what}: " if what else ""
    assert logits.shape == ref.shape, f"{prefix}shape {logits.shape} != {ref.shape}"
    err = np.abs(logits - ref)
    assert err.max() <= 1e-4, f"{prefix}max abs error {err.max():.3g}"
    assert err.mean() <= 5e-6, f"{prefix}mean abs error {err.mean():.3g}"
    pred = logits.argmax(1)[0]
    ref_pred = ref.argmax(1)[0] if ref_pred is None else ref_pred
    top2 = np.sort(ref[0], axis=0)[-2:]
    disagree = pred != ref_pred
    assert np.all(
        (top2[1] - top2[0])[disagree] < 2 * err.max()
    ), f"{prefix}{disagree.sum()} argmax flips at confident pixels"
