"""``shiwu doctor``: the CPU, threads, versions, backends and remembered settings."""

from __future__ import annotations

import json

from .options import EXIT_OK


def add(commands) -> None:
    doctor = commands.add_parser("doctor", help="show the CPU, threads, versions and available backends")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(run=run)


def run(args) -> int:
    from ..doctor import format_report, report

    info = report()
    print(json.dumps(info, ensure_ascii=False, indent=2) if args.json else format_report(info))
    return EXIT_OK
