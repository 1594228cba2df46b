"""What ``shiwu bench`` measured: rows per configuration, the report, its table and plot."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path


class PlotUnavailable(RuntimeError):
    """--plot needs matplotlib."""


@dataclass(frozen=True)
class Config:
    backend: str
    precision: str
    size: int
    threads: int
    batch: int

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision} {self.size}px {self.threads}t b{self.batch}"


@dataclass
class Row:
    """One configuration's figures (times per image in ms; memory in MiB; cold starts in s)."""

    backend: str
    precision: str
    size: int
    threads: int
    batch: int
    status: str = "not measured"       # ok | unavailable | failed | not measured
    error: str | None = None
    runs_as: str | None = None         # the backend actually used ("auto" resolves to one)
    ms_p50: float | None = None        # model latency per image: call time / batch
    ms_p95: float | None = None
    images_per_s: float | None = None
    calls: int | None = None
    peak_rss_mb: float | None = None
    cold_start_s: float | None = None          # with the cache as it is (exports present)
    cold_start_no_cache_s: float | None = None  # with a fresh, empty cache
    agreement: float | None = None              # top-1 agreement with the fp32 reference
    agreement_images: int | None = None
    embedding_cosine: float | None = None       # mean cosine of its embeddings with the reference's
    embedding_cosine_min: float | None = None
    filled_cache: bool = False  # its process exported / compiled first: memory and start not a cached run's

    @property
    def config(self) -> Config:
        return Config(self.backend, self.precision, self.size, self.threads, self.batch)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class BenchReport:
    model: str
    native_size: int
    machine: dict
    reference: dict
    images: dict
    seconds: float
    rows: list[Row] = field(default_factory=list)
    interrupted: bool = False
    wall_seconds: float = 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["rows"] = [asdict(r) for r in self.rows]
        return out

    def baseline(self, row: Row) -> Row | None:
        """The reference runtime (torch, for a torch model) in fp32 at the model's size with the same threads and
        batch, if it was measured."""
        for other in self.rows:
            if (other.ok and other.backend == self.reference["backend"] and other.precision == "fp32"
                    and other.size == self.native_size and other.threads == row.threads
                    and other.batch == row.batch):
                return other
        return None


def _fmt(value, spec: str, missing: str = "") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _cosine(row) -> str:
    if row.embedding_cosine is None:
        return ""
    return f"{row.embedding_cosine:.4f} ({row.embedding_cosine_min:.4f})"


def format_table(report: BenchReport) -> str:
    """A Markdown table like the article's, with a short header saying what was measured."""
    m = report.machine
    ref = report.reference
    lines = [
        f"{report.model} on {m.get('cpu', '?')} ({m.get('physical_cores', '?')} cores); "
        f"model-only latency per image over {report.seconds:g} s per configuration; "
        f"top-1 agreement with {ref['backend']} {ref['precision']} {ref['size']}px on "
        f"{report.images['count']} views of {report.images['photos']} photos "
        f"({report.images['source']})",
    ]
    load, cpus = m.get("load_average_1min_at_start"), m.get("cpus_usable") or 1
    if load is not None and load > 0.5 * cpus:
        lines.append(f"note: the load average was {load:.1f} on {cpus} CPUs when the bench started: "
                     "other programs were busy, so the timings are noisy (compare rows of one run only)")
    lines += [
        "",
        "| backend | precision | size | threads | batch | p50 ms/img | p95 ms/img | images/s "
        f"| vs {ref['backend']} fp32 | peak RSS MB | cold start s | cold, no cache s | top-1 agreement "
        "| embedding cosine (min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    previous_why = None
    for row in report.rows:
        head = f"| {row.backend} | {row.precision} | {row.size} | {row.threads} | {row.batch} "
        if not row.ok:
            why = row.status if not row.error else f"{row.status}: {row.error}"
            if why == previous_why:
                why = f"{row.status}: as above"
            else:
                previous_why = why
            if len(why) > 160:
                why = why[:157] + "..."
            lines.append(head + f"| {_cell(why)} | | | | | | | | |")
            continue
        previous_why = None
        base = report.baseline(row)
        ratio = f"{row.images_per_s / base.images_per_s:.2f}x" if base and base.images_per_s else ""
        backend = row.backend if row.runs_as in (None, row.backend) else f"{row.backend} ({row.runs_as})"
        head = f"| {backend} | {row.precision} | {row.size} | {row.threads} | {row.batch} "
        first = "*" if row.filled_cache else ""
        lines.append(head + f"| {_fmt(row.ms_p50, '.2f')} | {_fmt(row.ms_p95, '.2f')} "
                     f"| {_fmt(row.images_per_s, '.1f')} | {ratio} | {_fmt(row.peak_rss_mb, '.0f')}{first} "
                     f"| {_fmt(row.cold_start_s, '.2f')}{first} | {_fmt(row.cold_start_no_cache_s, '.2f')} "
                     f"| {_fmt(row.agreement, '.1%')} "
                     f"| {_cosine(row)} |")
    measured = sum(r.ok for r in report.rows)
    if any(r.ok and r.filled_cache for r in report.rows):
        lines.append("")
        lines.append("*: that process exported or compiled the model first, so its memory and start are not a "
                     "cached run's (shiwu bench measures such rows again)")
    if report.interrupted:
        lines.append("")
        lines.append(f"interrupted: {measured} of {len(report.rows)} configurations measured")
    return "\n".join(lines)


def plot(report: BenchReport, path: str | Path) -> Path:
    """Latency per image against top-1 agreement, one point per measured configuration."""
    plt = _pyplot()
    rows = [r for r in report.rows if r.ok and r.ms_p50 is not None and r.agreement is not None]
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    markers = {"fp32": "o", "bf16": "s", "int8": "^"}
    backends = sorted({r.backend for r in rows})
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    for i, row in enumerate(sorted(rows, key=lambda r: (r.agreement, r.ms_p50))):
        ax.scatter(row.ms_p50, row.agreement * 100, marker=markers.get(row.precision, "o"),
                   color=colours[row.backend], s=30 + 6 * row.batch, alpha=0.8)
        # neighbours at the same agreement get labels at different heights
        ax.annotate(f"{row.backend} {row.precision} {row.size}px t{row.threads} b{row.batch}",
                    (row.ms_p50, row.agreement * 100), fontsize=7, xytext=(4, 3 + 8 * (i % 3)),
                    textcoords="offset points", color=colours[row.backend])
    for name in backends:
        ax.scatter([], [], color=colours[name], label=name)
    for precision, marker in markers.items():
        if any(r.precision == precision for r in rows):
            ax.scatter([], [], color="grey", marker=marker, label=precision)
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    if rows:
        low = min(r.agreement for r in rows) * 100
        span = max(2.0, 100 - low)
        ax.set_ylim(max(0, low - 0.1 * span), 100 + 0.12 * span)   # room for the labels
    ax.set_xlabel("model latency per image, p50 (ms, log scale)")
    ax.set_ylabel(f"top-1 agreement with {report.reference['backend']} fp32 "
                  f"{report.reference['size']}px (%)")
    ax.set_title(f"shiwu bench: {report.model} on {report.machine.get('cpu', '')}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if rows:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'shiwu[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def check_plot_available() -> None:
    _pyplot()

