"""``create_seg_dataset``: one entry point for the toy set, ADE20K and user folders."""

import os
from typing import Callable, Optional, Sequence, Union

from .datasets import ADE20KSegDataset, FolderSegDataset, SegDataset
from .transforms import create_seg_transform

__all__ = ["create_seg_dataset", "DATASET_NAMES", "DEFAULT_SIZES"]

DATASET_NAMES = ("toy", "ade20k", "folder")
# (base_size, crop_size) used when not given
DEFAULT_SIZES = {"toy": (128, 128), "ade20k": (520, 480), "folder": (520, 480)}


def create_seg_dataset(
    name: str,
    root: str,
    split: Optional[str] = "train",
    *,
    label_set=None,
    transform: Union[str, Callable, None] = "auto",
    base_size: Optional[int] = None,
    crop_size: Union[int, Sequence[int], None] = None,
    scale_range=(0.5, 2.0),
    hflip: Union[float, bool] = 0.5,
    val_mode: str = "original",
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    mask_ignore_index: Optional[int] = 255,
    skip_bad: bool = False,
    generate_toy: bool = True,
) -> SegDataset:
    """Create a segmentation dataset with its transform.

    Args:
        name: ``"toy"`` (generated into ``root`` with default arguments if ``root`` has no ``classes.txt``),
            ``"ade20k"`` (``ADEChallengeData2016`` or its parent) or ``"folder"`` (generic layout).
        root: dataset folder.
        split: ``"train"``/``"val"`` (ADE20K also ``"training"``/``"validation"``); for ``"folder"`` any split
            name (``images/<split>/`` or ``splits/<split>.txt``) or ``None`` for all images.
        label_set: override the labels (built-in name, file, comma string, LabelSet). Defaults: toy ->
            ``classes.txt``, ade20k -> ``"ade20k_150"`` (reference strings), folder -> ``root/classes.txt``.
        transform: ``"auto"`` (training augmentation for split ``train``/``training``, else validation),
            ``"train"``, ``"val"``, ``None`` (normalise only) or a callable ``(image, mask, rng) -> (image, mask)``.
        base_size, crop_size: transform sizes; ``None`` -> per-dataset defaults (toy 128/128, others 520/480).
        scale_range, hflip: training augmentation (long side in ``scale_range * base_size``; horizontal-flip
            probability, as mindcv's ``hflip``).
        val_mode: ``"original"`` (whole image) or ``"resize_crop"`` (short side -> crop_size, centre crop).
        ignore_index: value of ignored pixels in the returned masks (default 255; pass it to the loss).
        reduce_zero_label, mask_ignore_index: label mapping for ``"folder"`` (ADE20K fixes its own; toy has none).
        skip_bad: skip bad samples with a warning instead of raising.
        generate_toy: ``"toy"`` only: generate the set into an empty ``root``; if False a missing toy set raises
            ``FileNotFoundError`` (evaluation never creates data).

    Returns:
        a :class:`~mindcv_lseg.data.datasets.SegDataset`.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASET_NAMES}")
    root = os.path.expanduser(os.fspath(root))
    d_base, d_crop = DEFAULT_SIZES[name]
    base_size = d_base if base_size is None else base_size
    crop_size = d_crop if crop_size is None else crop_size
    if isinstance(transform, str):
        if transform == "auto":
            train = split in ("train", "training")
        elif transform in ("train", "val"):
            train = transform == "train"
        else:
            raise ValueError(f"transform must be 'auto', 'train', 'val', None or a callable, got {transform!r}")
        transform = create_seg_transform(
            train,
            base_size=base_size,
            crop_size=crop_size,
            scale_range=scale_range,
            hflip=hflip,
            val_mode=val_mode,
            ignore_index=ignore_index,
        )
    elif transform is not None and not callable(transform):
        raise TypeError(f"transform must be a string, None or callable, got {type(transform).__name__}")

    if name == "ade20k":
        return ADE20KSegDataset(
            root,
            split,
            label_set if label_set is not None else "ade20k_150",
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
        )
    if name == "toy":
        if not os.path.isfile(os.path.join(root, "classes.txt")):
            if not generate_toy:
                raise FileNotFoundError(
                    f"no toy set in {root} (no classes.txt): run `python tools/quickstart.py`, "
                    f"or generate it with `python -m mindcv_lseg.data.toy --out {root}`"
                )
            from .toy import make_toy_dataset  # lazy: see mindcv_lseg/data/__init__.py

            make_toy_dataset(root)
        return FolderSegDataset(
            root,
            split,
            label_set,
            reduce_zero_label=False,
            mask_ignore_index=None,
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
            name="toy",
        )
    return FolderSegDataset(
        root,
        split,
        label_set,
        reduce_zero_label=reduce_zero_label,
        mask_ignore_index=mask_ignore_index,
        ignore_index=ignore_index,
        transform=transform,
        skip_bad=skip_bad,
    )
