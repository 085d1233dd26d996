"""Segmentation metrics from a confusion matrix (numpy only).

The confusion matrix ``cm`` is ``int64 [K, K]`` with rows = ground-truth class, columns = predicted class,
accumulated over all evaluated pixels whose ground truth is a valid class id (``0 <= gt < K``).

Definitions (``eps = np.spacing(1)`` as in PyTorch-Encoding ``utils/metrics.py``, used by the LSeg evaluator):

* ``pixAcc = sum(diag) / (eps + sum(cm))``
* ``IoU_c = diag_c / (eps + rowsum_c + colsum_c - diag_c)``
* ``mIoU`` (reference) = mean of ``IoU_c`` over **all** ``K`` classes; a class with zero union (absent from both the
  ground truth and the predictions) contributes 0. This is the number LSeg / PyTorch-Encoding print.
* ``mIoU_nanmean`` = mean of ``diag_c / union_c`` over the classes with ``union_c > 0`` (absent classes excluded),
  the usual MMSegmentation-style value. Both are equal when every class occurs.
* ``Acc_c = diag_c / rowsum_c`` (NaN for a class with no ground-truth pixel); ``mAcc`` = nanmean of ``Acc_c``.

Distributed evaluation must SUM confusion matrices over ranks (never average per-rank mIoU):
see :func:`allreduce_confusion_matrix`.
"""

import csv
import io
import json
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..fileio import atomic_write_text

__all__ = [
    "EPS",
    "confusion_matrix",
    "ConfusionMatrix",
    "pixel_accuracy",
    "class_iou",
    "class_accuracy",
    "miou_reference",
    "miou_nanmean",
    "mean_accuracy",
    "compute_metrics",
    "per_class_table",
    "format_table",
    "split_int64_to_float32",
    "merge_float32_parts",
    "allreduce_confusion_matrix",
    "save_metrics_json",
    "save_metrics_csv",
]

EPS = np.spacing(1)  # 2.220446049250313e-16, as in PyTorch-Encoding

# Distributed sum: MindSpore's CPU AllReduce accepts only float32/float16. A non-negative int64 count is split into
# 4 chunks of 16 bits; each chunk (< 2**16) summed over R ranks stays an exactly representable float32 integer while
# R * (2**16 - 1) < 2**24, i.e. for R <= 256 ranks. The chunks are recombined in int64 afterwards.
_CHUNK_BITS = 16
_NUM_CHUNKS = 4
MAX_EXACT_RANKS = 2 ** (24 - _CHUNK_BITS)  # 256


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Confusion matrix of one prediction / ground-truth pair.

    Args:
        pred: integer array (any shape) of predicted class ids in ``[0, num_classes)``.
        target: integer array of the same shape; pixels equal to ``ignore_index`` or negative (the reference's
            unlabeled ``-1``) are not counted.
        num_classes: ``K``.
        ignore_index: label value to skip.

    Returns:
        int64 array ``[K, K]``, rows = ground truth, columns = prediction.

    Raises:
        ValueError: shapes differ, a prediction is out of range, or a ground-truth id is ``>= K`` (and not
            ``ignore_index``), which means the label set and the dataset disagree.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    k = int(num_classes)
    if k <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {target.shape}")
    pred = pred.astype(np.int64, copy=False).ravel()
    target = target.astype(np.int64, copy=False).ravel()
    valid = (target != ignore_index) & (target >= 0)
    if valid.any():
        tmax = int(target[valid].max())
        if tmax >= k:
            raise ValueError(
                f"ground truth contains class id {tmax} but there are only {k} classes (ids 0..{k - 1}); "
                f"ignore_index is {ignore_index}. Check that the label set matches the dataset."
            )
    pred = pred[valid]
    target = target[valid]
    if pred.size and (pred.min() < 0 or pred.max() >= k):
        raise ValueError(f"prediction ids must be in [0, {k}), got range [{pred.min()}, {pred.max()}]")
    return np.bincount(target * k + pred, minlength=k * k).astype(np.int64).reshape(k, k)


class ConfusionMatrix:
    """Running confusion matrix.

    Args:
        num_classes: ``K``.
        ignore_index: ground-truth value that is skipped (negative values are always skipped).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.mat[...] = 0

    def update(self, pred, target) -> None:
        """Add one prediction/ground truth pair (label maps of identical shape, e.g. ``[H, W]`` or ``[B, H, W]``)."""
        self.mat += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def merge(self, other) -> None:
        """Add another confusion matrix (``ConfusionMatrix`` or int array ``[K, K]``)."""
        m = other.mat if isinstance(other, ConfusionMatrix) else np.asarray(other)
        if m.shape != self.mat.shape:
            raise ValueError(f"cannot merge a confusion matrix of shape {m.shape} into {self.mat.shape}")
        self.mat += m.astype(np.int64)

    def compute(self, class_names: Optional[Sequence[str]] = None) -> Dict:
        return compute_metrics(self.mat, class_names)


def _check_cm(cm) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square [K, K], got shape {cm.shape}")
    return cm.astype(np.float64)


def pixel_accuracy(cm) -> float:
    """``sum(diag) / (eps + sum(cm))`` (reference pixAcc)."""
    cm = _check_cm(cm)
    return float(np.diag(cm).sum() / (EPS + cm.sum()))


def _inter_union(cm):
    inter = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - inter
    return inter, union


def class_iou(cm, nan_for_absent: bool = False) -> np.ndarray:
    """Per-class IoU ``[K]`` float64.

    With ``nan_for_absent=False`` (reference) ``IoU = inter / (eps + union)``, so a zero-union class gives 0;
    with ``True`` it gives NaN for such a class and ``inter / union`` otherwise.
    """
    cm = _check_cm(cm)
    inter, union = _inter_union(cm)
    if not nan_for_absent:
        return inter / (EPS + union)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)


def class_accuracy(cm) -> np.ndarray:
    """Per-class accuracy (recall) ``diag / rowsum`` ``[K]``; NaN for a class with no ground-truth pixel."""
    cm = _check_cm(cm)
    gt = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gt > 0, np.diag(cm) / np.where(gt > 0, gt, 1), np.nan)


def miou_reference(cm) -> float:
    """Reference mIoU: mean over ALL classes of ``inter / (eps + union)`` (zero-union classes count 0)."""
    return float(class_iou(cm).mean())


def miou_nanmean(cm) -> float:
    """mIoU over the classes present in ground truth or prediction (zero-union classes excluded); NaN if none."""
    iou = class_iou(cm, nan_for_absent=True)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def mean_accuracy(cm) -> float:
    """Mean per-class accuracy over classes that have ground-truth pixels; NaN if none."""
    acc = class_accuracy(cm)
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")


def per_class_table(cm, class_names: Optional[Sequence[str]] = None) -> List[Dict]:
    """One row per class: ``id, name, iou`` (reference; 0 when absent), ``acc`` (NaN if no GT), ``gt_pixels``,
    ``pred_pixels``."""
    cmf = _check_cm(cm)
    k = cmf.shape[0]
    if class_names is None:
        class_names = [str(i) for i in range(k)]
    if len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a {k}-class confusion matrix")
    iou = class_iou(cmf)
    acc = class_accuracy(cmf)
    cm_int = np.asarray(cm).astype(np.int64)
    gt = cm_int.sum(axis=1)
    pr = cm_int.sum(axis=0)
    return [
        {
            "id": i,
            "name": str(class_names[i]),
            "iou": float(iou[i]),
            "acc": float(acc[i]),
            "gt_pixels": int(gt[i]),
            "pred_pixels": int(pr[i]),
        }
        for i in range(k)
    ]


def compute_metrics(cm, class_names: Optional[Sequence[str]] = None) -> Dict:
    """All metrics of a confusion matrix as a JSON-friendly dict.

    Keys: ``pixAcc``, ``mIoU`` (reference definition), ``mIoU_nanmean``, ``mAcc``, ``num_classes``,
    ``num_pixels``, ``per_class`` (see :func:`per_class_table`), ``confusion_matrix`` (nested int lists).
    """
    cm_int = np.asarray(cm).astype(np.int64)
    return {
        "pixAcc": pixel_accuracy(cm_int),
        "mIoU": miou_reference(cm_int),
        "mIoU_nanmean": miou_nanmean(cm_int),
        "mAcc": mean_accuracy(cm_int),
        "num_classes": int(cm_int.shape[0]),
        "num_pixels": int(cm_int.sum()),
        "per_class": per_class_table(cm_int, class_names),
        "confusion_matrix": cm_int.tolist(),
    }


def _pct(v: float) -> str:
    return "   nan" if not np.isfinite(v) else f"{100.0 * v:6.2f}"


def format_table(metrics: Dict) -> str:
    """Human-readable per-class table plus the summary lines (percentages)."""
    rows = metrics["per_class"]
    width = max([len("class")] + [len(r["name"]) for r in rows])
    lines = [f"{'id':>4}  {'class':<{width}}  {'IoU%':>6}  {'Acc%':>6}  {'GT px':>10}  {'pred px':>10}"]
    for r in rows:
        lines.append(
            f"{r['id']:>4}  {r['name']:<{width}}  {_pct(r['iou'])}  {_pct(r['acc'])}  "
            f"{r['gt_pixels']:>10d}  {r['pred_pixels']:>10d}"
        )
    lines.append("")
    lines.append(f"pixAcc               : {_pct(metrics['pixAcc'])} %")
    lines.append(
        f"mIoU (reference)     : {_pct(metrics['mIoU'])} %   mean over all {metrics['num_classes']} classes, "
        f"absent classes count 0 (LSeg / PyTorch-Encoding definition)"
    )
    lines.append(
        f"mIoU (nanmean)       : {_pct(metrics['mIoU_nanmean'])} %   mean over classes present in GT or " f"prediction"
    )
    lines.append(f"mAcc                 : {_pct(metrics['mAcc'])} %   mean per-class accuracy over classes with GT")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Distributed merge
# ----------------------------------------------------------------------------------------------------------------
def split_int64_to_float32(counts) -> np.ndarray:
    """Split non-negative int64 counts into ``[4, ...]`` float32 chunks of 16 bits each (exact)."""
    counts = np.asarray(counts).astype(np.int64)
    if counts.size and counts.min() < 0:
        raise ValueError("only non-negative counts can be split for the float32 all-reduce")
    mask = (1 << _CHUNK_BITS) - 1
    return np.stack([((counts >> (_CHUNK_BITS * i)) & mask).astype(np.float32) for i in range(_NUM_CHUNKS)])


def merge_float32_parts(parts) -> np.ndarray:
    """Inverse of :func:`split_int64_to_float32` after a sum over ranks; raises if a chunk sum is not exact."""
    parts = np.asarray(parts)
    if parts.shape[0] != _NUM_CHUNKS:
        raise ValueError(f"expected {_NUM_CHUNKS} chunks, got shape {parts.shape}")
    if parts.size and (parts.max() >= 2**24 or not np.all(parts == np.round(parts))):
        raise ValueError(
            "float32 chunk sum is not an exact integer (more than "
            f"{MAX_EXACT_RANKS} ranks?): cannot merge confusion matrices exactly"
        )
    out = np.zeros(parts.shape[1:], dtype=np.int64)
    for i in range(_NUM_CHUNKS):
        out += parts[i].astype(np.int64) << (_CHUNK_BITS * i)
    return out


def _mindspore_allreduce(x: np.ndarray) -> np.ndarray:
    import mindspore as ms
    from mindspore import ops

    return ops.AllReduce(ops.ReduceOp.SUM)(ms.Tensor(x, ms.float32)).asnumpy()


def allreduce_confusion_matrix(
    cm, group_size: Optional[int] = None, allreduce_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None
) -> np.ndarray:
    """Sum an int64 confusion matrix over all ranks, exactly.

    MindSpore's CPU AllReduce only reduces float32/float16, and float32 represents integers exactly only up to
    ``2**24`` (16.7 M pixels — less than 40 ADE20K images). The counts are therefore split into four 16-bit
    chunks, all-reduced as one float32 tensor ``[4, K, K]``, and recombined in int64: exact for any count below
    ``2**63`` as long as there are at most 256 ranks.

    Args:
        cm: int64 ``[K, K]`` local confusion matrix.
        group_size: number of ranks; ``None`` asks ``mindspore.communication.get_group_size()`` if the
            communication layer is initialised, else assumes 1. With 1 the matrix is returned unchanged.
        allreduce_fn: float32 numpy -> summed float32 numpy (defaults to ``mindspore.ops.AllReduce``);
            injectable for tests.

    Returns:
        int64 ``[K, K]`` global confusion matrix.
    """
    cm = np.asarray(cm).astype(np.int64)
    if group_size is None:
        group_size = 1
        try:
            from mindspore.communication import get_group_size

            group_size = int(get_group_size())
        except Exception:  # communication not initialised: single process
            group_size = 1
    if group_size <= 1 and allreduce_fn is None:
        return cm
    if group_size > MAX_EXACT_RANKS:
        raise ValueError(
            f"exact confusion-matrix all-reduce supports at most {MAX_EXACT_RANKS} ranks, " f"got {group_size}"
        )
    fn = allreduce_fn or _mindspore_allreduce
    return merge_float32_parts(fn(split_int64_to_float32(cm)))


# ----------------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------------
def _json_safe(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def save_metrics_json(metrics: Dict, path: str, extra: Optional[Dict] = None) -> None:
    """Write metrics (and ``extra`` info such as the config) as JSON, atomically. NaN becomes ``null``."""
    data = dict(metrics)
    if extra:
        data.update(extra)
    atomic_write_text(path, json.dumps(_json_safe(data), indent=1, ensure_ascii=False) + "\n")


def save_metrics_csv(metrics: Dict, path: str) -> None:
    """Write the per-class table as CSV (``id,name,iou,acc,gt_pixels,pred_pixels``; fractions), plus summary rows
    with an empty id: ``pixAcc``, ``mIoU``, ``mIoU_nanmean``, ``mAcc`` in the ``iou`` column."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "name", "iou", "acc", "gt_pixels", "pred_pixels"])
    for r in metrics["per_class"]:
        w.writerow(
            [
                r["id"],
                r["name"],
                f"{r['iou']:.6f}",
                "" if not np.isfinite(r["acc"]) else f"{r['acc']:.6f}",
                r["gt_pixels"],
                r["pred_pixels"],
            ]
        )
    for key in ("pixAcc", "mIoU", "mIoU_nanmean", "mAcc"):
        v = metrics[key]
        w.writerow(["", key, "" if not np.isfinite(v) else f"{v:.6f}", "", "", ""])
    atomic_write_text(path, buf.getvalue())
