"""Galleries (classes taught by example photos) for the gallery, server and web page tests."""

import numpy as np
from PIL import Image

from shiwu.calibrate import bundled_photos, views

from support.photos import DATA

# the other camera of the stereo pair whose left photo is in tests/data (bundled with shiwu)
RIGHT = next(p for p in bundled_photos() if p.name == "motorcycle_right.jpg")


def make_gallery(folder, classes: dict[str, str], count: int = 3, seed: int = 0):
    """One sub-folder per class, ``count`` random views (crops, flips, lighting) of one photo."""
    rng = np.random.default_rng(seed)
    for label, photo in classes.items():
        (folder / label).mkdir(parents=True)
        image = Image.open(DATA / photo).convert("RGB")
        for i, view in enumerate(views(image, count + 1, rng)[1:]):
            view.save(folder / label / f"{i}.jpg", quality=90)
    return folder
