"""Class names: Chinese first, English where known."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class LabelSet:
    zh: tuple[str, ...]
    en: tuple[str, ...]  # same length as zh; "" where a model has no English names

    def __len__(self) -> int:
        return len(self.zh)

    @classmethod
    def from_tsv_text(cls, text: str, source: str) -> "LabelSet":
        """Parse ``index<TAB>中文[<TAB>English]`` lines; indices must run 0..N-1 in order."""
        zh, en = [], []
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 2:
                raise ValueError(f"{source}:{line_no}: expected 'index<TAB>label', got {line!r}")
            try:
                index = int(fields[0])
            except ValueError:
                raise ValueError(f"{source}:{line_no}: index {fields[0]!r} is not a number") from None
            if index != len(zh):
                raise ValueError(f"{source}:{line_no}: expected index {len(zh)}, got {index}")
            zh.append(fields[1].strip())
            en.append(fields[2].strip() if len(fields) > 2 else "")
        return cls(tuple(zh), tuple(en))

    @classmethod
    def from_file(cls, path: str | Path) -> "LabelSet":
        path = Path(path)
        return cls.from_tsv_text(path.read_text(encoding="utf-8-sig"), str(path))

    @classmethod
    def from_meta_info(cls, path: str | Path) -> "LabelSet":
        """A ModelScope ``meta_info.txt``: one ``index<TAB>label`` line per class.

        The official pipeline takes line number ``i`` as class ``i`` (it never reads the index
        column), so the position decides here too; labels come out without the trailing newline
        or surrounding spaces the official pipeline keeps. A line without a label is an error.
        """
        path = Path(path)
        text = path.read_text(encoding="utf-8-sig")
        # The official pipeline reads with readlines(): only \n, \r\n and \r end a line.
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        zh = []
        for line_no, line in enumerate(lines, 1):
            fields = line.split("\t")
            if len(fields) < 2 or not fields[1].strip():
                raise ValueError(f"{path}:{line_no}: expected 'index<TAB>label', got {line!r}")
            zh.append(fields[1].strip())
        if not zh:
            raise ValueError(f"{path}: no labels")
        return cls(tuple(zh), ("",) * len(zh))

    @classmethod
    def imagenet(cls) -> "LabelSet":
        text = resources.files("shiwu").joinpath("labels/imagenet-1k.tsv").read_text("utf-8")
        return cls.from_tsv_text(text, "imagenet-1k.tsv")
