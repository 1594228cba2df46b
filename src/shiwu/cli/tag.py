"""``shiwu tag PATH...``: recognised labels written as keywords photo tools read (XMP sidecars by
default, or embedded with --in-place), merged with the keywords already there."""

from __future__ import annotations

import json
import sys

from .options import (EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, add_gallery_options, add_model_options,
                      fraction, list_of, model_ref, positive_int)

LANGUAGES = ("zh", "en")


def add(commands) -> None:
    tag = commands.add_parser(
        "tag", help="write the labels as keywords (XMP sidecars, or embedded) for digiKam, Lightroom, immich",
        description="Writes each photo's labels (score >= --min-score, at most --topk) as XMP "
                    "dc:subject (the label) and lr:hierarchicalSubject (识物|label), merged with "
                    "the keywords already there. Needs exiftool. Exit codes: 0 every photo done, "
                    "1 some photos failed (each named on stderr), 2 usage (bad option, missing "
                    "path, exiftool not installed), 130 interrupted (run again to continue).")
    tag.add_argument("inputs", nargs="+", metavar="PATH", help="photos, folders or file lists")
    tag.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders")
    tag.add_argument("--min-score", type=fraction, default=0.3,
                     help="the score a label needs to become a keyword (default 0.3)")
    tag.add_argument("--topk", "-k", type=positive_int, default=3, help="at most this many labels (default 3)")
    tag.add_argument("--in-place", action="store_true",
                     help="embed the keywords in the photo (JPEG, PNG, WebP, HEIC, AVIF, TIFF; IPTC Keywords "
                          "too for JPEG) instead of writing a sidecar")
    tag.add_argument("--sidecar-name", choices=("full", "base"), default="full",
                     help="full: photo.jpg.xmp (digiKam, darktable, immich; default); base: photo.xmp (Lightroom)")
    tag.add_argument("--remove", action="store_true",
                     help="take out shiwu's keywords (the ones under 识物|), leave every other keyword")
    tag.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")
    tag.add_argument("--lang", type=list_of(str, LANGUAGES), default=["zh"], metavar="zh|zh,en",
                     help="keyword languages: zh (default), or zh,en to add the English label too")
    tag.add_argument("--json", action="store_true", help="one JSON object per photo (JSON Lines)")
    add_model_options(tag)
    add_gallery_options(tag)
    tag.set_defaults(run=run)


def run(args) -> int:
    from ..batch.sources import InputError, collect_images, no_images_found
    from ..tagging import ExifTool, ExifToolMissing, Journal, TagSettings, tag_photos

    try:
        photos = collect_images(args.inputs, recursive=args.recursive)
        if not photos:  # as batch, index and dedupe say it
            raise InputError(no_images_found(args.inputs, recursive=args.recursive))
    except InputError as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = TagSettings(min_score=args.min_score, topk=args.topk, in_place=args.in_place,
                           sidecar_name=args.sidecar_name, remove=args.remove, dry_run=args.dry_run,
                           languages=tuple(args.lang))
    try:
        tool = ExifTool()
    except ExifToolMissing as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    recognize = journal = None
    if not args.remove:
        recognize = _recognizer(args)
        journal = Journal(settings.journal_key(_model_key(args)))
    from ..batch.stopping import StopFlag

    counts = {"changed": 0, "unchanged": 0, "failed": 0}
    # Ctrl-C or SIGTERM (as batch and index): the photo being written is finished, then the
    # summary; a second Ctrl-C stops at once (every write is a rename: nothing is half-written)
    stop = StopFlag(lambda message: print(message, file=sys.stderr, flush=True), unit="photo")
    stop.install()
    interrupted = False
    try:
        with tool:
            try:
                for row in tag_photos(photos, settings, tool, recognize=recognize, journal=journal,
                                      should_stop=stop):
                    counts["failed" if row.error else "changed" if row.changed else "unchanged"] += 1
                    _show(row, args)
            finally:
                if journal is not None:
                    journal.close()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.restore()
    done = sum(counts.values())
    interrupted = interrupted or (stop() and done < len(photos))
    verb = "would change" if args.dry_run else "removed from" if args.remove else "tagged"
    print(f"shiwu: {len(photos)} photos: {verb} {counts['changed']}, unchanged {counts['unchanged']}, "
          f"failed {counts['failed']}", file=sys.stderr)
    if interrupted:
        print(f"shiwu: interrupted: {len(photos) - done} photos left; run the same command again to "
              "continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK


def _recognizer(args):
    from ..recognizer import Recognizer

    built = []  # built on first use: a resumed run whose photos are all done loads no model

    def recognize(paths):
        if not built:
            built.append(Recognizer(model_ref(args), backend=args.backend, precision=args.precision,
                                    threads=args.threads, size=args.size, calibration=args.calibration,
                                    gallery=args.gallery, gallery_mode=args.gallery_mode,
                                    min_similarity=args.min_similarity))
        return built[0].iter_recognize(paths, topk=args.topk)
    return recognize


def _model_key(args) -> str:
    """What decides the labels, so a journal entry of another model or gallery is not reused."""
    from dataclasses import asdict

    return json.dumps({"model": asdict(model_ref(args)), "gallery": args.gallery, "mode": args.gallery_mode,
                       "min_similarity": args.min_similarity, "precision": args.precision,
                       "size": args.size}, sort_keys=True, default=str, ensure_ascii=False)


def _show(row, args) -> None:
    from ..display import printable

    # names as the OS gives them may not be UTF-8 (GBK): printed readable, never a crash
    if row.error:
        print(f"shiwu: {printable(row.error)}", file=sys.stderr)
    if args.json:  # to_dict: valid text, names in both forms (shiwu.filenames)
        print(json.dumps(row.to_dict(), ensure_ascii=False), flush=True)
    elif row.changed:
        changes = " ".join([f"+{printable(k)}" for k in row.added] + [f"-{printable(k)}" for k in row.removed])
        prefix = "would change " if row.dry_run else ""
        print(f"{prefix}{printable(row.target)}: {changes}", flush=True)
