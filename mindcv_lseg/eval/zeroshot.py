"""Zero-shot segmentation as LSeg's zero-shot evaluation does it.

Each sample names one class; the network compares every pixel with the two labels ``["others", class_name]``
(channel 0 = ``others`` = background, channel 1 = the class), and the prediction is the argmax (ties -> background).
The text features are computed once per class name and reused.

    from mindcv_lseg.eval.zeroshot import predict_zeroshot, evaluate_zeroshot
    pred = predict_zeroshot(net, images, ["dog", "cat"])          # images [2, 3, H, W] -> int64 [2, H, W]
    metrics = evaluate_zeroshot(net, mindcv_lseg.data.fewshot.create_fewshot_dataset("fss", root))
"""

import time
from typing import Dict, Optional, Sequence

import numpy as np

import mindspore as ms

from ..data.io import SegDataError
from .zeroshot_metrics import ZeroShotMeter

__all__ = [
    "OTHERS",
    "zeroshot_labels",
    "ZeroShotText",
    "zeroshot_text_features",
    "predict_zeroshot",
    "evaluate_zeroshot",
]

#: the background label of the zero-shot networks (plural, unlike the demo's "other")
OTHERS = "others"


def zeroshot_labels(class_name: str) -> list:
    """The label pair of one zero-shot sample: ``["others", class_name]``."""
    return [OTHERS, class_name]


class ZeroShotText:
    """Raw text features of ``["others", name]`` per class name, computed once per name (float32 [2, C] each)."""

    def __init__(self, net):
        self.net = net
        self._cache: Dict[str, np.ndarray] = {}

    def pair(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self.net.encode_text(zeroshot_labels(name)).asnumpy()
        return self._cache[name]

    def __call__(self, class_names: Sequence[str]) -> ms.Tensor:
        """float32 Tensor [B, 2, C]: row b holds the pair of ``class_names[b]`` (for ``net(x, text)``)."""
        return ms.Tensor(np.stack([self.pair(n) for n in class_names]), ms.float32)


def zeroshot_text_features(net, class_names: Sequence[str]) -> ms.Tensor:
    """float32 Tensor [B, 2, C] of raw text features, one ``["others", name]`` pair per sample."""
    return ZeroShotText(net)(class_names)


def predict_zeroshot(net, images, class_names: Sequence[str], text: Optional[ZeroShotText] = None) -> np.ndarray:
    """Binary prediction of a batch whose samples may name different classes.

    Args:
        net: an LSeg network in eval mode.
        images: float32 [B, 3, H, W] (numpy or Tensor), normalised for ``net``.
        class_names: B class names, one per sample.
        text: optional :class:`ZeroShotText` cache shared between calls.

    Returns:
        int64 [B, H, W]: 1 where the class wins over ``others``, else 0.
    """
    images = images if isinstance(images, ms.Tensor) else ms.Tensor(np.asarray(images, np.float32))
    if images.shape[0] != len(class_names):
        raise ValueError(f"{images.shape[0]} images but {len(class_names)} class names")
    text = text or ZeroShotText(net)
    logits = net(images, text(class_names)).asnumpy()
    return logits.argmax(axis=1)


def evaluate_zeroshot(
    net,
    dataset,
    rank: int = 0,
    group_size: int = 1,
    progress: bool = True,
    max_episodes: Optional[int] = None,
    allreduce_fn=None,
) -> Dict:
    """Run every episode of a zero-shot benchmark dataset and compute mIoU / FB-IoU over the fold's test classes.

    Args:
        net: LSeg network in eval mode (its normalisation must match the dataset's).
        dataset: a :class:`~mindcv_lseg.data.fewshot.FewShotDataset` (``len``, ``episode(i)``, ``class_ids``,
            ``class_names``).
        rank, group_size: data-parallel position; rank r runs episodes r, r + group_size, ...; the counts are summed
            exactly over ranks.
        progress: tqdm bar (rank 0 only).
        max_episodes: run only the first N episodes (debug).
        allreduce_fn: override of the float32 all-reduce (tests).

    Returns:
        the metrics of :meth:`ZeroShotMeter.compute` plus ``seconds`` and ``seconds_per_episode``.

    Raises:
        SegDataError: an episode's files are unreadable (the message names the episode and the file).
    """
    meter = ZeroShotMeter(dataset.class_ids, dataset.class_names)
    text = ZeroShotText(net)
    n = len(dataset) if max_episodes is None else min(len(dataset), int(max_episodes))
    indices = range(rank, n, group_size)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=len(indices), desc="zero-shot", unit="episode", dynamic_ncols=True)
    t0 = time.time()
    for i in indices:
        try:
            ep = dataset.episode(i)
        except SegDataError as e:
            raise SegDataError(f"episode {i} ({dataset.describe_episode(i)}): {e}") from None
        pred = predict_zeroshot(net, ep.image[None], [ep.class_name], text)[0]
        meter.update(ep.class_id, pred, ep.mask, ep.ignore)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.time() - t0
    if group_size > 1 or allreduce_fn is not None:
        meter.allreduce(group_size=group_size, allreduce_fn=allreduce_fn)
    metrics = meter.compute()
    metrics["seconds"] = round(seconds, 3)
    metrics["seconds_per_episode"] = round(seconds / max(len(indices), 1), 4)
    return metrics
