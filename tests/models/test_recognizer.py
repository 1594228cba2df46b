import numpy as np
import pytest
import torch
from PIL import Image

from shiwu import ImageError, Recognizer
from shiwu.labels import LabelSet

from support.photos import CAT_CLASSES, DATA, PHOTOS


def test_cat_photo_is_a_cat_class_named_in_chinese(recognizer):
    for name in ("chelsea.jpg", "chelsea.png"):
        top = recognizer.predict(DATA / name, topk=5)
        assert top[0].index in CAT_CLASSES
        assert top[0].label == LabelSet.imagenet().zh[top[0].index]
        assert "猫" in top[0].label
    top = recognizer.predict(DATA / "coffee.jpg", topk=1)
    assert [(p.label, p.label_en, p.index) for p in top] == [("浓缩咖啡", "espresso", 967)]
    assert top[0].score > 0.5


def test_topk_probabilities_are_sorted_softmax(recognizer):
    preds = recognizer.predict(DATA / "astronaut.jpg", topk=1000)
    scores = [p.score for p in preds]
    assert len(preds) == 1000 and len({p.index for p in preds}) == 1000
    assert scores == sorted(scores, reverse=True)
    assert abs(sum(scores) - 1.0) < 1e-6
    assert len(recognizer.predict(DATA / "astronaut.jpg", topk=3)) == 3
    for wrong in (0, -1, 2.5, True):  # as the CLI refuses --topk 0, not one answer in silence
        with pytest.raises(ValueError, match="topk must be a whole number of at least 1"):
            recognizer.predict(DATA / "astronaut.jpg", topk=wrong)
    for one in (str(DATA / "astronaut.jpg"), DATA / "astronaut.jpg", b"\xff\xd8"):  # one photo, not a list
        with pytest.raises(TypeError, match="give a list of photos"):
            recognizer.predict_batch(one)
        with pytest.raises(TypeError, match="give a list of photos"):
            recognizer.embed(one)


def test_what_a_caller_catches_is_exported_by_the_package(tmp_path):
    import shiwu

    assert {"ImageError", "ModelNotFound", "UntrustedModel", "BackendUnavailable", "GalleryError",
            "ShiwuError"} <= set(shiwu.__all__)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "m.pth")  # a whole pickled module: code to run
    refusals = [(shiwu.ModelNotFound, LookupError, "no-such-model", lambda: Recognizer("no-such-model")),
                (shiwu.BackendUnavailable, RuntimeError, "cuda", lambda: Recognizer(backend="cuda")),
                (shiwu.GalleryError, ValueError, "does not exist",
                 lambda: Recognizer(gallery=tmp_path / "没有这个文件夹")),
                (shiwu.UntrustedModel, LookupError, "trust", lambda: Recognizer(str(tmp_path / "m.pth"))),
                (shiwu.ImageError, ValueError, "file not found",
                 lambda: Recognizer(backend="torch").predict(tmp_path / "no.jpg"))]
    for error, builtin, words, call in refusals:
        with pytest.raises(error, match=words) as raised:
            call()
        # one base for every refusal, and the built-in base that callers caught before
        assert isinstance(raised.value, shiwu.ShiwuError) and isinstance(raised.value, builtin)


def test_an_unknown_backend_is_named_with_the_choices():
    from shiwu.backends import BackendUnavailable

    for name in ("cuda", "CUDA", ""):
        with pytest.raises(BackendUnavailable, match=f"unknown backend {name!r}; choose from auto, "):
            Recognizer(backend=name, precision="auto")  # the default: it was a KeyError there


def test_batch_keeps_input_order_and_matches_single_predictions(recognizer):
    sources = [PHOTOS[i % len(PHOTOS)] for i in (3, 0, 5, 1, 4, 2, 7, 6, 8, 3)]
    sources[2] = (DATA / "coffee.jpg").read_bytes()
    sources[4] = Image.open(DATA / "chelsea.png")
    batched = recognizer.predict_batch(sources, topk=3)
    assert len(batched) == len(sources)
    for source, preds in zip(sources, batched):
        single = recognizer.predict(source, topk=3)
        assert [p.index for p in preds] == [p.index for p in single]
        np.testing.assert_allclose([p.score for p in preds], [p.score for p in single], atol=1e-5)


def test_no_photos_embed_to_no_rows_of_the_models_width(recognizer):
    some = recognizer.embed([DATA / "coffee.jpg", DATA / "chelsea.jpg"])
    none = recognizer.embed([])
    assert none.shape == (0, some.shape[1]) == (0, recognizer.embedding_dimension)
    assert none.dtype == np.float32
    assert np.concatenate([none, some]).shape == some.shape  # it was (0, 0): concatenating failed


def test_bad_images_get_errors_and_the_rest_still_run(recognizer, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    results = recognizer.recognize([DATA / "coffee.jpg", tmp_path / "nope.jpg", empty, DATA / "chelsea.jpg"])
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[0].predictions[0].index == 967
    assert results[3].predictions[0].index in CAT_CLASSES
    assert results[1].to_dict()["error"] == {"type": "ImageError", "message": "file not found"}
    assert results[1].to_dict()["predictions"] == []
    with pytest.raises(ImageError, match="nope.jpg: file not found"):
        recognizer.predict_batch([DATA / "coffee.jpg", tmp_path / "nope.jpg"])


def test_result_json_follows_the_design_contract(recognizer):
    result = recognizer.recognize([DATA / "coffee.jpg"], topk=2)[0].to_dict()
    assert list(result) == ["image", "predictions", "model", "backend", "precision", "error"]
    assert result["image"].endswith("coffee.jpg")
    assert list(result["predictions"][0]) == ["label", "label_en", "index", "score"]
    assert result["model"] == "efficientnet-lite0" and result["precision"] == "fp32"
    assert result["backend"] == "torch" and result["error"] is None


def test_threads_and_size_are_settable():
    small = Recognizer(backend="torch", threads=1, size=168)
    assert torch.get_num_threads() == 1
    assert small.preprocessing.size == 168 and small.preprocessing.resize_short == 192
    assert small.predict(DATA / "coffee.jpg", topk=1)[0].index == 967
    Recognizer(backend="torch", threads=2)
    assert torch.get_num_threads() == 2


def test_unknown_model_says_which_exist():
    from shiwu.models.registry import ModelNotFound

    with pytest.raises(ModelNotFound, match="efficientnet-lite0"):
        Recognizer("no-such-model")
