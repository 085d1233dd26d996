"""LabelSet: parsing, built-ins, registry resolution, errors."""

import re
import warnings

import pytest

from mindcv_lseg.text import LabelSet, get_label_set, list_label_sets
from mindcv_lseg.text.labels import ADE20K_150, ADE20K_150_FULL, TOY_LABELS


def test_from_string_strips_and_indexes():
    ls = LabelSet.from_string("dog, grass ,other")
    assert ls.labels == ("dog", "grass", "other")
    assert len(ls) == 3 and ls[1] == "grass" and list(ls) == ["dog", "grass", "other"]
    assert ls.index("other") == 2 and ls.num_classes == 3


@pytest.mark.parametrize("text", ["dog,,grass", "dog, grass,", " , dog"])
def test_from_string_rejects_empty_items(text):
    with pytest.raises(ValueError, match="empty"):
        LabelSet.from_string(text)


def test_from_file_round_trip_and_trailing_blank_lines(tmp_path):
    p = tmp_path / "mydata" / "classes.txt"
    p.parent.mkdir()
    p.write_text("background\n  cat \nswimming pool\n\n\n", encoding="utf-8")
    ls = LabelSet.from_file(str(p))
    assert ls.labels == ("background", "cat", "swimming pool")
    assert ls.name == "mydata"  # classes.txt takes its folder's name
    out = tmp_path / "out.txt"
    ls.to_file(str(out))
    assert out.read_text(encoding="utf-8") == "background\ncat\nswimming pool\n"
    assert LabelSet.from_file(str(out), name="mydata") == ls


def test_from_file_empty_line_in_middle_names_line(tmp_path):
    p = tmp_path / "classes.txt"
    p.write_text("a\nb\n   \nc\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{p}, line 3: empty label (class id 2)")):
        LabelSet.from_file(str(p))


def test_from_file_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        LabelSet.from_file(str(tmp_path / "nope.txt"))
    p = tmp_path / "e.txt"
    p.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        LabelSet.from_file(str(p))


def test_duplicates_warn(tmp_path):
    p = tmp_path / "classes.txt"
    p.write_text("a\nb\na\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="'a' at id 2 duplicates id 0"):
        ls = LabelSet.from_file(str(p))
    assert len(ls) == 3


def test_equality_hash_and_key():
    a = LabelSet("x", ["sky", "grass"])
    b = LabelSet("x", ("sky ", " grass"))
    c = LabelSet("y", ["sky", "grass"])
    d = LabelSet("x", ["grass", "sky"])
    assert a == b and hash(a) == hash(b)
    assert a != c and a != d
    assert a.key() == c.key()  # key depends on labels only
    assert a.key() != d.key()  # ... and on their order
    assert re.fullmatch(r"[0-9a-f]{16}", a.key())
    # the key is stable across processes/versions: pin it
    import hashlib

    assert a.key() == hashlib.sha256(b"sky\ngrass").hexdigest()[:16]


def test_constructor_rejects_bad_labels():
    with pytest.raises(ValueError, match="label 1 is empty"):
        LabelSet("x", ["a", "  "])
    with pytest.raises(ValueError, match="no labels"):
        LabelSet("x", [])
    with pytest.raises(TypeError, match="from_string"):
        LabelSet("x", "a, b")
    with pytest.raises(TypeError, match="label 0"):
        LabelSet("x", [3])


@pytest.mark.parametrize(
    "text,needle",
    [
        ("dog, gr\nass", "U+000A LINE FEED"),
        ("dog\tgrass, cat", "U+0009 TAB"),
        ("sky, x\u2028y", "U+2028 LINE SEPARATOR"),
    ],
)
def test_line_breaks_and_control_characters_are_refused(text, needle):
    with pytest.raises(ValueError, match="contains a line break or control character") as ei:
        LabelSet.from_string(text)
    assert needle in str(ei.value)
    assert LabelSet.from_string("dog\n, grass ").labels == ("dog", "grass")  # outer whitespace is stripped


def test_token_length_and_parse_labels_use_the_label_set():
    from mindcv_lseg.eval.api import parse_labels

    long = " ".join(["word"] * 80)
    with pytest.raises(ValueError, match="label 1 is too long for the CLIP text encoder"):
        LabelSet.from_string("dog, " + long).check_token_length()
    for bad, needle in [
        ("", "no labels given"),
        ("dog,,grass", "label 1 is empty"),
        ("a, b\nc", "LINE FEED"),
        ("dog, " + long, "label 1 is too long"),
    ]:
        with pytest.raises(ValueError, match=needle):
            parse_labels(bad)
    with pytest.raises(TypeError, match="label 1 is a int"):
        parse_labels(["dog", 3])
    assert parse_labels(("sky ", "grass")) == ["sky", "grass"]


def test_ade20k_150_matches_reference_appendix_a():
    ls = get_label_set("ade20k_150")
    assert len(ls) == 150
    assert ls[0] == "wall" and ls[149] == "flag"
    # first-word truncation of multi-word names, as in the reference
    assert (ls[44], ls[64], ls[109], ls[136], ls[141]) == ("chest", "coffee", "swimming", "traffic", "crt")
    # duplicate "screen" at 58 and 130 is kept (parity)
    assert ls[58] == ls[130] == "screen"
    assert ls.labels.count("screen") == 2


def test_ade20k_150_full_names():
    full = get_label_set("ade20k_150_full")
    assert len(full) == 150
    assert (full[44], full[56], full[58], full[64], full[109], full[130]) == (
        "chest of drawers",
        "pool table",
        "screen door",
        "coffee table",
        "swimming pool",
        "screen",
    )
    assert full[7] == "bed"  # no trailing space
    # the reference list is exactly the first word of every full name
    assert tuple(n.split()[0] for n in ADE20K_150_FULL) == ADE20K_150
    assert len(set(ADE20K_150_FULL)) == 150


def test_registry_resolution(tmp_path):
    assert set(list_label_sets()) >= {"ade20k_150", "ade20k_150_full", "toy"}
    assert get_label_set("toy").labels == TOY_LABELS
    ls = LabelSet("x", ["a"])
    assert get_label_set(ls) is ls
    assert get_label_set("dog, grass, other").labels == ("dog", "grass", "other")
    assert get_label_set(["a", "b"]).labels == ("a", "b")
    (tmp_path / "classes.txt").write_text("p\nq\n", encoding="utf-8")
    assert get_label_set(str(tmp_path / "classes.txt")).labels == ("p", "q")
    assert get_label_set(str(tmp_path)).labels == ("p", "q")  # a dataset folder
    with pytest.raises(FileNotFoundError, match="has no classes.txt"):
        get_label_set(str(tmp_path / ".."))
    with pytest.raises(ValueError, match="unknown label set 'dog'.*ade20k_150"):
        get_label_set("dog")
