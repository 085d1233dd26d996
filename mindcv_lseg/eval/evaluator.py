"""Dataset evaluation: run the inference core over a (sharded) dataset, accumulate and merge confusion matrices.

    from mindcv_lseg.eval.evaluator import evaluate_dataset
    cm, metrics = evaluate_dataset(net, val_set, InferenceConfig(mode="ms_flip"))   # metrics: see compute_metrics

Images are processed one at a time at their original size (the reference ``testval`` protocol); with several ranks
each rank takes every ``group_size``-th image and the int64 confusion matrices are summed exactly across ranks
(:func:`~mindcv_lseg.eval.metrics.allreduce_confusion_matrix`), so the metrics are those of the whole dataset.
"""

import dataclasses
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .inference import InferenceConfig, run_inference
from .metrics import ConfusionMatrix, allreduce_confusion_matrix, compute_metrics
from .text_cache import TextEmbeddingCache

__all__ = ["evaluate_dataset", "shard_indices"]


def shard_indices(n: int, rank: int = 0, group_size: int = 1) -> Sequence[int]:
    """Indices of a dataset of ``n`` samples handled by ``rank`` (round robin; every index exactly once overall)."""
    return range(rank, n, group_size)


def evaluate_dataset(
    net,
    dataset,
    cfg: InferenceConfig = InferenceConfig(),
    labels: Optional[Sequence[str]] = None,
    text_cache: Optional[TextEmbeddingCache] = None,
    rank: int = 0,
    group_size: int = 1,
    progress: bool = True,
    max_samples: Optional[int] = None,
    allreduce_fn=None,
) -> Tuple[np.ndarray, Dict]:
    """Evaluate ``net`` on ``dataset``.

    Args:
        net: LSeg network in eval mode.
        dataset: object with ``len()``, ``get_item(i) -> (float32 [3, H, W] normalised image, int32 [H, W] mask)``,
            ``num_classes``, ``ignore_index`` and ``label_set`` (a :class:`mindcv_lseg.data.SegDataset`).
        cfg: inference mode/sizes.
        labels: text labels (default: ``dataset.label_set.labels``); label ``i`` = class id ``i``.
        text_cache: optional shared cache for the label embeddings.
        rank, group_size: data-parallel position; the confusion matrices are summed over ranks.
        progress: tqdm bar with ETA (rank 0 only).
        max_samples: evaluate only the first N samples (debug).
        allreduce_fn: override of the float32 all-reduce (tests).

    Returns:
        ``(confusion_matrix int64 [K, K], metrics dict)`` for the whole dataset (identical on every rank).
    """
    labels = list(labels) if labels is not None else list(dataset.label_set.labels)
    k = len(labels)
    if k != dataset.num_classes:
        raise ValueError(f"{k} labels for a dataset with {dataset.num_classes} classes")
    cache = text_cache or TextEmbeddingCache(net)
    text = cache(labels)
    n = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    cm = ConfusionMatrix(k, ignore_index=dataset.ignore_index)
    idx = list(shard_indices(n, rank, group_size))
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=len(idx), desc=f"eval[{cfg.mode}]", unit="img", dynamic_ncols=True)
    t0 = time.time()
    for i in idx:
        image, mask = dataset.get_item(i)
        logits = run_inference(net, np.asarray(image, np.float32)[None], text, cfg)
        cm.update(np.argmax(logits[0], axis=0), np.asarray(mask))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    mat = allreduce_confusion_matrix(cm.mat, group_size=group_size, allreduce_fn=allreduce_fn)
    metrics = compute_metrics(mat, labels)
    metrics["num_images"] = n
    metrics["seconds"] = round(time.time() - t0, 3)
    metrics["eval_config"] = {
        k_: (list(v) if isinstance(v, tuple) else v) for k_, v in dataclasses.asdict(cfg.resolved()).items()
    }
    return mat, metrics
