"""Every runtime agrees with torch eager; exports are cached, rebuilt when corrupt, and the
ONNX Runtime / OpenVINO paths start without torch once cached."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from shiwu import Recognizer
from shiwu.backends import BackendUnavailable, backend_class, create_backend, export
from shiwu.cache import entry_path, weights_fingerprint
from shiwu.images import load_image
from shiwu.models.registry import get_model

from support.photos import PHOTOS

SPEC = get_model()
FP32_BACKENDS = ["torchscript", "onnxruntime", "openvino", "compile"]


@pytest.fixture(scope="module")
def photo_batch():
    return SPEC.preprocessing.batch([load_image(p) for p in PHOTOS])


@pytest.fixture(scope="module")
def eager_logits(photo_batch):
    return create_backend("torch", SPEC, size=224, threads=2).run(photo_batch)


@pytest.mark.parametrize("name", FP32_BACKENDS)
@pytest.mark.slow
def test_fp32_backends_match_eager(name, photo_batch, eager_logits):
    backend = create_backend(name, SPEC, size=224, precision="fp32", threads=2)
    assert backend.name == name and backend.precision == "fp32"
    if name == "compile":  # each new batch size recompiles (a minute on 2 cores): one is enough
        logits = backend.run(photo_batch)
    else:  # the batch axis is dynamic: batch 1 and batch N from one model
        logits = np.concatenate([backend.run(photo_batch[:1]), backend.run(photo_batch[1:])])
    assert logits.shape == eager_logits.shape and logits.dtype == np.float32
    np.testing.assert_array_equal(logits.argmax(1), eager_logits.argmax(1))
    assert np.abs(logits - eager_logits).max() < 2e-3  # fp32 re-association, not a lower precision


def test_openvino_fp32_is_really_fp32_and_bf16_is_named(photo_batch, eager_logits):
    """OpenVINO defaults to bf16 on CPUs that have it; fp32 must be asked for, and is far
    closer. A CPU without bf16 instructions gets a refusal that says so, never a silent fp32."""
    from shiwu.backends.openvino import bf16_supported

    fp32 = create_backend("openvino", SPEC, size=224, precision="fp32", threads=2).run(photo_batch)
    assert np.abs(fp32 - eager_logits).max() < 2e-3
    if not bf16_supported():
        with pytest.raises(BackendUnavailable, match="no bf16 instructions"):
            create_backend("openvino", SPEC, size=224, precision="bf16", threads=2)
        with pytest.raises(BackendUnavailable, match="no bf16 instructions"):
            Recognizer(backend="openvino", precision="bf16")
        return
    bf16_backend = create_backend("openvino", SPEC, size=224, precision="bf16", threads=2)
    assert bf16_backend.precision == "bf16"
    bf16 = bf16_backend.run(photo_batch)
    fp32_error = np.abs(fp32 - eager_logits).max()
    bf16_error = np.abs(bf16 - eager_logits).max()
    assert fp32_error < 2e-3 < bf16_error
    result = Recognizer(backend="openvino", precision="bf16").recognize([PHOTOS[0]])[0].to_dict()
    assert result["precision"] == "bf16" and result["backend"] == "openvino"


def test_export_is_cached_and_reused(monkeypatch):
    path = export.cached_onnx(SPEC, 224)
    mtime = path.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache had the model")

    monkeypatch.setattr(export, "export_onnx", no_export)
    backend = create_backend("onnxruntime", SPEC, size=224, threads=1)
    assert backend.model_path == path and path.stat().st_mtime_ns == mtime
    create_backend("openvino", SPEC, size=224, threads=1)


def test_cache_key_separates_sizes_and_precisions():
    key = dict(model=SPEC.name, fingerprint=weights_fingerprint(SPEC.weights_path()), kind="onnx",
               runtime_version="x", suffix=".onnx")
    paths = {entry_path(size=s, precision=p, **key) for s in (224, 196) for p in ("fp32", "int8")}
    assert len(paths) == 4


@pytest.mark.slow
def test_corrupt_cache_entry_is_rebuilt(photo_batch, eager_logits):
    path = export.cached_onnx(SPEC, 196)
    path.write_bytes(b"\x00garbage, as after a crash mid-write on another tool" * 10)
    for name in ("onnxruntime", "openvino"):
        backend = create_backend(name, SPEC, size=196, threads=1)
        assert backend.run(SPEC.preprocessing.with_size(196).batch([load_image(PHOTOS[0])])).shape == (1, 1000)
    assert path.stat().st_size > 1_000_000


@pytest.mark.slow
def test_concurrent_exports_leave_one_complete_file(tmp_path):
    env = {**os.environ, "SHIWU_CACHE": str(tmp_path)}
    code = ("from shiwu.backends.export import cached_onnx; from shiwu.models.registry import get_model;"
            "print(cached_onnx(get_model(), 160))")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1]
    import onnxruntime as ort
    session = ort.InferenceSession(outputs[0], providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 160, 160]
    leftovers = [p for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".tmp-") or p.suffix == ".tmp"]
    assert leftovers == []


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
@pytest.mark.slow
def test_cached_runtimes_start_without_torch(name):
    export.cached_onnx(SPEC, 224)
    code = (f"import sys; from shiwu import Recognizer; r = Recognizer(backend={name!r}); "
            f"p = r.predict({str(PHOTOS[0])!r}); print(p[0].index, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    index, torch_loaded = out.stdout.split()
    assert torch_loaded == "False"


@pytest.mark.slow
def test_auto_measures_once_then_remembers(capfd):
    first = Recognizer(backend="auto", precision="fp32", size=200, threads=1)
    err = capfd.readouterr().err
    assert "measuring backends" in err and f"using {first.backend.name}" in err
    assert first.backend.name in ("openvino", "onnxruntime", "torchscript", "torch")
    second = Recognizer(backend="auto", precision="fp32", size=200, threads=1)
    assert "measuring" not in capfd.readouterr().err
    assert second.backend.name == first.backend.name
    doctor = subprocess.run([sys.executable, "-m", "shiwu", "doctor", "--json"], capture_output=True,
                            text=True, timeout=300)
    choices = json.loads(doctor.stdout)["auto_choices"]
    assert any(c["size"] == 200 and c["winner"] == first.backend.name and c["ms_per_image"] for c in choices)


@pytest.mark.slow
def test_int8_is_checked_against_fp32_before_it_is_offered(photo_batch, eager_logits):
    """int8 passes the accuracy policy (top-1 >= 99% of fp32's), or is refused with the figures."""
    from shiwu.backends import policy

    for name in ("openvino", "onnxruntime"):
        try:
            backend = create_backend(name, SPEC, size=224, precision="int8", threads=2)
        except BackendUnavailable as exc:
            message = str(exc)
            assert "int8 is not offered" in message and ("limit" in message or "reproduced" in message), message
            continue
        assert policy.verdict(SPEC, name, "int8", 224).accepted
        assert backend.precision == "int8"
        # these test photos include scenes no ImageNet class fits (coins, a retina); where fp32
        # is sure of its answer, int8 must give the same one
        p = np.exp(eager_logits - eager_logits.max(1, keepdims=True))
        sure = (p / p.sum(1, keepdims=True)).max(1) >= 0.5
        assert sure.sum() >= 3
        assert np.mean(backend.run(photo_batch).argmax(1)[sure] == eager_logits.argmax(1)[sure]) >= 0.8
        # the verdict that let it run holds its agreement with fp32 on the 108 check views
        assert 0.0 <= policy.verdict(SPEC, name, "int8", 224).agreement <= 1.0


def test_ipex_explains_why_it_is_missing():
    try:
        import intel_extension_for_pytorch  # noqa: F401
    except Exception:
        with pytest.raises(BackendUnavailable, match="2.8"):
            backend_class("ipex")(SPEC, size=224)
        # asked for by name with the default precision (auto): the runtime is named, not "auto"
        with pytest.raises(BackendUnavailable) as refused:
            create_backend("ipex", SPEC, size=224, precision="auto")
        assert str(refused.value).startswith("--backend ipex cannot run here: ipex ")
        assert "2.8" in str(refused.value) and "run auto" not in str(refused.value)
    else:
        assert backend_class("ipex")(SPEC, size=224).run(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 1000)


def test_threads_reach_the_runtime():
    backend = create_backend("onnxruntime", SPEC, size=224, threads=1)
    assert backend.session.get_session_options().intra_op_num_threads == 1


def test_export_command_writes_a_deployable_model(tmp_path):
    out = tmp_path / "lite0.onnx"
    run = subprocess.run([sys.executable, "-m", "shiwu", "export", "--format", "onnx", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    import onnxruntime as ort
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    batch = SPEC.preprocessing.batch([load_image(PHOTOS[0])])
    reference = create_backend("torch", SPEC, size=224).run(batch)
    np.testing.assert_allclose(session.run(None, {"input": batch})[0], reference, atol=2e-3)
    labels = (tmp_path / "lite0.onnx.labels.tsv").read_text(encoding="utf-8").splitlines()
    assert len(labels) == 1000 and labels[967].startswith("967\t浓缩咖啡")


@pytest.mark.slow
def test_auto_skips_a_runtime_that_breaks_and_says_why(monkeypatch, capfd):
    from shiwu.backends import auto

    real = auto.backend_class

    def flaky(name):
        if name == "openvino":
            def broken(*args, **kwargs):
                raise RuntimeError("simulated export failure")
            return broken
        return real(name)

    monkeypatch.setattr(auto, "backend_class", flaky)
    recognizer = Recognizer(backend="auto", precision="fp32", size=176, threads=1)
    assert recognizer.backend.name in ("onnxruntime", "torchscript", "torch")
    assert "openvino     skipped: RuntimeError: simulated export failure" in capfd.readouterr().err
