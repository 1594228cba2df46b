"""``shiwu eval DIR``: accuracy on a labelled folder, for the setting you will actually run.

The folder has one sub-folder per class (the ImageFolder layout), named by the class index
(``967``), its English name (``espresso``, ``great_white_shark``) or its Chinese name
(``浓缩咖啡``) in the model's label set. Images may sit deeper inside a class folder. A file
that cannot be read is counted and listed, never fatal; a folder that names no class is
reported and skipped.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .calibrate import IMAGE_SUFFIXES
from .labels import LabelSet
from .errors import ShiwuError

MAX_CONFUSED_PAIRS = 10


class EvalError(ShiwuError, ValueError):
    """The folder cannot be evaluated at all (missing, or no sub-folder names a class)."""


def _normal(name: str) -> str:
    name = unicodedata.normalize("NFKC", name).casefold().replace("_", " ")
    return " ".join(name.split())


class ClassNames:
    """Folder name -> class index, by index, English name, Chinese name or, for the ImageNet-1k
    classes, WordNet ID (n01440764: ImageNet's own folder layout)."""

    def __init__(self, labels):
        self.labels = labels
        self.exact: dict[str, set[int]] = defaultdict(set)
        self.loose: dict[str, set[int]] = defaultdict(set)
        ids = labels.imagenet_ids() if hasattr(labels, "imagenet_ids") else ()
        for i, names in enumerate(zip(labels.zh, labels.en, ids or [""] * len(labels))):
            for name in names:
                if name:
                    self.exact[unicodedata.normalize("NFKC", name).strip()].add(i)
                    self.loose[_normal(name)].add(i)
        self.kinds = ("index, English name, Chinese name or WordNet ID (n01440764)" if ids
                      else "index, English name or Chinese name")

    def lookup(self, folder: str) -> tuple[int | None, str | None]:
        """(index, None), or (None, why not)."""
        text = unicodedata.normalize("NFKC", folder).strip()
        if text.isdigit():
            index = int(text)
            if index < len(self.labels):
                return index, None
            return None, f"index {index} is out of range (the model has {len(self.labels)} classes)"
        for table, key in ((self.exact, text), (self.loose, _normal(text))):
            found = table.get(key)
            if found and len(found) == 1:
                return next(iter(found)), None
            if found:
                names = ", ".join(f"{i} {self.labels.zh[i]}" for i in sorted(found)[:5])
                return None, f"names several classes ({names}); name the folder by index"
        return None, f"is not a class {self.kinds} of this model"


class _Accuracy:
    """top-1 / top-5 accuracy from the ``images``, ``top1`` and ``top5`` counts of a dataclass."""

    images: int
    top1: int
    top5: int

    @property
    def top1_accuracy(self) -> float | None:
        return self.top1 / self.images if self.images else None

    @property
    def top5_accuracy(self) -> float | None:
        return self.top5 / self.images if self.images else None


@dataclass
class ClassSummary(_Accuracy):
    index: int
    label: str
    label_en: str
    folder: str
    images: int = 0
    top1: int = 0
    top5: int = 0
    most_confused_with: str | None = None   # the wrong top-1 seen most often
    most_confused_count: int = 0


    def to_dict(self) -> dict:
        return {**asdict(self), "top1_accuracy": self.top1_accuracy, "top5_accuracy": self.top5_accuracy}


@dataclass
class EvalReport(_Accuracy):
    folder: str
    model: str
    backend: str
    precision: str
    size: int
    images: int = 0                  # readable images that were scored
    top1: int = 0
    top5: int = 0
    classes: list[ClassSummary] = field(default_factory=list)
    confused: list[dict] = field(default_factory=list)       # most frequent (true, predicted) pairs
    unreadable: list[dict] = field(default_factory=list)     # {"image", "error"}
    unknown_folders: list[dict] = field(default_factory=list)  # {"folder", "reason", "files"}
    seconds: float = 0.0
    interrupted: bool = False
    # each scored photo's top-1 right or wrong, for comparing two settings photo by photo
    # (tune --eval's accuracy_change); not in the JSON
    outcomes: dict[str, bool] = field(default_factory=dict, repr=False)


    def to_dict(self) -> dict:
        return {
            "folder": self.folder, "model": self.model, "backend": self.backend,
            "precision": self.precision, "size": self.size, "images": self.images,
            "top1_accuracy": self.top1_accuracy, "top5_accuracy": self.top5_accuracy,
            "top1_correct": self.top1, "top5_correct": self.top5,
            "classes": [c.to_dict() for c in self.classes], "most_confused": self.confused,
            "unreadable_count": len(self.unreadable), "unreadable": self.unreadable,
            "unknown_folders": self.unknown_folders, "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
        }


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def evaluate(folder: str | Path, *, recognizer=None, model=None, backend: str | None = None,
             precision: str | None = None, threads: int | None = None, size: int | None = None,
             batch_size: int | None = None, calibration: str | None = None,
             gallery: str | Path | None = None, progress: bool = True) -> EvalReport:
    """Score ``recognizer`` (or one built from the options, tuned settings applying) on
    ``folder``. With ``gallery``: few-shot accuracy of the classes taught by its example photos
    (class folders named as the gallery's). Ctrl-C stops early and returns what was scored
    (``.interrupted``)."""
    import time

    from tqdm import tqdm

    started = time.perf_counter()
    root = Path(folder)
    if not root.is_dir():
        raise EvalError(f"{root} is not a folder")
    if recognizer is None and gallery is None:  # a folder that names no class: said before the
        from .models.registry import get_model  # seconds of building and timing the model
        spec = get_model(model)
        names = ClassNames(spec.labels())
        subs = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if not any(names.lookup(name)[0] is not None for name in subs):
            raise _names_no_class(root, spec.name, names,
                                  [{"folder": n, "reason": names.lookup(n)[1]} for n in subs])
    if recognizer is None:
        from .recognizer import Recognizer
        recognizer = Recognizer(model, backend=backend, precision=precision, threads=threads,
                                size=size, batch_size=batch_size, calibration=calibration,
                                gallery=gallery, gallery_mode="replace")
    labels = recognizer.labels
    if recognizer.gallery is not None and recognizer.gallery_mode == "replace":
        taught = recognizer.gallery.labels  # predictions index the gallery's classes
        labels = LabelSet(tuple(taught), ("",) * len(taught))
    names = ClassNames(labels)
    report = EvalReport(str(root), recognizer.model_name, recognizer.backend.name,
                        recognizer.backend.precision, recognizer.preprocessing.size)

    summaries: dict[int, ClassSummary] = {}
    work: list[tuple[Path, int]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _images_in(sub)
        index, why = names.lookup(sub.name)
        if index is None:
            report.unknown_folders.append({"folder": sub.name, "reason": why, "files": len(files)})
            continue
        summary = summaries.get(index)
        if summary is None:
            summary = summaries[index] = ClassSummary(index, labels.zh[index], labels.en[index], sub.name)
        elif sub.name not in summary.folder.split(" + "):
            summary.folder += f" + {sub.name}"   # '967' and 'espresso' are the same class
        work.extend((path, index) for path in files)
    if not summaries:
        raise _names_no_class(root, recognizer.model_name, names, report.unknown_folders)

    confusion: Counter = Counter()
    wrong_by_class: dict[int, Counter] = defaultdict(Counter)
    topk = min(5, len(labels))
    bar = tqdm(total=len(work), desc="shiwu eval", unit="img", disable=not progress, leave=False,
               dynamic_ncols=True)
    try:
        results = recognizer.iter_recognize([str(p) for p, _ in work], topk=topk)
        for (path, truth), result in zip(work, results):
            bar.update()
            if result.error is not None:
                message = getattr(result.error, "reason", None) or str(result.error)
                report.unreadable.append({"image": str(path), "error": message})
                continue
            predicted = [p.index for p in result.predictions]
            summary = summaries[truth]
            summary.images += 1
            report.images += 1
            report.outcomes[str(path)] = bool(predicted) and predicted[0] == truth
            if predicted and predicted[0] == truth:
                summary.top1 += 1
                report.top1 += 1
            elif predicted:
                confusion[(truth, predicted[0])] += 1
                wrong_by_class[truth][predicted[0]] += 1
            if truth in predicted[:5]:
                summary.top5 += 1
                report.top5 += 1
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()

    for index, summary in summaries.items():
        if wrong_by_class[index]:
            other, count = wrong_by_class[index].most_common(1)[0]
            summary.most_confused_with = f"{other} {labels.zh[other]}"
            summary.most_confused_count = count
    report.classes = sorted(summaries.values(), key=lambda c: c.index)
    report.confused = [
        {"true": t, "true_label": labels.zh[t], "true_label_en": labels.en[t],
         "predicted": p, "predicted_label": labels.zh[p], "predicted_label_en": labels.en[p],
         "count": n, "share_of_class": round(n / summaries[t].images, 4) if summaries[t].images else None}
        for (t, p), n in confusion.most_common(MAX_CONFUSED_PAIRS)]
    report.seconds = time.perf_counter() - started
    return report


def _names_no_class(root: Path, model_name: str, names: ClassNames, unknown: list[dict]) -> EvalError:
    detail = "; ".join(f"{u['folder']!r} {u['reason']}" for u in unknown[:3])
    return EvalError(f"no sub-folder of {root} names a class of {model_name}" + (f" ({detail})" if detail else "")
                     + f". Expected one folder per class, named by {names.kinds}.")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def format_report(report: EvalReport) -> str:
    from .display import display_width, pad  # Chinese names need display widths

    lines = [
        f"{report.folder}: {report.images} images, {len(report.classes)} classes; "
        f"{report.model} ({report.backend}, {report.precision}, {report.size}px)",
        f"top-1 accuracy: {_pct(report.top1_accuracy)} ({report.top1}/{report.images})",
        f"top-5 accuracy: {_pct(report.top5_accuracy)} ({report.top5}/{report.images})",
        "",
        "| class | label | folder | images | top-1 | top-5 | most often taken for |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in report.classes:
        label = c.label + (f" ({c.label_en})" if c.label_en else "")
        confused = f"{c.most_confused_with} ({c.most_confused_count})" if c.most_confused_with else ""
        lines.append(f"| {c.index} | {label} | {c.folder} | {c.images} | {_pct(c.top1_accuracy)} "
                     f"| {_pct(c.top5_accuracy)} | {confused} |")
    if report.confused:
        lines += ["", "most confused (true -> predicted as top-1):"]
        width = max(display_width(f"{p['true']} {p['true_label']}") for p in report.confused)
        for p in report.confused:
            lines.append(f"  {pad(str(p['true']) + ' ' + p['true_label'], width)} -> "
                         f"{p['predicted']} {p['predicted_label']}  {p['count']}x")
    if report.unknown_folders:
        lines += ["", "folders skipped (not a class of this model):"]
        lines += [f"  {u['folder']}: {u['reason']} ({u['files']} files)" for u in report.unknown_folders]
    if report.unreadable:
        lines += ["", f"unreadable images: {len(report.unreadable)}"]
        lines += [f"  {u['image']}: {u['error']}" for u in report.unreadable]
    if report.interrupted:
        lines += ["", "interrupted: the figures cover the images scored before Ctrl-C"]
    return "\n".join(lines)


# --- the user's labelled photos as the accuracy policy's judge (`shiwu tune --eval DIR`) -------

def check_labelled_folder(folder: str | Path, labels) -> dict[str, list[Path]]:
    """{class folder: photos}, or EvalError naming the folder that makes accuracy meaningless:
    a name the model does not know, a class without photos, fewer than two classes."""
    root = Path(folder)
    if not root.is_dir():
        raise EvalError(f"--eval {root}: not a folder")
    names = ClassNames(labels)
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        index, why = names.lookup(sub.name)
        if index is None:
            raise EvalError(f"--eval {root}: class folder {sub.name!r} {why}")
        photos = _images_in(sub)
        if not photos:
            raise EvalError(f"--eval {root}: class folder {sub.name!r} has no photos")
        for photo in photos:
            _must_open(root, photo)
        classes[sub.name] = photos
    if len(classes) < 2:
        raise EvalError(f"--eval {root}: {len(classes)} class folder(s); accuracy needs at least two "
                        f"classes (one sub-folder per class, named by {names.kinds})")
    return classes


def _must_open(root: Path, photo: Path) -> None:
    """A photo whose header cannot be read would silently shrink its class: refuse it up front."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(photo) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise EvalError(f"--eval {root}: unreadable photo {photo.relative_to(root)}: {exc}") from None


def accuracy_verdicts(model, settings, folder, *, max_drop: float, threads=None) -> dict:
    """A Verdict per (runtime, precision, size) from top-1 on the labelled ``folder`` against
    fp32 at the model's own size. The setting is built directly (not through create_backend),
    so the user's own photos judge it, not the policy's shipped or estimated figures."""
    from .backends import backend_class
    from .backends.accuracy_change import paired_change
    from .backends.policy import Verdict, machine, reference_runtime
    from .models.registry import get_model
    from .recognizer import Recognizer

    root = Path(folder)

    def top1(runtime: str, precision: str, size: int) -> EvalReport:
        recognizer = Recognizer(model, backend=runtime, precision="fp32", size=size, threads=threads)
        if precision != "fp32":
            recognizer.backend = backend_class(runtime)(recognizer.spec, size=size, precision=precision,
                                                        threads=threads)
        report = evaluate(root, recognizer=recognizer, progress=False)
        if report.unreadable:
            bad = report.unreadable[0]
            raise EvalError(f"--eval {root}: {len(report.unreadable)} unreadable photo(s), e.g. "
                            f"{bad['image']}: {bad['error']}")
        return report

    spec = get_model(model)
    out: dict = {}
    reference = None
    for runtime, precision, size in settings:
        if reference is None:
            reference = top1(reference_runtime(spec, runtime), "fp32", spec.preprocessing.size)
        found = top1(runtime, precision, size)
        drop = 1 - found.top1 / reference.top1 if reference.top1 else 0.0
        both = [p for p in reference.outcomes if p in found.outcomes]  # the same photos, paired
        change = paired_change([reference.outcomes[p] for p in both], [found.outcomes[p] for p in both])
        out[runtime, precision, size] = Verdict(
            spec.name, runtime, precision, size, f"--eval {root.name}", max_drop, drop=round(drop, 5),
            top1=found.top1_accuracy, fp32_top1=reference.top1_accuracy, top5=found.top5_accuracy,
            photos=found.images, measured_on=machine(), lost=change.lost, gained=change.gained,
            drop_interval=change.to_dict()["drop_interval"])
    return out
