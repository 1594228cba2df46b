"""Seeded, reproducible mutations of real image files, for fuzzing the decoders.

``case(seed)`` always returns the same bytes for the same seed (and the same Pillow, which
writes the originals): a failing seed from ``tests/tools/fuzz_images.py`` is a test case anyone
can replay with ``case(seed)``.

The originals are real files of eight formats made from a bundled photo (JPEG, PNG, WebP, GIF,
TIFF, BMP, and HEIF and AVIF from the real encoders: pillow-heif's libheif, Pillow's libavif;
each small so that thousands of cases run in minutes). The mutations are the ways
files are damaged or forged in practice:

- ``bitflip``: a few random bits flipped (bad RAM, bad disks, bad transfers);
- ``truncate``: cut at a random offset (interrupted downloads and copies);
- ``splice``: a run of bytes from another file or another place of the same one inserted,
  overwritten or repeated (broken concatenation, chunk confusion);
- ``huge``: the header declares an enormous width and/or height (decompression bombs), with the
  PNG chunk CRC recomputed so the lie passes the first checks;
- ``length``: a length or offset field set to a wrong value (0, tiny, huge, past the end):
  PNG chunk lengths, JPEG segment lengths, the RIFF size of WebP, BMP's pixel offset and
  header size, GIF block sizes, TIFF strip offsets and counts, HEIF/AVIF (ISO BMFF) box sizes.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from functools import lru_cache
from pathlib import Path

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF", "AVIF")
MUTATIONS = ("bitflip", "truncate", "splice", "huge", "length")
PHOTO = Path(__file__).parents[1] / "data" / "chelsea.png"


@lru_cache(maxsize=None)
def originals() -> dict[str, bytes]:
    """One real, valid file per format, made from the same photo."""
    from PIL import Image

    import shiwu.images  # noqa: F401  registers pillow-heif's HEIF writer and reader

    photo = Image.open(PHOTO).convert("RGB")
    photo = photo.resize((96, 64))
    files = {}
    for kind in FORMATS:
        buffer = io.BytesIO()
        if kind == "GIF":
            frames = [photo.quantize(64), photo.rotate(180).quantize(64)]  # animated: two frames
            frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
        elif kind == "TIFF":
            photo.save(buffer, "TIFF", compression="tiff_lzw")
        elif kind in ("JPEG", "HEIF"):  # HEIF: the orientation becomes the irot box
            photo.save(buffer, kind, quality=80, exif=_exif_orientation(6))
        elif kind == "PNG":
            photo.convert("RGBA").save(buffer, "PNG")
        else:
            photo.save(buffer, kind)
        files[kind] = buffer.getvalue()
    return files


def _exif_orientation(value: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = value  # so the EXIF path (ImageOps.exif_transpose) is fuzzed too
    return exif.tobytes()


def case(seed: int) -> tuple[str, str, bytes]:
    """(format, mutation, bytes) for ``seed``; the same seed gives the same case."""
    rng = random.Random(seed)
    kind = FORMATS[seed % len(FORMATS)]
    mutation = MUTATIONS[(seed // len(FORMATS)) % len(MUTATIONS)]
    data = bytearray(originals()[kind])
    return kind, mutation, bytes(MUTATORS[mutation](rng, kind, data))


# --- the mutations ---------------------------------------------------------------------------------

def bitflip(rng: random.Random, kind: str, data: bytearray) -> bytearray:
    for _ in range(rng.choice((1, 2, 4, 8, 32))):
        # headers are where one bit changes the most: half the flips land in the first 64 bytes
        end = min(len(data), 64) if rng.random() < 0.5 else len(data)
        position = rng.randrange(end)
        data[position] ^= 1 << rng.randrange(8)
    return data


def truncate(rng: random.Random, kind: str, data: bytearray) -> bytearray:
    cut = rng.choice((rng.randrange(1, 32), rng.randrange(1, len(data)), len(data) - rng.randrange(1, 16)))
    return data[:max(1, cut)]


def splice(rng: random.Random, kind: str, data: bytearray) -> bytearray:
    donor = data if rng.random() < 0.5 else bytearray(originals()[rng.choice(FORMATS)])
    start = rng.randrange(len(donor))
    piece = donor[start:start + rng.randrange(1, 512)]
    at = rng.randrange(len(data))
    how = rng.choice(("insert", "overwrite", "repeat"))
    if how == "insert":
        return data[:at] + piece + data[at:]
    if how == "overwrite":
        return data[:at] + piece + data[at + len(piece):]
    return data[:at] + data[at:at + 64] * rng.randrange(2, 50) + data[at:]


def _big(rng: random.Random, bits: int) -> int:
    return rng.choice((0, 1, (1 << bits) - 1, 1 << (bits - 1), 60000, 65535, rng.randrange(1 << bits)))


def huge(rng: random.Random, kind: str, data: bytearray) -> bytearray:
    if kind == "PNG":  # IHDR at 8: length, type, width, height ... CRC over type + data
        struct.pack_into(">II", data, 16, _big(rng, 31), _big(rng, 31))
        _fix_png_crc(data, 8)
    elif kind == "JPEG":
        sof = _find_jpeg_marker(data, (0xC0, 0xC1, 0xC2))
        if sof is not None:  # FFCx, length, precision, height, width
            struct.pack_into(">HH", data, sof + 5, _big(rng, 16), _big(rng, 16))
    elif kind == "GIF":  # logical screen, then the first image descriptor
        struct.pack_into("<HH", data, 6, _big(rng, 16), _big(rng, 16))
        descriptor = data.find(b"\x2c", 13 + 3 * 256 if data[10] & 0x80 else 13)
        if descriptor > 0 and rng.random() < 0.7:
            struct.pack_into("<HH", data, descriptor + 5, _big(rng, 16), _big(rng, 16))
    elif kind == "BMP":  # BITMAPINFOHEADER: width, height (signed: negative is top-down)
        struct.pack_into("<ii", data, 18, rng.choice((1, -1)) * _big(rng, 31),
                         rng.choice((1, -1)) * _big(rng, 31))
    elif kind == "TIFF":
        _set_tiff_tag(data, rng, (256, 257), lambda: _big(rng, 32))  # ImageWidth, ImageLength
    elif kind in ("HEIF", "AVIF"):  # ispe box: size, type, version+flags, width, height
        spatial = data.find(b"ispe")
        if spatial > 0:
            struct.pack_into(">II", data, spatial + 8, _big(rng, 32), _big(rng, 32))
    elif kind == "WEBP":
        vp8 = data.find(b"VP8 ")
        if vp8 > 0:  # frame tag (3 bytes), start code (3), then 14-bit width and height
            struct.pack_into("<HH", data, vp8 + 14, _big(rng, 14), _big(rng, 14))
        else:
            vp8l = data.find(b"VP8L")
            if vp8l > 0:  # signature 0x2f, then 14-bit width-1 and height-1 packed
                value = (_big(rng, 14)) | (_big(rng, 14) << 14)
                struct.pack_into("<I", data, vp8l + 9, value)
    return data


def length(rng: random.Random, kind: str, data: bytearray) -> bytearray:
    wrong = rng.choice((0, 1, 2, 7, len(data), len(data) * 2, 0x7FFFFFFF, 0xFFFFFFFF))
    if kind == "PNG":
        chunks = list(_png_chunks(data))
        if chunks:
            offset = rng.choice(chunks)
            struct.pack_into(">I", data, offset, wrong & 0xFFFFFFFF)
            if rng.random() < 0.5:
                _fix_png_crc(data, offset)
    elif kind == "JPEG":
        segments = [i for i in range(2, len(data) - 3)
                    if data[i] == 0xFF and 0xC0 <= data[i + 1] <= 0xFE and data[i + 1] != 0xD8]
        if segments:
            struct.pack_into(">H", data, rng.choice(segments) + 2, wrong & 0xFFFF)
    elif kind == "WEBP":
        field = rng.choice((4, 16))  # RIFF size, first chunk's size
        struct.pack_into("<I", data, field, wrong & 0xFFFFFFFF)
    elif kind == "BMP":
        field = rng.choice((2, 10, 14, 34, 46))  # file size, pixel offset, header size, image size, colours
        struct.pack_into("<I", data, field, wrong & 0xFFFFFFFF)
    elif kind == "GIF":
        blocks = [i for i in range(13, len(data) - 1) if data[i] in (0x21, 0x2C)]
        if blocks:
            at = rng.choice(blocks) + rng.randrange(1, 11)
            if at < len(data):
                data[at] = wrong & 0xFF
    elif kind == "TIFF":  # StripOffsets, RowsPerStrip, StripByteCounts, BitsPerSample
        _set_tiff_tag(data, rng, (273, 278, 279, 258), lambda: wrong)
    elif kind in ("HEIF", "AVIF"):  # the 32-bit size in front of a box's four-letter type
        boxes = [data.find(box) - 4 for box in _BMFF_BOXES if data.find(box) >= 4]
        if boxes:
            struct.pack_into(">I", data, rng.choice(boxes), wrong & 0xFFFFFFFF)
    return data


_BMFF_BOXES = (b"ftyp", b"meta", b"hdlr", b"pitm", b"iloc", b"iinf", b"infe", b"iprp", b"ipco",
               b"ispe", b"ipma", b"mdat", b"hvcC", b"av1C", b"colr", b"pixi", b"irot", b"iref")


MUTATORS = {"bitflip": bitflip, "truncate": truncate, "splice": splice, "huge": huge,
            "length": length}


# --- format helpers --------------------------------------------------------------------------------

def _png_chunks(data: bytearray):
    offset = 8
    while offset + 8 <= len(data):
        yield offset
        (size,) = struct.unpack_from(">I", data, offset)
        offset += 12 + size


def _fix_png_crc(data: bytearray, offset: int) -> None:
    (size,) = struct.unpack_from(">I", data, offset)
    end = offset + 8 + size
    if end + 4 <= len(data):
        struct.pack_into(">I", data, end, zlib.crc32(data[offset + 4:end]) & 0xFFFFFFFF)


def _find_jpeg_marker(data: bytearray, markers) -> int | None:
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        if data[offset + 1] in markers:
            return offset
        (size,) = struct.unpack_from(">H", data, offset + 2)
        offset += 2 + size
    return None


def _set_tiff_tag(data: bytearray, rng: random.Random, tags, value) -> None:
    endian = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(endian + "I", data, 4)
    if ifd + 2 > len(data):
        return
    (entries,) = struct.unpack_from(endian + "H", data, ifd)
    found = []
    for index in range(entries):
        at = ifd + 2 + 12 * index
        if at + 12 > len(data):
            break
        tag, kind = struct.unpack_from(endian + "HH", data, at)
        if tag in tags:
            found.append((at, kind))
    if not found:
        return
    at, kind = rng.choice(found)
    number = value()
    if kind == 3:  # SHORT
        struct.pack_into(endian + "H", data, at + 8, number & 0xFFFF)
    else:
        struct.pack_into(endian + "I", data, at + 8, number & 0xFFFFFFFF)


if __name__ == "__main__":  # python tests/support/image_mutations.py SEED > case.bin: write one case
    import sys

    kind, mutation, blob = case(int(sys.argv[1]))
    print(kind, mutation, len(blob), file=sys.stderr)
    sys.stdout.buffer.write(blob)
