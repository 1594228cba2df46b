"""Several processes sharing one cache while OpenVINO writes its compiled-model blobs.

Before, OpenVINO wrote ``<hash>.blob`` in place in the shared ``openvino-blobs`` folder: another
process imported it half written, or had it mapped while a third process, which had started
compiling before the blob existed, truncated and rewrote it: SIGBUS (exit 135, no message). With 4
``shiwu batch --backend openvino`` started 0.2-1 s apart on a fresh blob folder that crashed about
one run in four, and 6 processes 0.1 s apart one trial in five: too rare for a test to fail by.
So the test also watches the shared folder itself, and that fails on every run of the old code:
a blob there must appear whole (one size per file, from its first sighting to the end) and be
the one every later process imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time


from shiwu import cache

CHILD = """
import sys, time
import numpy as np
from shiwu.backends.openvino import OpenVINOBackend
from shiwu.models.registry import get_model

spec = get_model("efficientnet-lite0")
go, seconds = float(sys.argv[1]), float(sys.argv[2])
while time.time() < go:
    time.sleep(0.002)
backend = OpenVINOBackend(spec, size=224, precision="fp32", threads=1)
pixels = np.zeros((1, 224, 224, 3), np.uint8)
end = time.time() + seconds
while time.time() < end:  # reads the weights, from the blob's mapping when it was imported
    backend.run_pixels(pixels)
request = backend._pixel_request  # False: the uint8 graph failed to compile (a partial blob)
print(request and request.get_compiled_model().get_property("LOADED_FROM_CACHE"))
"""


def watch(folder, seen: dict, stop: threading.Event) -> None:
    """Every (blob name, inode) in ``folder`` and each size it was seen with, until ``stop``."""
    while not stop.is_set():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            entries = []
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            seen.setdefault((entry.name, info.st_ino), set()).add(info.st_size)
        time.sleep(0.0005)


def children(count: int, gap: float, seconds: float) -> list[subprocess.Popen]:
    go = time.time() + 3  # after every child has imported shiwu and OpenVINO
    return [subprocess.Popen([sys.executable, "-c", CHILD, str(go + i * gap), str(seconds)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(count)]


def test_processes_compiling_into_one_blob_folder_never_see_a_partial_blob():
    from shiwu.backends.openvino import OpenVINOBackend
    from shiwu.models.registry import get_model

    OpenVINOBackend(get_model("efficientnet-lite0"), size=224, precision="fp32", threads=1)  # the graphs
    blobs = cache.cache_dir() / "openvino-blobs"
    shutil.rmtree(blobs, ignore_errors=True)  # the session's cache: nothing compiled yet
    blobs.mkdir()
    seen: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(blobs, seen, stop), daemon=True)
    watcher.start()
    try:
        # started 0.1 s apart: the first compile, the later import while earlier ones still write
        racers = children(6, 0.1, 2.0)
        results = [(p.wait(timeout=300), *p.communicate()) for p in racers]
    finally:
        stop.set()
        watcher.join()
    for code, out, err in results:
        assert code == 0, f"exit {code} (-7: SIGBUS): {err[-2000:]}"
        assert out.split() in (["True"], ["False"]), f"the uint8 graph did not compile: {out} {err[-2000:]}"
    final = {p.name: p.stat() for p in blobs.iterdir()}
    assert final and all(name.endswith(".blob") for name in final), sorted(final)  # no private folder left
    # a blob in the shared folder is only ever seen whole: one size, the size it has at the end
    for (name, inode), sizes in seen.items():
        assert len(sizes) == 1, f"{name} (inode {inode}) was seen growing or truncated: {sorted(sizes)}"
        if name in final and final[name].st_ino == inode:
            assert sizes == {final[name].st_size}
    # and it is what the next process imports: nothing compiled, nothing written again
    (later,) = children(1, 0, 0.2)
    code, out, err = later.wait(timeout=300), *later.communicate()
    assert code == 0 and out.split() == ["True"], err[-2000:]
    assert {p.name: p.stat().st_ino for p in blobs.iterdir()} == {n: s.st_ino for n, s in final.items()}
