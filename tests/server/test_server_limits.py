"""Timeouts and overload on a real `shiwu serve` process: 408, 504, 503.

The server here waits up to 5 s to fill a batch of 64 but gives each request only 1 s, so a
lone request deterministically runs out of time while queued.
"""

import socket
import threading
import time

import pytest

import httpx

from support.photos import DATA  # noqa: E402

from shiwu.server.process import ServerProcess  # noqa: E402


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--backend", "torch", "--threads", "1", "--timeout", "1",
                        "--max-wait-ms", "5000", "--max-batch-size", "64",
                        "--max-images", "2", "--max-queue", "2", "--warmup-seconds", "0",
                        "--cors-origin", "https://app.example", "--no-access-log"]) as process:
        yield process


@pytest.mark.slow
def test_a_request_that_cannot_be_answered_in_time_is_504(server):
    started = time.monotonic()
    response = httpx.post(server.url + "/v1/recognize", content=(DATA / "coffee.jpg").read_bytes(),
                          headers={"Content-Type": "image/jpeg"}, timeout=30)
    elapsed = time.monotonic() - started
    assert response.status_code == 504 and "1 s" in response.json()["detail"]
    assert 0.9 < elapsed < 4


def test_a_body_that_arrives_too_slowly_is_408(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 100000\r\n\r\n\xff\xd8\xff")
        started = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - started < 5


def test_a_full_queue_answers_503_with_retry_after(server):
    data = (DATA / "horse.png").read_bytes()
    first = {}

    def fill_the_queue():  # two images: the whole queue, stuck waiting for a batch of 64
        first["response"] = httpx.post(server.url + "/v1/recognize", timeout=30,
                                       files=[("files", ("a.png", data)), ("files", ("b.png", data))])

    thread = threading.Thread(target=fill_the_queue)
    thread.start()
    time.sleep(0.4)
    response = httpx.post(server.url + "/v1/recognize", content=data,
                          headers={"Content-Type": "image/png"}, timeout=30)
    thread.join()
    assert response.status_code == 503, (response.text, first["response"].text)
    assert response.headers["retry-after"] == "1" and "busy" in response.json()["detail"]
    assert "2 images are in progress (limit 2)" in response.json()["detail"]
    assert first["response"].status_code == 504
    # after the timeout the queued images are dropped: the queue is empty again
    metrics = httpx.get(server.url + "/metrics").text
    assert "shiwu_images_in_progress 0.0" in metrics
    assert "shiwu_queue_images 0.0" in metrics, [l for l in metrics.splitlines() if "queue" in l]
    assert 'shiwu_errors_total{kind="overloaded"} 1.0' in metrics


def test_cors_allows_only_the_listed_origin(server):
    def preflight(origin):
        return httpx.options(server.url + "/v1/recognize", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key"})

    allowed = preflight("https://app.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    refused = preflight("https://evil.example")
    assert "access-control-allow-origin" not in refused.headers

