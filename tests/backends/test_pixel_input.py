"""Preprocessing inside the graph: ONNX Runtime and OpenVINO take the cropped photo's uint8
pixels and give the logits and embeddings of today's float path (numpy normalisation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shiwu import Recognizer
from shiwu.backends import create_backend
from shiwu.images import load_image
from shiwu.models.registry import get_model

DATA = Path(__file__).parents[1] / "data"
SPEC = get_model(None)


@pytest.fixture(scope="module")
def photos():
    pre = SPEC.preprocessing
    images = [load_image(p, min_size=pre.decode_min_size) for p in sorted(DATA.glob("*.jpg"))]
    return np.stack([pre.pixels(i) for i in images]), pre.batch(images)


def test_pixels_are_the_float_batch_before_normalisation(photos):
    pixels, floats = photos
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (224, 224, 3)
    np.testing.assert_array_equal(SPEC.preprocessing.normalise(pixels), floats)


@pytest.mark.parametrize("backend, precision", [("onnxruntime", "fp32"), ("openvino", "fp32")])
def test_uint8_graph_gives_the_float_paths_logits_and_embeddings(photos, backend, precision):
    pixels, floats = photos
    runtime = create_backend(backend, SPEC, size=224, precision=precision, threads=1)
    assert runtime.pixels_in
    logits, embedding = runtime.run_with_embedding(floats)
    from_pixels, pixel_embedding = runtime.run_pixels(pixels, True)
    np.testing.assert_allclose(from_pixels, logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pixel_embedding, embedding, rtol=1e-4, atol=1e-4)
    one, none = runtime.run_pixels(pixels[:1])
    assert none is None
    np.testing.assert_allclose(one, logits[:1], rtol=1e-4, atol=1e-4)


def test_the_onnx_pixel_graph_takes_uint8_nhwc():
    runtime = create_backend("onnxruntime", SPEC, size=224, threads=1)
    runtime.run_pixels(np.zeros((1, 224, 224, 3), np.uint8))
    (inputs,) = runtime._pixel_session.get_inputs()
    assert inputs.type == "tensor(uint8)" and inputs.shape[1:] == [224, 224, 3]


@pytest.mark.parametrize("backend, float_graph", [("onnxruntime", "_session"), ("openvino", "request")])
def test_start_up_opens_the_uint8_graph_alone_and_the_float_one_when_floats_come(backend, float_graph):
    runtime = create_backend(backend, SPEC, size=224, precision="fp32", threads=1)
    assert getattr(runtime, float_graph) is None  # one graph opened at start, not two
    photo = load_image(DATA / "chelsea.jpg")
    from_pixels, embedding = runtime.run_pixels(SPEC.preprocessing.pixels(photo)[None], True)
    assert getattr(runtime, float_graph) is None
    from_floats, float_embedding = runtime.run_with_embedding(SPEC.preprocessing.batch([photo]))
    assert getattr(runtime, float_graph) is not None
    np.testing.assert_allclose(from_pixels, from_floats, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(embedding, float_embedding, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_predict_feeds_pixels_where_the_runtime_takes_them_and_answers_the_same(backend):
    recognizer = Recognizer(backend=backend, precision="fp32", threads=1)
    photo = DATA / "chelsea.jpg"
    answer = recognizer.predict(photo, topk=5)
    float_batch = recognizer.preprocessing.batch([recognizer.load(photo)])
    expected = recognizer.predict_arrays(float_batch, topk=5)[0]
    assert [p.index for p in answer] == [p.index for p in expected]
    assert [p.score for p in answer] == pytest.approx([p.score for p in expected], abs=1e-5)
    # uint8 pixels are accepted by predict_arrays whatever the runtime (torch normalises in numpy)
    pixels = recognizer.preprocessing.pixels(recognizer.load(photo))[None]
    assert [p.index for p in recognizer.predict_arrays(pixels, topk=5)[0]] == [p.index for p in expected]
    if backend == "onnxruntime":
        assert recognizer.backend._pixel_session is not None  # predict went through the uint8 graph
    if backend == "openvino":
        assert recognizer.backend._pixel_request is not None
