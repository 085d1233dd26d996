"""Zero-shot segmentation benchmarks in HSNet's layout: FSS-1000, PASCAL-5i and COCO-20i (query images only).

Layouts under ``root`` (the ``--data_dir``):

=============  ==========================================================================================
``fss``        ``FSS-1000/<class>/<k>.jpg`` + ``<k>.png`` (k = 1..10)
``pascal``     ``VOC2012/JPEGImages/<name>.jpg`` + ``VOC2012/SegmentationClassAug/<name>.png`` (ids 0..20, 255)
``coco``       ``COCO2014/<split>2014/<file>.jpg`` + ``COCO2014/annotations/<split>2014/<file>.png`` (0, 1..80)
=============  ==========================================================================================

Episodes, in the reference's order (LSeg's zero-shot evaluation uses HSNet's dataset classes with ``nshot=0``):

* FSS-1000: every ``.jpg`` of every test class; classes in sorted order, files sorted as path strings
  (``1.jpg, 10.jpg, 2.jpg, ...``): 2400 episodes. Class ids 760 + position in the sorted test list.
* PASCAL-5i fold f: 1000 episodes; episode i is line ``i mod n`` of ``splits/pascal/val/fold{f}.txt``
  (lines ``<name>__<cls>``, cls 1-based). Test classes 5f..5f+4.
* COCO-20i fold f: 1000 episodes drawn with numpy's legacy ``RandomState`` seeded 0: per episode the class
  (``choice(class_ids, 1, replace=False)``) then the query (``choice(files_of_class, 1, replace=False)``) from
  ``splits/coco/val/fold{f}.pkl``. Test classes ``f + 4v``, v = 0..19.

Split lists: shipped in ``mindcv_lseg/data/fewshot_splits`` (copied unchanged from HSNet, juhongm999/hsnet
``data/splits``, identical blobs in isl-org/lang-seg ``fewshot_data/data/splits``). A file
``<root>/splits/<benchmark>/...`` with the same relative path overrides the shipped one (custom subsets).
The class names (text of each class id) are lang-seg's ``label_files/fewshot_{pascal,coco}.txt`` and, for FSS, the
test folder names verbatim.

Per episode: the image is resized to 480x480 with PIL bilinear and normalised with the model's mean/std; the mask is
resized with legacy nearest (source index ``floor(dst * in / out)``) and then binarised: FSS foreground = grey >= 128;
PASCAL foreground = (label == cls + 1) with 255 as ignore; COCO foreground = (label == cls + 1).

A tree that holds only some of the files is evaluated over the episodes present (the episode list and RNG draws are
those of the full list; missing episodes are skipped) with a warning naming how many classes have no episode; the
mIoU still averages over all the fold's classes (missing ones count 0), as the reference would.
"""

import os
import pickle
import warnings
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .io import SegDataError, read_image
from .transforms import IMAGENET_MEAN, IMAGENET_STD, normalize

__all__ = [
    "BENCHMARKS",
    "Episode",
    "FewShotDataset",
    "FSS1000Dataset",
    "Pascal5iDataset",
    "Coco20iDataset",
    "create_fewshot_dataset",
    "shipped_split_path",
    "nearest_resize",
    "NUM_EPISODES",
]

BENCHMARKS = ("fss", "pascal", "coco")
ZEROSHOT_DATASETS = ("fss1000", "pascal5i", "coco20i")  # the --dataset names of the three benchmarks
NUM_EPISODES = 1000  # PASCAL-5i and COCO-20i test length
IMG_SIZE = 480
_SPLITS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fewshot_splits")


class Episode(NamedTuple):
    """One zero-shot episode: image float32 [3, S, S] (normalised), mask uint8 [S, S] (1 = class), ignore bool
    [S, S] or None, class id (dataset-wide numbering), class name (the text), query image path."""

    image: np.ndarray
    mask: np.ndarray
    ignore: Optional[np.ndarray]
    class_id: int
    class_name: str
    path: str


def shipped_split_path(rel: str) -> str:
    """Path of a shipped split file, e.g. ``pascal/val/fold0.txt``."""
    return os.path.join(_SPLITS_DIR, *rel.split("/"))


def _split_path(root: str, rel: str) -> Tuple[str, bool]:
    """``<root>/splits/<rel>`` if it exists (user override), else the shipped file. Returns (path, overridden)."""
    user = os.path.join(root, "splits", *rel.split("/"))
    if os.path.isfile(user):
        return user, True
    return shipped_split_path(rel), False


def _read_lines(path: str) -> List[str]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except UnicodeDecodeError as e:
        raise SegDataError(f"split file {path} is not UTF-8 text: {e}") from None
    return [line for line in lines if line]


def nearest_resize(label: np.ndarray, size: int) -> np.ndarray:
    """Legacy nearest resize of a 2-D array to ``size x size`` (PyTorch ``F.interpolate(mode='nearest')``):
    source index ``min(floor(dst * float32(in / out)), in - 1)``, computed in float32 as PyTorch does."""
    h, w = label.shape

    def index(n_in):
        scale = np.float32(n_in) / np.float32(size)
        idx = np.floor(np.arange(size, dtype=np.float32) * scale).astype(np.int64)
        return np.minimum(idx, n_in - 1)

    return label[index(h)[:, None], index(w)[None, :]]


def _read_label(path: str, what: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise SegDataError(f"{what} file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "1", "I", "I;16"):
                raise SegDataError(f"{what} {path} has mode {im.mode!r}; expected a single-channel label image")
            return np.asarray(im).astype(np.int64)
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, SegDataError):
            raise
        raise SegDataError(f"cannot read {what} {path}: {e} (unreadable or truncated file)") from None


def _read_gray(path: str) -> np.ndarray:
    """A mask as 8-bit grey (``convert('L')``, as the reference's FSS reader)."""
    if not os.path.isfile(path):
        raise SegDataError(f"mask file not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (OSError, SyntaxError, ValueError) as e:
        raise SegDataError(f"cannot read mask {path}: {e} (unreadable or truncated file)") from None


class FewShotDataset:
    """Common part of the three benchmarks: episode list, image transform, class bookkeeping.

    Subclasses fill ``self._episodes`` (list of (query image path, label path, class id)), ``class_ids`` and
    ``_names`` (class id -> text) and implement ``_decode_mask``.

    Args:
        mean, std: the network's input normalisation (``default_cfg``; ImageNet for ``lseg_rn101``).
        img_size: side of the square input (480 in the reference).
    """

    benchmark = ""

    def __init__(self, mean: Sequence[float], std: Sequence[float], img_size: int = IMG_SIZE):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.img_size = int(img_size)
        self._episodes: List[Tuple[str, str, int]] = []
        self.class_ids: List[int] = []
        self._names: Dict[int, str] = {}
        self.split_file = ""
        self.total_episodes = 0  # episodes of the full list, before dropping missing files

    @property
    def class_names(self) -> List[str]:
        return [self._names[c] for c in self.class_ids]

    def __len__(self) -> int:
        return len(self._episodes)

    def episode_list(self) -> List[Tuple[str, int]]:
        """(query image path, class id) of every episode, in order."""
        return [(img, cid) for img, _, cid in self._episodes]

    def describe_episode(self, index: int) -> str:
        img, _, cid = self._episodes[index]
        return f"class {cid} {self._names.get(cid, '?')!r}, query {img}"

    def _image(self, path: str) -> np.ndarray:
        rgb = Image.fromarray(read_image(path)).resize((self.img_size, self.img_size), Image.BILINEAR)
        return normalize(np.asarray(rgb), self.mean, self.std)

    def _decode_mask(self, label_path: str, class_id: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        raise NotImplementedError

    def episode(self, index: int) -> Episode:
        img, lbl, cid = self._episodes[index]
        mask, ignore = self._decode_mask(lbl, cid)
        return Episode(self._image(img), mask, ignore, cid, self._names[cid], img)

    def _keep_present(self, episodes: List[Tuple[str, str, int]]) -> None:
        """Keep the episodes whose files exist; warn how many episodes and classes are missing."""
        self.total_episodes = len(episodes)
        exists: Dict[str, bool] = {}

        def present(p):
            if p not in exists:
                exists[p] = os.path.isfile(p)
            return exists[p]

        kept = [e for e in episodes if present(e[0]) and present(e[1])]
        if not kept:
            example = episodes[0] if episodes else ("?", "?", -1)
            raise SegDataError(
                f"{self.benchmark}: none of the {len(episodes)} episodes of {self.split_file} has its files under "
                f"the data root (e.g. {example[0]} and {example[1]}); check --data_dir against the expected layout: "
                f"{self.layout_hint()}"
            )
        if len(kept) < len(episodes):
            covered = {cid for _, _, cid in kept}
            missing = [c for c in self.class_ids if c not in covered]
            names = ", ".join(self._names[c] for c in missing[:8]) + (" ..." if len(missing) > 8 else "")
            first = next(e for e in episodes if not (present(e[0]) and present(e[1])))
            warnings.warn(
                f"{self.benchmark}: {len(episodes) - len(kept)} of {len(episodes)} episodes have missing files "
                f"(e.g. {first[0]}) and are skipped; {len(missing)} of the {len(self.class_ids)} test classes have no "
                f"episode left{': ' + names if missing else ''}. The mIoU still averages over all "
                f"{len(self.class_ids)} classes (a class without episodes counts 0).",
                stacklevel=3,
            )
        self._episodes = kept

    def layout_hint(self) -> str:
        raise NotImplementedError


def _check_root(root: str, sub: str, benchmark: str, layout: str) -> str:
    root = os.path.expanduser(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{benchmark} data root not found: {root} (expected a folder holding {layout})")
    if not os.path.isdir(os.path.join(root, sub)):
        if os.path.basename(os.path.normpath(root)) == sub:
            return os.path.dirname(os.path.normpath(root))
        entries = sorted(os.listdir(root))[:8]
        raise SegDataError(
            f"{benchmark}: {root} has no {sub}/ folder (found: {', '.join(entries) or 'nothing'}); "
            f"expected layout {layout}"
        )
    return root


def _check_fold(fold: int, benchmark: str) -> int:
    if int(fold) not in (0, 1, 2, 3):
        raise ValueError(f"{benchmark}: fold must be 0, 1, 2 or 3, got {fold}")
    return int(fold)


class FSS1000Dataset(FewShotDataset):
    """FSS-1000 test split (240 classes, 2400 query episodes). ``fold`` is ignored (the reference accepts any)."""

    benchmark = "fss"
    LAYOUT = "FSS-1000/<class>/<k>.jpg + <k>.png"
    FIRST_TEST_ID = 760

    def __init__(self, root: str, mean, std, fold: int = 0, img_size: int = IMG_SIZE):
        super().__init__(mean, std, img_size)
        self.root = _check_root(root, "FSS-1000", "FSS-1000", self.LAYOUT)
        self.fold = int(fold)
        base = os.path.join(self.root, "FSS-1000")
        self.split_file, self.split_overridden = _split_path(self.root, "fss/test.txt")
        classes = sorted(_read_lines(self.split_file))
        if not classes:
            raise SegDataError(f"split file {self.split_file} lists no class")
        if len(set(classes)) != len(classes):
            raise SegDataError(f"split file {self.split_file} lists a class twice")
        self.class_ids = [self.FIRST_TEST_ID + i for i in range(len(classes))]
        self._names = dict(zip(self.class_ids, classes))
        episodes, absent = [], []
        for cid, name in zip(self.class_ids, classes):
            folder = os.path.join(base, name)
            if not os.path.isdir(folder):
                absent.append(name)
                continue
            paths = sorted(os.path.join(folder, f) for f in os.listdir(folder))  # path strings, as glob + sorted
            for p in paths:
                if p.endswith(".jpg"):
                    episodes.append((p, p[: -len(".jpg")] + ".png", cid))
        if absent and len(absent) == len(classes):
            raise SegDataError(
                f"fss: none of the {len(classes)} test classes of {self.split_file} has a folder in "
                f"{base} (e.g. {os.path.join(base, classes[0])}); expected layout {self.LAYOUT}"
            )
        if absent:
            names = ", ".join(absent[:8]) + (" ..." if len(absent) > 8 else "")
            warnings.warn(
                f"fss: {len(absent)} of the {len(classes)} test classes have no folder in {base} ({names}); "
                f"evaluating the {len(classes) - len(absent)} present. The mIoU still averages over all "
                f"{len(classes)} classes (a missing class counts 0).",
                stacklevel=2,
            )
        self._keep_present(episodes)

    def layout_hint(self) -> str:
        return self.LAYOUT

    def _decode_mask(self, label_path, class_id):
        grey = nearest_resize(_read_gray(label_path), self.img_size)
        return (grey >= 128).astype(np.uint8), None


class Pascal5iDataset(FewShotDataset):
    """PASCAL-5i fold ``fold`` (val): 1000 episodes cycling through the fold's list; 255 is ignored."""

    benchmark = "pascal"
    LAYOUT = "VOC2012/JPEGImages/<name>.jpg + VOC2012/SegmentationClassAug/<name>.png"

    def __init__(self, root: str, mean, std, fold: int = 0, img_size: int = IMG_SIZE, num_episodes: int = NUM_EPISODES):
        super().__init__(mean, std, img_size)
        self.root = _check_root(root, "VOC2012", "PASCAL-5i", self.LAYOUT)
        self.fold = _check_fold(fold, "pascal")
        names = _read_lines(shipped_split_path("labels_pascal.txt"))
        self.class_ids = list(range(5 * self.fold, 5 * self.fold + 5))
        self._names = dict(enumerate(names))
        self.split_file, self.split_overridden = _split_path(self.root, f"pascal/val/fold{self.fold}.txt")
        entries = []
        for lineno, line in enumerate(_read_lines(self.split_file), start=1):
            name, sep, cls = line.rpartition("__")
            if not sep or not cls.isdigit() or int(cls) - 1 not in self.class_ids:
                raise SegDataError(
                    f"split file {self.split_file}, line {lineno}: {line!r} is not '<image>__<class>' "
                    f"with a class of fold {self.fold} ({self.class_ids[0] + 1}..{self.class_ids[-1] + 1})"
                )
            entries.append((name, int(cls) - 1))
        if not entries:
            raise SegDataError(f"split file {self.split_file} lists no episode")
        voc = os.path.join(self.root, "VOC2012")
        episodes = []
        for i in range(num_episodes):
            name, cid = entries[i % len(entries)]
            episodes.append(
                (
                    os.path.join(voc, "JPEGImages", name + ".jpg"),
                    os.path.join(voc, "SegmentationClassAug", name + ".png"),
                    cid,
                )
            )
        self._keep_present(episodes)

    def layout_hint(self) -> str:
        return self.LAYOUT

    def _decode_mask(self, label_path, class_id):
        label = nearest_resize(_read_label(label_path, "label"), self.img_size)
        return (label == class_id + 1).astype(np.uint8), label == 255


class _SplitUnpickler(pickle.Unpickler):
    """Reads only plain containers (dict / list / str / int): a split file can run no code."""

    def find_class(self, module, name):
        raise SegDataError(f"split pickle refers to {module}.{name}; only dicts of lists of paths are accepted")


def _read_coco_split(path: str) -> Dict[int, List[str]]:
    try:
        with open(path, "rb") as f:
            data = _SplitUnpickler(f).load()
    except SegDataError:
        raise
    except Exception as e:  # noqa: BLE001 - any malformed pickle
        raise SegDataError(f"cannot read split file {path}: {e} (expected a pickle of {{class id: [paths]}})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise SegDataError(
            f"split file {path} must hold a dict {{class id: [image paths]}}, got " f"{type(data).__name__}"
        )
    return {int(k): [str(p) for p in v] for k, v in data.items()}


class Coco20iDataset(FewShotDataset):
    """COCO-20i fold ``fold`` (val): 1000 episodes drawn with numpy's legacy RandomState seeded ``seed`` (0)."""

    benchmark = "coco"
    LAYOUT = "COCO2014/val2014/<file>.jpg + COCO2014/annotations/val2014/<file>.png"

    def __init__(
        self,
        root: str,
        mean,
        std,
        fold: int = 0,
        img_size: int = IMG_SIZE,
        num_episodes: int = NUM_EPISODES,
        seed: int = 0,
    ):
        super().__init__(mean, std, img_size)
        self.root = _check_root(root, "COCO2014", "COCO-20i", self.LAYOUT)
        self.fold = _check_fold(fold, "coco")
        names = _read_lines(shipped_split_path("labels_coco.txt"))
        self.class_ids = [self.fold + 4 * v for v in range(20)]
        self._names = dict(enumerate(names))
        self.split_file, self.split_overridden = _split_path(self.root, f"coco/val/fold{self.fold}.pkl")
        per_class = _read_coco_split(self.split_file)
        empty = [c for c in self.class_ids if not per_class.get(c)]
        if empty:
            raise SegDataError(
                f"split file {self.split_file} has no image for test class(es) {empty} of fold "
                f"{self.fold}; every class {self.class_ids} needs at least one"
            )
        coco = os.path.join(self.root, "COCO2014")
        episodes = []
        for cid, rel in self.draw_episodes(per_class, self.class_ids, num_episodes, seed):
            stem = os.path.splitext(rel)[0]
            episodes.append((os.path.join(coco, rel), os.path.join(coco, "annotations", stem + ".png"), cid))
        self._keep_present(episodes)

    @staticmethod
    def draw_episodes(
        per_class: Dict[int, List[str]], class_ids: Sequence[int], num_episodes: int, seed: int = 0
    ) -> List[Tuple[int, str]]:
        """(class id, image path) of each episode: the reference's draws from numpy's legacy global RNG seeded 0."""
        rng = np.random.RandomState(seed)
        out = []
        for _ in range(num_episodes):
            cid = int(rng.choice(list(class_ids), 1, replace=False)[0])
            out.append((cid, str(rng.choice(per_class[cid], 1, replace=False)[0])))
        return out

    def layout_hint(self) -> str:
        return self.LAYOUT

    def _decode_mask(self, label_path, class_id):
        label = nearest_resize(_read_label(label_path, "label"), self.img_size)
        return (label == class_id + 1).astype(np.uint8), None


_CLASSES = {"fss": FSS1000Dataset, "pascal": Pascal5iDataset, "coco": Coco20iDataset}


def create_fewshot_dataset(
    benchmark: str, root: str, fold: int = 0, mean=IMAGENET_MEAN, std=IMAGENET_STD, img_size: int = IMG_SIZE
) -> FewShotDataset:
    """One of ``fss`` / ``pascal`` / ``coco`` (also accepted: ``fss1000``, ``pascal5i``, ``coco20i``)."""
    key = dict(zip(ZEROSHOT_DATASETS, BENCHMARKS)).get(benchmark, benchmark)
    if key not in _CLASSES:
        raise ValueError(f"unknown zero-shot benchmark {benchmark!r}; choose one of fss1000, pascal5i, coco20i")
    return _CLASSES[key](root, mean, std, fold=fold, img_size=img_size)
