"""Classes taught by example photos: `shiwu predict --gallery DIR` and `shiwu eval --gallery`."""

import json

import numpy as np
import pytest
from PIL import Image

from support.gallery import RIGHT, make_gallery
from support.photos import DATA

from shiwu import Recognizer
from shiwu.cli import main
from shiwu.gallery import Gallery, GalleryError, load_gallery


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory):
    return make_gallery(tmp_path_factory.mktemp("我的类别"),
                        {"我的摩托": "motorcycle_left.jpg", "咖啡杯": "coffee.jpg", "宇航员": "astronaut.jpg"})


@pytest.fixture(scope="module")
def recognizer():
    return Recognizer(backend="onnxruntime", threads=2)


def test_a_photo_never_shown_is_named_by_the_class_of_its_examples(gallery_dir, capsys):
    assert main(["predict", str(RIGHT), str(DATA / "rocket.jpg"), "--gallery",
                 str(gallery_dir), "--backend", "onnxruntime", "--json", "-k", "3"]) == 0
    moto, rocket = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    first = moto["predictions"][0]
    assert first["label"] == "我的摩托" and first["source"] == "gallery" and first["similarity"] > 0.5
    assert all(p.get("source") != "gallery" for p in moto["predictions"][1:])  # then the model's
    # a photo like none of the examples: the model's own labels, no gallery class let through
    assert all("source" not in p for p in rocket["predictions"])
    assert rocket["predictions"][0]["label"] == Recognizer(backend="onnxruntime").predict(DATA / "rocket.jpg")[0].label


def test_replace_uses_the_gallery_alone_ranked_by_vote(gallery_dir, recognizer):
    recognizer.use_gallery(gallery_dir, mode="replace")
    try:
        predictions = recognizer.predict(DATA / "coffee.jpg", topk=3)
    finally:
        recognizer.gallery = None
    assert [p.source for p in predictions] == ["gallery"] * len(predictions)
    assert predictions[0].label == "咖啡杯" and predictions[0].score > 0.5
    scores = [p.score for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert abs(sum(p.score for p in predictions) - 1) < 1e-6  # shares of the k-nearest vote


def test_example_embeddings_are_cached_by_content(tmp_path, recognizer, monkeypatch):
    # a cache of its own: other tests (the server's gallery) may have embedded the same views
    monkeypatch.setenv("SHIWU_CACHE", str(tmp_path / "cache"))
    folder = make_gallery(tmp_path / "g", {"猫": "chelsea.jpg", "火箭": "rocket.jpg"}, count=2)
    first = load_gallery(folder, recognizer)
    assert first.embedded_now == 4 and len(first) == 4
    again = load_gallery(folder, recognizer)
    assert again.embedded_now == 0 and np.array_equal(first.vectors, again.vectors)
    Image.open(DATA / "coins.jpg").convert("RGB").save(folder / "火箭" / "0.jpg")  # a changed file
    (folder / "猫" / "copy.jpg").write_bytes((folder / "猫" / "1.jpg").read_bytes())  # same content
    changed = load_gallery(folder, recognizer)
    assert changed.embedded_now == 1 and len(changed) == 5


def test_bad_galleries_are_clear_errors_and_bad_photos_are_skipped(tmp_path, recognizer, capsys):
    folder = make_gallery(tmp_path / "g", {"猫": "chelsea.jpg"}, count=2)
    (folder / "猫" / "broken.jpg").write_bytes(b"not a photo")
    gallery = load_gallery(folder, recognizer)
    assert len(gallery) == 2 and gallery.skipped[0][0].endswith("broken.jpg")
    assert "skipped" in capsys.readouterr().err
    (folder / "空的").mkdir()
    with pytest.raises(GalleryError, match="has no photos"):
        load_gallery(folder, recognizer)
    with pytest.raises(GalleryError, match="no class sub-folders"):
        load_gallery(tmp_path / "g" / "猫", recognizer)
    with pytest.raises(GalleryError, match="does not exist"):
        load_gallery(tmp_path / "nowhere", recognizer)
    with pytest.raises(GalleryError, match="is a file: give the folder"):  # it said "does not exist"
        load_gallery(DATA / "horse.png", recognizer)
    for wrong in (2, -1.5):  # a cosine: 2 matched no example, without a word
        with pytest.raises(GalleryError, match="min_similarity is a cosine similarity from -1 to 1"):
            recognizer.use_gallery(folder, min_similarity=wrong)
    other = Gallery(folder, ["x"], np.eye(1, 2048, dtype=np.float32), np.zeros(1, int), ["x.jpg"])
    with pytest.raises(GalleryError, match="another model"):
        other.classify(np.ones((1, 1280), np.float32))
    assert main(["predict", str(DATA / "coffee.jpg"), "--gallery", str(folder)]) == 2


def test_eval_gallery_gives_few_shot_accuracy(gallery_dir, tmp_path, capsys):
    labelled = tmp_path / "eval"
    for label, photo in (("我的摩托", RIGHT), ("咖啡杯", DATA / "coffee.jpg"), ("宇航员", DATA / "astronaut.jpg")):
        (labelled / label).mkdir(parents=True)
        (labelled / label / photo.name).write_bytes(photo.read_bytes())
    assert main(["eval", str(labelled), "--gallery", str(gallery_dir), "--backend", "onnxruntime",
                 "--json", "-", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 3 and report["top1_accuracy"] == 1.0
    assert {c["label"] for c in report["classes"]} == {"我的摩托", "咖啡杯", "宇航员"}
