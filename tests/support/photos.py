"""The bundled test photos (scikit-image's, BSD) and where the repository is."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
DATA = TESTS / "data"

# scikit-image's photos; the class sets are what any ImageNet model should put on top.
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian Mau
PHOTOS = sorted(p for p in DATA.iterdir() if p.suffix in (".jpg", ".png"))
