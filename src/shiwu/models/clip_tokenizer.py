"""Chinese-CLIP's tokenizer: the model's ``vocab.txt`` through Hugging Face ``tokenizers``.

BERT's WordPiece exactly as the reference ``FullTokenizer`` (cn_clip / ModelScope
``bert_tokenizer.py``) runs it: clean the text (drop NUL, U+FFFD and control / format
characters, turn whitespace into spaces), a space around every CJK ideograph, lower-case,
strip accents (NFD, drop non-spacing marks), split punctuation, greedy longest-match WordPiece
with ``##`` continuations and ``[UNK]`` for a word it cannot cover or longer than 200
characters; then ``[CLS] … [SEP]``, cut to the context of 52 and padded with id 0, as the
reference ``tokenize()`` does.

``tokenizers`` does all of that (``BertNormalizer``, ``BertPreTokenizer``, ``WordPiece``,
template, truncation, padding). What it cannot match by configuration is the Unicode the
reference sees: the reference classifies characters with the running Python's
``unicodedata`` and lower-cases with ``str.lower``; ``tokenizers`` has its own tables. They
disagree on a few hundred thousand code points (swept in the tests): private-use characters
(the reference keeps them, so their word becomes ``[UNK]``; ``tokenizers`` deletes them),
CJK Extension E U+2B820–U+2B91F (a range typo in ``tokenizers``), punctuation and marks newer
than its tables, and the final sigma (``str.lower`` gives "ς" at the end of a word, a
character-by-character lower-case "σ"; both are in the vocabulary). So before ``tokenizers``
sees a text, ``_align`` applies the reference's own cleaning and ``str.lower``, and rewrites
each character on which the two disagree into what ``tokenizers`` will turn into the
reference's tokens (a space-isolated character, nothing, or a placeholder that no vocabulary
token contains, which makes the word ``[UNK]`` as the reference's character does). Which
characters disagree is found by asking ``tokenizers`` itself, once per distinct character, so
this holds whatever the versions of Python and ``tokenizers``.
"""

from __future__ import annotations

import bisect
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tokenizers import PreTokenizedString, Tokenizer, models, normalizers, pre_tokenizers, processors

from .clip_config import CONTEXT_LENGTH, DEFAULT_PROMPT  # noqa: F401 - importable from here too
MAX_CHARS_PER_WORD = 200  # the reference WordpieceTokenizer's max_input_chars_per_word
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
# Symbols (category So) that every Unicode version and both libraries leave alone; the first one
# no vocabulary token contains stands in for a character the reference keeps but ``tokenizers``
# would change.
_PLACEHOLDERS = "\u2603\u2604\u2618\u2619\u26e4\u26e5\u26e6\u26e7"


def read_vocab(path: str | Path) -> dict[str, int]:
    """``vocab.txt`` as the reference ``load_vocab`` reads it: line i (stripped) is token i,
    a repeated token keeps its last line."""
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as lines:
        for index, line in enumerate(lines):
            vocab[line.strip()] = index
    missing = [token for token in SPECIAL if token not in vocab]
    if missing:
        raise ValueError(f"{path}: not a BERT vocabulary, no {' '.join(missing)} token")
    return vocab


# ----------------------------------------------------------------------------- the reference's Unicode

def _is_chinese(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _is_punctuation(char: str) -> bool:
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _clean(text: str) -> str:
    """The reference ``_clean_text``: drop NUL, U+FFFD, Cc and Cf; whitespace (Zs) -> space."""
    out = []
    for char in text:
        if char in "\t\n\r":
            out.append(" ")
            continue
        category = unicodedata.category(char)
        if char in "\x00\ufffd" or category in ("Cc", "Cf"):
            continue
        out.append(" " if category == "Zs" else char)
    return "".join(out)


def _reference_pieces(char: str) -> list[tuple[str, bool]] | None:
    """What the reference makes of one (already lower-cased) character inside a word: pieces
    ``(char, isolated)``; None when it separates words."""
    if char.isspace():  # Zl / Zp: str.split() separates words on them
        return None
    kept = [c for c in unicodedata.normalize("NFD", char) if unicodedata.category(c) != "Mn"]
    if _is_chinese(ord(char)):  # a word of its own, accents stripped like any word's
        return [("".join(kept), True)] if kept else []
    return [(c, _is_punctuation(c)) for c in kept]


def _wordpiece(vocab: dict[str, int]) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]",
                                           max_input_chars_per_word=MAX_CHARS_PER_WORD))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


class ClipTokenizer:
    """Texts -> (N, context_length) int64 token ids, equal to the reference ``tokenize()``'s."""

    def __init__(self, vocab: dict[str, int], context_length: int = CONTEXT_LENGTH):
        if context_length < 2:
            raise ValueError(f"context length must be at least 2 ([CLS] and [SEP]), got {context_length}")
        self.vocab = vocab
        self.context_length = context_length
        self.pad_id = vocab["[PAD]"]
        self._words_only = _wordpiece(vocab)  # tokens of one text, for counting and inspection
        self._tokenizer = _wordpiece(vocab)
        # [CLS] and [SEP] are template ids, not added tokens: a text that says "[SEP]" is words
        # and punctuation, as for the reference.
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        self._tokenizer.enable_truncation(max_length=context_length)
        self._tokenizer.enable_padding(length=context_length, pad_id=self.pad_id, pad_token="[PAD]")
        vocab_chars = set("".join(vocab))
        self._placeholder = next((c for c in _PLACEHOLDERS if c not in vocab_chars), None)
        self._vocab_chars = vocab_chars
        self._rewrites: dict[str, str] = {}

    @classmethod
    def from_file(cls, path: str | Path, context_length: int = CONTEXT_LENGTH) -> "ClipTokenizer":
        return cls(read_vocab(path), context_length)

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        encodings = self._tokenizer.encode_batch([self._align(t) for t in texts])
        return np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), self.context_length)

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of ``text``, without [CLS] / [SEP], before truncation."""
        return self._words_only.encode(self._align(text)).tokens

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` before truncation; more than ``context_length - 2`` are cut off."""
        return len(self.tokenize(text))

    # ------------------------------------------------------------------------- alignment

    def _align(self, text: str) -> str:
        """``text`` cleaned and lower-cased as the reference does, with every character on which
        ``tokenizers`` would disagree with the reference rewritten (see the module docstring)."""
        text = _clean(text).lower()
        if text.isascii():  # the libraries agree on ASCII (swept in the tests)
            return text
        rewrites = self._rewrites
        unknown = {c for c in text if c not in rewrites and not c.isascii()}
        if unknown:
            self._learn(sorted(unknown))
        return "".join(c if c.isascii() else rewrites[c] for c in text)

    def _learn(self, chars: list[str]) -> None:
        """Find the rewrite of each of ``chars``, asking ``tokenizers`` about all of them at once."""
        rewrites = self._rewrites
        pending = []
        for char in chars:
            pieces = _reference_pieces(char)
            if pieces is None:
                rewrites[char] = " "
            elif "|" in (p for p, _ in pieces):
                rewrites[char] = char  # never: no character decomposes to "|" (the separator below)
            else:
                pending.append((char, pieces))
        # First as they are, then with isolated pieces spaced out, then with the pieces
        # ``tokenizers`` still changes replaced by the placeholder.
        for attempt in ("as-is", "spaced", "placeholder"):
            if not pending:
                return
            texts, expected = [], []
            for char, pieces in pending:
                if attempt == "placeholder":
                    pieces = [(self._stand_in(p), isolated) for p, isolated in pieces]
                texts.append(char if attempt == "as-is" else _spaced(pieces))
                expected.append(_words_of(pieces))
            got = self._hf_words_each(texts)
            still = []
            for (char, pieces), text, want, words in zip(pending, texts, expected, got):
                if words == want or attempt == "placeholder":
                    rewrites[char] = text  # the last attempt is kept even if it fails (tests sweep)
                else:
                    still.append((char, pieces))
            pending = still

    def _stand_in(self, piece: str) -> str:
        if piece in self._vocab_chars or self._placeholder is None:
            return piece
        # The reference keeps a character no vocabulary token contains, so its word (or the
        # character alone, when isolated) becomes [UNK]: so does the placeholder's.
        return self._placeholder

    def _hf_words_each(self, texts: list[str]) -> list[list[str] | None]:
        """``tokenizers``' words for each ``a<text>b``, in one pass over all of them (None for a
        text that cannot cross into Rust: a lone surrogate)."""
        out: list[list[str] | None] = [None] * len(texts)
        ok = [i for i, t in enumerate(texts) if _encodable(t)]
        if not ok:
            return out
        segments = [f"a{texts[i]}b" for i in ok]
        starts, position = [], 0
        for segment in segments:
            starts.append(position)
            position += len(segment) + 3  # " | "
        joined = PreTokenizedString(" | ".join(segments))
        joined.normalize(self._tokenizer.normalizer.normalize)
        self._tokenizer.pre_tokenizer.pre_tokenize(joined)
        words = [[] for _ in ok]
        for word, (start, end), _ in joined.get_splits(offset_referential="original", offset_type="char"):
            k = bisect.bisect_right(starts, start) - 1
            if start < starts[k] + len(segments[k]):  # not the separator after segment k
                words[k].append(word)
        for k, i in enumerate(ok):
            out[i] = words[k]
        return out


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _spaced(pieces: Iterable[tuple[str, bool]]) -> str:
    return "".join(f" {p} " if isolated else p for p, isolated in pieces)


def _words_of(pieces: Iterable[tuple[str, bool]]) -> list[str]:
    """The reference's words for ``a<pieces>b``."""
    words, current = [], "a"
    for piece, isolated in pieces:
        if isolated:
            words.append(current)
            words.append(piece)
            current = ""
        else:
            current += piece
    words.append(current + "b")
    return [w for w in words if w]

