"""Class names: Chinese first, English where known."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

LABEL_FILE_KINDS = ".json (label_map.json: {\"0\": \"猫\", ...} or a list), .txt (one label per line), " \
    ".tsv / meta_info.txt (index<TAB>label), .csv (index,label[,english])"


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

    def imagenet_ids(self) -> tuple[str, ...]:
        """ImageNet's WordNet IDs (n01440764 ...) by class index when these are the ImageNet-1k
        classes, else (): the folder names of ImageNet's own layout, which labelled sets keep."""
        if len(self) != 1000 or self != LabelSet.imagenet():
            return ()
        text = resources.files("shiwu").joinpath("labels/imagenet-1k-wnids.txt").read_text("utf-8")
        return tuple(text.split())

    @classmethod
    def placeholders(cls, count: int) -> "LabelSet":
        """``类别0`` ... for a model that came without labels."""
        return cls(tuple(f"类别{i}" for i in range(count)), tuple(f"class {i}" for i in range(count)))

    @classmethod
    def from_user_file(cls, path: str | Path) -> "LabelSet":
        """A labels file in any of the formats people keep them in (see LABEL_FILE_KINDS).

        Raises ValueError naming the file and line for anything that cannot be read as one
        label per class index 0..N-1: a label silently pointing at the wrong class is worse
        than no label.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text") from None
        suffix = path.suffix.lower()
        if path.name.lower() == "meta_info.txt":
            return cls.from_meta_info(path)
        if suffix == ".json":
            return cls._from_json(text, str(path))
        if suffix == ".csv":
            return cls._from_csv(text, str(path))
        if suffix == ".tsv":
            return cls.from_tsv_text(text, str(path))
        if suffix in (".txt", ".lst", ".names", ""):
            lines = text.splitlines()
            while lines and not lines[-1].strip():
                lines.pop()
            if lines and all(_indexed_line(line) for line in lines):  # index<TAB>label in a .txt
                return cls.from_tsv_text(text, str(path))
            return cls._from_lines(lines, str(path))
        raise ValueError(f"{path}: unknown labels format {suffix!r}; use {LABEL_FILE_KINDS}")

    @classmethod
    def _from_lines(cls, lines: list[str], source: str) -> "LabelSet":
        zh = []
        for line_no, line in enumerate(lines, 1):
            label = line.strip()
            if not label:
                raise ValueError(f"{source}:{line_no}: empty line (one label per line, class 0 first)")
            zh.append(label)
        if not zh:
            raise ValueError(f"{source}: no labels")
        return cls(tuple(zh), ("",) * len(zh))

    @classmethod
    def _from_json(cls, text: str, source: str) -> "LabelSet":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{source}: not valid JSON ({exc})") from None
        if isinstance(data, list):
            items = list(enumerate(data))
        elif isinstance(data, dict):
            items = []
            for key, value in data.items():
                try:
                    items.append((int(key), value))
                except (TypeError, ValueError):
                    raise ValueError(f"{source}: key {key!r} is not a class index; expected "
                                     '{"0": "猫", "1": "狗", ...}') from None
            items.sort()
        else:
            raise ValueError(f"{source}: expected an object {{\"0\": \"猫\", ...}} or a list of labels")
        zh, en = [], []
        for position, (index, value) in enumerate(items):
            if index != position:
                raise ValueError(f"{source}: class {position} has no label (indices must run 0..N-1)")
            name, english = _json_label(value, source, index)
            zh.append(name)
            en.append(english)
        if not zh:
            raise ValueError(f"{source}: no labels")
        return cls(tuple(zh), tuple(en))

    @classmethod
    def _from_csv(cls, text: str, source: str) -> "LabelSet":
        rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
        if rows and rows[0] and not rows[0][0].strip().lstrip("-").isdigit():
            rows = rows[1:]  # a header such as index,label,english
        zh, en = [], []
        for line_no, row in enumerate(rows, 1):
            if len(row) < 2 or not row[1].strip():
                raise ValueError(f"{source}: row {line_no}: expected index,label[,english], got {row!r}")
            try:
                index = int(row[0])
            except ValueError:
                raise ValueError(f"{source}: row {line_no}: index {row[0]!r} is not a number") from None
            if index != len(zh):
                raise ValueError(f"{source}: row {line_no}: expected index {len(zh)}, got {index}")
            zh.append(row[1].strip())
            en.append(row[2].strip() if len(row) > 2 else "")
        if not zh:
            raise ValueError(f"{source}: no labels")
        return cls(tuple(zh), tuple(en))


def _indexed_line(line: str) -> bool:
    head, tab, label = line.partition("\t")
    return bool(tab) and head.strip().isdigit() and bool(label.strip())


def _json_label(value, source: str, index: int) -> tuple[str, str]:
    """A label_map.json value: "猫"; ["n02123045", "tabby"] (imagenet_class_index.json); or
    {"zh": "猫", "en": "cat"}."""
    if isinstance(value, str) and value.strip():
        return value.strip(), ""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value[-1].strip(), ""
    if isinstance(value, dict):
        name = value.get("zh") or value.get("label") or value.get("name")
        if isinstance(name, str) and name.strip():
            english = value.get("en")
            return name.strip(), english.strip() if isinstance(english, str) else ""
    raise ValueError(f"{source}: class {index}: expected a label text, got {value!r}")
