"""``shiwu predict IMAGE...``: top labels per image, as a table or JSON Lines."""

from __future__ import annotations

import json
import sys

from ..display import format_predictions
from .options import (EXIT_OK, EXIT_SOME_FAILED, add_gallery_options, add_model_options, model_ref,
                      positive_int)


def add(commands) -> None:
    predict = commands.add_parser("predict", help="recognise images and print their top labels")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument("--topk", "-k", type=positive_int, default=None, help="labels per image (default 5)")
    predict.add_argument("--batch-size", type=positive_int, default=None,
                         help="images per inference batch (default: tuned, else 8)")
    predict.add_argument("--json", action="store_true", help="one JSON object per image (JSON Lines)")
    add_model_options(predict)
    add_gallery_options(predict)
    predict.set_defaults(run=run)


def run(args) -> int:
    from ..display import printable
    from ..filenames import readable_values
    from ..recognizer import Recognizer

    recognizer = Recognizer(model_ref(args), backend=args.backend, precision=args.precision,
                            threads=args.threads, size=args.size, batch_size=args.batch_size,
                            calibration=args.calibration, gallery=args.gallery,
                            gallery_mode=args.gallery_mode, min_similarity=args.min_similarity)
    if args.topk is None:  # the default: up to 5 (fewer where the model has fewer), without a word
        args.topk = 5
    elif args.topk > len(recognizer.labels):  # asked for more than there are: said, as batch says it
        print(f"shiwu: warning: --topk {args.topk} is more than the {len(recognizer.labels)} classes of "
              f"{recognizer.model_name}; printing {len(recognizer.labels)}", file=sys.stderr)
        args.topk = len(recognizer.labels)
    failed = 0
    for result in recognizer.iter_recognize(args.images, topk=args.topk):
        if result.error is not None:
            failed += 1
            print(f"shiwu: {printable(result.error)}", file=sys.stderr)
        if args.json:  # a file name that is not UTF-8: readable text (shiwu.filenames)
            print(json.dumps(readable_values(result.to_dict()), ensure_ascii=False), flush=True)
        elif result.ok:
            print(format_predictions(result), flush=True)
    if failed:
        print(f"shiwu: {failed} of {len(args.images)} images failed", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK
