from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

# scikit-image's photos; the class sets are what any ImageNet model should put on top.
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian Mau
PHOTOS = sorted(p for p in DATA.iterdir() if p.suffix in (".jpg", ".png"))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Exports, int8 models and --backend auto choices go to a cache of this test session,
    never the user's; subprocesses inherit it through the environment."""
    import os

    folder = tmp_path_factory.mktemp("shiwu-cache")
    old = os.environ.get("SHIWU_CACHE")
    os.environ["SHIWU_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("SHIWU_CACHE", None)
    else:
        os.environ["SHIWU_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def private_config(tmp_path_factory):
    """No test reads the user's `shiwu tune` settings: SHIWU_CONFIG points at a file of this
    session that does not exist (tests that tune set their own); subprocesses inherit it."""
    import os

    path = tmp_path_factory.mktemp("shiwu-config") / "config.toml"
    old = os.environ.get("SHIWU_CONFIG")
    os.environ["SHIWU_CONFIG"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SHIWU_CONFIG", None)
    else:
        os.environ["SHIWU_CONFIG"] = old


@pytest.fixture(scope="session")
def recognizer():
    """The reference: torch eager, fp32."""
    from shiwu import Recognizer

    return Recognizer(backend="torch", threads=2)


@pytest.fixture(scope="session")
def photos():
    return PHOTOS
