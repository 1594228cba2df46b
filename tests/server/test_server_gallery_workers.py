"""Issue 20 item 4: with `shiwu serve --workers N --gallery DIR`, a class taught through one
worker is seen by every worker (the folder and the example cache are the shared store; the
other workers reload on the change marker)."""

import concurrent.futures
import time

import httpx
import pytest

from support.photos import DATA

from shiwu.server.process import ServerProcess

SERVE = ["--backend", "onnxruntime", "--threads", "1", "--max-batch-size", "1", "--warmup-seconds", "0",
         "--workers", "2"]


def recognize(url: str) -> str:
    with httpx.Client(timeout=120) as client:  # a new connection: any worker may accept it
        response = client.post(url + "/v1/recognize", params={"topk": 1},
                               files=[("files", ("q.jpg", (DATA / "rocket.jpg").read_bytes(), "image/jpeg"))])
        assert response.status_code == 200, response.text
        return response.json()["results"][0]["predictions"][0]["label"]


@pytest.mark.slow  # two model-loading workers on a small machine
def test_a_class_taught_through_one_worker_reaches_every_worker(tmp_path):
    gallery = tmp_path / "gallery"
    with ServerProcess([*SERVE, "--gallery", str(gallery)], ready_timeout=300) as server:
        time.sleep(3)  # the second worker: /readyz answered for the first one only
        taught = httpx.post(server.url + "/v1/gallery/我的火箭", timeout=120,
                            files=[("files", ("r.jpg", (DATA / "rocket.jpg").read_bytes(), "image/jpeg"))])
        assert taught.status_code == 200 and len(taught.json()["added"]) == 1, taught.text
        labels = []
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            for _ in range(5):  # concurrent requests on new connections spread over the workers
                labels += pool.map(recognize, [server.url] * 6)
                if "reloaded" in server.log():
                    break
        listed = [httpx.get(server.url + "/v1/gallery", timeout=30).json()["classes"] for _ in range(6)]
        log = server.log()
    assert labels and set(labels) == {"我的火箭"}, labels
    assert "changed in another process: reloaded" in log, log[-3000:]  # the other worker saw it
    assert all(classes == [{"label": "我的火箭", "examples": 1}] for classes in listed), listed
