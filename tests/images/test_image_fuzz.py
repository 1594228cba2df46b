"""Fuzzed images: 300 seeded mutations (bit flips, truncation, splicing, huge declared sizes,
wrong lengths) of real JPEG, PNG, WebP, GIF, TIFF, BMP, HEIF and AVIF files. Each decodes to an RGB image or
fails with an ImageError, within 2 s; no other exception escapes. The full run (5000 cases, each
in a memory-capped process) is `python tests/tools/fuzz_images.py --cases 5000`."""

from __future__ import annotations

import warnings
from datetime import timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.image_mutations import FORMATS, MUTATIONS, case, originals
from shiwu.images import ImageError, load_image
import pytest

BUCKETS = len(FORMATS) * len(MUTATIONS)  # seed % 40 picks the format and the mutation
# seeds spread over every (format, mutation) pair, the same ones on every run (derandomize)
seeds = st.builds(lambda bucket, n: n * BUCKETS + bucket,
                  st.integers(0, BUCKETS - 1), st.integers(0, 100_000))


def test_the_originals_are_real_files_of_each_format():
    from PIL import Image
    import io

    for kind, data in originals().items():
        assert Image.open(io.BytesIO(data)).format == kind
        assert load_image(data).size in ((96, 64), (64, 96))  # EXIF-rotated JPEG is 64x96


def test_mutations_are_reproducible():
    assert [case(s) for s in range(60)] == [case(s) for s in range(60)]
    assert {(k, m) for k, m, _ in map(case, range(BUCKETS))} == {
        (k, m) for k in FORMATS for m in MUTATIONS}


@settings(max_examples=300, derandomize=True, deadline=timedelta(seconds=2), database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds)
@pytest.mark.slow
def test_a_mutated_image_decodes_or_fails_with_image_error_in_time(seed):
    kind, mutation, data = case(seed)
    with warnings.catch_warnings():
        # nothing but the result or the ImageError: Pillow's "Corrupt EXIF data" and the like
        # would be one stderr line per damaged image in a batch
        warnings.simplefilter("error")
        try:
            image = load_image(data, min_size=224)
        except ImageError as exc:
            assert exc.reason  # a reason a person can read
            return
    assert image.mode == "RGB" and image.width > 0 and image.height > 0
    assert np.asarray(image).shape == (image.height, image.width, 3)


CHILD = """
import collections, json, resource, sys, warnings
limit = 1024 * 2**20  # 1 GiB of address space: a forged size that needs more fails here
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
from support.image_mutations import case
from shiwu.images import ImageError, load_image
outcomes, other = collections.Counter(), []
for seed in range(300):
    try:
        load_image(case(seed)[2], min_size=224).load()
        outcomes["image"] += 1
    except ImageError:
        outcomes["ImageError"] += 1
    except BaseException as exc:
        other.append((seed, type(exc).__name__, str(exc)[:100]))
# VmHWM, this process's own peak: ru_maxrss would also count the parent's RSS at the fork (Linux
# folds the old memory's high-water mark into it across exec), here the whole pytest session
status = open("/proc/self/status").read()
peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"outcomes": outcomes, "other": other, "peak_mb": peak}))
"""


def test_fuzzed_images_decode_within_bounded_memory():
    """The same kind of cases in a process capped at 1 GiB of address space: a MemoryError (or
    anything but an image or an ImageError) there is a forged size that got through."""
    import json
    import os
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", CHILD, os.path.dirname(os.path.dirname(__file__))],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["other"] == [], report["other"]
    assert sum(report["outcomes"].values()) == 300 and report["outcomes"]["ImageError"] > 0
    assert report["peak_mb"] < 1024, report["peak_mb"]
