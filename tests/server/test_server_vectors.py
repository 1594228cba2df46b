"""`shiwu serve`'s embedding routes as a user runs them: a real server process on a loopback port,
an index built by `shiwu index` from real photos and their edited copies, a gallery folder that
grows by HTTP and survives a restart."""

import io
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from support.gallery import RIGHT
from support.photos import DATA
from support.serving import BROKEN, FAST, SERVE, shiwu, upload

from shiwu import Recognizer
from shiwu.index import open_index, real_path, row_id
from shiwu.server.process import ServerProcess, free_port

KEY = "vectors-key-7"
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def server(index_dir):
    with ServerProcess([*SERVE, "--index", str(index_dir)]) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def reference():
    return Recognizer(backend="onnxruntime", threads=1)


# ---------------------------------------------------------------- /v1/embed


@pytest.mark.slow
def test_embed_gives_the_unit_vectors_of_the_library_and_a_reason_for_a_bad_photo(client, reference):
    response = client.post("/v1/embed", files=[upload(DATA / "coffee.jpg"), BROKEN, upload(DATA / "chelsea.jpg")])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "efficientnet-lite0" and body["dimension"] == 1280
    assert body["backend"] == "onnxruntime" and body["precision"] == "fp32"
    coffee, broken, cat = body["results"]
    assert [r["image"] for r in body["results"]] == ["coffee.jpg", "坏的.jpg", "chelsea.jpg"]
    assert broken["embedding"] is None and broken["error"]["type"] == "ImageError"
    assert "not a recognised image format" in broken["error"]["message"]
    want = reference.embed([DATA / "coffee.jpg", DATA / "chelsea.jpg"])
    got = np.array([coffee["embedding"], cat["embedding"]], np.float32)
    assert got.shape == (2, 1280) and coffee["error"] is None
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert np.all(np.sum(got * want, axis=1) > 0.9999)  # the same vectors, through the batcher
    assert float(got[0] @ got[1]) < 0.6  # and they tell a coffee from a cat


def test_embed_of_only_bad_photos_is_the_recognize_status(client):
    response = client.post("/v1/embed", files=[BROKEN])
    assert response.status_code == 415
    assert "not a recognised image format" in response.json()["detail"]
    truncated = (DATA / "coffee.jpg").read_bytes()[:3000]
    response = client.post("/v1/embed", content=truncated, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 422 and response.json()["results"][0]["embedding"] is None


# ---------------------------------------------------------------- /v1/search


def test_search_by_photo_finds_its_copies_first(client, index_dir):
    response = client.post("/v1/search", params={"topk": 3}, files=[upload(DATA / "coffee.jpg", "查询.jpg")])
    assert response.status_code == 200, response.text
    body = response.json()
    with open_index(index_dir) as index:
        rows = len(index)
    assert body["model"] == "efficientnet-lite0" and body["index"] == {"rows": rows}
    (result,) = body["results"]
    assert result["image"] == "查询.jpg" and result["error"] is None
    matches = result["matches"]
    names = [Path(m["image"]).name for m in matches]
    assert names[0] == "coffee.jpg" and set(names[1:]) == {"咖啡 小.jpg", "coffee_bright.jpg"}
    scores = [m["score"] for m in matches]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.999
    assert matches[0]["label"] == "浓缩咖啡"
    for m in matches:  # ids are strings (beyond JavaScript's exact integers) and name the row
        assert m["id"] == str(row_id(real_path(m["image"]))) and m["thumbnail"] == f"/v1/thumbnails/{m['id']}"


def test_search_keeps_a_bad_photo_as_its_own_error(client):
    response = client.post("/v1/search", params={"topk": 1},
                           files=[BROKEN, upload(DATA / "rocket.jpg")])
    assert response.status_code == 200
    broken, rocket = response.json()["results"]
    assert broken["matches"] == [] and broken["error"]["type"] == "ImageError"
    assert Path(rocket["matches"][0]["image"]).name == "rocket.jpg"
    assert client.post("/v1/search", files=[BROKEN]).status_code == 415


def test_words_need_a_chinese_clip_index_and_a_query_is_needed(client):
    response = client.post("/v1/search", params={"text": "海边的日落"})
    assert response.status_code == 400 and "Chinese-CLIP" in response.json()["detail"]
    response = client.post("/v1/search")
    assert response.status_code == 400 and "nothing to search for" in response.json()["detail"]
    info = client.get("/v1/index").json()
    assert info["configured"] and info["ready"] and info["text_search"] is False
    assert info["model"] == "efficientnet-lite0" and info["dimension"] == 1280 and info["rows"] > 10


def test_an_index_of_another_model_is_refused_at_start(index_dir, tmp_path):
    run = shiwu("serve", "--index", index_dir, "--model", "efficientnet-lite2", "--port", free_port(), timeout=120)
    assert run.returncode == 2
    assert "was built with" in run.stderr and "efficientnet-lite0" in run.stderr
    run = shiwu("serve", "--index", tmp_path / "nothing", "--port", free_port(), timeout=120)
    assert run.returncode == 2 and "no index at" in run.stderr


def test_rows_added_by_shiwu_index_while_serving_are_found_at_once(client, photos, index_dir, tmp_path):
    """The server reads the index folder as it is now: `shiwu index` may add to it meanwhile."""
    new = tmp_path / "新的"
    new.mkdir()
    Image.open(RIGHT).convert("RGB").save(new / "右边.jpg", quality=90)
    before = client.get("/v1/index").json()["rows"]
    run = shiwu("index", new, "--out", index_dir, *FAST, "-q")
    assert run.returncode == 0, run.stderr
    assert client.get("/v1/index").json()["rows"] == before + 1
    response = client.post("/v1/search", params={"topk": 1}, files=[upload(RIGHT)])
    (match,) = response.json()["results"][0]["matches"]
    assert Path(match["image"]).name == "右边.jpg" and match["score"] > 0.99
    assert client.get(match["thumbnail"]).status_code == 200


@pytest.mark.milvus
@pytest.mark.slow
def test_the_same_routes_serve_a_milvus_index(photos, tmp_path):
    store = tmp_path / "milvus.db"  # Milvus Lite: the real Milvus engine, in the server's process
    run = shiwu("index", photos / "coffee.jpg", photos / "咖啡 小.jpg", photos / "rocket.jpg", "--store", store,
                *FAST, "-q")
    assert run.returncode == 0, run.stderr
    with ServerProcess([*SERVE, "--index", str(store)]) as process:
        response = httpx.post(process.url + "/v1/search", files=[upload(photos / "coffee_bright.jpg")], timeout=120)
        assert response.status_code == 200, response.text
        matches = response.json()["results"][0]["matches"]
        assert [Path(m["image"]).name for m in matches] == ["coffee.jpg", "咖啡 小.jpg", "rocket.jpg"]
        thumb = httpx.get(process.url + matches[0]["thumbnail"], timeout=60)
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        other = httpx.get(process.url + f"/v1/thumbnails/{row_id(real_path(photos / 'chelsea.jpg'))}", timeout=60)
        assert other.status_code == 404


# ---------------------------------------------------------------- thumbnails


def _thumbnail_ids(client, photo="coffee.jpg"):
    response = client.post("/v1/search", params={"topk": 1}, files=[upload(DATA / photo)])
    return response.json()["results"][0]["matches"][0]


def test_a_match_has_a_small_jpeg_thumbnail_of_its_own_photo(client):
    match = _thumbnail_ids(client)
    response = client.get(match["thumbnail"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert thumb.format == "JPEG" and max(thumb.size) == 256
    original = Image.open(match["image"]).convert("RGB").resize(thumb.size)
    assert np.abs(np.asarray(thumb, float) - np.asarray(original, float)).mean() < 8  # that photo
    small = client.get(match["thumbnail"], params={"size": 64})
    assert max(Image.open(io.BytesIO(small.content)).size) == 64
    assert client.get(match["thumbnail"], params={"size": 5000}).status_code == 422


def test_thumbnails_refuse_paths_other_files_and_rows_without_a_photo(client, server, photos):
    outside = [
        "/v1/thumbnails/..%2F..%2F..%2Fetc%2Fpasswd", "/v1/thumbnails/%2Fetc%2Fpasswd",
        "/v1/thumbnails/../../etc/passwd", "/v1/thumbnails//etc/passwd", "/v1/thumbnails/-1",
        f"/v1/thumbnails/{photos / 'coffee.jpg'}", "/v1/thumbnails/99999999999999999999",
        # a real photo beside the indexed ones, never indexed: its would-be id is no row
        f"/v1/thumbnails/{row_id(real_path(DATA / 'horse.png'))}",
        # the broken file is a row of the index, but an error row: nothing to show
        f"/v1/thumbnails/{row_id(real_path(photos / '坏的.jpg'))}",
    ]
    for path in outside:
        # raw paths: the client must not tidy the ../ away before the server sees them
        response = httpx.request("GET", server.url + path, timeout=30)
        assert response.status_code == 404, (path, response.status_code, response.text[:200])
        assert b"root:" not in response.content and not response.headers["content-type"].startswith("image/")


def test_a_thumbnail_is_refused_once_its_file_is_changed_or_replaced_by_a_link(client, photos):
    camera = _thumbnail_ids(client, "camera.jpg")
    coins = _thumbnail_ids(client, "coins.jpg")
    assert client.get(camera["thumbnail"]).status_code == 200
    Image.open(DATA / "rocket.jpg").save(photos / "camera.jpg")  # another photo under that name
    response = client.get(camera["thumbnail"])
    assert response.status_code == 404 and "changed since it was indexed" in response.json()["detail"]
    link = photos / "coins.link"
    link.symlink_to("/etc/passwd")
    os.replace(link, photos / "coins.jpg")
    response = client.get(coins["thumbnail"])
    assert response.status_code == 404 and b"root:" not in response.content


def test_a_server_without_a_gallery_says_how_to_get_one(client):
    response = client.post("/v1/gallery/猫", files=[upload(DATA / "chelsea.jpg")])
    assert response.status_code == 409 and "--gallery DIR" in response.json()["detail"]
    assert client.get("/v1/gallery").json() == {"configured": False, "classes": []}


# ---------------------------------------------------------------- Chinese-CLIP: words


@pytest.mark.slow
def test_words_find_photos_in_a_chinese_clip_index(photos, tmp_path, clip_dir):
    model = clip_dir("ViT-B-16")
    index = tmp_path / "clip"
    files = [photos / n for n in ("coffee.jpg", "rocket.jpg", "chelsea.jpg")]
    run = shiwu("index", *files, "--out", index, "--model", model, *FAST, "-q")
    assert run.returncode == 0, run.stderr
    with ServerProcess([*SERVE, "--model", str(model), "--index", str(index)]) as process:
        assert httpx.get(process.url + "/v1/index").json()["text_search"] is True
        response = httpx.post(process.url + "/v1/search", params={"text": ["一张猫的照片", "火箭"], "topk": 3},
                              timeout=120)
        assert response.status_code == 200, response.text
        cat, rocket = response.json()["results"]
        too_long = httpx.post(process.url + "/v1/search", params={"text": "猫" * 201}, timeout=60)
        assert too_long.status_code == 400 and "200 characters" in too_long.json()["detail"]
    # the answer is the text embedding's own ranking of the indexed image embeddings
    recognizer = Recognizer(str(model), backend="onnxruntime")
    images = recognizer.embed(files)
    for result, words in ((cat, "一张猫的照片"), (rocket, "火箭")):
        text = recognizer.spec.text_encoder([words])[0]
        assert result["text"] == words and result["error"] is None
        assert [Path(m["image"]).name for m in result["matches"]] == [files[i].name for i in np.argsort(-(images @ text))]
        assert np.allclose([m["score"] for m in result["matches"]], np.sort(images @ text)[::-1], atol=1e-4)


# ---------------------------------------------------------------- docs, metrics, the pieces


def test_the_routes_and_their_fields_are_in_the_api_docs(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/embed", "/v1/search", "/v1/index", "/v1/thumbnails/{row_id}", "/v1/gallery",
                 "/v1/gallery/{label}"):
        assert path in paths, sorted(paths)
    search = paths["/v1/search"]["post"]
    assert {p["name"] for p in search["parameters"]} == {"topk", "text"}
    assert "multipart/form-data" in search["requestBody"]["content"]
    assert '"thumbnail"' in search["description"] and '"score"' in search["description"]
    assert '"embedding"' in paths["/v1/embed"]["post"]["description"]
    assert "skipped" in paths["/v1/gallery/{label}"]["post"]["description"]
    assert client.get("/docs").status_code == 200
    client.get("/v1/index")
    client.get("/v1/thumbnails/12")
    client.get("/v1/thumbnails/../../etc/passwd")
    metrics = client.get("/metrics").text
    # requests are counted under their route's template, never the path the client sent
    assert 'path="/v1/index"' in metrics and 'path="/v1/thumbnails/{row_id}"' in metrics
    assert "etc/passwd" not in metrics and 'path="/v1/thumbnails/12"' not in metrics
