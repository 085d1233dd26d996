"""Batched, sharded, seeded, resumable MindSpore pipeline over a :class:`~mindcv_lseg.data.datasets.SegDataset`.

Determinism: epoch ``e`` visits the shard's samples in the order ``permutation(default_rng([seed, e]))`` (or in
index order without shuffle) and sample ``i`` of epoch ``e`` is augmented with ``default_rng([seed, e, i])``.
Both are independent of ``num_workers``, so a run is reproducible, and resuming at ``(epoch, step)`` gives exactly
the batches an uninterrupted run would have produced.
"""

import gc
import re
import warnings
from typing import Optional

import numpy as np

import mindspore.dataset as ds

from .io import SegDataError

__all__ = ["EpochShardSampler", "SegLoader", "create_seg_loader"]


class EpochShardSampler(ds.Sampler):
    """Yields encoded indices ``epoch * N + i`` for one shard, one epoch per ``__iter__`` call.

    Each ``__iter__`` call serves epoch ``self.epoch`` (starting at step ``self.start_step``) and then advances to
    the next epoch at step 0, so a MindSpore iterator over several epochs walks through consecutive epochs.

    Sharding: the epoch order is split as ``order[shard_id::num_shards]`` (disjoint, complete). With
    ``drop_remainder`` every shard is cut to the same whole number of batches (so data-parallel ranks step
    in lockstep); otherwise shards keep every sample (sizes may differ by one).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        num_shards: int = 1,
        shard_id: int = 0,
        drop_remainder: bool = False,
        start_epoch: int = 0,
        start_step: int = 0,
    ):
        if num_samples <= 0:
            raise ValueError("EpochShardSampler needs at least one sample")
        if num_shards < 1 or not 0 <= shard_id < num_shards:
            raise ValueError(f"need num_shards >= 1 and 0 <= shard_id < num_shards, got {num_shards}, {shard_id}")
        self.n = int(num_samples)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_shards = int(num_shards)
        self.shard_id = int(shard_id)
        self.drop_remainder = bool(drop_remainder)
        per_shard = self.n // self.num_shards
        if self.drop_remainder:
            self.samples_per_epoch = (per_shard // self.batch_size) * self.batch_size
            if self.samples_per_epoch == 0:
                raise ValueError(
                    f"{self.n} samples over {self.num_shards} shard(s) give fewer than one full batch "
                    f"of {self.batch_size} per shard; lower batch_size or set drop_remainder=False"
                )
        else:
            self.samples_per_epoch = len(range(self.shard_id, self.n, self.num_shards))
        self.epoch = 0
        self.start_step = 0
        self.set_epoch(start_epoch, start_step)
        super().__init__(num_samples=self.num_samples)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.samples_per_epoch // self.batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0):
        """Serve ``epoch`` next, starting at batch ``start_step`` (later epochs start at 0).

        Set it before creating an iterator. A mid-epoch ``start_step`` changes the number of samples of that one
        epoch, which MindSpore fixes per iterator: iterate the :class:`SegLoader` (one iterator per epoch), or give
        the resumed partial epoch its own ``num_epochs=1`` iterator.
        """
        if epoch < 0 or not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(
                f"invalid resume point epoch={epoch}, start_step={start_step} "
                f"({self.steps_per_epoch} steps per epoch)"
            )
        if start_step == self.steps_per_epoch:  # resuming right after an epoch's last step
            epoch, start_step = epoch + 1, 0
        self.epoch = int(epoch)
        self.start_step = int(start_step)
        # MindSpore checks that an epoch yields exactly num_samples indices (read when an iterator is created)
        self.num_samples = self.samples_per_epoch - min(self.start_step * self.batch_size, self.samples_per_epoch)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Dataset indices this shard visits in ``epoch`` (whole epoch, ignoring ``start_step``)."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        return order[self.shard_id :: self.num_shards][: self.samples_per_epoch]

    def __iter__(self):
        epoch, skip = self.epoch, self.start_step
        self.epoch, self.start_step = epoch + 1, 0
        for i in self.epoch_indices(epoch)[skip * self.batch_size :]:
            yield epoch * self.n + int(i)

    def __len__(self):
        return self.samples_per_epoch


class _Source:
    """Random-access GeneratorDataset source: encoded index -> (image, mask[, index])."""

    def __init__(self, dataset, seed: int, return_index: bool):
        self.dataset = dataset
        self.seed = int(seed)
        self.return_index = return_index

    def __len__(self):
        return len(self.dataset)

    def _one(self, epoch, idx):
        rng = np.random.default_rng([self.seed, epoch, idx])
        try:
            return self.dataset.get_item(idx, rng)
        except SegDataError:
            raise
        except Exception as e:  # never let a raw traceback escape: name the files
            img, msk = self.dataset.samples[idx]
            raise SegDataError(f"sample {idx} ({img}, {msk}): {type(e).__name__}: {e}") from None

    def __getitem__(self, key):
        n = len(self.dataset)
        epoch, idx = divmod(int(key), n)
        try:
            image, mask = self._one(epoch, idx)
        except SegDataError as e:
            if not getattr(self.dataset, "skip_bad", False):
                raise
            image = mask = None
            err, bad = str(e), idx
            for k in range(1, min(n, 64)):  # deterministic replacement: the next readable sample
                self.dataset.num_skipped += 1
                self.dataset.skipped_files.append(self.dataset.samples[bad][0])
                warnings.warn(f"skip_bad: {err}; using sample {(idx + k) % n} instead")
                try:
                    image, mask = self._one(epoch, (idx + k) % n)
                    idx = (idx + k) % n
                    break
                except SegDataError as e2:
                    err, bad = str(e2), (idx + k) % n
            if image is None:
                raise SegDataError(f"skip_bad: no readable sample found near index {idx}; last error: {err}") from None
        if self.return_index:
            return image, mask, np.array(idx, dtype=np.int64)
        return image, mask


_ERR_RE = re.compile(r"SegDataError: (.+)")


def _translate(err: RuntimeError, batch_size: int) -> Exception:
    """Turn MindSpore's wrapped worker error back into the SegDataError it carries, if any."""
    msg = str(err)
    found = _ERR_RE.findall(msg)
    if found:
        return SegDataError(found[-1].strip())
    if "batch" in msg.lower() and "shape" in msg.lower():
        return SegDataError(
            f"cannot batch {batch_size} samples of different sizes (whole-image validation keeps "
            "each image's size): use batch_size=1, or a fixed-size transform (training crop, "
            "val_mode='resize_crop')"
        )
    return err


class SegLoader:
    """Iterable over batches ``(image float32 [B, 3, h, w], mask int32 [B, h, w][, index int64 [B]])``.

    ``for image, mask in loader`` runs one epoch (the current ``loader.epoch``), then advances ``loader.epoch``.
    Errors from inside the pipeline come out as :class:`SegDataError` naming the file.

    Attributes:
        pipeline: the batched ``mindspore.dataset`` pipeline (``GeneratorDataset(...).batch(...)``). Iterating it
            directly (e.g. ``create_tuple_iterator(num_epochs=E)``) serves consecutive epochs from the current
            epoch/step.
        sampler: the :class:`EpochShardSampler`.
        steps_per_epoch: batches per full epoch on this shard.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        shuffle: bool = False,
        num_workers: int = 1,
        num_shards: int = 1,
        shard_id: int = 0,
        seed: int = 0,
        drop_remainder: bool = False,
        start_epoch: int = 0,
        start_step: int = 0,
        return_index: bool = False,
        output_numpy: bool = False,
        max_rowsize: Optional[int] = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(dataset) == 0:
            raise SegDataError(f"dataset {getattr(dataset, 'name', '')!r} is empty")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.output_numpy = output_numpy
        self.return_index = return_index
        self.sampler = EpochShardSampler(
            len(dataset), batch_size, shuffle, seed, num_shards, shard_id, drop_remainder, start_epoch, start_step
        )
        columns = ["image", "mask"] + (["index"] if return_index else [])
        num_workers = max(1, int(num_workers))
        kwargs = {}
        if num_workers > 1 and max_rowsize is not None:
            kwargs["max_rowsize"] = max_rowsize
        gen = ds.GeneratorDataset(
            _Source(dataset, seed, return_index),
            column_names=columns,
            sampler=self.sampler,
            num_parallel_workers=num_workers,
            python_multiprocessing=num_workers > 1,
            **kwargs,
        )
        self.pipeline = gen.batch(self.batch_size, drop_remainder=False)
        self.num_workers = num_workers

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    @property
    def epoch(self) -> int:
        """The epoch the next iteration serves."""
        return self.sampler.epoch

    def set_epoch(self, epoch: int, start_step: int = 0):
        """Serve ``epoch`` next, from batch ``start_step`` (to resume mid-epoch exactly)."""
        self.sampler.set_epoch(epoch, start_step)

    def __len__(self) -> int:
        """Batches the next iteration yields (``steps_per_epoch`` minus a pending ``start_step``)."""
        return self.steps_per_epoch - self.sampler.start_step

    def __iter__(self):
        epoch, skip = self.sampler.epoch, self.sampler.start_step
        if self.num_workers > 1:
            # collect garbage first so forked workers inherit no dead MindSpore iterators (collecting one in a
            # child process aborts it)
            gc.collect()
        it = self.pipeline.create_tuple_iterator(num_epochs=1, output_numpy=self.output_numpy)
        failed = False
        try:
            for batch in it:
                yield tuple(batch)
        except RuntimeError as e:
            failed = True
            err = _translate(e, self.batch_size)
            if err is e:
                raise
            raise err from None
        finally:
            # stop now (not at garbage collection): a MindSpore iterator left alive can be inherited by worker
            # processes forked later and abort them when collected there
            it.stop()
            del it
            # MindSpore may have prefetched the sampler; whatever it did, after a completed (or abandoned)
            # epoch the next iteration serves the next epoch; after an error, the same point again.
            if failed:
                self.sampler.set_epoch(epoch, skip)
            else:
                self.sampler.set_epoch(epoch + 1, 0)


def create_seg_loader(
    dataset,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 1,
    num_shards: int = 1,
    shard_id: int = 0,
    seed: int = 0,
    drop_remainder: bool = False,
    start_epoch: int = 0,
    start_step: int = 0,
    return_index: bool = False,
    output_numpy: bool = False,
    max_rowsize: Optional[int] = None,
) -> SegLoader:
    """Build a :class:`SegLoader` (batched ``GeneratorDataset`` pipeline in ``loader.pipeline``).

    Args:
        dataset: a :class:`~mindcv_lseg.data.datasets.SegDataset` (its ``transform`` is applied per sample).
        batch_size: samples per batch.
        shuffle: reshuffle every epoch (seeded by ``(seed, epoch)``).
        num_workers: worker processes (1 = in-process). Results do not depend on it.
        num_shards, shard_id: data-parallel sharding (``rank_size``, ``rank_id``).
        seed: seeds shuffling and augmentation.
        drop_remainder: drop the last partial batch (and equalise shards). Use True for training.
        start_epoch, start_step: resume point: the first iteration serves ``start_epoch`` from batch ``start_step``.
        return_index: add a third column with the dataset index of each sample (int64 [B]).
        output_numpy: yield numpy arrays instead of ``mindspore.Tensor``.
        max_rowsize: shared-memory MB per row for worker processes (MindSpore default if None).

    Returns:
        SegLoader yielding ``(image float32 [B, 3, h, w], mask int32 [B, h, w][, index int64 [B]])``.
    """
    return SegLoader(
        dataset,
        batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        num_shards=num_shards,
        shard_id=shard_id,
        seed=seed,
        drop_remainder=drop_remainder,
        start_epoch=start_epoch,
        start_step=start_step,
        return_index=return_index,
        output_numpy=output_numpy,
        max_rowsize=max_rowsize,
    )
