"""``shiwu dedupe PATHS... | --index INDEX``: groups of near-duplicate photos."""

from __future__ import annotations

import csv
import json
import sys

from .options import EXIT_OK, EXIT_USAGE, add_model_options, fraction, model_ref


def add(commands) -> None:
    from ..index import DEFAULT_DUPLICATE_THRESHOLD

    dedupe = commands.add_parser(
        "dedupe", help="group near-duplicate photos (resized, recompressed, cropped, re-lit copies)",
        description="Each group starts with its representative (the largest file: most likely the "
                    "original). JSON: {\"groups\": [[representative, duplicate, ...], ...]}.")
    dedupe.add_argument("inputs", nargs="*", metavar="PATH", help="folders, file lists or images")
    dedupe.add_argument("--index", "-i", default=None, metavar="INDEX", help="an index built by `shiwu index`")
    dedupe.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders")
    dedupe.add_argument("--threshold", type=fraction, default=None,
                        help=f"cosine similarity that makes two photos copies (default "
                             f"{DEFAULT_DUPLICATE_THRESHOLD}, measured: see README)")
    dedupe.add_argument("--json", action="store_true", help="print the groups as JSON")
    dedupe.add_argument("--csv", metavar="FILE", default=None,
                        help="also write group,image,representative,size rows (UTF-8 with BOM, for spreadsheets)")
    dedupe.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_model_options(dedupe)
    dedupe.set_defaults(run=run)


def run(args) -> int:
    from ..batch import InputError
    from ..display import printable
    from ..index import IndexFormatError, IndexMismatchError
    from ..indexing import IndexingError, duplicate_groups

    if bool(args.inputs) == bool(args.index):
        print("shiwu: error: give photos (PATH...) or --index INDEX, not both", file=sys.stderr)
        return EXIT_USAGE
    try:
        groups = duplicate_groups(location=args.index, inputs=args.inputs, threshold=args.threshold,
                                  recursive=args.recursive, model=model_ref(args), backend=args.backend,
                                  precision=args.precision, threads=args.threads, size=args.size,
                                  progress=not args.quiet)
    except (InputError, IndexingError, IndexFormatError, IndexMismatchError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    paths = [[row.path for row in group] for group in groups]
    if args.json:
        print(json.dumps({"groups": paths}, ensure_ascii=False))
    else:
        for number, group in enumerate(paths, 1):
            print(f"group {number}: {printable(group[0])}")
            for path in group[1:]:
                print(f"  duplicate: {printable(path)}")
        print(f"shiwu: {len(groups)} groups of near-duplicates, {sum(len(g) - 1 for g in groups)} "
              "duplicates", file=sys.stderr)
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8-sig") as f:
            writer = csv.writer(f)
            writer.writerow(["group", "image", "representative", "size"])
            for number, group in enumerate(groups, 1):
                for i, row in enumerate(group):
                    writer.writerow([number, row.path, "yes" if i == 0 else "no", row.size])
    return EXIT_OK
