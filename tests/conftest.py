from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

# scikit-image's photos; the class sets are what any ImageNet model should put on top.
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian Mau
PHOTOS = sorted(p for p in DATA.iterdir() if p.suffix in (".jpg", ".png"))


@pytest.fixture(scope="session")
def recognizer():
    from shiwu import Recognizer

    return Recognizer(threads=2)


@pytest.fixture(scope="session")
def photos():
    return PHOTOS
