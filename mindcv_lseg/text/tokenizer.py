"""CLIP byte-level BPE tokenizer (pure Python + numpy; no MindSpore needed).

Reproduces the behaviour of OpenAI CLIP's ``simple_tokenizer`` + ``clip.tokenize`` as used by LSeg:

* text cleaning: ``ftfy.fix_text`` -> ``html.unescape`` twice -> strip -> collapse whitespace -> strip -> lowercase;
* pre-tokenisation with a Unicode-aware regular expression (package ``regex``);
* each piece is UTF-8 encoded, its bytes mapped to printable unicode characters, then merged with byte-pair
  encoding; the last symbol of every piece carries the end-of-word marker ``</w>``;
* ``tokenize`` wraps the ids in ``<|startoftext|>`` (49406) / ``<|endoftext|>`` (49407) and zero-pads.

The merges list ``bpe_simple_vocab_16e6.txt.gz`` ships next to this module (MIT licence, see ``LICENSE-CLIP.txt``).
It is read lazily, once, on the first call of :func:`tokenize` / :func:`get_tokenizer`.
"""

import functools
import gzip
import html
import os
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import numpy as np
import regex

__all__ = [
    "DEFAULT_BPE_PATH",
    "SOT_TOKEN",
    "EOT_TOKEN",
    "SimpleTokenizer",
    "bytes_to_unicode",
    "clean_text",
    "get_tokenizer",
    "tokenize",
]

DEFAULT_BPE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"

# Number of merges used by CLIP: 49152 - 256 - 2 (the file holds more; CLIP stops there).
NUM_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 2 * 256 + NUM_MERGES + 2  # 49408

_PRETOKENIZE_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> Dict[int, str]:
    """Map every byte value (0..255) to a printable unicode character.

    Bytes that are already printable Latin-1 characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) map to
    themselves; the remaining 68 bytes map, in increasing byte order, to ``chr(256)``, ``chr(257)``, ...

    The dict's insertion order (printable bytes first, then the others) is the order of the first 256
    vocabulary entries.

    Returns:
        dict ``{byte: char}`` with 256 entries.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    printable_set = set(printable)
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable_set:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def clean_text(text: str) -> str:
    """Normalise a string the way CLIP does before tokenisation.

    ``ftfy.fix_text`` -> ``html.unescape`` twice -> ``strip`` -> every whitespace run becomes one space -> ``strip``
    -> lowercase.
    """
    import ftfy  # imported lazily: only needed once text is actually tokenised

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    text = _WHITESPACE.sub(" ", text).strip()
    return text.lower()


def _read_merges(bpe_path: str) -> List[Tuple[str, str]]:
    """Read the first ``NUM_MERGES`` merge rules (line 0 of the file is a version header)."""
    if not os.path.isfile(bpe_path):
        raise FileNotFoundError(
            f"CLIP BPE vocabulary not found at '{bpe_path}'. It ships with mindcv_lseg as "
            f"'mindcv_lseg/text/bpe_simple_vocab_16e6.txt.gz'; reinstall the package (pip install -e .) "
            f"or pass bpe_path= pointing to a copy of that file."
        )
    try:
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"Cannot read CLIP BPE vocabulary '{bpe_path}' as gzip'd UTF-8 text: {e}") from e
    rules = lines[1 : NUM_MERGES + 1]
    if len(rules) != NUM_MERGES:
        raise ValueError(
            f"CLIP BPE vocabulary '{bpe_path}' has only {len(rules)} merge rules after its header, "
            f"expected at least {NUM_MERGES}; the file is truncated or not CLIP's bpe_simple_vocab_16e6.txt.gz."
        )
    merges = []
    for lineno, line in enumerate(rules, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"CLIP BPE vocabulary '{bpe_path}', line {lineno}: expected two symbols, got {line!r}.")
        merges.append((parts[0], parts[1]))
    return merges


class SimpleTokenizer:
    """CLIP byte-level BPE tokenizer.

    Args:
        bpe_path: gzip'd merges file; default: the copy shipped with the package.

    Attributes:
        encoder: dict token string -> id (49,408 entries).
        decoder: dict id -> token string.
        sot_token_id / eot_token_id: 49406 / 49407.
    """

    def __init__(self, bpe_path: str = DEFAULT_BPE_PATH):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        merges = _read_merges(bpe_path)

        base = list(self.byte_encoder.values())
        vocab = base + [c + END_OF_WORD for c in base]
        vocab += ["".join(pair) for pair in merges]
        vocab += [SOT_TOKEN, EOT_TOKEN]
        self.encoder: Dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: Dict[int, str] = dict(enumerate(vocab))
        self.bpe_ranks: Dict[Tuple[str, str], int] = {pair: rank for rank, pair in enumerate(merges)}
        self.sot_token_id = self.encoder[SOT_TOKEN]
        self.eot_token_id = self.encoder[EOT_TOKEN]
        # piece (byte-unicode string) -> tuple of BPE symbols; special tokens stay whole
        self._cache: Dict[str, Tuple[str, ...]] = {SOT_TOKEN: (SOT_TOKEN,), EOT_TOKEN: (EOT_TOKEN,)}

    @property
    def vocab_size(self) -> int:
        """Number of tokens (49,408 for CLIP)."""
        return len(self.encoder)

    def bpe(self, piece: str) -> Tuple[str, ...]:
        """Apply byte-pair merges to one pre-token (already byte-unicode mapped).

        The lowest-ranked adjacent pair is merged everywhere (left to right, non-overlapping) until no
        adjacent pair has a rank. The last symbol carries ``</w>``. Results are cached.

        Returns:
            tuple of vocabulary symbols, e.g. ``('traffic</w>',)`` or ``('traf', 'ficlight</w>')``.
        """
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        symbols = list(piece[:-1]) + [piece[-1] + END_OF_WORD]
        ranks = self.bpe_ranks
        while len(symbols) > 1:
            best_rank, best_pair = None, None
            for pair in zip(symbols[:-1], symbols[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_pair = rank, pair
            if best_pair is None:
                break
            left, right = best_pair
            merged_symbol = left + right
            merged = []
            i = 0
            n = len(symbols)
            while i < n:
                if i + 1 < n and symbols[i] == left and symbols[i + 1] == right:
                    merged.append(merged_symbol)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        result = tuple(symbols)
        self._cache[piece] = result
        return result

    def encode(self, text: str) -> List[int]:
        """Clean and tokenise ``text`` into BPE ids, without start/end tokens.

        Args:
            text: any string.

        Returns:
            list of int ids in ``[0, 49408)``.
        """
        if not isinstance(text, str):
            raise TypeError(f"SimpleTokenizer.encode expects a str, got {type(text).__name__}: {text!r}")
        ids = []
        for piece in _PRETOKENIZE_PATTERN.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[sym] for sym in self.bpe(mapped))
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Turn ids back into text (CLIP convention: each ``</w>`` becomes a space, so words end with a space).

        Args:
            ids: iterable of ints (list, tuple or 1-D numpy array).
            skip_special_tokens: if True, drop ``<|startoftext|>`` and stop at the first ``<|endoftext|>``
                (so a zero-padded row of :func:`tokenize` decodes to its label).

        Returns:
            the decoded string (invalid UTF-8 byte sequences become U+FFFD).
        """
        symbols = []
        for pos, i in enumerate(ids):
            i = int(i)
            if skip_special_tokens:
                if i == self.eot_token_id:
                    break
                if i == self.sot_token_id:
                    continue
            token = self.decoder.get(i)
            if token is None:
                raise ValueError(
                    f"Token id {i} at position {pos} is outside the CLIP vocabulary [0, {self.vocab_size})."
                )
            symbols.append(token)
        # every vocabulary symbol (special tokens included) consists of byte-unicode characters
        raw = bytes(self.byte_decoder[c] for c in "".join(symbols))
        return raw.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> SimpleTokenizer:
    """The shared default tokenizer (vocabulary loaded once, on first use)."""
    return SimpleTokenizer()


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tokenize(texts: Union[str, Sequence[str]], context_length: int = 77, truncate: bool = False) -> np.ndarray:
    """Tokenise label strings for the CLIP text encoder.

    Each row is ``[SOT] + ids + [EOT]`` followed by zeros.

    Args:
        texts: one string or a list/tuple of strings (labels).
        context_length: row length (77 for CLIP).
        truncate: if a label needs more than ``context_length`` tokens, keep the first ``context_length`` ids and
            replace the last one by EOT; if False (default, as in LSeg) such a label raises ``ValueError``.

    Returns:
        int32 array ``[N, context_length]`` (``N = 1`` for a single string).
    """
    if isinstance(texts, str):
        texts = [texts]
    elif not isinstance(texts, (list, tuple)):
        raise TypeError(
            f"tokenize expects a str or a list/tuple of str, got {type(texts).__name__}; "
            f"wrap labels in a list, e.g. tokenize(['sky', 'tree'])."
        )
    if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)) or context_length < 2:
        raise ValueError(
            f"context_length must be an int >= 2 (room for <|startoftext|> and <|endoftext|>), got {context_length!r}."
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"tokenize: label at index {i} is a {type(text).__name__} ({text!r}), not a str.")

    tok = get_tokenizer()
    result = np.zeros((len(texts), int(context_length)), dtype=np.int32)
    for i, text in enumerate(texts):
        ids = [tok.sot_token_id] + tok.encode(text) + [tok.eot_token_id]
        if len(ids) > context_length:
            if not truncate:
                raise ValueError(
                    f"Label at index {i} ({_shorten(text)!r}) is too long: {len(ids)} tokens including "
                    f"<|startoftext|>/<|endoftext|>, but context_length is {context_length}. "
                    f"Use a shorter label or pass truncate=True."
                )
            ids = ids[:context_length]
            ids[-1] = tok.eot_token_id
        result[i, : len(ids)] = ids
    return result
