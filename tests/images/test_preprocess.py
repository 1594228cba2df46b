import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from shiwu.images import load_image
from shiwu.preprocess import Preprocessing

from support.photos import DATA


def test_shape_dtype_and_normalisation():
    pre = Preprocessing()
    out = pre(Image.new("RGB", (300, 200), (255, 127, 0)))
    assert out.shape == (3, 224, 224) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out[:, 100, 100], [(255 - 127) / 128, 0.0, -127 / 128], atol=1e-6)
    imagenet = Preprocessing(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    np.testing.assert_allclose(imagenet(Image.new("RGB", (9, 9), (123, 116, 103)))[:, 4, 4],
                               [(123 - 123.675) / 58.395, (116 - 116.28) / 57.12, (103 - 103.53) / 57.375],
                               atol=1e-5)


@pytest.mark.parametrize("size,short", [(224, 256), (196, 224), (168, 192), (260, 297)])
def test_sizes_keep_the_crop_ratio(size, short):
    pre = Preprocessing().with_size(size)
    assert pre.resize_short == short
    assert pre(Image.new("RGB", (640, 480))).shape == (3, size, size)


def test_crop_equals_resize_then_centre_crop():
    image = load_image(DATA / "chelsea.png")
    pre = Preprocessing()
    w, h = image.size
    new_w = round(w * 256 / h)
    left, top = (new_w - 224) // 2, (256 - 224) // 2
    reference = image.resize((new_w, 256), Image.Resampling.BILINEAR).crop((left, top, left + 224, top + 224))
    diff = np.abs(np.asarray(pre.crop(image), dtype=int) - np.asarray(reference, dtype=int))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_centre_crop_is_centred():
    image = Image.new("RGB", (1000, 256), (0, 0, 0))
    image.paste((255, 255, 255), (400, 0, 600, 256))  # white band in the middle
    crop = np.asarray(Preprocessing().crop(image))
    assert crop[:, 112].min() == 255                # centre column is white
    assert crop[:, 0].max() == 0 and crop[:, 223].max() == 0


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError):
        Preprocessing().with_size(8)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 900), st.integers(1, 900), st.sampled_from([168, 196, 224]))
def test_any_aspect_ratio_gives_a_full_batch(width, height, size):
    pre = Preprocessing().with_size(size)
    batch = pre.batch([Image.new("RGB", (width, height), (10, 20, 30))] * 2)
    assert batch.shape == (2, 3, size, size)
    np.testing.assert_allclose(batch[1, :, size // 2, size // 2],
                               [(10 - 127) / 128, (20 - 127) / 128, (30 - 127) / 128], atol=1e-5)
