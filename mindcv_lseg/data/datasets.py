"""Segmentation dataset adapters: a generic folder layout and ADE20K.

A dataset is a list of ``(image_path, mask_path)`` pairs plus a :class:`~mindcv_lseg.text.LabelSet` and the
rules that map raw mask values to training ids. It reads and checks one sample at a time; the loader
(:mod:`mindcv_lseg.data.loader`) adds per-sample seeded augmentation, batching, workers and sharding.

Folder layout (``FolderSegDataset``)::

    root/
      classes.txt            one label per line; line i (0-based) = class id i
      images/NAME.jpg|png    RGB images (grayscale/RGBA/16-bit are converted to RGB)
      masks/NAME.png         single-channel PNG of class ids, same size as the image
      splits/train.txt       optional: one NAME per line (relative path without extension)

    or, instead of split files, images/<split>/... and masks/<split>/... sub-folders.
"""

import os
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..text.labels import LabelSet, get_label_set
from .io import IMAGE_EXTS, MASK_EXTS, SegDataError, map_mask, read_image, read_mask

__all__ = ["SegDataset", "FolderSegDataset", "ADE20KSegDataset"]


class SegDataset:
    """Base class: ``(image, mask)`` pairs + label set + label mapping + optional transform.

    Args:
        samples: list of ``(image_path, mask_path)``.
        label_set: a :class:`LabelSet` (or anything :func:`get_label_set` resolves).
        reduce_zero_label: file value 0 -> ignore, ``v`` -> ``v - 1``.
        mask_ignore_index: file value meaning "ignore" (``None``: none).
        ignore_index: value of ignored pixels in the returned masks (default 255; give the same value to the loss).
        transform: callable ``(image uint8 HWC, mask int32 HW, rng) -> (float32 CHW, int32 HW)``;
            ``None`` only normalises (see :func:`~mindcv_lseg.data.transforms.normalize`).
        skip_bad: if True, the loader replaces a sample that fails to read by the next good one, with a warning,
            and counts it in ``num_skipped`` (per process); otherwise it raises :class:`SegDataError`.
        name: dataset name for messages.
    """

    # per-dataset defaults for the transform sizes (used by create_seg_dataset)
    default_base_size = 520
    default_crop_size = 480

    def __init__(
        self,
        samples: Sequence[Tuple[str, str]],
        label_set,
        *,
        reduce_zero_label: bool = False,
        mask_ignore_index: Optional[int] = 255,
        ignore_index: int = 255,
        transform=None,
        skip_bad: bool = False,
        name: str = "seg",
    ):
        self.samples: List[Tuple[str, str]] = [(str(a), str(b)) for a, b in samples]
        self.label_set: LabelSet = get_label_set(label_set)
        self.reduce_zero_label = bool(reduce_zero_label)
        self.mask_ignore_index = None if mask_ignore_index is None else int(mask_ignore_index)
        self.ignore_index = int(ignore_index)
        if 0 <= self.ignore_index < self.num_classes:
            raise ValueError(
                f"ignore_index={self.ignore_index} collides with a class id of the "
                f"{self.num_classes}-class label set {self.label_set.name!r}; use e.g. 255 or -1"
            )
        t_ignore = getattr(transform, "ignore_index", None)
        if t_ignore is not None and int(t_ignore) != self.ignore_index:
            raise ValueError(
                f"transform pads masks with ignore_index={t_ignore} but the dataset uses "
                f"ignore_index={self.ignore_index}; build both with the same value"
            )
        self.transform = transform
        self.skip_bad = bool(skip_bad)
        self.name = name
        self.num_skipped = 0  # read-time failures replaced (this process only)
        self.skipped_files: List[str] = []  # construction-time drops + read-time failures (this process)

    @property
    def num_classes(self) -> int:
        return len(self.label_set)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self):
        return (
            f"{type(self).__name__}(name={self.name!r}, {len(self)} samples, label_set={self.label_set.name!r} "
            f"({self.num_classes} classes), reduce_zero_label={self.reduce_zero_label}, "
            f"ignore_index={self.ignore_index}, transform={self.transform!r})"
        )

    def sample_name(self, index: int) -> str:
        """File name of the image, without folder and extension (for saving predictions)."""
        return os.path.splitext(os.path.basename(self.samples[index][0]))[0]

    def load(self, index: int):
        """Read sample ``index`` without augmentation.

        Returns:
            (image uint8 [H, W, 3] RGB, mask int32 [H, W] of training ids / ``ignore_index``)
        Raises:
            SegDataError: naming the file (unreadable, size mismatch, bad mask values, ...).
        """
        img_path, mask_path = self.samples[index]
        image = read_image(img_path)
        raw = read_mask(mask_path)
        if raw.shape != image.shape[:2]:
            raise SegDataError(
                f"mask {mask_path} is {raw.shape[1]}x{raw.shape[0]} (WxH) but image {img_path} is "
                f"{image.shape[1]}x{image.shape[0]}; a mask must have its image's size"
            )
        mask = map_mask(
            raw,
            self.num_classes,
            reduce_zero_label=self.reduce_zero_label,
            mask_ignore_index=self.mask_ignore_index,
            ignore_index=self.ignore_index,
            path=mask_path,
        )
        return image, mask

    def get_item(self, index: int, rng: Optional[np.random.Generator] = None):
        """Read and transform sample ``index``.

        Returns:
            (image float32 [3, h, w], mask int32 [h, w])
        """
        image, mask = self.load(index)
        if rng is None:
            rng = np.random.default_rng([0, 0, index])
        if self.transform is None:
            from .transforms import normalize

            return normalize(image), mask
        try:
            return self.transform(image, mask, rng)
        except SegDataError:
            raise
        except Exception as e:  # a transform bug or an absurd image: name the files
            raise SegDataError(
                f"transform {self.transform!r} failed on {self.samples[index][0]}: " f"{type(e).__name__}: {e}"
            ) from None

    def __getitem__(self, index: int):
        return self.get_item(index)

    def validate(self) -> List[Tuple[int, str]]:
        """Read every sample (slow: decodes all files) and return ``[(index, error message), ...]``."""
        bad = []
        for i in range(len(self)):
            try:
                self.load(i)
            except SegDataError as e:
                bad.append((i, str(e)))
        return bad


def _list_files(folder: str, exts) -> dict:
    """Relative path without extension -> full path, for files under ``folder`` with one of ``exts``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            stem, ext = os.path.splitext(fn)
            if ext.lower() not in exts:
                continue
            rel = os.path.relpath(os.path.join(dirpath, stem), folder).replace(os.sep, "/")
            full = os.path.join(dirpath, fn)
            if rel in out:
                raise SegDataError(
                    f"two files for sample {rel!r} in {folder}: {out[rel]} and {full}; "
                    "keep one (sample names must be unique regardless of extension)"
                )
            out[rel] = full
    return out


def _warn_or_raise(problem: str, items: List[str], skip_bad: bool, dropped: List[str], hint: str):
    if not items:
        return
    shown = ", ".join(items[:5]) + (f", ... ({len(items)} in total)" if len(items) > 5 else "")
    if skip_bad:
        warnings.warn(f"skipping {len(items)} sample(s): {problem}: {shown}", stacklevel=3)
        dropped.extend(items)
    else:
        raise SegDataError(f"{problem}: {shown}. {hint} (or pass skip_bad=True to skip them)")


class FolderSegDataset(SegDataset):
    """Generic folder layout (see the module docstring).

    Args:
        root: dataset folder.
        split: ``None``/``"all"`` (every image), or a split name resolved as ``images/<split>/`` +
            ``masks/<split>/`` sub-folders if they exist, else ``splits/<split>.txt``.
        label_set: default ``root/classes.txt``; or a built-in name / path / comma-separated string / LabelSet.
        reduce_zero_label: file value 0 means "unlabelled" (-> ignore) and ids start at 1.
        mask_ignore_index: file value meaning "ignore" (default 255; ``None`` for none).
        ignore_index: value of ignored pixels in returned masks (default 255).
        image_dir, mask_dir: sub-folder names.
        transform, skip_bad: see :class:`SegDataset`.
    """

    def __init__(
        self,
        root: str,
        split: Optional[str] = None,
        label_set=None,
        *,
        reduce_zero_label: bool = False,
        mask_ignore_index: Optional[int] = 255,
        ignore_index: int = 255,
        image_dir: str = "images",
        mask_dir: str = "masks",
        transform=None,
        skip_bad: bool = False,
        name: Optional[str] = None,
    ):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"dataset root not found: {root} (expected a folder with {image_dir}/, " f"{mask_dir}/ and classes.txt)"
            )
        self.root = root
        self.split = split
        if label_set is None:
            cls_file = os.path.join(root, "classes.txt")
            if not os.path.isfile(cls_file):
                raise SegDataError(
                    f"no classes.txt in dataset root {root}: write one label per line "
                    "(line i = mask value i), or pass label_set=..."
                )
            label_set = LabelSet.from_file(cls_file, name=name or os.path.basename(os.path.abspath(root)))
        dropped: List[str] = []
        samples = self._find_samples(root, split, image_dir, mask_dir, skip_bad, dropped)
        super().__init__(
            samples,
            label_set,
            reduce_zero_label=reduce_zero_label,
            mask_ignore_index=mask_ignore_index,
            ignore_index=ignore_index,
            transform=transform,
            skip_bad=skip_bad,
            name=name or os.path.basename(os.path.abspath(root)),
        )
        self.skipped_files.extend(dropped)

    def _find_samples(self, root, split, image_dir, mask_dir, skip_bad, dropped):
        img_root = os.path.join(root, image_dir)
        msk_root = os.path.join(root, mask_dir)
        for d in (img_root, msk_root):
            if not os.path.isdir(d):
                raise SegDataError(f"dataset root {root} has no {os.path.basename(d)}/ folder")
        where = f"{img_root}"
        listed = None
        if split not in (None, "all"):
            if os.path.isdir(os.path.join(img_root, split)):
                img_root = os.path.join(img_root, split)
                msk_root = os.path.join(msk_root, split)
                if not os.path.isdir(msk_root):
                    raise SegDataError(f"split {split!r}: {img_root} exists but {msk_root} does not")
                where = img_root
            else:
                split_file = os.path.join(root, "splits", f"{split}.txt")
                if not os.path.isfile(split_file):
                    raise SegDataError(
                        f"split {split!r} not found in {root}: expected {image_dir}/{split}/ or "
                        f"splits/{split}.txt (or split=None for all images)"
                    )
                listed = self._read_split_file(split_file)
                where = split_file
        images = _list_files(img_root, IMAGE_EXTS)
        masks = _list_files(msk_root, MASK_EXTS)
        if listed is not None:
            names = listed
            missing = [n for n in names if n not in images]
            _warn_or_raise(
                f"{where} lists images that do not exist in {img_root}",
                missing,
                skip_bad,
                dropped,
                "Fix the split file",
            )
            names = [n for n in names if n in images]
        else:
            names = sorted(images)
            orphans = sorted(set(masks) - set(images))
            _warn_or_raise(
                f"masks without an image in {img_root}",
                [masks[n] for n in orphans],
                skip_bad,
                dropped,
                "Add the images or remove the masks",
            )
        no_mask = [n for n in names if n not in masks]
        lossy = _list_files(msk_root, (".jpg", ".jpeg")) if no_mask else {}
        lossy_masks = [lossy[n] for n in no_mask if n in lossy]
        _warn_or_raise(
            "JPEG masks (lossy compression changes class ids at edges)",
            lossy_masks,
            skip_bad,
            dropped,
            "Save masks as PNG",
        )
        no_mask = [n for n in no_mask if n not in lossy]
        _warn_or_raise(
            f"images without a mask in {msk_root} (expected NAME.png)",
            [images[n] for n in no_mask],
            skip_bad,
            dropped,
            "Add the masks or remove the images",
        )
        names = [n for n in names if n in masks]
        if not names:
            raise SegDataError(f"split {split!r} of {root} is empty: no image/mask pairs found under {where}")
        return [(images[n], masks[n]) for n in names]

    @staticmethod
    def _read_split_file(path):
        names, seen = [], set()
        with open(path, "r", encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, start=1):
                n = line.strip()
                if not n:
                    continue
                stem, ext = os.path.splitext(n)
                if ext.lower() in IMAGE_EXTS:
                    n = stem
                n = n.replace("\\", "/")
                if n in seen:
                    raise SegDataError(f"split file {path}, line {lineno}: {n!r} is listed twice")
                seen.add(n)
                names.append(n)
        if not names:
            raise SegDataError(f"split file {path} is empty: list one image name per line")
        return names


class ADE20KSegDataset(FolderSegDataset):
    """ADE20K SceneParsing (``ADEChallengeData2016``): ``images/{training,validation}/*.jpg`` +
    ``annotations/{training,validation}/*.png``.

    Reduce-zero-label is fixed (file 0 = unlabelled -> ``ignore_index``, ids 1..150 -> 0..149), as in the reference
    (which uses ignore -1; this pipeline defaults to 255 — pass the same value to the loss).

    Args:
        root: the ``ADEChallengeData2016`` folder or its parent.
        split: ``"train"``/``"training"`` or ``"val"``/``"validation"``.
        label_set: ``"ade20k_150"`` (reference first-word strings, default, for parity) or
            ``"ade20k_150_full"`` (full names) or any 150-label set.
    """

    SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}

    def __init__(
        self,
        root: str,
        split: str = "train",
        label_set="ade20k_150",
        *,
        ignore_index: int = 255,
        transform=None,
        skip_bad: bool = False,
    ):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"ADE20K root not found: {root} (expected ADEChallengeData2016/ or its parent)")
        if os.path.isdir(os.path.join(root, "ADEChallengeData2016")):
            root = os.path.join(root, "ADEChallengeData2016")
        if split not in self.SPLITS:
            raise ValueError(f"ADE20K split must be one of {sorted(self.SPLITS)}, got {split!r}")
        ls = get_label_set(label_set)
        if len(ls) != 150:
            raise ValueError(f"ADE20K needs a 150-label set, got {len(ls)} labels ({ls.name!r})")
        super().__init__(
            root,
            self.SPLITS[split],
            ls,
            reduce_zero_label=True,
            mask_ignore_index=None,
            ignore_index=ignore_index,
            image_dir="images",
            mask_dir="annotations",
            transform=transform,
            skip_bad=skip_bad,
            name="ade20k",
        )
