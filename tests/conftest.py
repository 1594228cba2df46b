"""Session fixtures for every test. Shared constants and helpers are in tests/support/
(`from support.photos import DATA`); tests never import this file or another test module."""

import os

import pytest

from support.photos import PHOTOS

# Ray's driver (the Ray tests) leaves gRPC threads in this process; with gRPC's fork support on,
# a later subprocess started with preexec_fn (resource limits) ran gRPC's fork handler in the
# child, which aborted before exec ("Other threads are currently calling into gRPC, skipping
# fork() handlers", then SIGABRT: one CI run of test_model_file_limits). Children are exec'd, never
# left running gRPC after a fork, so fork support is not needed. Read when gRPC starts: set here.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def _session_environment(name: str, value: str):
    """Set an environment variable for the test session (subprocesses inherit it), then restore."""
    import os

    old = os.environ.get(name)
    os.environ[name] = value
    yield
    if old is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = old


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Exports, int8 models and --backend auto choices go to a cache of this test session,
    never the user's."""
    folder = tmp_path_factory.mktemp("shiwu-cache")
    yield from _session_environment("SHIWU_CACHE", str(folder))


@pytest.fixture(scope="session", autouse=True)
def private_config(tmp_path_factory):
    """No test reads the user's `shiwu tune` settings: SHIWU_CONFIG points at a file of this
    session that does not exist (tests that tune set their own)."""
    path = tmp_path_factory.mktemp("shiwu-config") / "config.toml"
    yield from _session_environment("SHIWU_CONFIG", str(path))


@pytest.fixture(scope="session", autouse=True)
def fp32_by_default():
    """Tests compare answers with fp32 references, so the default precision is fp32 here (the
    built-in default, auto, judges and times every precision first). The precision policy's own
    tests (test_precision_policy.py) ask for auto explicitly."""
    yield from _session_environment("SHIWU_PRECISION", "fp32")


@pytest.fixture(scope="session")
def recognizer():
    """The reference: torch eager, fp32."""
    from shiwu import Recognizer

    return Recognizer(backend="torch", threads=2)


@pytest.fixture(scope="session")
def photos():
    return PHOTOS


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    """Synthetic Chinese-CLIP model directories in the official format, each written once per
    session: ``clip_dir("ViT-B-16")`` (2 layers, 2 heads), ``clip_dir("ViT-B-16", small=False)``
    (the real 188M-parameter size)."""
    from shiwu.models.synthetic_clip import write_synthetic_clip

    made = {}

    def get(config: str = "ViT-B-16", small: bool = True):
        if (config, small) not in made:
            folder = tmp_path_factory.mktemp(f"clip-{config}{'-small' if small else ''}")
            made[config, small] = write_synthetic_clip(folder, config, small=small)
        return made[config, small]

    return get


@pytest.fixture(scope="session", autouse=True)
def library_logs_on_stderr():
    """Library modules log; the command line shows their records on stderr. Tests that call the
    library in this process read stderr as a user of the command line would, whatever ran before."""
    from shiwu.logs import configure

    configure()
