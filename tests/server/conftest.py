"""Fixtures of the server tests. `photos` and `index_dir` are shared by test_server_vectors.py and
test_web.py: each module gets its own copy (module scope), as when they lived in
test_server_vectors.py. Inside tests/server/, `photos` is this folder of photos, not the root
conftest's list."""

import pytest
from PIL import Image, ImageEnhance

from support.photos import DATA
from support.serving import FAST, shiwu


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The real photos, a resized + recompressed and a brightened copy of coffee, one broken file."""
    folder = tmp_path_factory.mktemp("photos")
    for path in sorted(DATA.glob("*.jpg")):
        (folder / path.name).write_bytes(path.read_bytes())
    coffee = Image.open(DATA / "coffee.jpg").convert("RGB")
    coffee.resize((coffee.width // 2, coffee.height // 2)).save(folder / "咖啡 小.jpg", quality=70)
    ImageEnhance.Brightness(coffee).enhance(1.2).save(folder / "coffee_bright.jpg", quality=75)
    (folder / "坏的.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def index_dir(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "索引"
    run = shiwu("index", photos, "--out", out, *FAST, "-q")
    assert run.returncode == 1, run.stderr  # the broken file is a row with its error
    return out

