"""Fuzz shiwu's image decoding with seeded mutations of real JPEG, PNG, WebP, GIF, TIFF, BMP.

    python tests/tools/fuzz_images.py --cases 5000            # the full run
    python tests/tools/fuzz_images.py --cases 200 --start 7000

Every case must give an RGB image or an ``ImageError`` within ``--seconds`` (default 2), in a
process whose address space is capped (``--memory-mb``, default 1024); any other exception,
a time-out, a crash or running out of memory is a finding, printed with the seed to replay it:
``python tests/support/image_mutations.py SEED > case.bin``. The mutations are in
``tests/support/image_mutations.py`` (shared with tests/images/test_image_fuzz.py). Exit status 1 if there was
any finding. Decoding runs in a child process (one for all cases, restarted after a crash).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: support.image_mutations

from support.image_mutations import FORMATS, MUTATIONS, case  # noqa: E402


def _child(requests, answers, memory_mb: int) -> None:
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import numpy as np

    from shiwu.images import ImageError, load_image

    while True:
        seed = requests.get()
        if seed is None:
            return
        _, _, data = case(seed)
        began = time.perf_counter()
        try:
            image = load_image(data, min_size=224)
            np.asarray(image)  # the pixels are really there
            outcome = "image" if image.mode == "RGB" else f"mode {image.mode}"
        except ImageError:
            outcome = "ImageError"
        except BaseException as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
            outcome = f"{type(exc).__name__}: {str(exc)[:120]}"
        answers.put((seed, outcome, time.perf_counter() - began,
                     resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--seconds", type=float, default=2.0, help="limit per case")
    parser.add_argument("--memory-mb", type=int, default=1024, help="address-space cap")
    args = parser.parse_args()

    context = mp.get_context("spawn")
    requests, answers = context.Queue(), context.Queue()

    def start():
        process = context.Process(target=_child, args=(requests, answers, args.memory_mb), daemon=True)
        process.start()
        return process

    child = start()
    table = collections.defaultdict(collections.Counter)  # (format, mutation) -> outcome counts
    findings = []
    slowest = (0.0, None)
    peak_kb = 0
    began = time.perf_counter()
    for seed in range(args.start, args.start + args.cases):
        kind, mutation = FORMATS[seed % len(FORMATS)], MUTATIONS[(seed // len(FORMATS)) % len(MUTATIONS)]
        requests.put(seed)
        try:
            got, outcome, seconds, rss_kb = answers.get(timeout=args.seconds + 30)  # start-up included
            peak_kb = max(peak_kb, rss_kb)
        except Exception:  # noqa: BLE001 - queue.Empty: hung, or the child died
            outcome, seconds = ("crash" if not child.is_alive() else "hang"), float("nan")
            if child.is_alive():
                child.kill()
            child.join()
            requests, answers = context.Queue(), context.Queue()
            child = start()
        else:
            if seconds > args.seconds:
                outcome = f"slow ({seconds:.2f} s)"
            if seconds > slowest[0]:
                slowest = (seconds, seed)
        bucket = outcome if outcome in ("image", "ImageError") else "finding"
        table[(kind, mutation)][bucket] += 1
        if bucket == "finding":
            findings.append((seed, kind, mutation, outcome))
    requests.put(None)
    child.join(timeout=10)
    elapsed = time.perf_counter() - began

    print(f"{args.cases} cases (seeds {args.start}-{args.start + args.cases - 1}) in {elapsed:.1f} s, "
          f"limit {args.seconds:g} s and {args.memory_mb} MB address space per case")
    print(f"{'format':6} {'mutation':9} {'cases':>6} {'image':>6} {'ImageError':>10} {'finding':>8}")
    totals = collections.Counter()
    for kind in FORMATS:
        for mutation in MUTATIONS:
            counts = table[(kind, mutation)]
            n = sum(counts.values())
            if not n:
                continue
            totals.update(counts)
            print(f"{kind:6} {mutation:9} {n:6} {counts['image']:6} {counts['ImageError']:10} "
                  f"{counts['finding']:8}")
    print(f"{'all':16} {sum(totals.values()):6} {totals['image']:6} {totals['ImageError']:10} "
          f"{totals['finding']:8}")
    print(f"peak RSS of the decoding process: {peak_kb / 1024:.0f} MB")
    if slowest[1] is not None:
        print(f"slowest case: seed {slowest[1]}, {slowest[0] * 1000:.0f} ms")
    for seed, kind, mutation, outcome in findings[:50]:
        print(f"FINDING seed {seed} ({kind}, {mutation}): {outcome}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
