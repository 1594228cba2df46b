"""Shared by the `shiwu tag` tests: real photos in every embeddable format, exiftool as the
independent reader, and a stand-in for the recognizer where a test is about writing, not naming."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

import shiwu.images  # noqa: F401  registers pillow-heif's HEIF writer
from shiwu.postprocess import Prediction

DATA = Path(__file__).parents[1] / "data"
FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "heic": "HEIF", "avif": "AVIF", "tif": "TIFF"}


def make_photo(path: Path, source: str = "chelsea.png", *, exif: bool = True) -> Path:
    image = Image.open(DATA / source).convert("RGB").resize((160, 120))
    options = {}
    if exif:
        tags = Image.Exif()
        tags[0x010F] = "Canon"       # Make
        tags[0x0110] = "EOS 5D"      # Model
        tags[0x0131] = "shiwu test"  # Software
        options["exif"] = tags.tobytes()
    kind = FORMATS[path.suffix.lstrip(".").lower()]
    image.save(path, kind, **options)
    return path


def exiftool(*args: str) -> dict:
    out = subprocess.run(["exiftool", "-j", "-G1", "-n", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout, parse_float=str, parse_int=str)[0]  # "1.50" stays "1.50"


def keywords(path: Path) -> dict:
    row = exiftool("-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", "-IPTC:Keywords", str(path))
    as_list = lambda v: [] if v is None else [str(x) for x in (v if isinstance(v, list) else [v])]  # noqa: E731
    return {"subject": as_list(row.get("XMP-dc:Subject")),
            "hierarchy": as_list(row.get("XMP-lr:HierarchicalSubject")),
            "iptc": as_list(row.get("IPTC:Keywords"))}


def other_metadata(path: Path) -> dict:
    """Every tag but the file system's, the keywords and what a write changes by itself."""
    skip = {"SourceFile", "XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "IPTC:Keywords"}
    effects = {"CurrentIPTCDigest", "XMPToolkit", "ApplicationRecordVersion", "EnvelopeRecordVersion",
               "CodedCharacterSet", "StripOffsets", "MediaData", "MediaDataSize", "MediaDataOffset"}
    found = {k: v for k, v in exiftool("-a", "-u", str(path)).items()
             if k not in skip and not k.startswith(("System:", "ExifTool:")) and k.split(":")[-1] not in effects}
    if "RIFF:WebP_Flags" in found:
        # VP8X's "has XMP" bit; ICC, alpha, EXIF bits must stay
        found["RIFF:WebP_Flags"] = int(found["RIFF:WebP_Flags"]) & ~0x04
    return found


def pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.tobytes()


def fixed_labels(mapping: dict[str, list[tuple[str, float]]], default=(("猫", 0.9),)):
    """recognize(paths) for tag_photos: each photo's labels from ``mapping`` by file name."""
    def recognize(paths):
        for path in paths:
            pairs = mapping.get(Path(path).name, default)
            yield SimpleNamespace(error=None, predictions=[
                Prediction(label, f"en-{label}", i, score) for i, (label, score) in enumerate(pairs)])
    return recognize
