"""`shiwu serve`'s gallery as a user runs it: a real server process on a loopback port, a gallery
folder that grows by HTTP (classes taught with the API key, bad photos skipped, names that are
paths refused), survives a restart and sees classes changed by hand. Its index routes:
test_server_vectors.py."""

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from support.gallery import RIGHT, make_gallery
from support.photos import DATA
from support.serving import BROKEN, FAST, SERVE, shiwu, upload

from shiwu.calibrate import views
from shiwu.server.process import ServerProcess, free_port

KEY = "vectors-key-7"
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def gallery_root(tmp_path_factory):
    """A folder holding only the gallery folder: anything written beside it is a traversal."""
    return tmp_path_factory.mktemp("gallery-root")


@pytest.fixture(scope="module")
def gallery_server(gallery_root):
    with ServerProcess([*SERVE, "--gallery", str(gallery_root / "我的类别"), "--api-key", KEY]) as process:
        yield process


@pytest.fixture(scope="module")
def gclient(gallery_server):
    with httpx.Client(base_url=gallery_server.url, timeout=120) as c:
        yield c


def test_a_server_without_an_index_says_how_to_get_one(gclient):
    response = gclient.post("/v1/search", files=[upload(DATA / "chelsea.jpg")], headers=AUTH)
    assert response.status_code == 409 and "--index INDEX" in response.json()["detail"]
    assert gclient.get("/v1/index").json() == {"configured": False, "ready": False, "text_search": False}


def test_with_an_api_key_every_embedding_route_but_the_listings_needs_it(gclient):
    photo = [upload(DATA / "chelsea.jpg")]
    for method, path in (("POST", "/v1/embed"), ("POST", "/v1/search"), ("GET", "/v1/thumbnails/1"),
                         ("POST", "/v1/gallery/猫")):
        response = gclient.request(method, path, files=photo if method == "POST" else None)
        assert response.status_code == 401, (path, response.text)
    assert gclient.post("/v1/embed", files=photo, headers=AUTH).status_code == 200
    assert gclient.get("/v1/thumbnails/1", headers=AUTH).status_code == 409  # the key, then: no index
    assert gclient.get("/v1/gallery").status_code == 200 and gclient.get("/v1/index").status_code == 200


def _views(photo: Path, count: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i, view in enumerate(views(Image.open(photo).convert("RGB"), count + 1, rng)[1:]):
        buffer = io.BytesIO()
        view.save(buffer, format="JPEG", quality=90)
        out.append(("files", (f"view{i}.jpg", buffer.getvalue(), "image/jpeg")))
    return out


def test_class_names_that_are_paths_are_refused_and_nothing_is_written(gclient, gallery_server, gallery_root):
    before = sorted(p.name for p in gallery_root.rglob("*"))
    photo = [upload(DATA / "chelsea.jpg")]
    for label in ["..", ".", ".hidden", "a/b", "a%2Fb", "..%2F..%2Fescaped", "%2E%2E", "a%5Cb", "x%00y",
                  "%E2%80%AEgnp.exe", "%20padded", "x" * 65, "%2Ftmp%2Fabsolute"]:
        response = httpx.post(gallery_server.url + "/v1/gallery/" + label, files=photo, headers=AUTH, timeout=60)
        assert response.status_code in (400, 404, 405), (label, response.status_code, response.text)
        if response.status_code == 400:
            assert "class name" in response.json()["detail"] or "outside" in response.json()["detail"]
    for label in ("a%0Ab", "a%0Db"):  # a line break reached no route (404): refused like the others
        response = httpx.post(gallery_server.url + "/v1/gallery/" + label, files=photo, headers=AUTH, timeout=60)
        assert response.status_code == 400 and "class name" in response.json()["detail"], response.text
    # the client-normalised spelling of ../ too: it never reaches a gallery route
    response = gclient.post("/v1/gallery/../escaped", files=photo, headers=AUTH)
    assert response.status_code in (400, 404, 405)
    assert sorted(p.name for p in gallery_root.rglob("*")) == before
    assert gclient.get("/v1/gallery").json()["classes"] == []


def test_teaching_a_class_needs_the_key_and_skips_bad_photos(gclient, gallery_root):
    folder = gallery_root / "我的类别"
    examples = _views(DATA / "motorcycle_left.jpg", 3)
    assert gclient.post("/v1/gallery/我的摩托", files=examples).status_code == 401
    assert gclient.post("/v1/gallery/我的摩托", files=examples, headers={"X-API-Key": "wrong"}).status_code == 401
    # only unreadable photos: a clear error, and no empty class folder left behind
    response = gclient.post("/v1/gallery/我的摩托", files=[BROKEN], headers=AUTH)
    assert response.status_code == 415 and "nothing was added" in response.json()["detail"]
    assert not (folder / "我的摩托").exists()

    response = gclient.post("/v1/gallery/我的摩托", files=[*examples, BROKEN], headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "我的摩托" and body["examples"] == 3
    assert [a["image"] for a in body["added"]] == ["view0.jpg", "view1.jpg", "view2.jpg"]
    assert body["skipped"] == [{"image": "坏的.jpg", "error": body["skipped"][0]["error"]}]
    assert "not a recognised image format" in body["skipped"][0]["error"]
    stored = sorted(p.name for p in (folder / "我的摩托").iterdir())
    assert stored == sorted(a["file"] for a in body["added"]) and all(n.endswith(".jpg") for n in stored)
    assert (folder / "我的摩托" / body["added"][0]["file"]).read_bytes() == examples[0][1][1]  # as uploaded
    # the same photo again is not a second example
    again = gclient.post("/v1/gallery/我的摩托", files=[examples[0]], headers=AUTH).json()
    assert again["added"] == [] and "already" in again["skipped"][0]["error"] and again["examples"] == 3
    listing = gclient.get("/v1/gallery").json()
    assert listing["configured"] and listing["mode"] == "merge" and listing["min_similarity"] == 0.5
    assert listing["classes"] == [{"label": "我的摩托", "examples": 3}]


def test_recognize_then_names_a_photo_never_shown_by_its_examples(gclient):
    taught = gclient.get("/v1/gallery").json()["classes"]
    if not taught:  # run alone: teach it first (the test above does the same and checks it)
        gclient.post("/v1/gallery/我的摩托", files=_views(DATA / "motorcycle_left.jpg", 3), headers=AUTH)
    # a second class, from a PNG this time
    buffer = io.BytesIO()
    Image.open(DATA / "coffee.jpg").save(buffer, format="PNG")
    response = gclient.post("/v1/gallery/咖啡杯", headers=AUTH,
                            files=[("files", ("cup.png", buffer.getvalue(), "image/png"))])
    assert response.status_code == 200 and response.json()["added"][0]["file"].endswith(".png")
    response = gclient.post("/v1/recognize", params={"topk": 3}, headers=AUTH,
                            files=[upload(RIGHT), upload(DATA / "rocket.jpg")])
    assert response.status_code == 200, response.text
    moto, rocket = response.json()["results"]
    first = moto["predictions"][0]
    assert first["label"] == "我的摩托" and first["source"] == "gallery" and first["similarity"] > 0.5
    assert all(p.get("source") != "gallery" for p in moto["predictions"][1:])
    assert all("source" not in p for p in rocket["predictions"])  # like no example: the model's labels


def test_teaching_while_photos_are_recognised_breaks_no_request(gclient):
    """Examples are added (files, then a new gallery swapped in) while batches run. (Not the
    rocket: the test above checks that it stays the model's.)"""
    import concurrent.futures

    def recognise(_):
        return gclient.post("/v1/recognize", files=[upload(DATA / "astronaut.jpg")], headers=AUTH).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        busy = [pool.submit(recognise, i) for i in range(12)]
        added = gclient.post("/v1/gallery/宇航员", files=_views(DATA / "astronaut.jpg", 2, seed=3), headers=AUTH)
        codes = [f.result() for f in busy]
    assert added.status_code == 200 and added.json()["examples"] == 2
    assert codes == [200] * 12
    top = gclient.post("/v1/recognize", files=[upload(DATA / "astronaut.jpg")], headers=AUTH).json()
    assert top["results"][0]["predictions"][0]["label"] == "宇航员"


@pytest.mark.slow
def test_the_gallery_survives_a_restart_without_embedding_again(gclient, gallery_root):
    folder = gallery_root / "我的类别"
    if not (folder / "我的摩托").exists():
        gclient.post("/v1/gallery/我的摩托", files=_views(DATA / "motorcycle_left.jpg", 3), headers=AUTH)
    counts = {c["label"]: c["examples"] for c in gclient.get("/v1/gallery").json()["classes"]}
    with ServerProcess([*SERVE, "--gallery", str(folder)]) as again:
        listing = httpx.get(again.url + "/v1/gallery").json()
        assert {c["label"]: c["examples"] for c in listing["classes"]} == counts
        assert "(0 embedded now)" in again.log()  # every example came from the cache
        response = httpx.post(again.url + "/v1/recognize", files=[upload(RIGHT)], timeout=60)
        assert response.json()["results"][0]["predictions"][0]["label"] == "我的摩托"
    # and the folder is what `shiwu predict --gallery` reads
    run = shiwu("predict", RIGHT, "--gallery", folder, *FAST, "--json")
    assert run.returncode == 0 and json.loads(run.stdout)["predictions"][0]["label"] == "我的摩托"



@pytest.mark.slow
def test_a_class_removed_or_added_by_hand_is_seen_by_the_running_server(tmp_path):
    """The gallery lives on disk: `rm -r` of a class folder, or a folder of photos copied in, is
    what the next request sees (it kept answering with a removed class until a restart, and
    counted its old examples when the class was taught again)."""
    folder = tmp_path / "类别"
    with ServerProcess([*SERVE, "--gallery", str(folder)]) as server, \
            httpx.Client(base_url=server.url, timeout=120) as c:
        assert c.post("/v1/gallery/杯子", files=_views(DATA / "coffee.jpg", 2)).json()["examples"] == 2
        shutil.rmtree(folder / "杯子")
        assert c.get("/v1/gallery").json()["classes"] == []
        answer = c.post("/v1/recognize", files=[upload(DATA / "coffee.jpg")]).json()["results"][0]
        assert all(p.get("source") != "gallery" for p in answer["predictions"])
        assert c.post("/v1/gallery/杯子", files=_views(DATA / "coffee.jpg", 1, seed=5)).json()["examples"] == 1
        (folder / "火箭").mkdir()
        shutil.copy(DATA / "rocket.jpg", folder / "火箭" / "1.jpg")
        listing = {k["label"]: k["examples"] for k in c.get("/v1/gallery").json()["classes"]}
        assert listing == {"杯子": 1, "火箭": 1}
        top = c.post("/v1/recognize", files=[upload(DATA / "rocket.jpg")]).json()["results"][0]["predictions"][0]
        assert top["label"] == "火箭" and top["source"] == "gallery"

@pytest.mark.slow
def test_a_gallery_with_an_empty_or_unreadable_class_is_refused_at_start(tmp_path):
    folder = make_gallery(tmp_path / "g", {"猫": "chelsea.jpg"}, count=1)
    (folder / "空的").mkdir()
    run = shiwu("serve", "--gallery", folder, "--port", free_port(), *FAST, timeout=120)
    assert run.returncode == 2 and "空的" in run.stderr and "has no photos" in run.stderr
    # --gallery with --workers N is served now: tests/server/test_server_gallery_workers.py
    (folder / "空的" / "broken.jpg").write_bytes(b"not a photo")
    # photos there, none readable: found once the model is loaded; /readyz says why
    process = ServerProcess([*SERVE, "--gallery", str(folder)])
    with pytest.raises(RuntimeError, match="no readable photo"):
        _start_expecting_failure(process)


def _start_expecting_failure(process: ServerProcess, timeout: float = 120):
    command = [sys.executable, "-m", "shiwu", "serve", "--port", str(process.port), *process.args]
    with open(process.log_path, "wb") as log:
        process.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                response = httpx.get(process.url + "/readyz", timeout=2)
                if response.json()["status"] == "failed":
                    raise RuntimeError(response.json()["detail"])
                assert response.status_code != 200, "ready with a class that has no readable photo"
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError("no answer from /readyz")
    finally:
        process.stop()


def test_class_names_are_checked_before_they_become_folders(tmp_path):
    from shiwu.gallery import GalleryError, check_label, class_folder

    assert check_label("快递柜") == "快递柜" and check_label("Café ☕ 2") == "Café ☕ 2"
    assert check_label("e\u0301") == "é"  # NFC: the same name typed two ways is one class
    for bad in ["", " ", "..", ".", ".x", "a/b", "a\\b", "/etc", "x\x00", "x\n", "\u202egnp", " x", "x" * 65]:
        with pytest.raises(GalleryError):
            check_label(bad)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "link").symlink_to(tmp_path)
    with pytest.raises(GalleryError, match="link"):
        class_folder(tmp_path / "g", "link")
    assert class_folder(tmp_path / "g", "猫") == (tmp_path / "g").resolve() / "猫"


def test_a_grown_gallery_keeps_its_old_examples_under_their_classes():
    from shiwu.gallery import Gallery, GalleryError, extend

    eye = np.eye(4, dtype=np.float32)
    first = extend(None, "g", "猫", eye[:2], ["a", "b"])
    grown = first.with_examples("狗", eye[2:3], ["c"]).with_examples("猫", eye[3:], ["d"])
    assert first.counts() == {"猫": 2}  # the old one is left as it was (queries in flight use it)
    assert grown.counts() == {"狗": 1, "猫": 3} and grown.labels == ["狗", "猫"]
    top = grown.classify(eye)
    assert [p[0].label for p in top] == ["猫", "猫", "狗", "猫"]
    with pytest.raises(GalleryError, match="another model"):
        grown.with_examples("鸟", np.ones((1, 8), np.float32) / np.sqrt(8), ["e"])
    assert isinstance(grown, Gallery)
