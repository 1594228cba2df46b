"""``shiwu search QUERY... --index INDEX``: the indexed photos closest to each query photo or text."""

from __future__ import annotations

import json
import sys

from ..display import display_width, pad, printable
from .options import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, positive_int, require_extra


def add(commands) -> None:
    from ..backends import BACKENDS, PRECISIONS

    search = commands.add_parser(
        "search", help="find the indexed photos most like a photo (or, with a Chinese-CLIP index, words)",
        description="Per query: {\"image\" or \"text\", \"matches\": [{\"image\", \"score\", \"label\"}], "
                    "\"error\"}; score is the cosine similarity. The model is the index's own.")
    search.add_argument("queries", nargs="*", metavar="QUERY", help="query photos")
    search.add_argument("--index", "-i", required=True, metavar="INDEX",
                        help="an index folder or Milvus store (see `shiwu index`)")
    search.add_argument("--text", action="append", default=[], metavar="WORDS",
                        help="search by text, e.g. --text 海边的日落 (a Chinese-CLIP index; repeatable)")
    search.add_argument("--topk", "-k", type=positive_int, default=10, help="matches per query (default 10)")
    search.add_argument("--json", action="store_true", help="one JSON object per query (JSON Lines)")
    search.add_argument("--backend", "-b", default=None, choices=BACKENDS, help="runtime for the query photos")
    search.add_argument("--precision", "-p", default=None, choices=PRECISIONS)
    search.add_argument("--threads", "-t", type=positive_int, default=None)
    search.add_argument("--trust-model-code", action="store_true",
                        help="allow unpickling the index's model if it is a whole pickled model "
                             "(runs code from that file; an index's own files never grant this)")
    search.set_defaults(run=run)


def run(args) -> int:
    from ..index import IndexFormatError, IndexMismatchError
    from ..indexing import IndexingError, search

    if not args.queries and not args.text:
        print("shiwu: error: give query photos, or --text WORDS", file=sys.stderr)
        return EXIT_USAGE
    require_extra("search", args.index)
    try:
        results = search(args.index, images=args.queries, texts=args.text, topk=args.topk,
                         backend=args.backend, precision=args.precision, threads=args.threads,
                         trust_model_code=args.trust_model_code)
    except (IndexingError, IndexFormatError, IndexMismatchError, FileNotFoundError) as exc:
        print(f"shiwu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    failed = 0
    for result in results:
        if result["error"]:
            failed += 1
            print(f"shiwu: {printable(result['image'])}: {printable(result['error']['message'])}",
                  file=sys.stderr)
        if args.json:
            print(json.dumps(result, ensure_ascii=False), flush=True)
        elif not result["error"]:
            print(format_matches(result), flush=True)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def format_matches(result: dict) -> str:
    query = printable(result.get("image") or f"“{result.get('text')}”")
    lines = [query]
    labels = [printable(m["label"] or "") for m in result["matches"]]
    width = max((display_width(label) for label in labels), default=0)
    for rank, (match, label) in enumerate(zip(result["matches"], labels), 1):
        lines.append(f"  {rank:>2}. {match['score']:.3f}  {pad(label, width)}  {printable(match['image'])}")
    if not result["matches"]:
        lines.append("  (the index is empty)")
    return "\n".join(lines)
