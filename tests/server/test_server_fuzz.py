"""Fuzzed image bodies through POST /v1/recognize on a real `shiwu serve` (127.0.0.1): every
mutated file gets an answer, 200 for what decodes and 4xx for what does not, never a 5xx, and
the server stays up. The mutations are tests/support/image_mutations.py's, seeded."""

from __future__ import annotations

import warnings

import httpx
import pytest

from support.image_mutations import FORMATS, MUTATIONS, case
from support.photos import DATA
from shiwu.images import ImageError, load_image
from shiwu.server.process import ServerProcess

BUCKETS = len(FORMATS) * len(MUTATIONS)
CASES = 2 * BUCKETS
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
        "TIFF": "image/tiff", "BMP": "image/bmp", "HEIF": "image/heic", "AVIF": "image/avif"}


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--backend", "torch", "--threads", "1", "--max-batch-size", "4",
                        "--no-access-log"]) as process:
        yield process


def decodes(data: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load_image(data)
        except ImageError:
            return False
    return True


@pytest.mark.slow
def test_mutated_bodies_get_200_or_4xx_never_5xx(server):
    seeds = [7919 * i for i in range(CASES)]  # every (format, mutation) pair twice: 7919 is prime, coprime to BUCKETS
    assert len({s % BUCKETS for s in seeds}) == BUCKETS
    statuses = {}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for number, seed in enumerate(seeds):
            kind, mutation, data = case(seed)
            if number % 2:  # half as multipart uploads, half as raw bodies
                response = client.post("/v1/recognize",
                                       files={"files": (f"case{seed}", data, MIME[kind])})
            else:
                response = client.post("/v1/recognize", content=data,
                                       headers={"content-type": MIME[kind]})
            status = response.status_code
            statuses[seed] = status
            assert status < 500, (seed, kind, mutation, response.text[:300], server.log()[-2000:])
            if decodes(data):
                assert status == 200, (seed, kind, mutation, response.text[:300])
                result = response.json()["results"][0]
                assert result["error"] is None and result["predictions"]
            else:
                assert status in (415, 422), (seed, kind, mutation, status, response.text[:300])
                assert response.json()["detail"]
        # and the server still answers a real photo
        fine = client.post("/v1/recognize", content=(DATA / "coffee.jpg").read_bytes(),
                           headers={"content-type": "image/jpeg"})
        assert fine.status_code == 200 and fine.json()["results"][0]["predictions"][0]["index"] == 967
    assert {s for s in statuses.values()} >= {200, 422}
