"""``shiwu dedupe PATHS... | --index INDEX``: groups of duplicate photos, each with its tier:
exact (same bytes or pixels), near (same photo resized, re-encoded, re-lit, grey), similar
(embeddings above the threshold)."""

from __future__ import annotations

import csv
import io
import json
import sys

from .options import EXIT_OK, EXIT_USAGE, add_model_options, check_outputs, fraction, model_ref, write_output


TIERS = ("exact", "near", "similar")


def add(commands) -> None:
    from ..index import DEFAULT_DUPLICATE_THRESHOLD

    dedupe = commands.add_parser(
        "dedupe", help="group duplicate photos: exact copies, near copies, similar shots",
        description="Each group starts with its representative (the largest file: most likely the "
                    "original) and has a tier: exact (same bytes or pixels), near (the same photo "
                    "resized, re-encoded, re-lit or grey: perceptual hash), similar (embeddings "
                    "above --threshold: crops, bursts, the same scene). JSON: {\"groups\": "
                    "[[representative, duplicate, ...], ...], \"tiers\": [tier, ...], \"matches\": "
                    "[[null, tie of each duplicate to the representative, ...], ...]}.")
    dedupe.add_argument("inputs", nargs="*", metavar="PATH", help="folders, file lists or images")
    dedupe.add_argument("--index", "-i", default=None, metavar="INDEX", help="an index built by `shiwu index`")
    dedupe.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders")
    dedupe.add_argument("--threshold", type=fraction, default=None,
                        help=f"cosine similarity that makes two photos copies (default "
                             f"{DEFAULT_DUPLICATE_THRESHOLD}, measured: see README)")
    dedupe.add_argument("--json", action="store_true", help="print the groups as JSON")
    dedupe.add_argument("--csv", metavar="FILE", default=None,
                        help="also write group,image,representative,size rows (UTF-8 with BOM, for spreadsheets)")
    dedupe.add_argument("--tier", choices=TIERS, default="similar",
                        help="the loosest tie that makes copies: exact, near (no model needed for "
                             "these two), similar (default: all three)")
    dedupe.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_model_options(dedupe)
    dedupe.set_defaults(run=run)


def run(args) -> int:
    from ..batch import InputError
    from ..index import IndexFormatError, IndexMismatchError
    from ..indexing import IndexingError, duplicate_groups

    if bool(args.inputs) == bool(args.index):  # "not both" only when both were given
        both = ", not both" if args.inputs else ""
        print(f"shiwu: error: give photos (PATH...) or --index INDEX{both}", file=sys.stderr)
        return EXIT_USAGE
    check_outputs(args.csv)  # before the photos are read and embedded, not after
    try:
        if args.tier != "similar" and args.inputs:
            groups = _without_model(args)
        else:
            groups = duplicate_groups(location=args.index, inputs=args.inputs, threshold=args.threshold,
                                      tier=args.tier,
                                      recursive=args.recursive, model=model_ref(args), backend=args.backend,
                                      precision=args.precision, threads=args.threads, size=args.size,
                                      progress=not args.quiet)
    except (InputError, IndexingError, IndexFormatError, IndexMismatchError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _report(groups, args)
    return EXIT_OK


def _without_model(args) -> list:
    """exact and near need the files, not embeddings: no model is loaded."""
    from ..batch.sources import collect_images
    from ..index.dedupe import tiered_duplicate_groups
    from ..index.rows import IndexRow

    rows = []
    for path in collect_images(args.inputs, recursive=args.recursive):
        try:
            rows.append(IndexRow.for_file(path))
        except OSError as exc:
            print(f"shiwu: {path}: {exc.strerror or exc}", file=sys.stderr)
    return tiered_duplicate_groups(rows, tier=args.tier, threads=args.threads)


def _report(groups, args) -> None:
    from ..display import printable

    paths = [[row.path for row in group.members] for group in groups]
    if args.json:
        print(json.dumps({"groups": paths, "tiers": [g.tier for g in groups],
                          "matches": [g.matches for g in groups]}, ensure_ascii=False))
    else:
        for number, group in enumerate(groups, 1):
            print(f"group {number} ({group.tier}): {printable(group.members[0].path)}")
            for row, match in zip(group.members[1:], group.matches[1:]):
                print(f"  {match}: {printable(row.path)}")
        print(f"shiwu: {len(groups)} groups of duplicates, {sum(len(g) - 1 for g in paths)} "
              "duplicates", file=sys.stderr)
    if args.csv:
        text = io.StringIO(newline="")
        text.write("\ufeff")  # the BOM: spreadsheets then read the file as UTF-8
        writer = csv.writer(text)
        writer.writerow(["group", "image", "representative", "size", "tier", "match"])
        for number, group in enumerate(groups, 1):
            for i, (row, match) in enumerate(zip(group.members, group.matches)):
                writer.writerow([number, row.path, "yes" if i == 0 else "no", row.size, group.tier,
                                 match or ""])
        write_output(args.csv, text.getvalue())  # whole or not at all
