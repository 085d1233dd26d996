"""Few-shot / zero-shot segmentation metrics (the HSNet protocol used by LSeg's zero-shot evaluation).

Every episode is a binary problem (0 = background, 1 = the episode's class). Per episode:

* ``inter[k]`` = pixels where prediction and ground truth are both ``k``; ``union[k] = pred_k + gt_k - inter[k]``,
  for ``k`` in {background, foreground}; pixels marked ignore (PASCAL's 255 boundary) count nowhere.

The counts are pooled per class over all episodes: ``I[k, c]``, ``U[k, c]``. With ``C`` the fold's test classes:

* ``mIoU = mean_{c in C} I[1, c] / max(U[1, c], 1)`` - over **all** classes of the fold: a class with no episode
  (or whose episodes never had foreground in ground truth nor prediction) counts 0, as in the reference;
* ``FB-IoU = 1/2 (sum_c I[0, c] / sum_c U[0, c] + sum_c I[1, c] / sum_c U[1, c])``.

Accumulation is exact (int64), summed exactly over data-parallel ranks. The reference accumulates in float32; its
sums are rounded once they exceed 2**24 pixels (relative error <= 6e-8 per sum for the benchmarks' 1000-2400
episodes of 480x480 pixels), i.e. the two agree to better than 1e-5 percentage points.
Values are fractions here; the CLI prints percentages as the paper does.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .metrics import allreduce_confusion_matrix

__all__ = ["episode_inter_union", "ZeroShotMeter", "format_zeroshot_table"]


def episode_inter_union(pred, gt, ignore=None) -> Tuple[np.ndarray, np.ndarray]:
    """Background/foreground intersection and union of one episode.

    Args:
        pred: int array [H, W] of 0/1 (argmax over ``["others", class]``).
        gt: array [H, W] of 0/1 (foreground mask).
        ignore: optional bool/0-1 array [H, W]; pixels where it is set are excluded from both.

    Returns:
        ``(inter, union)``: int64 [2] each, index 0 = background, 1 = foreground.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    pred = pred.astype(bool)
    gt = gt.astype(bool)
    valid = np.ones(gt.shape, bool) if ignore is None else ~np.asarray(ignore).astype(bool)
    if valid.shape != gt.shape:
        raise ValueError(f"ignore mask {valid.shape} and ground truth {gt.shape} differ in shape")
    n_valid = int(valid.sum())
    fg_inter = int((pred & gt & valid).sum())
    fg_pred = int((pred & valid).sum())
    fg_gt = int((gt & valid).sum())
    bg_inter = n_valid - fg_pred - fg_gt + fg_inter  # neither predicted nor true foreground
    inter = np.array([bg_inter, fg_inter], np.int64)
    area_pred = np.array([n_valid - fg_pred, fg_pred], np.int64)
    area_gt = np.array([n_valid - fg_gt, fg_gt], np.int64)
    return inter, area_pred + area_gt - inter


class ZeroShotMeter:
    """Pools episode counts per class and computes mIoU / FB-IoU over a fold's test classes.

    Args:
        class_ids: the fold's test class ids (e.g. PASCAL fold 0: 0..4).
        class_names: their names, same order (for the per-class table).
    """

    def __init__(self, class_ids: Sequence[int], class_names: Optional[Sequence[str]] = None):
        self.class_ids = [int(c) for c in class_ids]
        if len(set(self.class_ids)) != len(self.class_ids):
            raise ValueError("class_ids must be distinct")
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in self.class_ids]
        if len(self.class_names) != len(self.class_ids):
            raise ValueError(f"{len(self.class_names)} class names for {len(self.class_ids)} class ids")
        self._column = {c: i for i, c in enumerate(self.class_ids)}
        self.counts = np.zeros((2, 2, len(self.class_ids)), np.int64)  # [inter|union, bg|fg, class]
        self.episodes = np.zeros(len(self.class_ids), np.int64)

    def update(self, class_id: int, pred, gt, ignore=None) -> None:
        """Add one episode of class ``class_id`` (must be one of the fold's classes)."""
        if int(class_id) not in self._column:
            raise ValueError(f"class id {class_id} is not one of this fold's test classes {self.class_ids}")
        inter, union = episode_inter_union(pred, gt, ignore)
        col = self._column[int(class_id)]
        self.counts[0, :, col] += inter
        self.counts[1, :, col] += union
        self.episodes[col] += 1

    def allreduce(self, group_size: Optional[int] = None, allreduce_fn=None) -> None:
        """Sum the counts over data-parallel ranks, exactly (every rank then holds the totals)."""
        merged = allreduce_confusion_matrix(
            np.concatenate([self.counts.reshape(-1), self.episodes]), group_size=group_size, allreduce_fn=allreduce_fn
        )
        self.counts = merged[: self.counts.size].reshape(self.counts.shape)
        self.episodes = merged[self.counts.size :]

    def compute(self) -> Dict:
        """``mIoU``, ``FB_IoU`` (fractions), ``per_class`` (foreground IoU, episodes, counts) and the episode count."""
        inter, union = self.counts[0].astype(np.float64), self.counts[1].astype(np.float64)
        fg_iou = inter[1] / np.maximum(union[1], 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            bg_pooled = inter[0].sum() / union[0].sum()
            fg_pooled = inter[1].sum() / union[1].sum()
        per_class: List[Dict] = [
            {
                "id": cid,
                "name": name,
                "iou": float(fg_iou[i]),
                "episodes": int(self.episodes[i]),
                "fg_inter": int(self.counts[0, 1, i]),
                "fg_union": int(self.counts[1, 1, i]),
            }
            for i, (cid, name) in enumerate(zip(self.class_ids, self.class_names))
        ]
        return {
            "mIoU": float(fg_iou.mean()) if len(fg_iou) else float("nan"),
            "FB_IoU": float(0.5 * (bg_pooled + fg_pooled)),
            "num_classes": len(self.class_ids),
            "num_episodes": int(self.episodes.sum()),
            "classes_without_episodes": [r["name"] for r in per_class if r["episodes"] == 0],
            "per_class": per_class,
        }


def format_zeroshot_table(metrics: Dict, fold: int) -> str:
    """Per-class foreground IoU table and the reference's summary line ``Fold F, 0-shot: mIoU xx.xx, FB-IoU yy.yy``."""
    rows = metrics["per_class"]
    width = max([len("class")] + [len(r["name"]) for r in rows])
    lines = [f"{'id':>5}  {'class':<{width}}  {'IoU %':>7}  {'episodes':>8}"]
    for r in rows:
        lines.append(f"{r['id']:>5}  {r['name']:<{width}}  {100 * r['iou']:7.2f}  {r['episodes']:>8}")
    lines.append(f"Fold {fold}, 0-shot: mIoU {100 * metrics['mIoU']:5.2f}, FB-IoU {100 * metrics['FB_IoU']:5.2f}")
    return "\n".join(lines)
