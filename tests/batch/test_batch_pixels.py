"""`shiwu batch` hands a runtime that normalises in its graph the cropped uint8 pixels (a
quarter of the bytes of float arrays), with the answers of the float path: the same top-k
labels, probabilities and embeddings on the real photos."""

import numpy as np
import pytest

from shiwu import Recognizer
from shiwu.backends.openvino import bf16_supported
from shiwu.batch import decoders, local
from shiwu.batch.local import ModelOptions, decode_batch, rows_for, run_local

from support.bad_images import make_bad_files
from support.photos import DATA, PHOTOS

# bf16 only where the CPU has it: elsewhere openvino refuses it (tested in tests/backends)
RUNTIMES = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32")] + (
    [("openvino", "bf16")] if bf16_supported() else [])


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    assert [r["image"] for r in got] == [r["image"] for r in want]
    for a, b in zip(got, want):
        assert a["error"] == b["error"]
        assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        assert [p["score"] for p in a["predictions"]] == pytest.approx(
            [p["score"] for p in b["predictions"]], abs=1e-6)
        assert ("embedding" in a) == ("embedding" in b)
        if "embedding" in a:
            np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-6)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    bad = make_bad_files(tmp_path_factory.mktemp("bad"))
    return [str(p) for p in PHOTOS] + [str(bad[0])]


@pytest.mark.slow
@pytest.mark.parametrize("backend, precision", RUNTIMES)
def test_pixels_and_floats_give_the_same_rows(paths, backend, precision):
    recognizer = Recognizer(backend=backend, precision=precision, threads=1, batch_size=32)
    assert recognizer.backend.precision == precision and recognizer.takes_pixels()
    pre = recognizer.preprocessing
    pixels = decode_batch(paths, pre, as_pixels=True)
    floats = decode_batch(paths, pre)
    assert pixels.pixels.dtype == np.uint8 and pixels.pixels.shape[1:] == (pre.size, pre.size, 3)
    assert floats.pixels.dtype == np.float32 and pixels.pixels.nbytes * 4 == floats.pixels.nbytes
    assert pixels.ok == floats.ok == list(range(len(PHOTOS))) and pixels.errors == floats.errors
    for embed in (False, True):
        assert_same_rows(rows_for(paths, pixels, recognizer, 5, embed),
                         rows_for(paths, floats, recognizer, 5, embed))


class _Recording(decoders.SharedBatches):
    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _Recording.made.append((self.dtype, self.nbytes))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_the_decoders_hand_over_pixels_only_to_a_runtime_that_takes_them(paths, backend, monkeypatch):
    monkeypatch.setattr(local, "SharedBatches", _Recording)
    _Recording.made = []
    options = ModelOptions(backend=backend, precision="fp32", threads=1)
    rows = [r for batch in run_local(paths, options, batch_size=4, workers=1, streams=1, embed=True)
            for r in batch]
    (dtype, nbytes), = _Recording.made
    size = Recognizer(backend=backend, precision="fp32", threads=1).preprocessing.size
    if backend == "torch":  # normalised by the decoders, as before
        assert dtype == np.float32 and nbytes == 4 * 3 * size * size * 4
    else:  # the in-flight buffers are a quarter of the float ones
        assert dtype == np.uint8 and nbytes == 4 * size * size * 3
    recognizer = options.recognizer(4)
    floats = [r for i in range(0, len(paths), 4)
              for r in rows_for(paths[i:i + 4], decode_batch(paths[i:i + 4], recognizer.preprocessing),
                                recognizer, 5, True)]
    assert_same_rows(rows, floats)
    assert rows[-1]["error"] and all(r["predictions"] for r in rows[:-1])


def test_a_crashed_decoder_is_retried_image_by_image_in_pixels_too(tmp_path):
    """decode_isolated (after a crash) gives what a decoder gives: uint8 pixels when asked."""
    from shiwu.images import load_image
    from shiwu.models.registry import get_model

    pre = get_model(None).preprocessing
    paths = [str(DATA / "coffee.jpg"), str(tmp_path / "missing.jpg")]
    decoded = decoders.decode_isolated(paths, pre, 10**8, as_pixels=True)
    assert decoded.ok == [0] and 1 in decoded.errors
    expected = pre.pixels(load_image(paths[0], min_size=pre.decode_min_size))
    np.testing.assert_array_equal(decoded.pixels, expected[None])
