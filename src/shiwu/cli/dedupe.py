"""``shiwu dedupe PATHS... | --index INDEX``: groups of duplicate photos, each with its tier:
exact (same bytes or pixels), near (same photo resized, re-encoded, re-lit, grey), similar
(embeddings above the threshold)."""

from __future__ import annotations

import csv
import io
import json
import sys

from .options import (EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, add_model_options, check_outputs, fraction,
                      model_ref, require_extra, write_output)


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
                    "[[null, tie of each duplicate to the representative, ...], ...], \"unread\": "
                    "[{\"path\", \"reason\"}, ...]} (files that could not be read or decoded: left out "
                    "of the exact and near tiers, each also named on stderr).")
    dedupe.add_argument("inputs", nargs="*", metavar="PATH", help="folders, file lists or images")
    dedupe.add_argument("--index", "-i", default=None, metavar="INDEX", help="an index built by `shiwu index`")
    dedupe.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders")
    dedupe.add_argument("--threshold", type=fraction, default=None,
                        help=f"cosine similarity that makes two photos copies (default "
                             f"{DEFAULT_DUPLICATE_THRESHOLD}, measured: docs/en/embeddings.md)")
    dedupe.add_argument("--json", action="store_true", help="print the groups as JSON")
    dedupe.add_argument("--csv", metavar="FILE", default=None,
                        help="also write group,image,representative,size,tier,match rows (UTF-8 with BOM, for spreadsheets)")
    dedupe.add_argument("--tier", choices=TIERS, default="similar",
                        help="the loosest tie that makes copies: exact, near (no model needed for "
                             "these two), similar (default: all three)")
    dedupe.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_model_options(dedupe)
    dedupe.set_defaults(run=run)


def run(args) -> int:
    from ..batch import InputError
    from ..index import IndexFormatError, IndexMismatchError
    from ..indexing import IndexingError, IndexingInterrupted, duplicate_groups

    if bool(args.inputs) == bool(args.index):  # "not both" only when both were given
        both = ", not both" if args.inputs else ""
        print(f"shiwu: error: give photos (PATH...) or --index INDEX{both}", file=sys.stderr)
        return EXIT_USAGE
    require_extra("dedupe")  # every tier hashes or groups with the index extra
    if args.index:
        require_extra("dedupe", args.index)
    check_outputs(args.csv)  # before the photos are read and embedded, not after
    unread = _Unread(embedded_now=bool(args.inputs))
    try:
        if args.tier != "similar" and args.inputs:
            groups = _without_model(args, unread)
        else:
            groups = duplicate_groups(location=args.index, inputs=args.inputs, threshold=args.threshold,
                                      tier=args.tier, unreadable=unread.row,
                                      recursive=args.recursive, model=model_ref(args), backend=args.backend,
                                      precision=args.precision, threads=args.threads, size=args.size,
                                      progress=not args.quiet)
    except (InputError, IndexingError, IndexFormatError, IndexMismatchError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (IndexingInterrupted, KeyboardInterrupt):
        # groups of part of the library would read as "no other copies": nothing is reported,
        # and an earlier --csv file stays as it was
        print("shiwu: interrupted: no duplicates reported (not every photo was read); run the "
              "same command again", file=sys.stderr)
        return EXIT_INTERRUPTED
    _report(groups, unread.found, args)
    return EXIT_OK


class _Unread:
    """Files that could not be read, so are in no exact or near group: each is named on stderr
    and listed in the JSON (a copy missing without a word is a wrong answer nobody sees)."""

    def __init__(self, embedded_now: bool):
        self.found: list[dict] = []
        self._embedded_now = embedded_now

    def name(self, path: str, reason: str, said: bool = False) -> None:
        from ..display import printable
        from ..filenames import readable

        self.found.append({"path": readable(path), "reason": readable(reason)})
        if not said:
            print(f"shiwu: {printable(path)}: {printable(reason)}: left out of the exact and near tiers",
                  file=sys.stderr)

    def row(self, row, reason: str) -> None:
        """tiered_duplicate_groups' ``unreadable``; a photo that failed while being embedded just
        now had its error said then."""
        self.name(row.path, reason, said=self._embedded_now and not row.ok)


def _without_model(args, unread: _Unread) -> list:
    """exact and near need the files, not embeddings: no model is loaded."""
    from ..batch.sources import InputError, collect_images, no_images_found
    from ..index.dedupe import tiered_duplicate_groups
    from ..index.rows import IndexRow

    rows, paths = [], collect_images(args.inputs, recursive=args.recursive)
    if not paths:  # as the similar tier (and batch, index, tag) says it
        raise InputError(no_images_found(args.inputs, recursive=args.recursive))
    for path in paths:
        try:
            rows.append(IndexRow.for_file(path))
        except OSError as exc:
            unread.name(path, exc.strerror or str(exc))
    return tiered_duplicate_groups(rows, tier=args.tier, threads=args.threads, unreadable=unread.row)


def _report(groups, unread: list[dict], args) -> None:
    from ..display import printable

    paths = [[row.path for row in group.members] for group in groups]
    if args.json:
        print(json.dumps({"groups": paths, "tiers": [g.tier for g in groups],
                          "matches": [g.matches for g in groups], "unread": unread}, ensure_ascii=False))
    else:
        for number, group in enumerate(groups, 1):
            print(f"group {number} ({group.tier}): {printable(group.members[0].path)}")
            for row, match in zip(group.members[1:], group.matches[1:]):
                print(f"  {match}: {printable(row.path)}")
        copies = sum(len(g) - 1 for g in paths)
        print(f"shiwu: {len(groups)} group{'s' * (len(groups) != 1)} of duplicates, {copies} "
              f"duplicate{'s' * (copies != 1)}", file=sys.stderr)
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
