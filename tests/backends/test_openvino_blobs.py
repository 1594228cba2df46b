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

import json
import os
import shutil
import subprocess
import sys
import threading
import time

from support.photos import PHOTOS

from shiwu import cache
from shiwu.backends.runtimes import cpu_lacks
from shiwu.cpu import cpu_flags

SHIWU = os.path.join(os.path.dirname(sys.executable), "shiwu")

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
    blobs = cache.cache_dir() / "openvino-blobs" / "f32"
    shutil.rmtree(blobs, ignore_errors=True)  # the session's cache: nothing compiled yet
    blobs.mkdir(parents=True)
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


def test_a_bf16_compile_never_imports_the_fp32_blob_of_the_same_graph(clip_dir, tmp_path):
    """OpenVINO 2026.4 names a blob without its precision hint: with one blob folder for every
    precision, `-p bf16` after `-p fp32` on one cache imported the fp32 blob, and the Chinese-CLIP
    ViT crashed (SIGSEGV, exit 139) or answered NaN. Each precision has a folder of its own now,
    and bf16 after fp32 answers as bf16 does on a fresh cache; without bf16 it is refused."""
    model = clip_dir("ViT-B-16")

    def predict(folder, precision):
        env = {**os.environ, "SHIWU_CACHE": str(tmp_path / folder), "SHIWU_CONFIG": os.devnull}
        return subprocess.run([SHIWU, "predict", str(PHOTOS[0]), "--model", str(model), "--labels",
                               "快递柜,电饭煲,油菜花田,虎斑猫", "-b", "openvino", "-p", precision, "--json"],
                              capture_output=True, text=True, encoding="utf-8", timeout=600, env=env)

    fp32 = predict("shared", "fp32")
    assert fp32.returncode == 0, fp32.stderr[-2000:]
    after = predict("shared", "bf16")
    if cpu_lacks("bf16", cpu_flags()):
        assert after.returncode != 0 and "AVX-512 BF16 or AMX" in after.stderr, after.stderr[-2000:]
        return
    assert after.returncode == 0, f"exit {after.returncode} (139 or -11: SIGSEGV): {after.stderr[-2000:]}"
    fresh = predict("fresh", "bf16")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert json.loads(after.stdout)["predictions"] == json.loads(fresh.stdout)["predictions"]
    assert json.loads(after.stdout)["precision"] == "bf16"
    assert sorted(p.name for p in (tmp_path / "shared" / "openvino-blobs").iterdir()) == ["bf16", "f32"]


def test_blobs_of_the_layout_without_precision_folders_are_removed(tmp_path):
    """An earlier shiwu kept its blobs directly in openvino-blobs/: never read again, removed at the
    next compilation (each can be hundreds of MB); what else is there is left alone."""
    env = {**os.environ, "SHIWU_CACHE": str(tmp_path), "SHIWU_CONFIG": os.devnull}
    root = tmp_path / "openvino-blobs"
    root.mkdir()
    (root / "1234567890.blob").write_bytes(b"an fp32 or bf16 blob of an earlier shiwu")
    (root / "notes.txt").write_text("not a blob", encoding="utf-8")
    code = ("from shiwu.backends.openvino import OpenVINOBackend; from shiwu.models.registry import get_model; "
            "OpenVINOBackend(get_model('efficientnet-lite0'), size=224, precision='fp32', threads=1)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in root.iterdir()) == ["f32", "notes.txt"]
    assert any(p.suffix == ".blob" for p in (root / "f32").iterdir())
