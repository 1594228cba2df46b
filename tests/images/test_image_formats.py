"""Phone and camera formats: HEIC and AVIF written by the real encoders (pillow-heif, Pillow's
libavif), EXIF orientation applied exactly once, the same pixel limit and per-file errors; RAW
through rawpy (a real DNG written by pidng); one list of photo suffixes for every folder walk."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiwu.images import IMAGE_SUFFIXES, RAW_SUFFIXES, ImageError, load_image

PHOTO = "tests/data/chelsea.png"


def _two_colour(width=40, height=20) -> Image.Image:
    """Blue left half, red right half: after a 90° clockwise turn blue is on top."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, width // 2, height))
    return image


def _encode(image: Image.Image, kind: str, orientation: int | None = None, **options) -> bytes:
    buffer = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("kind, brand", [("HEIF", b"ftyphei"), ("AVIF", b"ftypavi")])
def test_heic_and_avif_decode(tmp_path, kind, brand):
    photo = Image.open(PHOTO).convert("RGB")
    data = _encode(photo, kind, quality=90)
    assert data[4:11] == brand  # the real container, not a renamed JPEG
    path = tmp_path / f"photo.{'heic' if kind == 'HEIF' else 'avif'}"
    path.write_bytes(data)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == photo.size
    difference = np.abs(np.asarray(image, np.int16) - np.asarray(photo, np.int16)).mean()
    assert difference < 6  # lossy, but the same photo


@pytest.mark.parametrize("kind", ["HEIF", "AVIF", "JPEG"])
@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_orientation_is_applied_exactly_once(kind, orientation):
    data = _encode(_two_colour(), kind, orientation, quality=95)
    pixels = np.asarray(load_image(data), np.int16)
    blue, red = np.array([0, 0, 255]), np.array([255, 0, 0])
    if orientation == 3:  # 180°: blue on the right
        assert pixels.shape[:2] == (20, 40)
        near_blue, near_red = pixels[10, 35], pixels[10, 5]
    else:  # 6: clockwise, blue on top; 8: counter-clockwise, blue at the bottom
        assert pixels.shape[:2] == (40, 20)
        top, bottom = pixels[5, 10], pixels[35, 10]
        near_blue, near_red = (top, bottom) if orientation == 6 else (bottom, top)
    assert np.abs(near_blue - blue).max() < 40 and np.abs(near_red - red).max() < 40


@pytest.mark.parametrize("kind", ["HEIF", "AVIF"])
def test_pixel_limit_and_damage_are_image_errors(tmp_path, kind):
    data = _encode(Image.new("RGB", (300, 200), (9, 9, 9)), kind)
    with pytest.raises(ImageError, match="image too large: 300x200"):
        load_image(data, max_pixels=10_000)
    broken = tmp_path / "broken.heic"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as caught:
        load_image(broken)
    assert str(caught.value).startswith(str(broken))


def _dng(path, width=64, height=48):
    """A real DNG from pidng (a CFA raw without a preview: pidng writes none)."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import (CalibrationIlluminant, CFAPattern, DNGVersion, Orientation,
                            PhotometricInterpretation)

    raw = np.random.default_rng(0).integers(0, 4095, (height, width)).astype(np.uint16)
    tags = DNGTags()
    for tag, value in [(Tag.ImageWidth, width), (Tag.ImageLength, height), (Tag.TileWidth, width),
                       (Tag.TileLength, height), (Tag.Orientation, Orientation.Horizontal),
                       (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
                       (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 12), (Tag.CFARepeatPatternDim, [2, 2]),
                       (Tag.CFAPattern, CFAPattern.BGGR), (Tag.WhiteLevel, 4095), (Tag.BlackLevel, 0),
                       (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]),
                       (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
                       (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]), (Tag.DNGVersion, DNGVersion.V1_4),
                       (Tag.Make, "Test"), (Tag.Model, "Camera")]:
        tags.set(tag, value)
    writer = RAW2DNG()
    writer.options(tags, path=str(path.parent), compress=False)
    writer.convert(raw, filename=path.stem)
    return path


def test_raw_is_read_by_libraw_and_a_raw_without_preview_says_so(tmp_path):
    path = _dng(tmp_path / "camera.dng")
    import rawpy

    with rawpy.imread(str(path)) as raw:  # LibRaw takes it for a camera raw
        assert raw.raw_image.shape == (48, 64)
    with pytest.raises(ImageError, match="no embedded preview"):
        load_image(path)
    # Pillow alone would have read this TIFF-based file as a 64x48 grey image: the suffix routes it
    (tmp_path / "fake.nef").write_bytes(b"not a raw file at all" * 10)
    with pytest.raises(ImageError, match="corrupt or unsupported RAW"):
        load_image(tmp_path / "fake.nef")
    # a JPEG or PNG under a RAW name (renamed, or exported under the wrong name) is read by its
    # content, as every other misnamed photo is: it was "corrupt or unsupported RAW file"
    coffee = Path(__file__).parents[1] / "data" / "coffee.jpg"
    png = io.BytesIO()
    Image.open(coffee).save(png, "PNG")
    for name, data in (("coffee.dng", coffee.read_bytes()), ("coffee.nef", png.getvalue())):
        (tmp_path / name).write_bytes(data)
        assert np.array_equal(np.asarray(load_image(tmp_path / name)), np.asarray(load_image(coffee)))


def test_without_rawpy_a_raw_file_names_the_extra(tmp_path):
    path = _dng(tmp_path / "camera.dng")
    code = ("import sys; sys.modules['rawpy'] = None\n"
            "from shiwu.images import load_image, ImageError\n"
            f"try: load_image({str(path)!r})\n"
            "except ImageError as e: print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "shiwu[raw]"' in out and "camera.dng" in out


def test_one_suffix_list_for_every_folder_walk(tmp_path):
    from shiwu import calibrate
    from shiwu.batch import sources

    for suffix in (".heic", ".heif", ".avif", ".dng", ".cr2", ".cr3", ".nef", ".arw"):
        assert suffix in IMAGE_SUFFIXES
    assert RAW_SUFFIXES <= IMAGE_SUFFIXES
    assert sources.IMAGE_EXTENSIONS is IMAGE_SUFFIXES and calibrate.IMAGE_SUFFIXES is IMAGE_SUFFIXES
    for name in ("a.HEIC", "b.avif", "c.jpg", "d.dng"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert sorted(p.name for p in calibrate.photos_in(tmp_path)) == ["a.HEIC", "b.avif", "c.jpg", "d.dng"]
    assert len(sources.collect_images([str(tmp_path)])) == 4
