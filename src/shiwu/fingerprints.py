"""What makes two photo files the same photo without a model: the same bytes, the same decoded
pixels, or the same perceptual hash (the `exact` and `near` tiers of ``shiwu dedupe``).

The perceptual hash is imagehash's pHash: the signs of the lowest 8x8 DCT frequencies of the
photo in grayscale at 32x32, so resizing, re-encoding, a brightness change or turning the photo
grey leave it (almost) unchanged, while a crop or another shot of the scene moves it far.
Measured on the 11 bundled photos (tests/test_dedupe_tiers.py builds the same copies): half
size, JPEG q40 and grayscale copies are 0 bits from their original, 30% brighter 0-6 bits,
80% crops 16-28 bits, two different photos 20 bits or more; NEAR_BITS = 8 sits in the gap.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .images import ImageError, load_image

NEAR_BITS = 8  # of 64: pHash distance up to which two photos are the same photo (`near`)
# Identical pixels can hash a few bits apart: a JPEG is hashed from its draft decode (1/8 scale
# in the DCT) and the same pixels saved as PNG from a full decode (seen: 2 bits). Pairs this
# close are read in full to check; the exact tier is decided by the digests, never by the hash.
EXACT_CANDIDATE_BITS = 4
HASH_SIZE = 8  # imagehash's default: an 8x8 = 64-bit hash
CHUNK = 1 << 20


@dataclass(frozen=True)
class Fingerprint:
    size: int          # bytes: only files of equal size can be byte-identical
    phash: np.ndarray  # 8 packed bytes (64 bits), faiss's binary-vector layout


@dataclass(frozen=True)
class Unreadable:
    """A file that could not be read or decoded: it can only be `similar` to others, and the
    caller names it (a file missing from the exact and near tiers without a word is a wrong
    answer nobody sees)."""
    reason: str


def fingerprint(path: str | os.PathLike) -> Fingerprint | Unreadable:
    """``path`` is the name the OS takes (an IndexRow's ``os_path``): never an identity's
    ``file://`` form, which names no file."""
    import imagehash

    try:
        size = os.path.getsize(path)
        # a hash looks at 32x32 pixels: draft decoding (JPEG at 1/2..1/8) is plenty and fast
        image = load_image(path, min_size=64)
    except OSError as exc:
        return Unreadable(exc.strerror or str(exc))
    except ImageError as exc:
        return Unreadable(exc.reason)
    bits = imagehash.phash(image, hash_size=HASH_SIZE).hash.flatten()
    return Fingerprint(size, np.packbits(bits))


def fingerprints(paths: Sequence[str], threads: int | None = None) -> list[Fingerprint | Unreadable]:
    # decoding releases the GIL: threads keep every core busy on a large library. Warnings are
    # silenced here, once, around every thread: load_image silences Pillow's (its bomb warning
    # under shiwu's own --max-pixels; a damaged file's) with warnings.catch_warnings, which swaps
    # the process's one filter list and is not thread-safe: a thread leaving it put back the list
    # another thread's decode needed, and a 144 MP PNG printed DecompressionBombWarning
    # (instead of only its one "image too large" line)
    with _quiet(), ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(fingerprint, paths))


@contextmanager
def _quiet():
    """Decoding's warnings off: an image either decodes or is Unreadable, saying why."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def file_digest(path: str | os.PathLike) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while block := file.read(CHUNK):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def pixel_digest(path: str | os.PathLike) -> str | None:
    """The decoded pixels at full size (no draft), with their size and mode."""
    from PIL import Image

    try:
        # only files that load_image decoded within shiwu's pixel limit come here (near pairs):
        # Pillow's own bomb warning would be noise
        with _quiet(), Image.open(path) as image:
            image.load()
            header = f"{image.mode} {image.size}".encode()
            return hashlib.sha256(header + image.tobytes()).hexdigest()
    except (OSError, ValueError, SyntaxError, RuntimeError, Image.DecompressionBombError):
        return None


def near_pairs(hashes: np.ndarray, bits: int = NEAR_BITS) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) positions of the pairs of (N, 8) uint8 hashes at most ``bits`` apart, a < b."""
    import faiss

    if len(hashes) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    index = faiss.IndexBinaryFlat(HASH_SIZE * HASH_SIZE)
    hashes = np.ascontiguousarray(hashes, dtype=np.uint8)
    index.add(hashes)
    limits, _, found = index.range_search(hashes, bits + 1)  # radius is exclusive
    queries = np.repeat(np.arange(len(hashes)), np.diff(limits.astype(np.int64)))
    keep = queries < found
    return queries[keep].astype(np.int64), found[keep].astype(np.int64)


def exact_pairs(paths: Sequence[str], prints: Sequence[Fingerprint | Unreadable],
                near_a: np.ndarray, near_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs with the same bytes or the same pixels. Only near pairs whose hashes are at most
    EXACT_CANDIDATE_BITS apart can be either, so only those files are read in full."""
    a_out, b_out = [], []
    digests: dict[tuple[str, int], str | None] = {}

    def digest(kind: str, i: int):
        if (kind, i) not in digests:
            digests[kind, i] = (file_digest if kind == "bytes" else pixel_digest)(paths[i])
        return digests[kind, i]

    for a, b in zip(near_a.tolist(), near_b.tolist()):
        if np.unpackbits(prints[a].phash ^ prints[b].phash).sum() > EXACT_CANDIDATE_BITS:
            continue
        same_bytes = prints[a].size == prints[b].size and digest("bytes", a) is not None \
            and digest("bytes", a) == digest("bytes", b)
        if same_bytes or (digest("pixels", a) is not None and digest("pixels", a) == digest("pixels", b)):
            a_out.append(a)
            b_out.append(b)
    return np.array(a_out, np.int64), np.array(b_out, np.int64)
