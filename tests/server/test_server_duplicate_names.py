"""GET /v1/duplicates on an index holding a byte-identical copy whose name is not UTF-8 (GBK
bytes) and a file that cannot be decoded: `shiwu index` then `shiwu serve --index` as a user runs
them. The copy's row keeps its name as a file:// URI; the server once looked the file up by that
text, took it for "gone since indexing" and left the group out of the answer without a word."""

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from shiwu.server.process import ServerProcess
from support.duplicates import FAST, SERVE, SHIWU
from support.photos import DATA

GBK = os.fsdecode("测试".encode("gbk") + b".jpg")  # b'\xb2\xe2\xca\xd4.jpg'
GBK_READABLE = "\\xb2\\xe2\\xca\\xd4.jpg"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(DATA / "astronaut.jpg", folder / "astronaut.jpg")
    shutil.copy(DATA / "astronaut.jpg", os.path.join(os.fspath(folder), GBK))  # the same bytes
    shutil.copy(DATA / "camera.jpg", folder / "camera.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    index = tmp_path_factory.mktemp("index") / "索引"
    run = subprocess.run([SHIWU, "index", str(folder), "--out", str(index), *FAST, "-q"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr  # broken.jpg: a row with its error
    with ServerProcess([*SERVE, "--index", str(index)]) as process:
        yield process


@pytest.mark.slow
@pytest.mark.parametrize("tier", ["similar", "exact"])
def test_the_copy_is_in_its_group_and_the_unreadable_file_is_named(server, tier):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        answer = client.get("/v1/duplicates", params={"tier": tier})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["index"]["rows"] == 4
        (group,) = body["groups"]
        assert [Path(i["path"]).name for i in group["images"]] == [GBK_READABLE, "astronaut.jpg"]
        assert group["tier"] == "exact" and [i["match"] for i in group["images"]] == [None, "exact"]
        thumbnail = client.get(group["images"][0]["thumbnail"])  # opened through the lossless form
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
        (unread,) = body["unread"]
        assert Path(unread["path"]).name == "broken.jpg" and unread["reason"] == "not a recognised image format"
