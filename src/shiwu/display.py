"""Text for people: display widths of Chinese text (two columns a character) and aligned tables.

Library code that prints reports (eval, bench, tune) uses these too, so they live outside the
CLI: nothing in the library imports ``shiwu.cli``.
"""

from __future__ import annotations

import unicodedata


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def format_predictions(result) -> str:
    """One image's top-k as an aligned block: rank, Chinese label, score, English label."""
    width = max(display_width(p.label) for p in result.predictions)
    lines = [result.image]
    for rank, p in enumerate(result.predictions, 1):
        english = f"  {p.label_en}" if p.label_en else ""
        if p.source == "gallery":  # a class taught by example photos
            english = f"  (图库 gallery, similarity {p.similarity:.2f})"
        lines.append(f"  {rank}. {pad(p.label, width)}  {p.score * 100:5.1f}%{english}")
    return "\n".join(lines)
