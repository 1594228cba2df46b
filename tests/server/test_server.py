"""`shiwu serve` as a user runs it: a real uvicorn process on a loopback port, real HTTP."""

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import httpx

from support.bad_images import BAD_FILES, png_claiming  # noqa: E402
from support.photos import CAT_CLASSES, DATA, PHOTOS  # noqa: E402

from shiwu.server.process import ServerProcess  # noqa: E402

KEY = "test-key-0123456789"
AUTH = {"X-API-Key": KEY}
MAX_IMAGES = 4
MAX_UPLOAD = 1024 * 1024  # 1 MiB: every photo in tests/data fits, a 1.5 MiB body does not


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--backend", "torch", "--threads", "2", "--max-batch-size", "8",
                        "--max-wait-ms", "40", "--max-images", str(MAX_IMAGES), "--max-upload-mb", "1",
                        "--max-pixels", "20000000", "--api-key", KEY, "--no-access-log"]) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def recognize(client, files=None, headers=AUTH, **kwargs):
    return client.post("/v1/recognize", files=files, headers=headers, **kwargs)


def photo(name):
    return (name, (DATA / name).read_bytes(), "image/jpeg" if name.endswith(".jpg") else "image/png")


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == str(v) for k, v in labels.items()):
            return float(match.group(4))
    return 0.0


# ---------------------------------------------------------------- answers


@pytest.mark.slow
def test_real_photos_get_the_right_chinese_labels(client):
    response = recognize(client, [("files", photo("coffee.jpg")), ("files", photo("chelsea.jpg"))],
                         params={"topk": 3})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    coffee, cat = response.json()["results"]
    assert coffee["image"] == "coffee.jpg" and cat["image"] == "chelsea.jpg"
    assert coffee["predictions"][0]["index"] == 967 and coffee["predictions"][0]["label"] == "浓缩咖啡"
    assert coffee["predictions"][0]["label_en"] == "espresso"
    assert cat["predictions"][0]["index"] in CAT_CLASSES
    for result in (coffee, cat):
        assert set(result) == {"image", "predictions", "model", "backend", "precision", "error"}
        assert result["error"] is None and result["model"] == "efficientnet-lite0"
        assert result["backend"] == "torch" and result["precision"] == "fp32"
        assert len(result["predictions"]) == 3
        scores = [p["score"] for p in result["predictions"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001


def test_http_answers_equal_the_library_on_every_photo(client, recognizer):
    for start in range(0, len(PHOTOS), MAX_IMAGES):
        chunk = PHOTOS[start:start + MAX_IMAGES]
        response = recognize(client, [("files", photo(p.name)) for p in chunk], params={"topk": 5})
        assert response.status_code == 200, response.text
        for path, result in zip(chunk, response.json()["results"]):
            expected = recognizer.predict(path, topk=5)
            got = result["predictions"]
            assert [p["index"] for p in got][:2] == [p.index for p in expected][:2], path.name
            assert got[0]["score"] == pytest.approx(expected[0].score, abs=2e-3), path.name


def test_a_big_image_gets_the_librarys_answer_too(client, recognizer):
    # over 4 MP once decoded (WebP is never draft-decoded): the server's big-image lane once
    # box-reduced it first and answered differently from `shiwu predict`
    import io

    from PIL import Image

    cat = Image.open(DATA / "chelsea.jpg")
    big = io.BytesIO()
    cat.resize((cat.width * 6, cat.height * 6), Image.Resampling.BICUBIC).save(big, "WEBP", quality=90)
    assert len(big.getvalue()) < MAX_UPLOAD
    response = recognize(client, [("files", ("大猫.webp", big.getvalue(), "image/webp"))], params={"topk": 5})
    assert response.status_code == 200, response.text
    got = response.json()["results"][0]["predictions"]
    expected = recognizer.predict(big.getvalue(), topk=5)
    assert [p["index"] for p in got] == [p.index for p in expected]
    assert [p["score"] for p in got] == pytest.approx([p.score for p in expected], abs=1e-4)


def test_raw_body_with_or_without_a_content_type(client):
    data = (DATA / "coffee.jpg").read_bytes()
    for headers in ({"Content-Type": "image/jpeg"}, {"Content-Type": "application/octet-stream"}, {}):
        response = client.post("/v1/recognize", content=data, headers={**AUTH, **headers},
                               params={"topk": 1})
        assert response.status_code == 200, (headers, response.text)
        (result,) = response.json()["results"]
        assert result["predictions"][0]["label"] == "浓缩咖啡" and len(result["predictions"]) == 1
        assert result["image"] == f"<{len(data)} bytes>"


def test_upload_names_are_reduced_to_a_base_name(client):
    data = (DATA / "horse.png").read_bytes()
    response = recognize(client, [("files", ("../../etc/passwd", data, "image/png")),
                                  ("files", ("C:\\Users\\x\\马.png", data, "image/png"))])
    assert [r["image"] for r in response.json()["results"]] == ["passwd", "马.png"]


def test_one_bad_image_among_good_ones_is_reported_per_image(client):
    response = recognize(client, [("files", photo("coffee.jpg")),
                                  ("files", ("notes.jpg", b"just text", "image/jpeg"))])
    assert response.status_code == 200
    good, bad = response.json()["results"]
    assert good["predictions"][0]["index"] == 967 and good["error"] is None
    assert bad["predictions"] == []
    assert bad["error"] == {"type": "ImageError", "message": "not a recognised image format"}


# ---------------------------------------------------------------- every error status


@pytest.mark.parametrize("name, status, reason", [
    ("notes.jpg", 415, "not a recognised image format"), ("random.bin", 415, "not a recognised"),
    ("drawing.svg", 415, "SVG"), ("truncated.jpg", 422, "corrupt or truncated"),
    ("bomb.png", 422, "too large"), ("empty.jpg", 422, "empty"),
])
def test_bad_images_get_415_or_422_with_the_reason(client, name, status, reason):
    data = BAD_FILES[name][1]
    response = recognize(client, [("files", (name, data, "application/octet-stream"))])
    assert response.status_code == status, response.text
    body = response.json()
    assert reason in body["detail"]
    assert body["results"][0]["image"] == name
    assert reason in body["results"][0]["error"]["message"]


def test_decompression_bomb_is_refused_from_its_header_without_decoding(client):
    # 200 megapixels claimed, over the server's --max-pixels of 20 M, under Pillow's own limit.
    response = client.post("/v1/recognize", content=png_claiming(20000, 10000),
                           headers={**AUTH, "Content-Type": "image/png"})
    assert response.status_code == 422
    assert "too large" in response.json()["detail"] and "decompression bomb" in response.json()["detail"]


def test_body_over_the_upload_limit_is_413(client):
    big = b"\xff\xd8" + bytes(MAX_UPLOAD + 500_000)
    response = client.post("/v1/recognize", content=big, headers={**AUTH, "Content-Type": "image/jpeg"})
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    response = recognize(client, [("files", ("big.jpg", big, "image/jpeg"))])
    assert response.status_code == 413

    def chunks():  # no Content-Length: counted while it streams in
        for _ in range(3):
            yield bytes(512 * 1024)

    response = client.post("/v1/recognize", content=chunks(), headers={**AUTH, "Content-Type": "image/jpeg"})
    assert response.status_code == 413


def test_too_many_images_is_413(client):
    files = [("files", photo("horse.png"))] * (MAX_IMAGES + 1)
    response = recognize(client, files)
    assert response.status_code == 413
    assert f"limit is {MAX_IMAGES}" in response.json()["detail"]


def test_urls_are_never_fetched(client):
    response = client.post("/v1/recognize", json={"url": "http://169.254.169.254/latest/meta-data"},
                           headers=AUTH)
    assert response.status_code == 415
    assert "does not fetch URLs" in response.json()["detail"]
    # a URL sent as a form field instead of a file
    response = client.post("/v1/recognize", files={"url": (None, "http://127.0.0.1:1/x.jpg")}, headers=AUTH)
    assert response.status_code == 400 and "does not fetch URLs" in response.json()["detail"]
    response = client.post("/v1/recognize", data={"url": "http://127.0.0.1:1/x.jpg"}, headers=AUTH)
    assert response.status_code == 415


def test_request_errors(client):
    assert client.post("/v1/recognize", content=b"", headers={**AUTH, "Content-Type": "image/jpeg"}).status_code == 400
    for topk in (0, 101, "x"):
        response = client.post("/v1/recognize", params={"topk": topk}, headers=AUTH,
                               content=(DATA / "coffee.jpg").read_bytes())
        assert response.status_code == 422, topk
        assert isinstance(response.json()["detail"], str), response.text
    # parameters FastAPI checks itself answer the same way: one text, not a list of objects
    for params in ({"topk": 0}, {"topk": "x"}):
        response = client.post("/v1/search", params=params, headers=AUTH, content=(DATA / "coffee.jpg").read_bytes())
        assert response.status_code == 422 and response.json()["detail"].startswith("topk: "), response.text
    assert client.get("/v1/recognize", headers=AUTH).status_code == 405
    assert client.get("/no/such/page").status_code == 404
    broken = client.post("/v1/recognize", content=b"--x\r\nnonsense",
                         headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"})
    assert broken.status_code == 400


# ---------------------------------------------------------------- access


def test_api_key_is_enforced_on_recognition(client):
    files = [("files", photo("horse.png"))]
    missing = recognize(client, files, headers={})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert recognize(client, files, headers={"X-API-Key": KEY + "x"}).status_code == 401
    assert recognize(client, files, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert recognize(client, files, headers={"X-API-Key": KEY}).status_code == 200
    assert recognize(client, files, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    # the key is checked before the body is even read
    assert client.post("/v1/recognize", content=bytes(5 * MAX_UPLOAD)).status_code == 401
    # information endpoints stay open
    for path in ("/healthz", "/readyz", "/v1/models", "/metrics", "/"):
        assert client.get(path).status_code == 200, path


def test_cors_is_off_by_default(client):
    preflight = client.options("/v1/recognize", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    response = recognize(client, [("files", photo("horse.png"))],
                         headers={**AUTH, "Origin": "https://evil.example"})
    # another site's page may not send it photos (issue 20: Origin is checked on every POST)
    assert response.status_code == 403 and "access-control-allow-origin" not in response.headers
    assert "Origin" in response.json()["detail"]


def test_listens_on_loopback_only_by_default(server):
    port = f"{server.port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if local_port == port and state == "0A":
                listening.append(address)
    assert listening == ["0100007F"], listening  # 127.0.0.1, and nothing else


# ---------------------------------------------------------------- batching, metrics, info


def test_concurrent_requests_share_inference_batches(client, server):
    before = client.get("/metrics").text
    data = (DATA / "chelsea.jpg").read_bytes()
    n = 16
    barrier = threading.Barrier(n)
    answers = [None] * n

    def one(i):
        with httpx.Client(base_url=server.url, timeout=60) as own:
            barrier.wait()
            answers[i] = own.post("/v1/recognize", content=data,
                                  headers={**AUTH, "Content-Type": "image/jpeg"})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a.status_code == 200 for a in answers)
    assert len({json.dumps(a.json()["results"][0]["predictions"]) for a in answers}) == 1
    after = client.get("/metrics").text
    batches = metric(after, "shiwu_batch_size_count") - metric(before, "shiwu_batch_size_count")
    images = metric(after, "shiwu_batch_size_sum") - metric(before, "shiwu_batch_size_sum")
    assert images == n
    assert batches < n, "no two concurrent requests shared a batch"
    assert images / batches > 1
    assert metric(after, "shiwu_batch_size_bucket", le="8.0") == metric(after, "shiwu_batch_size_count")


def test_metrics_count_requests_errors_and_latency(client):
    recognize(client, [("files", photo("horse.png"))], headers={})  # one more 401
    text = client.get("/metrics").text
    assert text.startswith("# HELP") and "shiwu_batch_size_bucket" in text
    assert metric(text, "shiwu_http_requests_total", path="/v1/recognize", method="POST", status="200") > 0
    assert metric(text, "shiwu_http_requests_total", path="/v1/recognize", method="POST", status="401") > 0
    assert metric(text, "shiwu_errors_total", kind="unauthorized") > 0
    assert metric(text, "shiwu_http_request_duration_seconds_count", path="/v1/recognize") > 0
    assert metric(text, "shiwu_inference_duration_seconds_count") > 0
    assert metric(text, "shiwu_model_ready") == 1
    assert metric(text, "shiwu_images_total", outcome="ok") > 0
    # unknown paths are counted together, so scanners cannot blow up the label set
    client.get("/wp-admin/setup.php")
    assert metric(client.get("/metrics").text, "shiwu_http_requests_total", path="other",
                  method="GET", status="404") >= 1


def test_health_models_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model": "efficientnet-lite0"}
    info = client.get("/v1/models").json()
    (model,) = info["models"]
    assert model["name"] == "efficientnet-lite0" and model["classes"] == 1000 and model["ready"]
    assert info["auth_required"] is True and "test-key" not in json.dumps(info)
    assert info["limits"]["max_images"] == MAX_IMAGES and info["limits"]["max_upload_bytes"] == MAX_UPLOAD
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "cdn." not in docs.text, "the API docs must work offline"
    schema = client.get("/openapi.json").json()
    assert "/v1/recognize" in schema["paths"]
    assert "multipart/form-data" in schema["paths"]["/v1/recognize"]["post"]["requestBody"]["content"]


def test_web_page_is_self_contained(client):
    response = client.get("/")
    assert response.status_code == 200 and "识物" in response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert not re.search(r"""(src|href)=["']https?://""", response.text), "no CDN or external asset"
    assert 'name="viewport"' in response.text


# ---------------------------------------------------------------- command line


def test_serve_with_an_unknown_model_fails_fast():
    run = subprocess.run([sys.executable, "-m", "shiwu", "serve", "--model", "no-such-model"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "no-such-model" in run.stderr


def test_a_server_process_leaves_no_log_of_its_own_behind(tmp_path):
    # hundreds of shiwu-serve-*.log files were found in /tmp after test runs
    import gc

    started = ServerProcess(["--backend", "torch", "--threads", "1", "--no-access-log"]).start()
    own = started.log_path
    assert started.stop() == 0 and "startup complete" in started.log()  # readable after stop
    given = ServerProcess(log_path=tmp_path / "kept.log")
    given.log_path.write_text("asked for")
    del started, given
    gc.collect()
    assert not own.exists()
    assert (tmp_path / "kept.log").read_text() == "asked for"


def test_a_port_in_use_is_said_in_one_line_before_the_model_loads():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "shiwu", "serve", "--port", str(port), "--backend", "torch"],
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert run.returncode == 3, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"shiwu: error: cannot listen on 127.0.0.1:{port}: Address already in use: another program "
        "listens there; choose another --port"]  # no model loaded, no uvicorn lines after it
