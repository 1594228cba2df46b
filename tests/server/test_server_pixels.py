"""`shiwu serve` decodes uploads to the cropped uint8 pixels when its runtime normalises in the
graph (a quarter of the bytes waiting in the batcher), with the float path's answers: the same
top-k labels, probabilities and embeddings on the real photos, over real HTTP too."""

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from shiwu import Recognizer
from shiwu.backends.openvino import bf16_supported
from shiwu.server.decoding import decoded_pixels
from shiwu.server.metrics import Metrics
from shiwu.server.process import ServerProcess
from shiwu.server.service import Service
from shiwu.server.settings import BIG_PIXELS, ServerSettings
from shiwu.server.uploads import Upload

from support.photos import PHOTOS
from support.serving import SERVE

RUNTIMES = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32")] + (
    [("openvino", "bf16")] if bf16_supported() else [])


def uploads(tmp_path) -> list[Upload]:
    """The real photos, and a big one (over BIG_PIXELS: box-reduced before the resize)."""
    big = tmp_path / "big.png"
    Image.open(PHOTOS[0]).convert("RGB").resize((2600, 1800)).save(big)
    out = []
    for path in [*PHOTOS, big]:
        data = path.read_bytes()
        out.append(Upload(path.name, io.BytesIO(data), len(data)))
    return out


def same_answers(got, want) -> None:
    for a, b in zip(got, want):
        assert [p.index for p in a] == [p.index for p in b]
        assert [p.label for p in a] == [p.label for p in b]
        assert [p.score for p in a] == pytest.approx([p.score for p in b], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("backend, precision", RUNTIMES)
def test_the_decode_threads_give_pixels_with_the_float_paths_answers(tmp_path, backend, precision):
    recognizer = Recognizer(backend=backend, precision=precision, threads=1, batch_size=4)
    service = Service(ServerSettings(max_batch_size=4, warmup_seconds=0), Metrics(), recognizer)
    service._load()
    assert service.takes_pixels and recognizer.backend.precision == precision
    files = uploads(tmp_path)
    sizes = [decoded_pixels(f, recognizer.preprocessing.decode_min_size) for f in files]
    assert sizes[-1] > BIG_PIXELS  # the big lane's reduction is taken on both paths
    pixels = np.stack([service.decode(f, n) for f, n in zip(files, sizes)])
    service.takes_pixels = False
    floats = np.stack([service.decode(f, n) for f, n in zip(files, sizes)])
    size = recognizer.preprocessing.size
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (size, size, 3)
    assert floats.dtype == np.float32 and floats.nbytes == 4 * pixels.nbytes
    np.testing.assert_array_equal(recognizer.preprocessing.normalise(pixels), floats)
    from_pixels, pixel_vectors = recognizer.predict_and_embed_arrays(pixels, 5)
    from_floats, float_vectors = recognizer.predict_and_embed_arrays(floats, 5)
    same_answers(from_pixels, from_floats)
    np.testing.assert_allclose(pixel_vectors, float_vectors, atol=1e-6)


def test_a_runtime_without_the_front_is_given_floats():
    recognizer = Recognizer(backend="torch", threads=1)
    service = Service(ServerSettings(max_batch_size=2, warmup_seconds=0), Metrics(), recognizer)
    service._load()
    assert not service.takes_pixels
    upload = Upload("coffee.jpg", io.BytesIO(PHOTOS[0].read_bytes()), PHOTOS[0].stat().st_size)
    assert service.decode(upload, 0).dtype == np.float32


@pytest.mark.slow
def test_served_answers_are_the_float_paths(tmp_path):
    reference = Recognizer(backend="onnxruntime", precision="fp32", threads=1)
    pre = reference.preprocessing
    floats = pre.batch([reference.load(p) for p in PHOTOS])
    want, vectors = reference.predict_and_embed_arrays(floats, 5)
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in PHOTOS]
    with ServerProcess([*SERVE, "--max-images", str(len(PHOTOS))]) as server, \
            httpx.Client(base_url=server.url, timeout=120) as client:
        answered = client.post("/v1/recognize", files=files, params={"topk": 5})
        embedded = client.post("/v1/embed", files=files)
    assert answered.status_code == embedded.status_code == 200, answered.text + embedded.text
    results = answered.json()["results"]
    assert [r["image"] for r in results] == [p.name for p in PHOTOS]
    for result, expected in zip(results, want):
        got = result["predictions"]
        assert [p["index"] for p in got] == [p.index for p in expected]
        assert [p["score"] for p in got] == pytest.approx([p.score for p in expected], abs=1e-6)
    got_vectors = np.array([r["embedding"] for r in embedded.json()["results"]], np.float32)
    np.testing.assert_allclose(got_vectors, vectors, atol=1e-6)
