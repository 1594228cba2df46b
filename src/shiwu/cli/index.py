"""``shiwu index PATHS... --out INDEX``: embed photos into an index folder or a Milvus store."""

from __future__ import annotations

import json
import sqlite3
import sys

from .options import (EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, add_model_options,
                      check_outputs, count, model_ref, positive_int, require_extra)


def add(commands) -> None:
    index = commands.add_parser(
        "index", help="embed photos into a searchable index (a folder, or Milvus)",
        description="One row per image (path, size, mtime, model, top-1 label; an error for a bad "
                    "file) with its embedding, through the same pipeline as `shiwu batch`. "
                    "Running it again adds new or changed files only; kill -9 loses at most the "
                    "batch in flight. Exit 0 ok, 1 some images failed, 2 usage, 3 the index could not "
                    "be written (disk full: run again after making room), 130 interrupted.")
    index.add_argument("inputs", nargs="+", metavar="PATH", help="folders, file lists or images")
    where = index.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", "-o", metavar="INDEX", help="the index: a folder (created if new)")
    where.add_argument("--store", metavar="URI",
                       help="a Milvus store instead: milvus://HOST:PORT/COLLECTION (or a Milvus Lite PATH.db)")
    index.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders")
    index.add_argument("--resume", action="store_true",
                       help="continue an interrupted run (what every run does: only missing or "
                            "changed files are embedded)")
    index.add_argument("--prune", action="store_true", help="drop the rows of files that no longer exist")
    index.add_argument("--batch-size", type=positive_int, default=32, help="images per batch (default 32)")
    index.add_argument("--workers", "-w", type=count, default=None,
                       help="decode processes (default: one per CPU; 0: in the main process)")
    index.add_argument("--streams", type=positive_int, default=None, help="models side by side (default 2)")
    index.add_argument("--max-pixels", type=positive_int, default=None, help="refuse larger images")
    index.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or ray")
    index.add_argument("--address", default=None, help="Ray cluster to join (auto or HEAD:6379)")
    index.add_argument("--actors", type=positive_int, default=None, help="Ray inference actors")
    index.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    index.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_model_options(index)
    index.set_defaults(run=run)


# as for shiwu batch: the index could not be written half-way (disk full)
EXIT_OUTPUT_FAILED = 3


def _write_failure(exc: BaseException) -> str | None:
    """Why writing failed, if ``exc`` is a full disk or a file size limit (SQLite says "disk
    I/O error" or "database or disk is full"; the vector file's write is an OSError with its
    errno, index.faiss_engine); else None. One short reason, never a library's source line."""
    import errno

    code = getattr(exc, "errno", None)
    text = str(exc).lower()
    if code in (errno.ENOSPC, errno.EDQUOT) or "disk is full" in text:
        return "no space left on the device"
    if code == errno.EFBIG or "too large" in text:
        return "file too large (the file size limit of this system or process)"
    if code == errno.EIO or "disk i/o error" in text:
        return "the disk refused the write (an I/O error; is it full?)"
    return None


def run(args) -> int:
    from ..batch import InputError
    from ..images import DEFAULT_MAX_PIXELS
    from ..index import IndexFormatError, IndexMismatchError
    from ..indexing import IndexingError, build_index

    require_extra("index", args.store)
    # the index is created after the first batch is embedded (it needs the embedding's size):
    # an unwritable --out must fail now, not then (a Milvus --store is checked on connecting)
    check_outputs(args.out, folder=True, parents=True)
    try:
        summary = build_index(
            args.inputs, args.out or args.store, recursive=args.recursive, prune=args.prune,
            model=model_ref(args), backend=args.backend, precision=args.precision, threads=args.threads,
            size=args.size, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, batch_size=args.batch_size,
            workers=args.workers, streams=args.streams, engine=args.engine, address=args.address,
            actors=args.actors, calibration=args.calibration, progress=not args.quiet)
    except (InputError, IndexingError, IndexFormatError, IndexMismatchError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, sqlite3.OperationalError) as exc:
        reason = _write_failure(exc)
        if reason is None:
            raise
        # each batch is one transaction and the vector file is replaced atomically: what was
        # stored before stays, and the next run adds the rest
        print(f"shiwu: error: cannot write the index {args.out or args.store}: {reason}. What "
              "was stored before is intact; make room, then run the same command again",
              file=sys.stderr)
        return EXIT_OUTPUT_FAILED
    print(f"shiwu: {summary.format()}".replace("\n", "\nshiwu: "), file=sys.stderr)
    if args.json:
        print(json.dumps(summary.to_dict(), ensure_ascii=False))
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK
