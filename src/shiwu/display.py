"""Text for people: display widths of Chinese text (two columns a character) and aligned tables.

Library code that prints reports (eval, bench, tune) uses these too, so they live outside the
CLI: nothing in the library imports ``shiwu.cli``.
"""

from __future__ import annotations

import unicodedata

from .filenames import readable

# Characters a terminal acts on instead of showing: C0/C1 controls (\r rewrites the line, ESC
# starts colour and cursor sequences, \n fakes a row), line and paragraph separators, and the
# bidirectional overrides and isolates that make a name read backwards.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x20 or 0x7F <= code < 0xA0:
        return f"\\x{code:02x}"
    if code in _BIDI or code in (0x2028, 0x2029):
        return f"\\u{code:04x}"
    return ch


def printable(text) -> str:
    """``text`` (a file name, a label, a message) safe to print on a terminal: controls escaped
    as ``\\r``, ``\\n``, ``\\x1b``, ``\\u202e``; bytes of a name that are not UTF-8 as
    ``\\xNN`` (``filenames.readable``). Every text printer shows names and labels through it."""
    text = readable(str(text))
    if text.isprintable():  # the common case: nothing to escape, no per-character work
        return text
    return "".join(_escape(ch) for ch in text)


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def format_predictions(result) -> str:
    """One image's top-k as an aligned block: rank, Chinese label, score, English label."""
    width = max(display_width(printable(p.label)) for p in result.predictions)
    lines = [printable(result.image)]
    for rank, p in enumerate(result.predictions, 1):
        english = f"  {printable(p.label_en)}" if p.label_en else ""
        if p.source == "gallery":  # a class taught by example photos
            english = f"  (图库 gallery, similarity {p.similarity:.2f})"
        lines.append(f"  {rank}. {pad(printable(p.label), width)}  {p.score * 100:5.1f}%{english}")
    return "\n".join(lines)
