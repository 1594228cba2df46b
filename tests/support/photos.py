"""The bundled test photos (scikit-image's, BSD) and where the repository is."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
DATA = TESTS / "data"

# scikit-image's photos; the class sets are what any ImageNet model should put on top.
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian Mau
PHOTOS = sorted(p for p in DATA.iterdir() if p.suffix in (".jpg", ".png"))


def photo_library(folder: Path) -> Path:
    """The real photos, a resized + recompressed and a brightened copy of coffee, and one broken
    file, written into ``folder`` (the library the index, search and server tests work on)."""
    from PIL import Image, ImageEnhance

    for path in sorted(DATA.glob("*.jpg")):
        (folder / path.name).write_bytes(path.read_bytes())
    coffee = Image.open(DATA / "coffee.jpg").convert("RGB")
    coffee.resize((coffee.width // 2, coffee.height // 2)).save(folder / "咖啡 小.jpg", quality=70)
    ImageEnhance.Brightness(coffee).enhance(1.2).save(folder / "coffee_bright.jpg", quality=75)
    (folder / "坏的.jpg").write_bytes(b"not an image")
    return folder
