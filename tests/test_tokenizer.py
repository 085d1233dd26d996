"""Tests for the CLIP BPE tokenizer (mindcv_lseg.text.tokenizer)."""

import numpy as np
import pytest
from _paths import fixture_file

import mindcv_lseg
from mindcv_lseg.text import tokenize as text_tokenize
from mindcv_lseg.text.tokenizer import SimpleTokenizer, bytes_to_unicode, get_tokenizer, tokenize

SOT, EOT = 49406, 49407
CAT = 2368  # "cat</w>"

# Reference vectors produced by OpenAI CLIP's tokenizer (docs/reference_numerics.md, "Tokenizer").
REFERENCE_VECTORS = [
    ("wall", [49406, 2569, 49407]),
    ("other", [49406, 1010, 49407]),
    ("others", [49406, 3326, 49407]),
    ("building", [49406, 2307, 49407]),
    ("Dog ", [49406, 1929, 49407]),
    ("trafficlight", [49406, 12080, 1395, 49407]),
    ("abe's_flyingfish", [49406, 12734, 568, 318, 20782, 2759, 49407]),
    ("plant,grass,cat,stone,other", [49406, 3912, 267, 5922, 267, 2368, 267, 2441, 267, 1010, 49407]),
    ("a photo of a cat.", [49406, 320, 1125, 539, 320, 2368, 269, 49407]),
]


def _row(ids, length=77):
    row = np.zeros(length, dtype=np.int32)
    row[: len(ids)] = ids
    return row


@pytest.mark.parametrize("text,expected", REFERENCE_VECTORS)
def test_reference_vectors(text, expected):
    out = tokenize(text)
    assert out.shape == (1, 77)
    np.testing.assert_array_equal(out[0], _row(expected))


def test_parity_tokens_match_reference_run():
    path = fixture_file("parity", "expected_clip_vitb32_384_seed0.npz")
    expected = np.load(path)["tokens"]
    got = tokenize(["other", "sky", "tree", "car", "person"])
    assert got.shape == expected.shape == (5, 77)
    np.testing.assert_array_equal(got, expected)


def test_vocabulary_layout():
    tok = get_tokenizer()
    assert tok.vocab_size == 49408
    assert tok.sot_token_id == SOT and tok.eot_token_id == EOT
    assert tok.decoder[0] == "!" and tok.decoder[256] == "!</w>"
    assert tok.decoder[SOT] == "<|startoftext|>" and tok.decoder[EOT] == "<|endoftext|>"
    # the first merge of the file is "i n" -> id 512
    assert tok.decoder[512] == "in"
    assert get_tokenizer() is tok  # loaded once


def test_bytes_to_unicode():
    m = bytes_to_unicode()
    assert len(m) == 256 and len(set(m.values())) == 256
    assert m[ord("a")] == "a" and m[ord("!")] == "!" and m[0xFF] == "ÿ"
    # non-printable bytes 0..32 map to chr(256)..chr(288) in order
    assert m[0] == chr(256) and m[ord(" ")] == chr(288)
    # first 256 vocab entries follow the mapping's order: printable bytes first
    assert list(m.values())[:3] == ["!", '"', "#"]


def test_html_unescape_twice():
    np.testing.assert_array_equal(tokenize("&amp;amp;"), tokenize("&"))
    np.testing.assert_array_equal(tokenize("rock &amp; roll"), tokenize("rock & roll"))
    assert not np.array_equal(tokenize("rock &amp; roll"), tokenize("rock amp roll"))


def test_whitespace_and_case_cleaning():
    np.testing.assert_array_equal(tokenize("  A \t\n  Photo   of\u00a0a CAT. "), tokenize("a photo of a cat."))


def test_special_token_strings_are_kept_whole():
    np.testing.assert_array_equal(tokenize("<|endoftext|>")[0], _row([SOT, EOT, EOT]))


def test_too_long_label_raises_with_details():
    ok = "cat " * 75  # 75 tokens + SOT + EOT = 77: fits exactly
    np.testing.assert_array_equal(tokenize(ok)[0], np.array([SOT] + [CAT] * 75 + [EOT], dtype=np.int32))
    long_label = "cat " * 76
    with pytest.raises(ValueError) as err:
        tokenize(["sky", long_label])
    msg = str(err.value)
    assert "index 1" in msg and "'cat cat cat" in msg
    assert "78 tokens" in msg and "77" in msg
    assert "truncate=True" in msg and "shorter label" in msg


def test_truncate_keeps_context_and_ends_with_eot():
    out = tokenize(["cat " * 100, "sky"], truncate=True)
    assert out.shape == (2, 77) and out.dtype == np.int32
    assert out[0, 0] == SOT and out[0, -1] == EOT
    assert (out[0, 1:-1] == CAT).all()
    np.testing.assert_array_equal(out[1], tokenize("sky")[0])  # short labels unaffected


def test_decode_round_trip():
    tok = get_tokenizer()
    ids = tok.encode("A photo of a cat.")
    assert ids == [320, 1125, 539, 320, 2368, 269]
    assert tok.decode(ids) == "a photo of a cat . "
    assert tok.decode(tokenize("A photo of a cat.")[0], skip_special_tokens=True) == "a photo of a cat . "
    assert tok.decode(tok.encode("Café 🐶")) == "café 🐶 "
    with pytest.raises(ValueError, match="position 1"):
        tok.decode([320, 49408])


def test_shape_dtype_and_containers():
    out = tokenize(("sky", "tree", "car"))
    assert out.shape == (3, 77) and out.dtype == np.int32
    assert tokenize([]).shape == (0, 77)
    short = tokenize(["sky"], context_length=8)
    assert short.shape == (1, 8) and short[0, :3].tolist() == [SOT, tokenize("sky")[0, 1], EOT]
    assert mindcv_lseg.tokenize is tokenize and text_tokenize is tokenize


def test_bad_inputs():
    with pytest.raises(TypeError, match="index 1"):
        tokenize(["sky", 3])
    with pytest.raises(TypeError, match="list/tuple"):
        tokenize(42)
    with pytest.raises(ValueError, match="context_length"):
        tokenize("sky", context_length=1)


def test_missing_vocab_file(tmp_path):
    missing = tmp_path / "nope.txt.gz"
    with pytest.raises(FileNotFoundError, match="nope.txt.gz"):
        SimpleTokenizer(str(missing))
