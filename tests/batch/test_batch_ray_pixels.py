"""The Ray engine sends decoded batches through the object store as uint8 pixels when the
actors' runtime normalises in its graph (a quarter of the bytes), with the float path's rows."""

import numpy as np
import pytest

from shiwu.batch.local import ModelOptions, decode_batch, rows_for
from shiwu.batch.ray_engine import _decode, ships_pixels

from support.bad_images import make_bad_files
from support.photos import PHOTOS


def test_pixels_are_shipped_only_where_the_actors_runtime_takes_them():
    assert ships_pixels(ModelOptions(backend="onnxruntime"))
    assert ships_pixels(ModelOptions(backend="openvino", precision="bf16"))
    assert ships_pixels(ModelOptions(backend=None, precision=None))  # auto: onnxruntime or openvino
    assert not ships_pixels(ModelOptions(backend="torch"))
    assert not ships_pixels(ModelOptions(backend="torchscript"))


def test_a_decode_task_gives_a_quarter_of_the_bytes(tmp_path):
    from shiwu.models.registry import get_model

    pre = get_model(None).preprocessing
    bad = make_bad_files(tmp_path)[0]
    batch = {"image": np.array([str(PHOTOS[0]), str(bad), str(PHOTOS[1])], dtype=object)}
    pixels = _decode(batch, pre, 10**8, as_pixels=True)
    floats = _decode(batch, pre, 10**8)
    assert pixels["pixels"].dtype == np.uint8 and pixels["pixels"].shape == (3, pre.size, pre.size, 3)
    assert floats["pixels"].nbytes == 4 * pixels["pixels"].nbytes
    assert list(pixels["error_type"]) == list(floats["error_type"]) == ["", "ImageError", ""]
    np.testing.assert_array_equal(pre.normalise(pixels["pixels"][[0, 2]]), floats["pixels"][[0, 2]])


@pytest.mark.ray
@pytest.mark.slow
def test_ray_rows_from_pixels_are_the_float_paths(tmp_path):
    from shiwu.batch.ray_engine import run_ray

    paths = [str(p) for p in PHOTOS] + [str(make_bad_files(tmp_path)[0])]
    options = ModelOptions(backend="onnxruntime", precision="fp32", threads=1)
    rows = {r["image"]: r for batch in run_ray(paths, options, topk=5, batch_size=4, num_cpus=2,
                                                embed=True) for r in batch}
    recognizer = options.recognizer(4)
    floats = rows_for(paths, decode_batch(paths, recognizer.preprocessing), recognizer, 5, True)
    assert sorted(rows) == sorted(paths)
    for want in floats:
        got = rows[want["image"]]
        assert got["error"] == want["error"] and got["backend"] == "onnxruntime"
        assert [p["index"] for p in got["predictions"]] == [p["index"] for p in want["predictions"]]
        assert [p["score"] for p in got["predictions"]] == pytest.approx(
            [p["score"] for p in want["predictions"]], abs=1e-6)
        if want["error"] is None:
            np.testing.assert_allclose(got["embedding"], want["embedding"], atol=1e-6)
