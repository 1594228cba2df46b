"""Issue 20 on a real `shiwu serve` (127.0.0.1 only): web pages cannot drive it (Origin, Host),
thumbnails read only the indexed regular files (a FIFO, a folder swapped for a link), gallery
labels are portable folder names, a cut-off gallery write does not stop the start, and
`--port 70000` is a usage error."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from support.photos import DATA

from shiwu.index import real_path, row_id
from shiwu.server.process import ServerProcess

SHIWU = str(Path(sys.executable).parent / "shiwu")
FAST = ["--backend", "onnxruntime", "--threads", "1"]
SERVE = [*FAST, "--max-batch-size", "2", "--warmup-seconds", "0", "--no-access-log"]
EVIL = "https://evil.example"


def shiwu(*args, timeout=300):
    return subprocess.run([SHIWU, *map(str, args)], capture_output=True, text=True, encoding="utf-8",
                          timeout=timeout)


def photo(name="coffee.jpg"):
    return ("files", (name, (DATA / name).read_bytes(), "image/jpeg"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Indexed photos, each in its own folder; a look-alike of one outside the tree."""
    root = tmp_path_factory.mktemp("trust")
    photos = root / "photos"
    for folder, name in (("fifo", "coffee.jpg"), ("swap", "chelsea.jpg"), ("kept", "astronaut.jpg")):
        (photos / folder).mkdir(parents=True)
        shutil.copy2(DATA / name, photos / folder / name)
    index = root / "index"
    run = shiwu("index", photos, "--recursive", "--out", index, *FAST, "-q", timeout=600)
    assert run.returncode == 0, run.stderr
    gallery = root / "gallery"
    gallery.mkdir()
    (gallery / "readme.txt").write_text("a file in the gallery root")
    return root


@pytest.fixture(scope="module")
def server(tree):
    with ServerProcess([*SERVE, "--index", str(tree / "index"), "--gallery", str(tree / "gallery")],
                       ready_timeout=300) as process:
        yield process


def row(tree, folder, name):
    return str(row_id(real_path(tree / "photos" / folder / name)))


# ---------------------------------------------------------------- item 3: Origin and Host


@pytest.mark.slow
def test_another_sites_page_cannot_post(server, tree):
    for origin in (EVIL, "null", "http://127.0.0.1:1"):
        response = httpx.post(server.url + "/v1/gallery/偷偷", files=[photo()], timeout=60,
                              headers={"Origin": origin})
        assert response.status_code == 403, (origin, response.text)
        assert "Origin" in response.json()["detail"]
    no_origin = httpx.post(server.url + "/v1/recognize", files=[photo()], timeout=60,
                           headers={"Sec-Fetch-Site": "cross-site"})
    assert no_origin.status_code == 403
    assert not (tree / "gallery" / "偷偷").exists()
    # the server's own page (same origin) and clients that send no Origin (curl) go through
    same = httpx.post(server.url + "/v1/recognize", files=[photo()], timeout=60,
                      headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200, same.text
    assert httpx.post(server.url + "/v1/recognize", files=[photo()], timeout=60).status_code == 200


def test_another_sites_page_cannot_probe_thumbnails_or_start_a_library_read(server, tree):
    indexed = row(tree, "kept", "astronaut.jpg")
    # what an <img src=…> on another site sends: no Origin, Sec-Fetch-Site cross-site. Both an
    # indexed and a made-up row get the same 403 before the route runs: nothing to tell apart
    for path in (f"/v1/thumbnails/{indexed}", "/v1/thumbnails/12345", "/v1/duplicates", "/v1/index"):
        response = httpx.get(server.url + path, timeout=60,
                             headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image"})
        assert response.status_code == 403, (path, response.text)
        assert "cross-site" in response.json()["detail"]
    evil_fetch = httpx.get(server.url + "/v1/duplicates", headers={"Origin": EVIL}, timeout=60)
    assert evil_fetch.status_code == 403 and "answers are refused" in evil_fetch.json()["detail"]
    # the page itself, curl, and a link to the page from anywhere still work
    own = httpx.get(server.url + f"/v1/thumbnails/{indexed}", timeout=60, headers={"Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200 and own.headers["cross-origin-resource-policy"] == "same-origin"
    assert httpx.get(server.url + f"/v1/thumbnails/{indexed}", timeout=60).status_code == 200
    page = httpx.get(server.url + "/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert page.status_code == 200


def test_any_origin_needs_an_api_key():
    run = shiwu("serve", *SERVE, "--cors-origin", "*", "--port", "1", timeout=120)
    assert run.returncode == 2 and "--cors-origin '*'" in run.stderr and "--api-key" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_only_the_names_it_is_served_as_are_answered(server):
    # a DNS-rebinding page: the browser sends its own name as Host
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example"):
        for method, path in (("GET", "/v1/index"), ("POST", "/v1/search?text=猫"),
                             ("GET", "/v1/thumbnails/1"), ("GET", "/")):
            response = httpx.request(method, server.url + path, headers={"Host": host}, timeout=30)
            assert response.status_code == 400, (host, path, response.text)
            assert "--allowed-hosts" in response.json()["detail"]
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
        assert httpx.get(server.url + "/v1/index", headers={"Host": host}, timeout=30).status_code == 200
    # probes answer by address whatever the Host
    assert httpx.get(server.url + "/healthz", headers={"Host": "10.0.0.7"}, timeout=30).status_code == 200


@pytest.mark.slow
def test_allowed_hosts_and_cors_origins_open_what_they_name(tree):
    args = [*SERVE, "--allowed-hosts", "photos.lan,*.example.net", "--cors-origin", "https://app.example"]
    with ServerProcess(args, ready_timeout=300) as process:
        def get(host):
            return httpx.get(process.url + "/v1/models", headers={"Host": host}, timeout=30).status_code
        assert get("photos.lan") == 200 and get("a.example.net:8443") == 200
        assert get("127.0.0.1") == 400 and get("evil.example") == 400
        allowed = httpx.post(process.url + "/v1/recognize", files=[photo()], timeout=60,
                             headers={"Host": "photos.lan", "Origin": "https://app.example"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        refused = httpx.post(process.url + "/v1/recognize", files=[photo()], timeout=60,
                             headers={"Host": "photos.lan", "Origin": EVIL})
        assert refused.status_code == 403


# ---------------------------------------------------------------- items 5 and 7: thumbnails


def test_a_fifo_in_place_of_an_indexed_photo_does_not_hang_anything(server, tree):
    target = tree / "photos" / "fifo" / "coffee.jpg"
    thumbnail = f"{server.url}/v1/thumbnails/{row(tree, 'fifo', 'coffee.jpg')}"
    assert httpx.get(thumbnail, timeout=30).status_code == 200
    target.unlink()
    os.mkfifo(target)
    started = time.monotonic()
    for _ in range(12):  # more than every thread that could serve it
        response = httpx.get(thumbnail, timeout=10)
        assert response.status_code == 404, response.text
    assert time.monotonic() - started < 10
    assert httpx.get(server.url + "/healthz", timeout=10).json() == {"status": "ok"}
    kept = httpx.get(f"{server.url}/v1/thumbnails/{row(tree, 'kept', 'astronaut.jpg')}", timeout=10)
    assert kept.status_code == 200 and kept.headers["content-type"] == "image/jpeg"
    found = httpx.post(server.url + "/v1/search", files=[photo("astronaut.jpg")], timeout=60)
    assert found.status_code == 200


def test_a_folder_swapped_for_a_link_after_indexing_is_not_followed(server, tree):
    folder = tree / "photos" / "swap"
    thumbnail = f"{server.url}/v1/thumbnails/{row(tree, 'swap', 'chelsea.jpg')}"
    assert httpx.get(thumbnail, timeout=30).status_code == 200
    # outside the indexed tree: a file of the same name, size and modification time
    outside = tree / "outside"
    outside.mkdir()
    shutil.copy2(folder / "chelsea.jpg", outside / "chelsea.jpg")
    folder.rename(tree / "photos" / "swap.orig")
    folder.symlink_to(outside, target_is_directory=True)
    response = httpx.get(thumbnail, timeout=30)
    assert response.status_code == 404, response.headers.get("content-type")
    assert "link" in response.json()["detail"]


# ---------------------------------------------------------------- item 6: a cut-off first write


@pytest.mark.slow
def test_a_class_with_only_a_temporary_file_does_not_stop_the_start(tmp_path):
    gallery = tmp_path / "gallery"
    (gallery / "半截").mkdir(parents=True)  # a first write cut by kill -9: only its temporary file
    (gallery / "半截" / ".tmp-k3j2h1-0123456789abcdef01234567.jpg").write_bytes(b"\xff\xd8\xff half")
    (gallery / "旧的").mkdir()
    old = gallery / "旧的" / ".tmp-a1b2c3-fedcba9876543210fedcba98.jpg"
    old.write_bytes(b"\xff\xd8\xff half")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    with ServerProcess([*SERVE, "--gallery", str(gallery)], ready_timeout=300) as process:
        listed = httpx.get(process.url + "/v1/gallery", timeout=30).json()
        assert listed["configured"] and listed["ready"] and listed["classes"] == []
        taught = httpx.post(process.url + "/v1/gallery/半截", files=[photo()], timeout=60)
        assert taught.status_code == 200 and taught.json()["examples"] == 1, taught.text
    assert (gallery / "半截").exists()  # a fresh temporary file: a live writer's, maybe
    assert not (gallery / "旧的").exists()  # an hour old: a dead writer's, cleaned


# ---------------------------------------------------------------- item 13: portable labels


@pytest.mark.parametrize("label", ["𠀀" * 64, "readme.txt", "CON", "NUL", "com1", "aux.txt", "trail.",
                                   "Lpt9.jpeg"])
def test_labels_that_are_not_portable_folder_names_are_400(server, tree, label):
    response = httpx.post(f"{server.url}/v1/gallery/{label}", files=[photo()], timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["detail"]
    assert set(os.listdir(tree / "gallery")) == {"readme.txt"}


# ---------------------------------------------------------------- item 14: --port out of range


@pytest.mark.parametrize("port", ["70000", "0", "-1", "http"])
def test_a_port_out_of_range_is_a_usage_error(port):
    run = shiwu("serve", "--port", port, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "TCP port" in run.stderr


def test_sigterm_stops_the_server_after_the_fifo(server):
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
