"""Chinese-CLIP preprocessing is the official one, to float precision, on real photos.

The official transform (``CLIPPreprocessor._build_image_transform`` in ModelScope and
``cn_clip.clip.utils.image_transform``, identical)::

    Compose([Resize((R, R), interpolation=BICUBIC), _convert_to_rgb, ToTensor(),
             Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])

on the image of ModelScope's ``load_image`` (``preprocessors/image.py``: ``Image.open``,
``ImageOps.exif_transpose``, ``convert("RGB")``). torchvision is not installed, so the transform
is re-implemented below from torchvision's own code for a PIL image: ``Resize`` calls
``img.resize((R, R), BICUBIC)`` (``antialias`` only concerns tensors), ``ToTensor`` is
``torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)``, ``Normalize`` is
``tensor.sub_(mean).div_(std)``, in float32.
"""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from shiwu.images import load_image
from shiwu.models.clip_files import CLIP_MEAN, CLIP_STD, CLIPPreprocessing, clip_preprocessing


def official_load_image(path) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def official(image: Image.Image, resolution: int = 224) -> torch.Tensor:
    image = image.resize((resolution, resolution), Image.Resampling.BICUBIC).convert("RGB")
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous().float().div(255)
    mean = torch.as_tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(CLIP_STD, dtype=torch.float32)[:, None, None]
    return tensor.sub_(mean).div_(std)


def _photos(photos):
    # RGB and grayscale photos. Images with alpha are left out: shiwu's loader puts them on white
    # (docs/architecture.md), the official load_image drops the alpha channel.
    chosen = [p for p in photos if Image.open(p).mode in ("RGB", "L")]
    assert {Image.open(p).mode for p in chosen} == {"RGB", "L"} and len(chosen) >= 8
    return chosen


@pytest.mark.parametrize("resolution", [224, 336])
def test_equal_to_the_official_transform_on_real_photos(photos, resolution):
    pre = clip_preprocessing(resolution)
    for path in _photos(photos):
        # Full-size decode (a JPEG draft decode would change pixels).
        ours = pre(load_image(path, min_size=pre.decode_min_size))
        expected = official(official_load_image(path), resolution).numpy()
        assert ours.shape == expected.shape == (3, resolution, resolution) and ours.dtype == np.float32
        assert np.abs(ours - expected).max() < 2e-6, path.name  # float rounding of (v/255-m)/s


def test_the_pixels_are_the_official_ones_not_just_close(photos):
    """The tolerance above is rounding: the resized pixels themselves are identical."""
    pre = clip_preprocessing()
    for path in _photos(photos):
        resized = np.asarray(pre.crop(load_image(path, min_size=pre.decode_min_size)))
        expected = np.asarray(official_load_image(path).resize((224, 224), Image.Resampling.BICUBIC))
        assert np.array_equal(resized, expected), path.name


def test_squash_not_crop_and_full_decode():
    pre = clip_preprocessing()
    assert isinstance(pre, CLIPPreprocessing) and pre.decode_min_size is None
    wide = Image.new("RGB", (400, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 50, 100))  # a blue left edge a centre crop would cut away
    out = pre(wide)
    assert out.shape == (3, 224, 224)
    assert out[2, 112, 0] > 1.5 and out[0, 112, -1] > 1.5  # both edges survive the squash


def test_with_size_keeps_the_clip_preprocessing():
    pre = clip_preprocessing().with_size(160)
    assert isinstance(pre, CLIPPreprocessing) and pre.size == 160 and pre.decode_min_size is None
    assert pre.mean == clip_preprocessing().mean and pre.resample == Image.Resampling.BICUBIC
    with pytest.raises(ValueError, match="between 32 and 1024"):
        pre.with_size(8)
