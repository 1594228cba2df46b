import io
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from shiwu import images
from shiwu.images import ImageError, load_image

from support.bad_images import BAD_FILES, make_bad_files, png_claiming
from support.photos import DATA


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_every_source_kind_gives_the_same_rgb_pixels():
    path = DATA / "chelsea.png"
    from_path = load_image(path)
    assert from_path.mode == "RGB" and from_path.size == (451, 300)
    data = path.read_bytes()
    for source in (str(path), data, bytearray(data), memoryview(data), io.BytesIO(data),
                   Image.open(path), np.asarray(from_path)):
        image = load_image(source)
        assert image.mode == "RGB"
        assert np.array_equal(np.asarray(image), np.asarray(from_path))


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    loaded = load_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.size == (20, 40)
    top, bottom = np.asarray(loaded)[2, 10], np.asarray(loaded)[37, 10]
    assert top[0] > 200 and top[2] < 60      # red on top after rotating clockwise
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(tmp_path, orientation):
    # A photo (no symmetry, so every turn and flip shows), stored with each EXIF orientation:
    # from a file, from bytes and as an opened PIL image, the result is what Pillow's own
    # exif_transpose makes of it (the no-tag fast path must not skip a real rotation or flip).
    photo = Image.open(DATA / "astronaut.jpg").convert("RGB").resize((64, 48))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo, "PNG", exif=exif.tobytes())
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert expected.shape[:2] == ((64, 48) if orientation >= 5 else (48, 64))
    for source in (path, data, Image.open(path)):
        assert np.array_equal(np.asarray(load_image(source)), expected)


def test_rgba_is_composited_on_white_not_black():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    pixels = np.asarray(load_image(encode(image, "PNG")))
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[3, 3]) == (255, 255, 255)
    # grayscale with alpha and palette with a transparent index behave the same way
    la = Image.new("LA", (2, 2), (0, 0))
    assert tuple(np.asarray(load_image(la))[0, 0]) == (255, 255, 255)
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    assert tuple(np.asarray(load_image(encode(palette, "PNG")))[0, 0]) == (255, 255, 255)


def test_cmyk_grayscale_and_palette_become_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red in CMYK
    red = np.asarray(load_image(encode(cmyk, "JPEG", quality=95)))[4, 4]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    gray = load_image(DATA / "camera.jpg")
    assert gray.mode == "RGB"
    pixels = np.asarray(gray).astype(int)
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    assert tuple(np.asarray(load_image(palette))[0, 0]) == (0, 128, 0)


def test_sixteen_bit_images_are_scaled_not_clipped():
    values = np.full((6, 6), 40000, dtype=np.uint16)  # 61% grey, not white
    for source in (Image.fromarray(values), encode(Image.fromarray(values), "PNG"), values):
        pixel = np.asarray(load_image(source))[0, 0]
        assert 150 <= pixel[0] <= 160, (type(source), pixel)


def test_eight_bit_values_in_sixteen_bit_storage_are_the_photo_not_black():
    # np.asarray(photo).astype(np.uint16) and photo.convert("I;16") keep 0..255: scaled as
    # 16-bit they were a black picture (and 线虫 instead of 埃及猫)
    photo = Image.open(DATA / "chelsea.jpg").convert("RGB")
    pixels = np.asarray(photo)
    assert np.array_equal(np.asarray(load_image(pixels.astype(np.uint16))), pixels)
    gray = photo.convert("L")
    for wide in (gray.convert("I;16"), gray.convert("I")):
        assert np.array_equal(np.asarray(load_image(wide))[..., 0], np.asarray(gray)), wide.mode


def test_a_lazy_pil_image_that_fails_to_decode_is_an_image_error(tmp_path):
    data = (DATA / "horse.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    lazy = Image.open(tmp_path / "cut.png")  # Pillow reads the pixels only when asked
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(lazy)
    premultiplied = Image.new("La", (2, 2), (100, 128))  # converts only to LA in Pillow
    assert tuple(np.asarray(load_image(premultiplied))[0, 0]) == (227, 227, 227)  # 199 half over white


def test_a_url_and_a_text_mode_file_say_what_to_do_instead():
    with pytest.raises(ImageError, match="is a URL: shiwu never downloads"):
        load_image("https://example.com/猫.jpg")
    with open(DATA / "chelsea.jpg") as text:  # was "corrupt … (embedded null byte)"
        with pytest.raises(ImageError, match="open it in binary mode"):
            load_image(text)


def test_an_image_error_survives_pickling_as_a_worker_process_sends_it():
    import pickle

    error = pickle.loads(pickle.dumps(ImageError("照片.jpg", "file not found")))
    assert isinstance(error, ImageError) and (error.source, error.reason) == ("照片.jpg", "file not found")
    assert str(error) == "照片.jpg: file not found"


def test_float_images_read_as_zero_to_one():
    values = np.full((5, 5, 3), 0.5, dtype=np.float32)
    assert 126 <= np.asarray(load_image(values))[0, 0, 0] <= 129
    float_mode = Image.fromarray(np.full((3, 3), 0.25, dtype=np.float32), "F")
    assert 62 <= np.asarray(load_image(float_mode))[0, 0, 0] <= 65
    # a photo's 0..255 values as floats (np.asarray(photo).astype(np.float32)) are the photo, as
    # for a Pillow mode-F image: clipped as 0..1 they were a white picture
    photo = np.asarray(Image.open(DATA / "chelsea.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(load_image(photo.astype(np.float32))), photo)


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    pixel = np.asarray(load_image(data))[4, 4]
    assert pixel[0] > 200 and pixel[2] < 60


def test_large_jpeg_is_draft_decoded_near_the_needed_size():
    gradient = np.linspace(0, 255, 4000, dtype=np.uint8)
    photo = Image.fromarray(np.stack([np.tile(gradient, (3000, 1))] * 3, axis=-1))
    data = encode(photo, "JPEG", quality=80)
    assert load_image(data).size == (4000, 3000)
    small = load_image(data, min_size=256)
    assert min(small.size) >= 256 and small.size == (500, 375)  # 1/8 scale in the DCT domain
    # exactly at the boundary the decoder must not go below what was asked
    assert min(load_image(data, min_size=376).size) >= 376


def test_decompression_bomb_is_refused_from_the_header():
    with pytest.raises(ImageError, match="too large: 3,600,000,000 pixels"):
        load_image(png_claiming(60000, 60000))
    with pytest.raises(ImageError, match="12000x10000 = 120,000,000 pixels, limit is 100,000,000"):
        load_image(png_claiming(12000, 10000))
    tiny = encode(Image.new("RGB", (20, 20)), "PNG")
    with pytest.raises(ImageError, match="limit is 100"):
        load_image(tiny, max_pixels=100)
    assert load_image(tiny, max_pixels=400).size == (20, 20)


def test_bad_files_each_get_a_reason_naming_the_file(tmp_path):
    for path in make_bad_files(tmp_path):
        reason = BAD_FILES[path.name][0]
        with pytest.raises(ImageError) as info:
            load_image(path)
        assert reason in info.value.reason, (path.name, info.value.reason)
        assert str(info.value).startswith(str(path))
        assert "\n" not in str(info.value)


def test_bad_arrays_and_types():
    with pytest.raises(ImageError, match="array must be"):
        load_image(np.zeros((2, 2, 2), dtype=np.uint8))
    with pytest.raises(ImageError, match="unsupported input type"):
        load_image(12345)
    with pytest.raises(ImageError, match="empty input"):
        load_image(b"")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_escape_as_anything_but_image_error(data):
    try:
        image = load_image(data)
    except ImageError:
        return
    assert image.mode == "RGB"


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 4999), st.integers(1, 255))
def test_corrupted_jpeg_bytes_give_image_error_or_an_image(offset, value):
    data = bytearray((DATA / "chelsea.jpg").read_bytes()[:6000])
    data[offset] ^= value
    try:
        image = load_image(bytes(data))
    except ImageError:
        return
    assert image.mode == "RGB"


def test_pillow_keeps_freed_image_memory_unless_the_user_set_its_own_limit():
    # Reusing freed image memory is what makes full-size 12 MP decoding cheaper; a user's
    # PILLOW_BLOCKS_MAX (Pillow's own setting) must still win.
    code = "import shiwu.images; from PIL import Image; print(Image.core.get_blocks_max())"
    env = {k: v for k, v in os.environ.items() if k != "PILLOW_BLOCKS_MAX"}

    def blocks_max(extra: dict) -> int:
        out = subprocess.run([sys.executable, "-c", code], env={**env, **extra},
                             capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert blocks_max({}) == images.DECODE_BLOCKS_KEPT
    assert blocks_max({"PILLOW_BLOCKS_MAX": "0"}) == 0
    assert blocks_max({"PILLOW_BLOCKS_MAX": "1"}) == 1
