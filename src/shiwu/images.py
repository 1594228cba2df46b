"""Load any image source into an RGB PIL image, or fail with one readable ImageError.

Sources: a path (str or os.PathLike), bytes-like data, a binary file object, a PIL image or a
numpy array. What this module promises, whatever the source:

- EXIF orientation applied, so a phone photo is the right way up;
- phone and camera formats: HEIC/HEIF through pillow-heif, AVIF through Pillow's own decoder
  (pillow-heif's where Pillow has none), RAW (DNG, CR2, CR3, NEF, ARW, ...) through the JPEG
  preview the camera embeds, read by rawpy (the optional ``raw`` extra);
- CMYK, grayscale, 16-bit, float, palette, RGBA (composited on white, not on black), animated
  (first frame) all come out as 8-bit RGB;
- decompression bombs are refused from the header, before any pixel is decoded, so a PNG that
  claims 60000x60000 pixels costs a few bytes of reading, not gigabytes of memory;
- when the caller says how big the image needs to be, JPEGs use draft decoding (the decoder
  scales by 1/2, 1/4 or 1/8 in the DCT domain), so a 12-megapixel photo decodes at close to
  the size the model needs.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError, features

from .errors import ShiwuError

try:  # HEIC is what iPhones (and many Android phones) save by default
    import pillow_heif
except ImportError:  # a core dependency; tolerated missing so a broken install still reads JPEG
    pillow_heif = None
else:
    # pillow-heif applies the HEIF transforms (irot/imir) while decoding and resets the EXIF
    # orientation to 1, so _upright below leaves a HEIC alone: the turn happens exactly once.
    pillow_heif.register_heif_opener()
    if not features.check("avif") and hasattr(pillow_heif, "register_avif_opener"):
        pillow_heif.register_avif_opener()

# The one list of the file names shiwu takes for photos when it walks a folder (batch, index,
# tag, calibrate, eval, gallery). RAW needs the ``raw`` extra; without it such a file is an
# ImageError naming the extra, which is more useful than silently skipping a photographer's RAWs.
RAW_SUFFIXES = frozenset({".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".raf", ".orf", ".rw2", ".pef"})
IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".heic", ".heif", ".hif", ".avif",
}) | RAW_SUFFIXES

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels; a 60000x60000 claim is 36x that

# Let Pillow keep freed image memory for the next image instead of handing it back to the
# kernel: a 12-megapixel photo decoded at full size (the ModelScope model's preprocessing) needs
# 48 MB, and page-faulting fresh memory for every photo costs time. Measured per 12 MP photo,
# interleaved: full decode + box resize 90 -> 64 CPU ms; the ModelScope model's exact
# preprocessing (whole-image resize) 93 -> 86 ms. Draft-decoded photos are small and
# unaffected. At most DECODE_BLOCKS_KEPT x 16 MB stay allocated; a PILLOW_BLOCKS_MAX the user
# set wins.
DECODE_BLOCKS_KEPT = 4
if "PILLOW_BLOCKS_MAX" not in os.environ and Image.core.get_blocks_max() < DECODE_BLOCKS_KEPT:
    Image.core.set_blocks_max(DECODE_BLOCKS_KEPT)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray, io.IOBase]


class ImageError(ShiwuError, ValueError):
    """An input could not be turned into an image. ``str(err)`` names the input and the reason."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")

    def __reduce__(self):
        # pickled with its two arguments: a worker process of multiprocessing sends it back to
        # its parent (without this the pool's result thread died on it and map() never returned)
        return type(self), (self.source, self.reason)


def describe(source: object) -> str:
    """A short human name for a source, used in errors and in results."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.width}x{source.height} {source.mode}>"
    if isinstance(source, np.ndarray):
        return f"<array {'x'.join(map(str, source.shape))} {source.dtype}>"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str) else f"<{type(source).__name__}>"


def load_image(source: ImageSource, *, min_size: int | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Return ``source`` as an 8-bit RGB image.

    ``min_size``: the smallest short side the caller needs; JPEGs may then be decoded at a
    reduced scale that still has at least that many pixels on each side.
    """
    name = describe(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, name, max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, name, max_pixels)
        with _decode_errors(name, max_pixels):
            source.load()  # Image.open() is lazy: a truncated file fails here, an ImageError
            return _to_rgb(_upright(source), name)

    if _is_raw(source):
        return _load_raw(source, name, max_pixels)
    stream = _open_stream(source, name)
    try:
        with warnings.catch_warnings(), _decode_errors(name, max_pixels, stream):
            # Our own, configurable, pixel limit applies below, so Pillow's bomb warning would
            # only be noise; and a damaged file's warnings ("Corrupt EXIF data", "Truncated
            # File Read", found by benchmarks/fuzz_images.py) would print one line per image in
            # a batch. The image either decodes, or fails with an ImageError saying why.
            warnings.simplefilter("ignore")
            image = Image.open(stream)
            _check_pixels(image.size, name, max_pixels)
            if min_size and image.format == "JPEG":
                image.draft("RGB", (min_size, min_size))
            image.load()
            image = _upright(image)
            return _to_rgb(image, name)
    finally:
        if isinstance(source, (str, os.PathLike)):
            stream.close()


@contextmanager
def _decode_errors(name: str, max_pixels: int, stream=None):
    """Pillow's ways of failing on a bad image, as an ImageError naming ``name`` and the reason."""
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses, inside open(), anything over twice Image.MAX_IMAGE_PIXELS before we
        # can look at the size; report it like our own limit.
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(claimed.group(1)):,} pixels" if claimed else "too many pixels"
        raise ImageError(name, f"image too large: {pixels}, limit is {max_pixels:,} "
                               "(possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageError(name, _unidentified_reason(stream)) from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:
        # Pillow reports corrupt data as OSError ("image file is truncated", "broken data
        # stream"), SyntaxError (bad PNG chunks) or ValueError, depending on the codec; its AVIF
        # decoder as RuntimeError ("Failed to decode frame 0", found by tests/images/test_image_fuzz.py).
        raise ImageError(name, f"corrupt or truncated image data ({exc})") from None
    except MemoryError:
        raise ImageError(name, "not enough memory to decode this image") from None


def path_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a photo to open, in the words every command uses, or None for a
    regular file (or a link to one): a FIFO or a device named x.jpg, a folder, a link loop."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link leads back to itself)"
        if os.path.islink(path):
            return "broken symbolic link (its target does not exist)"
        if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
            return "file not found"
        if isinstance(exc, PermissionError):
            return "permission denied"
        return f"cannot read file ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return None


def _open_stream(source, name: str):
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(name, "empty input (0 bytes)")
        return io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        problem = path_problem(path)
        if problem == "file not found" and re.match(r"(?i)(https?|ftp)://", os.fspath(source)):
            problem = "is a URL: shiwu never downloads; save the photo and give its path"
        if problem:
            raise ImageError(name, problem)
        try:
            if path.stat().st_size == 0:
                raise ImageError(name, "empty file (0 bytes)")
            return open(path, "rb")
        except PermissionError:
            raise ImageError(name, "permission denied") from None
        except OSError as exc:
            raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from None
    if isinstance(source, io.TextIOBase):
        raise ImageError(name, "a file opened as text: open it in binary mode (open(path, \"rb\"))")
    if hasattr(source, "read"):
        return source
    raise ImageError(name, f"unsupported input type {type(source).__name__}; "
                           "give a path, bytes, a PIL image or a numpy array")


def _upright(image: Image.Image) -> Image.Image:
    """The image turned the way its EXIF orientation says.

    Most images have no orientation tag, and then this returns the image itself:
    ImageOps.exif_transpose would return a copy, which costs more than decoding a 640x480 JPEG.
    """
    if image.getexif().get(ExifTags.Base.Orientation, 1) in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image


def _unidentified_reason(stream) -> str:
    try:
        stream.seek(0)
        head = stream.read(512)
    except (OSError, ValueError):
        head = b""
    text = head.lstrip().lower()
    if text.startswith(b"<?xml") and b"<svg" in text or text.startswith(b"<svg"):
        return "SVG is a vector format; convert it to PNG or JPEG first"
    if text.startswith((b"<!doctype html", b"<html")):
        return "this is an HTML page, not an image"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        if pillow_heif is None:
            return "HEIC/AVIF needs pillow-heif: pip install pillow-heif"
        return "corrupt or unsupported HEIF/AVIF data"
    return "not a recognised image format"


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(name, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(name, f"image too large: {width}x{height} = {width * height:,} pixels, "
                               f"limit is {max_pixels:,} (possible decompression bomb)")


_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        # premultiplied La converts only to LA (Pillow), and LA to RGBA
        rgba = (image.convert("LA") if mode == "La" else image).convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _SIXTEEN_BIT or mode == "I":
        # Pillow's convert() clips 16-bit values at 255, which turns most photos white. Values
        # that all fit in 8 bits are 8-bit pixels in a wider container (convert("I;16") of a
        # photo): read as 0..255, as floats above 1 are; scaled as 16-bit they were black.
        values = np.asarray(image).astype(np.float64)
        peak = 255.0 if values.max(initial=0) <= 255 else 65535.0
        return _gray_array_to_rgb(values / peak)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 1.0 if np.nanmax(values, initial=0) <= 1.0 else 255.0
        return _gray_array_to_rgb(values / scale)
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(name, f"cannot convert colour mode {mode} to RGB ({exc})") from None


def _gray_array_to_rgb(unit: np.ndarray) -> Image.Image:
    gray = np.clip(np.nan_to_num(unit) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _from_array(array: np.ndarray, name: str, max_pixels: int) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(name, "array must be HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA)")
    _check_pixels((array.shape[1], array.shape[0]), name, max_pixels)
    if array.dtype == np.uint8:
        data = array
    elif np.issubdtype(array.dtype, np.floating):
        # Floats are read as 0..1 images, the convention of scikit-image and matplotlib, unless a
        # value is above 1: then 0..255 (np.asarray(photo).astype(np.float32) made them), as for a
        # Pillow mode-F image; clipped to 0..1 they were a white picture and a nonsense answer
        scale = 255.0 if np.nanmax(array, initial=0) <= 1.0 else 1.0
        data = np.clip(np.nan_to_num(array) * scale + 0.5, 0, 255).astype(np.uint8)
    elif array.dtype == np.uint16:  # 8-bit values in 16-bit storage are 0..255, as in _to_rgb
        data = array.astype(np.uint8) if array.max(initial=0) <= 255 else (array >> 8).astype(np.uint8)
    elif array.dtype == np.bool_:
        data = array.astype(np.uint8) * 255
    else:
        raise ImageError(name, f"unsupported array dtype {array.dtype}")
    image = Image.fromarray(np.ascontiguousarray(data))
    return _to_rgb(image, name)


# Formats no camera RAW starts with: a file named .dng that holds one of these was renamed (or
# exported under the wrong name) and is read by its content, as every other misnamed photo is
_NOT_RAW_STARTS = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM")


def _is_raw(source) -> bool:
    name = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    if not (isinstance(name, (str, os.PathLike)) and Path(name).suffix.lower() in RAW_SUFFIXES):
        return False
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as file:
                return not file.read(4).startswith(_NOT_RAW_STARTS)
        except OSError:
            return True  # _load_raw says what is wrong with it
    return True


# LibRaw's flip codes (raw.sizes.flip) as the PIL transposition that turns the preview upright
_RAW_FLIPS = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def _load_raw(source, name: str, max_pixels: int) -> Image.Image:
    """The camera's embedded JPEG preview: what the camera showed, decoded in milliseconds
    instead of demosaicing 24+ megapixels, and plenty for a model that looks at 224x224."""
    try:
        import rawpy
    except ImportError:
        raise ImageError(name, 'RAW photos need rawpy: pip install "shiwu[raw]"') from None
    if isinstance(source, (str, os.PathLike)):
        _open_stream(source, name).close()  # the same missing / empty / unreadable messages
    try:
        with rawpy.imread(os.fspath(source) if isinstance(source, (str, os.PathLike)) else source) as raw:
            flip = raw.sizes.flip
            thumb = raw.extract_thumb()
    except rawpy.LibRawNoThumbnailError:
        raise ImageError(name, "this RAW file has no embedded preview to recognise") from None
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise ImageError(name, f"corrupt or unsupported RAW file ({type(exc).__name__}: {exc})") from None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            preview = load_image(bytes(thumb.data), max_pixels=max_pixels)
        except ImageError as exc:
            raise ImageError(name, f"embedded preview: {exc.reason}") from None
        has_orientation = Image.open(io.BytesIO(thumb.data)).getexif().get(ExifTags.Base.Orientation, 1) != 1
    else:
        preview = _from_array(np.asarray(thumb.data), name, max_pixels)
        has_orientation = False
    if not has_orientation and flip in _RAW_FLIPS:
        preview = preview.transpose(_RAW_FLIPS[flip])
    return preview
