"""Label sets: named lists of free-text class labels.

A :class:`LabelSet` is what LSeg's text encoder turns into one embedding per class: channel ``i`` of the
model's logits ``[B, N, H, W]`` is the score of ``label_set[i]``.  Sources:

* built-ins: ``"ade20k_150"`` (the reference's first-word strings, for parity), ``"ade20k_150_full"``
  (the full ADE20K class names), ``"toy"`` (the generated toy set, see :mod:`mindcv_lseg.data.toy`);
* a ``classes.txt`` file (one label per line, id = line number starting at 0);
* a comma-separated string such as ``"dog, grass, other"`` (:meth:`LabelSet.from_string`; the tools' ``--labels``
  and :func:`mindcv_lseg.eval.api.parse_labels` go through it).

Every label is checked once, here: a string, not empty after stripping, a single line without control characters.
Use :func:`get_label_set` to resolve any of these.
"""

import hashlib
import os
import unicodedata
import warnings
from typing import Dict, Iterable, Iterator, Tuple, Union

from ..fileio import atomic_write_text

__all__ = [
    "LabelSet",
    "get_label_set",
    "list_label_sets",
    "register_label_set",
    "ADE20K_150",
    "ADE20K_150_FULL",
    "TOY_LABELS",
]


class LabelSet:
    """An immutable, named, ordered list of free-text labels.

    Args:
        name: a short name (used in logs and file names).
        labels: the labels; label ``i`` is class id ``i``. Surrounding whitespace is stripped.
            Labels must be non-empty strings. Duplicates are allowed (the reference ADE-150 list has
            "screen" twice) but make the later copy unpredictable, so files/strings with duplicates warn.

    Equality compares name and labels; :meth:`key` depends on the labels only (use it to cache text embeddings).
    """

    def __init__(self, name: str, labels: Iterable[str], where: str = ""):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"LabelSet name must be a non-empty string, got {name!r}")
        if isinstance(labels, str):
            raise TypeError(
                "LabelSet labels must be a sequence of strings, not one string; "
                "use LabelSet.from_string('a, b, c') for a comma-separated list"
            )
        where = where or f"label set {name!r}"
        self._name = name.strip()
        self._labels: Tuple[str, ...] = tuple(_checked_label(i, lab, where) for i, lab in enumerate(labels))
        if not self._labels:
            raise ValueError(f'no labels given in {where}: pass at least one, e.g. "dog, grass, other"')

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_file(cls, path: str, name: str = None) -> "LabelSet":
        """Read one label per line (UTF-8). Line ``i`` (0-based) is class id ``i``.

        Blank lines at the end of the file are ignored; a blank line anywhere else raises ``ValueError``
        naming the file and line (it would silently shift every later class id).
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"label file not found: {path}")
        try:
            with open(path, "r", encoding="utf-8-sig") as f:
                lines = f.read().splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"label file {path} is not UTF-8 text ({e})") from None
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            raise ValueError(f"label file {path} is empty: expected one label per line")
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                raise ValueError(
                    f"label file {path}, line {lineno}: empty label (class id {lineno - 1}); "
                    "every line up to the last label must hold one label"
                )
        labels = [line.strip() for line in lines]
        if name is None:
            base = os.path.splitext(os.path.basename(path))[0]
            parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
            name = parent if base == "classes" and parent else base
        _warn_duplicates(labels, f"label file {path}")
        return cls(name, labels)

    @classmethod
    def from_string(cls, text: str, name: str = "custom") -> "LabelSet":
        """Parse a comma-separated list, e.g. ``"dog, grass, other"`` (items are stripped, as in the demo app)."""
        if not isinstance(text, str):
            raise TypeError(f"expected a comma-separated string, got {type(text).__name__}")
        where = f"label list {text!r} (check for doubled or trailing commas)"
        labels = cls(name, text.split(",") if text.strip() else [], where=where)
        _warn_duplicates(labels.labels, f"label list {text!r}")
        return labels

    # ----------------------------------------------------------------- accessors
    @property
    def name(self) -> str:
        return self._name

    @property
    def labels(self) -> Tuple[str, ...]:
        return self._labels

    @property
    def num_classes(self) -> int:
        return len(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __getitem__(self, index):
        return self._labels[index]

    def __eq__(self, other) -> bool:
        if not isinstance(other, LabelSet):
            return NotImplemented
        return self._name == other._name and self._labels == other._labels

    def __hash__(self) -> int:
        return hash((self._name, self._labels))

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self._labels[:4])
        more = ", ..." if len(self._labels) > 4 else ""
        return f"LabelSet(name={self._name!r}, {len(self._labels)} labels: [{head}{more}])"

    def key(self) -> str:
        """A stable 16-hex-digit hash of the labels (order-sensitive, name-independent) for caching."""
        h = hashlib.sha256("\n".join(self._labels).encode("utf-8")).hexdigest()
        return h[:16]

    def index(self, label: str) -> int:
        """Class id of the first occurrence of ``label`` (stripped)."""
        return self._labels.index(label.strip())

    def check_token_length(self, context_length: int = 77) -> "LabelSet":
        """Raise ``ValueError`` naming the first label longer than ``context_length`` CLIP tokens; returns self."""
        from .tokenizer import tokenize

        for i, lab in enumerate(self._labels):
            try:
                tokenize([lab], context_length=context_length)
            except ValueError as e:
                raise ValueError(f"label {i} is too long for the CLIP text encoder: {e}") from None
        return self

    def to_file(self, path: str) -> None:
        """Write one label per line, atomically (temp file + ``os.replace``)."""
        atomic_write_text(path, "\n".join(self._labels) + "\n")


_CONTROL_NAMES = {"\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\t": "TAB", "\x00": "NUL"}


def _checked_label(i: int, label, where: str) -> str:
    """Label ``i`` stripped, or a ``TypeError`` / ``ValueError`` saying what is wrong with it."""
    if not isinstance(label, str):
        raise TypeError(f"label {i} is a {type(label).__name__} ({label!r}), not a string, in {where}")
    label = label.strip()
    if not label:
        raise ValueError(f"label {i} is empty in {where}")
    bad = sorted({c for c in label if unicodedata.category(c) in ("Cc", "Zl", "Zp")})
    if bad:
        names = ", ".join(
            f"U+{ord(c):04X} {unicodedata.name(c, _CONTROL_NAMES.get(c, 'control character'))}" for c in bad
        )
        raise ValueError(
            f"label {i} {label!r} contains a line break or control character ({names}), in {where}; "
            "a label is a single line of text: remove it"
        )
    return label


def _warn_duplicates(labels, where):
    seen = {}
    for i, lab in enumerate(labels):
        if lab in seen:
            warnings.warn(
                f"{where}: label {lab!r} at id {i} duplicates id {seen[lab]}; both get the same text "
                f"embedding, so id {i} can never be predicted",
                stacklevel=3,
            )
        else:
            seen[lab] = i


# --------------------------------------------------------------------------- built-in lists
# The 150 strings the reference feeds to CLIP (first word of each ADE name; "screen" at 58 and 130).
ADE20K_150 = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool",
    "pillow",
    "screen",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen",
    "computer",
    "swivel",
    "boat",
    "bar",
    "arcade",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television",
    "airplane",
    "dirt",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer",
    "canopy",
    "washer",
    "plaything",
    "swimming",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt",
    "plate",
    "monitor",
    "bulletin",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)

# The full ADE20K (SceneParsing-150) class names, in id order (the MMSegmentation list).
ADE20K_150_FULL = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)

# The generated toy set's classes (mindcv_lseg.data.toy); id = index.
TOY_LABELS = ("sky", "grass", "water", "road", "red circle", "yellow square")

_REGISTRY: Dict[str, LabelSet] = {}


def register_label_set(label_set: LabelSet, name: str = None) -> LabelSet:
    """Register a built-in label set under ``name`` (default ``label_set.name``)."""
    if not isinstance(label_set, LabelSet):
        raise TypeError(f"expected a LabelSet, got {type(label_set).__name__}")
    _REGISTRY[name or label_set.name] = label_set
    return label_set


def list_label_sets() -> Tuple[str, ...]:
    """Names of the built-in label sets."""
    return tuple(sorted(_REGISTRY))


register_label_set(LabelSet("ade20k_150", ADE20K_150))
register_label_set(LabelSet("ade20k_150_full", ADE20K_150_FULL))
register_label_set(LabelSet("toy", TOY_LABELS))


def get_label_set(name_or_path: Union[str, LabelSet, Iterable[str]]) -> LabelSet:
    """Resolve a label set.

    Args:
        name_or_path: one of
            * a :class:`LabelSet` (returned as is);
            * a built-in name (see :func:`list_label_sets`);
            * a path to a ``classes.txt``-style file, or to a dataset folder holding ``classes.txt``;
            * a comma-separated string (``"dog, grass, other"``);
            * a list/tuple of label strings.

    Returns:
        LabelSet

    Raises:
        ValueError: when the argument is none of the above (the message lists the built-ins).
    """
    if isinstance(name_or_path, LabelSet):
        return name_or_path
    if isinstance(name_or_path, (list, tuple)):
        return LabelSet("custom", name_or_path)
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str):
        raise TypeError(f"cannot make a label set from {type(name_or_path).__name__}")
    key = name_or_path.strip()
    if key in _REGISTRY:
        return _REGISTRY[key]
    if os.path.isdir(key):
        path = os.path.join(key, "classes.txt")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"label set: directory {key} has no classes.txt (one label per line)")
        return LabelSet.from_file(path)
    if os.path.isfile(key):
        return LabelSet.from_file(key)
    if "," in key:
        return LabelSet.from_string(key)
    raise ValueError(
        f"unknown label set {name_or_path!r}: not a built-in ({', '.join(list_label_sets())}), "
        "not an existing file or folder, and not a comma-separated list (e.g. 'dog, grass, other')"
    )
