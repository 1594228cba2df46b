"""How well each label-free measure predicts the true top-1 drop, from a precision_accuracy run.

`precision_accuracy.py` measures, for every runtime x precision x input size, the true drop on
labelled photos and every label-free measure shiwu considered (on the 108 bundled views every
machine has, and on the labelled photos themselves). This script reads that run's JSON (no model
is run) and prints, per measure: the mean absolute error against the true drop (points), the
correlation, how many settings get the true drop's verdict at 1% (accept when the measure is at
most 1%), and how many settings that truly lose more than 1% it would accept. The fp32 rows at
each model's own size (the baseline, drop 0 by definition) are left out. Usage:

    python benchmarks/estimator_summary.py [benchmarks/results/precision_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import print_table, record_run, results_dir  # noqa: E402

LIMIT = 0.01
# (name, computed on, the value compared with the true drop, from a row; None: no such value)
MEASURES = [
    ("fp32-probability estimate (shiwu's)", "108 bundled views", lambda r: r["estimate_bundled"]),
    ("fp32-probability estimate", "labelled photos", lambda r: r["estimate_dev"]),
    ("1 - top-1 agreement", "108 bundled views", lambda r: 1 - r["agreement_bundled"]),
    ("(1 - top-1 agreement) / 2", "labelled photos", lambda r: (1 - r["agreement_dev"]) / 2),
    ("1 - fp32 top-1 kept in top-5", "108 bundled views", lambda r: 1 - r["top1_in_top5_bundled"]),
    ("1 - agreement where fp32 is sure (p >= 0.5)", "108 bundled views",
     lambda r: 1 - r["confident_agreement_bundled"]),
    ("KL divergence (not a drop: error not shown)", "108 bundled views", lambda r: r["kl_bundled"]),
]


def judged_rows(report: dict) -> list[dict]:
    """The settings with a drop to predict: all but fp32 at each model's own (largest) size."""
    own = {}
    for r in report["rows"]:
        own[r["model"]] = max(own.get(r["model"], 0), r["size"])
    return [r for r in report["rows"] if not (r["precision"] == "fp32" and r["size"] == own[r["model"]])]


def summary(rows: list[dict]) -> list[list]:
    true = np.array([r["drop"] for r in rows])
    table = []
    for name, on, value in MEASURES:
        measure = np.array([value(r) for r in rows], dtype=float)
        error = "–" if name.startswith("KL") else f"{np.mean(np.abs(measure - true)) * 100:.1f}"
        accepts = measure <= LIMIT
        table.append([name, on, error, f"{np.corrcoef(measure, true)[0, 1]:.2f}",
                      f"{int(np.sum(accepts == (true <= LIMIT)))} / {len(rows)}",
                      int(np.sum(accepts & (true > LIMIT)))])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=results_dir() / "precision_accuracy.json")
    args = parser.parse_args()
    report = json.loads(args.results.read_text(encoding="utf-8"))
    rows = judged_rows(report)
    print(f"{len(rows)} settings of `{report['command']}` ({report['measured_at']}, {report['machine']['cpu']}); "
          f"verdicts at a {LIMIT:.0%} drop")
    print_table(["label-free measure", "computed on", "mean abs. error vs true drop (points)", "correlation",
                 f"same verdict as the true drop at {LIMIT:.0%}", "failing settings it would accept"],
                summary(rows))


if __name__ == "__main__":
    sys.exit(record_run("estimator_summary", main))
