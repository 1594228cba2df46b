"""``shiwu tune``: a compact bench, then remember the fastest setting that keeps fp32's answers.

Every backend and precision at a few input sizes is measured (batch sizes 1 and 8 in the same
process; no cold starts). Among the settings whose top-1 agrees with torch fp32 at the model's
own size on at least ``min_agreement`` of the photo views, the one with the lowest latency per
image at batch 1 wins (what one `shiwu predict` waits for); its batch size is the measured one
with the highest throughput. The winner is written to the settings file (shiwu.config), where
``predict``, ``batch``, ``serve`` and ``eval`` pick it up unless options say otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .bench import DEFAULT_BACKENDS, BenchReport, Row, run_bench

DEFAULT_MIN_AGREEMENT = 0.99
TUNE_PRECISIONS = ("fp32", "bf16", "int8")
TUNE_BATCHES = (1, 8)
TUNE_SECONDS = 1.0
SIZE_FACTORS = (1.0, 0.875, 0.75)   # 224 -> 224, 196, 168: the article's resolutions


def default_sizes(native: int) -> list[int]:
    return list(dict.fromkeys(max(32, int(round(native * f / 4)) * 4) for f in SIZE_FACTORS))


@dataclass
class TuneResult:
    report: BenchReport
    min_agreement: float
    chosen: dict | None          # the settings written (None: nothing qualified, or interrupted)
    latency_row: Row | None      # the batch-1 measurement that won
    throughput_row: Row | None   # the measurement its batch size comes from
    config_path: str | None = None

    def to_dict(self) -> dict:
        return {"min_agreement": self.min_agreement, "chosen": self.chosen,
                "config_path": self.config_path, "bench": self.report.to_dict()}


def _preference(row: Row, native: int) -> tuple:
    # ties (equal latency to 0.01 ms are noise) go to full precision, then full size
    return (round(row.ms_p50, 2), row.precision != "fp32", row.size != native, row.backend)


def choose(report: BenchReport, min_agreement: float) -> tuple[dict | None, Row | None, Row | None]:
    """The fastest qualifying setting of a bench report, as config values."""
    qualified = [r for r in report.rows
                 if r.ok and r.agreement is not None and r.agreement >= min_agreement - 1e-9
                 and r.ms_p50 is not None]
    if not qualified:
        return None, None, None
    smallest = min(r.batch for r in qualified)
    best = min((r for r in qualified if r.batch == smallest),
               key=lambda r: _preference(r, report.native_size))
    same = [r for r in qualified if (r.backend, r.precision, r.size, r.threads)
            == (best.backend, best.precision, best.size, best.threads)]
    busiest = max(same, key=lambda r: (r.images_per_s or 0, -r.batch))
    chosen = {
        "backend": best.runs_as or best.backend, "precision": best.precision,
        "threads": best.threads, "size": best.size, "batch_size": busiest.batch,
        # notes: what the choice rests on (read by `shiwu doctor`, ignored by the Recognizer)
        "ms_per_image": round(best.ms_p50, 3),
        "images_per_s": round(busiest.images_per_s, 1) if busiest.images_per_s else None,
        "agreement": round(best.agreement, 4), "agreement_images": best.agreement_images,
        "min_agreement": min_agreement,
        "cpu": report.machine.get("cpu"), "shiwu": report.machine.get("shiwu"),
        "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return chosen, best, busiest


def tune(model=None, *, min_agreement: float = DEFAULT_MIN_AGREEMENT,
         backends=DEFAULT_BACKENDS, precisions=TUNE_PRECISIONS, sizes=None, threads=None,
         batches=TUNE_BATCHES, images=None, seconds: float = TUNE_SECONDS, save: bool = True,
         progress: bool = True, **bench_options) -> TuneResult:
    """Measure, choose, and (``save``) write the choice to the settings file."""
    from .config import save_tuned
    from .models.registry import get_model

    spec = get_model(model)
    report = run_bench(model, backends=backends, precisions=precisions,
                       sizes=sizes or default_sizes(spec.preprocessing.size), threads=threads,
                       batches=batches, images=images, seconds=seconds, cold=False,
                       remeasure=False, batches_per_process=True, progress=progress, **bench_options)
    if report.interrupted:
        return TuneResult(report, min_agreement, None, None, None)
    chosen, best, busiest = choose(report, min_agreement)
    result = TuneResult(report, min_agreement, chosen, best, busiest)
    if chosen is not None and save:
        result.config_path = str(save_tuned(spec.key, {k: v for k, v in chosen.items() if v is not None}))
    return result


def format_result(result: TuneResult) -> str:
    from .bench import format_table

    lines = [format_table(result.report), ""]
    c = result.chosen
    if result.report.interrupted:
        lines.append("interrupted: nothing was saved")
    elif c is None:
        lines.append(f"no setting kept top-1 agreement with fp32 at or above "
                     f"{result.min_agreement:.1%}; nothing was saved")
    else:
        lines.append(f"fastest with top-1 agreement >= {result.min_agreement:.1%}: {c['backend']} "
                     f"{c['precision']}, {c['size']}px, {c['threads']} threads, batch {c['batch_size']} "
                     f"({c['ms_per_image']:.2f} ms per image, agreement {c['agreement']:.1%})")
        if result.config_path:
            lines.append(f"saved to {result.config_path}; predict, batch, serve and eval use it "
                         "unless an option says otherwise")
    return "\n".join(lines)
