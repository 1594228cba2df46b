"""Fixtures of the server tests. `photos` and `index_dir` are shared by test_server_vectors.py and
test_web.py: each module gets its own copy (module scope), as when they lived in
test_server_vectors.py. Inside tests/server/, `photos` is this folder of photos, not the root
conftest's list."""

import pytest

from support.photos import photo_library
from support.serving import FAST, shiwu


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The real photos, a resized + recompressed and a brightened copy of coffee, one broken file."""
    return photo_library(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def index_dir(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "索引"
    run = shiwu("index", photos, "--out", out, *FAST, "-q")
    assert run.returncode == 1, run.stderr  # the broken file is a row with its error
    return out

