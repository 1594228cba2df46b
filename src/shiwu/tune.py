"""``shiwu tune``: a compact bench, then remember the fastest setting that keeps fp32's accuracy.

Every backend and precision at a few input sizes is measured (batch sizes 1 and 8 in the same
process; no cold starts). Each setting is then judged by the accuracy policy
(shiwu.backends.policy): top-1 at least ``1 - max_drop`` of fp32's at the model's own size —
measured on the user's labelled photos with ``--eval DIR``, else the figures shipped for
packaged models (reproduced on this machine first), else the label-free estimate. Among the
accepted settings the one with the lowest latency per image at batch 1 wins (what one
`shiwu predict` waits for); its batch size is the measured one with the highest throughput. The
winner is written to the settings file (shiwu.config), where ``predict``, ``batch``, ``serve``
and ``eval`` pick it up unless options say otherwise.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .backends.policy import DEFAULT_MAX_DROP
from .bench import DEFAULT_BACKENDS, BenchReport, Row, run_bench

log = logging.getLogger(__name__)

TUNE_PRECISIONS = ("fp32", "bf16", "int8")
TUNE_BATCHES = (1, 8)
TUNE_SECONDS = 1.0
# The bench times each setting in its own stretch of time: on a noisy machine two close settings
# can swap (on an AVX2 EPYC, tune saved openvino fp32 at 8.33 ms while --backend auto's interleaved
# rounds had onnxruntime fp32 at 8.76 ms against openvino's 10.28 ms). The accepted settings within
# this ratio of the fastest are timed again in interleaved rounds before one is saved.
CONFIRM_RATIO = 1.25
SIZE_FACTORS = (1.0, 0.875, 0.75)   # 224 -> 224, 196, 168: the article's resolutions


def native_precisions() -> tuple[list[str], dict[str, str]]:
    """The precisions tune measures unless told: those this CPU runs in its own instructions, as
    --precision auto (bf16 without AVX-512 BF16/AMX is emulated, int8 without VNNI unfused: both
    slower than fp32 there; torch's emulated bf16 took 40 s per size on an AVX2 EPYC), and why
    the others are left out."""
    from .backends.runtimes import cpu_lacks
    from .cpu import cpu_flags

    lacking = {p: why for p in TUNE_PRECISIONS if (why := cpu_lacks(p, cpu_flags())) is not None}
    return [p for p in TUNE_PRECISIONS if p not in lacking], lacking


def default_sizes(native: int) -> list[int]:
    return list(dict.fromkeys(max(32, int(round(native * f / 4)) * 4) for f in SIZE_FACTORS))


@dataclass
class TuneResult:
    report: BenchReport
    max_drop: float
    chosen: dict | None          # the settings written (None: nothing qualified, or interrupted)
    latency_row: Row | None      # the batch-1 measurement that won
    throughput_row: Row | None   # the measurement its batch size comes from
    config_path: str | None = None
    verdicts: dict = field(default_factory=dict)   # (backend, precision, size) -> Verdict
    confirmed: dict = field(default_factory=dict)  # setting label -> interleaved rounds' median ms
    not_measured: dict = field(default_factory=dict)  # precision -> why (this CPU lacks its instructions)

    def to_dict(self) -> dict:
        return {"max_drop": self.max_drop, "chosen": self.chosen, "config_path": self.config_path,
                "confirmed_ms": self.confirmed, "not_measured": self.not_measured,
                "verdicts": [v.to_dict() for v in self.verdicts.values()], "bench": self.report.to_dict()}


def setting_of(row: Row) -> tuple[str, str, int]:
    return (row.runs_as or row.backend, row.precision, row.size)


def label(row: Row) -> str:
    return f"{row.runs_as or row.backend} {row.precision} {row.size}px {row.threads} threads"


def _latency(row: Row, confirmed: dict) -> float:
    return confirmed.get(label(row), row.ms_p50)


def _preference(row: Row, native: int, confirmed: dict) -> tuple:
    # ties (equal latency to 0.01 ms are noise) go to full precision, then full size
    return (round(_latency(row, confirmed), 2), row.precision != "fp32", row.size != native, row.backend)


def _accepted_rows(report: BenchReport, verdicts: dict) -> list[Row]:
    """The measured rows whose setting the accuracy verdicts accept."""
    return [r for r in report.rows
            if r.ok and r.ms_p50 is not None and setting_of(r) in verdicts and verdicts[setting_of(r)].accepted]


def _latency_rows(qualified: list[Row]) -> list[Row]:
    """The rows at the smallest batch measured (what one photo waits for)."""
    smallest = min((r.batch for r in qualified), default=None)
    return [r for r in qualified if r.batch == smallest]


def contenders(report: BenchReport, verdicts: dict, ratio: float = CONFIRM_RATIO) -> list[Row]:
    """The accepted settings close enough to the fastest that the bench's one stretch of timing
    each cannot tell them apart."""
    rows = _latency_rows(_accepted_rows(report, verdicts))
    if not rows:
        return []
    fastest = min(r.ms_p50 for r in rows)
    return [r for r in rows if r.ms_p50 <= fastest * ratio]


def confirm(spec, rows: list[Row]) -> dict[str, float]:
    """Median ms per image of each of ``rows``' settings over interleaved rounds (backends.auto's
    timing), each built as its runtime runs it; {} for fewer than two settings."""
    import numpy as np

    from .backends import backend_class
    from .backends.auto import interleaved_medians
    if len(rows) < 2:
        return {}

    class OwnInput:
        """A backend fed its own input size whatever batch the timing hands it."""

        def __init__(self, backend, size: int):
            self.backend = backend
            self.batch = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)

        def run(self, _batch):
            return self.backend.run(self.batch)

    built = {}
    for row in rows:
        # the class itself: the setting was judged already (tune --eval's verdict is not the policy's)
        backend = backend_class(row.runs_as or row.backend)(spec, size=row.size, precision=row.precision,
                                                             threads=row.threads)
        built[label(row)] = OwnInput(backend, row.size)
    medians = interleaved_medians(built, np.zeros((1,), np.float32))
    return {name: m["median_ms"] for name, m in medians.items()}


def choose(report: BenchReport, verdicts: dict,
           confirmed: dict | None = None) -> tuple[dict | None, Row | None, Row | None]:
    """The fastest accepted setting of a bench report, as config values (``confirmed``: interleaved
    medians by setting label, which outrank the bench's own latency)."""
    confirmed = confirmed or {}
    qualified = _accepted_rows(report, verdicts)
    rows = _latency_rows(qualified)
    if not rows:
        return None, None, None
    best = min(rows, key=lambda r: _preference(r, report.native_size, confirmed))
    same = [r for r in qualified if (r.backend, r.precision, r.size, r.threads)
            == (best.backend, best.precision, best.size, best.threads)]
    busiest = max(same, key=lambda r: (r.images_per_s or 0, -r.batch))
    verdict = verdicts[setting_of(best)]
    chosen = {
        "backend": best.runs_as or best.backend, "precision": best.precision,
        "threads": best.threads, "size": best.size, "batch_size": busiest.batch,
        # notes: what the choice rests on (read by `shiwu doctor`, ignored by the Recognizer)
        "ms_per_image": round(_latency(best, confirmed), 3),
        "images_per_s": round(busiest.images_per_s, 1) if busiest.images_per_s else None,
        "accuracy_basis": verdict.basis, "drop": verdict.judged_drop, "max_drop": verdict.max_drop,
        "top1": verdict.top1, "fp32_top1": verdict.fp32_top1,
        "agreement": round(best.agreement, 4) if best.agreement is not None else None,
        "cpu": report.machine.get("cpu"), "shiwu": report.machine.get("shiwu"),
        "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return chosen, best, busiest


def judge(model, spec, report: BenchReport, *, max_drop: float, eval_dir=None, threads=None) -> dict:
    """A verdict for every setting the bench could run: real accuracy on ``eval_dir``, else the
    accuracy policy's (shipped figures reproduced here, or the label-free estimate)."""
    from .backends.policy import verdict

    settings = list(dict.fromkeys(setting_of(r) for r in report.rows if r.ok and r.ms_p50 is not None))
    if eval_dir is not None:
        from .evaluate import accuracy_verdicts
        return accuracy_verdicts(model, settings, eval_dir, max_drop=max_drop, threads=threads)
    out = {}
    for runtime, precision, size in settings:
        try:
            out[runtime, precision, size] = verdict(spec, runtime, precision, size, max_drop=max_drop,
                                                    threads=threads)
        except Exception as exc:  # noqa: BLE001 - a setting that cannot be judged is not chosen
            log.warning("%s %s %spx cannot be judged: %s", runtime, precision, size, exc)
    return out


def tune(model=None, *, max_drop: float = DEFAULT_MAX_DROP, eval_dir=None,
         backends=DEFAULT_BACKENDS, precisions=None, sizes=None, threads=None,
         batches=TUNE_BATCHES, images=None, seconds: float = TUNE_SECONDS, save: bool = True,
         progress: bool = True, **bench_options) -> TuneResult:
    """Measure, judge, choose, and (``save``) write the choice to the settings file.
    ``precisions``: None measures those this CPU runs natively (``native_precisions``)."""
    from .config import save_tuned
    from .models.registry import get_model

    spec = get_model(model)
    if eval_dir is not None:
        from .evaluate import check_labelled_folder
        check_labelled_folder(eval_dir, spec.labels())  # bad input fails before minutes of measuring
    not_measured = {}
    if precisions is None:
        precisions, not_measured = native_precisions()
    report = run_bench(model, backends=backends, precisions=precisions,
                       sizes=sizes or default_sizes(spec.preprocessing.size), threads=threads,
                       batches=batches, images=images, seconds=seconds, cold=False,
                       remeasure=False, batches_per_process=True, progress=progress, **bench_options)
    if report.interrupted:
        return TuneResult(report, max_drop, None, None, None, not_measured=not_measured)
    verdicts = judge(model, spec, report, max_drop=max_drop, eval_dir=eval_dir,
                     threads=(threads or [None])[0])
    confirmed = confirm(spec, contenders(report, verdicts))
    chosen, best, busiest = choose(report, verdicts, confirmed)
    result = TuneResult(report, max_drop, chosen, best, busiest, verdicts=verdicts, confirmed=confirmed,
                        not_measured=not_measured)
    if chosen is not None and save:
        result.config_path = str(save_tuned(spec.key, {k: v for k, v in chosen.items() if v is not None}))
    return result


def format_result(result: TuneResult) -> str:
    from .bench import format_table

    lines = [format_table(result.report), ""]
    for precision, why in result.not_measured.items():
        lines.append(f"{precision} not measured: {why} (slower than fp32 here; --precision "
                     f"{','.join(TUNE_PRECISIONS)} measures it anyway)")
    if result.not_measured:
        lines.append("")
    if result.verdicts:
        lines.append(f"accuracy (top-1 must stay >= {1 - result.max_drop:.1%} of fp32's):")
        lines += [f"  {v.describe()}" for v in result.verdicts.values()]
        lines.append("")
    if result.confirmed:
        lines.append("the closest, timed again in interleaved rounds (median ms per image): " + ", ".join(
            f"{name} {ms:.2f}" for name, ms in sorted(result.confirmed.items(), key=lambda item: item[1])))
        lines.append("")
    c = result.chosen
    if result.report.interrupted:
        pass  # the command says so on stderr, one line
    elif c is None:
        lines.append(f"no setting kept {1 - result.max_drop:.1%} of fp32's top-1; nothing was saved")
    else:
        drop = "" if c["drop"] is None else f", drop {c['drop']:.2%} by {c['accuracy_basis']}"
        lines.append(f"fastest that keeps {1 - result.max_drop:.1%} of fp32's top-1: {c['backend']} "
                     f"{c['precision']}, {c['size']}px, {c['threads']} threads, batch {c['batch_size']} "
                     f"({c['ms_per_image']:.2f} ms per image{drop})")
        if result.config_path:
            lines.append(f"saved to {result.config_path}; predict, batch, serve and eval use it "
                         "unless an option says otherwise")
        else:
            lines.append("not saved (--dry-run): run without it to make this the default")
    return "\n".join(lines).rstrip("\n")
