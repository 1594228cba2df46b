"""The accuracy policy: one table of runtimes, verdicts by accuracy, --precision auto, tune --eval."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiwu.backends import BACKENDS, PRECISIONS, auto, policy, runtimes
from shiwu.backends.estimate import estimated_drop, measures
from shiwu.cpu import cpu_flags
from shiwu.models.registry import get_model

SPEC = get_model("efficientnet-lite0")
SHIWU = Path(sys.executable).with_name("shiwu")
HAS_BF16 = runtimes.cpu_lacks("bf16", cpu_flags()) is None
HAS_VNNI = runtimes.cpu_lacks("int8", cpu_flags()) is None


def test_one_table_of_runtimes_is_what_every_part_reads():
    from shiwu.bench import DEFAULT_BACKENDS

    assert BACKENDS == ("auto", *(r.name for r in runtimes.RUNTIMES))
    assert PRECISIONS == ("auto", "fp32", "bf16", "int8")
    for precision in runtimes.PRECISIONS:
        assert auto.CANDIDATES[precision] == tuple(
            r.name for r in runtimes.RUNTIMES if precision in r.precisions and r.auto)
    assert set(DEFAULT_BACKENDS) == {r.name for r in runtimes.RUNTIMES if r.default_bench}
    for r in runtimes.RUNTIMES:   # int8 has a quantizer, every row names what it reads
        assert (r.calibration is not None) == ("int8" in r.precisions) and r.export_format
    assert runtimes.cpu_lacks("bf16", {"avx2", "fma"}) and runtimes.cpu_lacks("int8", {"avx2"})
    assert runtimes.cpu_lacks("bf16", {"avx512_bf16"}) is None
    assert runtimes.cpu_lacks("int8", {"avx512_vnni"}) is None


def test_the_label_free_estimate_weighs_a_change_by_fp32s_confidence():
    sure = np.array([[9.0, 0, 0], [0, 9.0, 0]])
    unsure = np.array([[1.0, 0.99, 0], [0.99, 1.0, 0]])
    swapped = np.array([[0, 9.0, 0], [9.0, 0, 0]])
    assert estimated_drop(sure, sure) == 0.0
    assert estimated_drop(sure, swapped) > 0.99          # sure answers changed: everything lost
    assert estimated_drop(unsure, swapped) < 0.01        # coin flips changed: nothing lost
    m = measures(unsure, swapped)
    assert m["agreement"] == 0.0 and m["fp32_top1_in_top5"] == 1.0 and m["photos"] == 2


def test_verdicts_follow_mlperfs_rule():
    def verdict(**numbers):
        return policy.Verdict("m", "openvino", "int8", 224, "labelled photos", 0.01, **numbers)

    assert verdict(drop=0.0099).accepted and not verdict(drop=0.0101).accepted
    assert not verdict(drop=0.0, reproduced=0.5).accepted      # the machine computes something else
    assert "reproduced 50%" in verdict(drop=0.0, reproduced=0.5).reason()
    assert policy.Verdict("m", "x", "bf16", 224, "label-free estimate", 0.01, estimated_drop=0.002).accepted
    # without labels, half the limit: the estimate's error on imagenet-dev
    assert not policy.Verdict("m", "x", "int8", 224, "label-free estimate", 0.01, estimated_drop=0.0097).accepted
    assert policy.Verdict("m", "x", "fp32", 224, "reference").accepted


def test_shipped_figures_cover_the_default_model_and_are_consistent():
    data = json.loads(policy.SHIPPED.read_text(encoding="utf-8"))
    assert data["measured_on"]["versions"]["onnxruntime"] and data["measured_on"]["flags"]
    found = {(e["runtime"], e["precision"]): e for e in data["settings"]
             if e["model"] == SPEC.name and e["size"] == 224}
    assert {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")} <= set(found)
    for e in data["settings"]:
        assert len(e["answers"]) == 9 * policy.CHECK_VIEWS_PER_PHOTO
        assert e["drop"] == pytest.approx(1 - e["top1"] / e["fp32_top1"], abs=1e-4)
        assert e["photos"] == 500
    assert policy.shipped_entry(SPEC, "onnxruntime", "int8", 224) == found["onnxruntime", "int8"]


class Broken:
    """A runtime that computes something else (a wrong kernel, a missing instruction)."""
    name, precision = "openvino", "bf16"

    def run(self, batch):
        return np.random.default_rng(len(batch)).standard_normal((len(batch), 1000)).astype(np.float32)


@pytest.mark.slow
def test_a_runtime_that_does_not_reproduce_the_shipped_answers_is_refused():
    assert policy.shipped_entry(SPEC, "openvino", "bf16", 224) is not None or not HAS_BF16
    entry = policy.shipped_entry(SPEC, "openvino", "bf16", 224) or policy.shipped_entry(SPEC, "openvino", "int8", 224)
    found = policy._measure(SPEC, "openvino", entry["precision"], 224, max_drop=1.0, backend=Broken(),
                            threads=2, calibration=None)
    assert found.basis == "labelled photos" and found.reproduced < 0.2 and not found.accepted
    assert "computes something else" in found.reason()


class Recorded:
    """A runtime that gives every recorded answer again (a machine that reproduces them all)."""
    name, precision = "onnxruntime", "int8"

    def __init__(self, answers):
        self.left = list(answers)

    def run(self, batch):
        answers, self.left = self.left[:len(batch)], self.left[len(batch):]
        return np.eye(1000, dtype=np.float32)[answers]


@pytest.mark.slow
def test_figures_measured_on_a_cpu_with_other_instructions_are_said_to_be(monkeypatch):
    from shiwu.doctor import format_verdicts

    mine = policy.machine()
    assert policy.other_instructions({"cpu": "AMD EPYC", "flags": mine["flags"]}, mine) is None
    data = policy.shipped_data()
    elsewhere = {**data, "measured_on": {**data["measured_on"], "cpu": "AMD EPYC",
                                         "flags": sorted(set(mine["flags"]) ^ {"amx_int8"})}}
    monkeypatch.setattr(policy, "shipped_data", lambda: elsewhere)
    entry = policy.shipped_entry(SPEC, "onnxruntime", "int8", 224)
    found = policy._measure(SPEC, "onnxruntime", "int8", 224, max_drop=0.01, backend=Recorded(entry["answers"]),
                            threads=2, calibration=None)
    assert found.reproduced == 1.0 and found.accepted          # the decision is the figures' as before
    assert found.figures_from.startswith("AMD EPYC (") and "amx_int8" in found.figures_from
    assert "labelled figures come from AMD EPYC" in found.describe()
    assert "AMD EPYC" not in found.reason(detail=False)        # the line every run prints stays short
    listed = format_verdicts([{**found.to_dict(), "current": True}])
    assert any("labelled figures from AMD EPYC" in line for line in listed)
    same = {**data, "measured_on": {**data["measured_on"], "flags": mine["flags"]}}
    monkeypatch.setattr(policy, "shipped_data", lambda: same)
    again = policy._measure(SPEC, "onnxruntime", "int8", 224, max_drop=0.01, backend=Recorded(entry["answers"]),
                            threads=2, calibration=None)
    assert again.figures_from is None and "labelled figures" not in again.describe()


def test_a_verdict_from_another_cpu_or_runtime_is_measured_again(monkeypatch):
    here = policy._verdict_path(SPEC, "onnxruntime", "int8", 224, "bundled-x")
    monkeypatch.setattr(policy, "machine", lambda: {"cpu": "another", "flags": [], "versions": {}})
    elsewhere = policy._verdict_path(SPEC, "onnxruntime", "int8", 224, "bundled-x")
    assert here != elsewhere
    monkeypatch.undo()
    assert here != policy._verdict_path(SPEC, "onnxruntime", "int8", 224, "user-y")   # calibration set


def test_auto_times_the_runtimes_in_interleaved_rounds():
    calls = []

    class Fake:
        def __init__(self, name, seconds):
            self.name, self.seconds = name, seconds

        def run(self, batch):
            calls.append(self.name)
            import time
            time.sleep(self.seconds)

    measured = auto.interleaved_medians({"a": Fake("a", 0.002), "b": Fake("b", 0.001)},
                                        np.zeros((1, 3, 8, 8), np.float32), rounds=4, seconds=0.005)
    assert len(measured["a"]["rounds_ms"]) == 4 and measured["b"]["median_ms"] < measured["a"]["median_ms"]
    timed = calls[6:]                                   # after 3 warm-up calls each
    switches = sum(1 for x, y in zip(timed, timed[1:]) if x != y)
    assert switches >= 7                                # a b a b ..., not a a a a b b b b


@pytest.mark.slow
def test_precision_auto_runs_the_fastest_accepted_setting_and_names_it(monkeypatch):
    from shiwu import Recognizer

    monkeypatch.setenv("SHIWU_PRECISION", "auto")
    recognizer = Recognizer(backend="openvino", threads=2)
    assert recognizer.backend.precision in ("fp32", "bf16", "int8")
    if HAS_BF16:   # this CPU can: bf16 was judged (figures reproduced here) and loses nothing
        bf16 = policy.verdict(SPEC, "openvino", "bf16", 224)
        assert bf16.accepted and bf16.reproduced >= policy.REPRODUCE_FLOOR and bf16.drop <= 0
    if HAS_VNNI:   # int8 with the two layers it costs top-1 on in float: within the limit, judged here too
        int8 = policy.verdict(SPEC, "openvino", "int8", 224)
        assert int8.accepted and int8.basis == "labelled photos" and int8.drop < policy.DEFAULT_MAX_DROP
        assert int8.reproduced >= policy.REPRODUCE_FLOOR
    if not (HAS_BF16 or HAS_VNNI):
        assert recognizer.backend.precision == "fp32"
    out = subprocess.run([str(SHIWU), "predict", "--backend", "openvino", "--threads", "2", "--json",
                          str(Path(__file__).parents[1] / "data" / "coffee.jpg")],
                         capture_output=True, text=True, timeout=600, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["precision"] == recognizer.backend.precision   # the remembered choice
    assert f"openvino {recognizer.backend.precision}" in out.stderr                  # and it says so


def test_precision_auto_is_fp32_on_a_cpu_without_bf16_or_vnni(monkeypatch):
    from shiwu import Recognizer
    from shiwu.backends import runtimes as table

    monkeypatch.setattr(table, "cpu_lacks", lambda precision, flags: None if precision == "fp32" else "no")
    recognizer = Recognizer(backend="onnxruntime", precision="auto", size=192, threads=1)
    assert recognizer.backend.precision == "fp32"


def _photo(path: Path, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path)


@pytest.mark.parametrize("layout, message", [
    ({"espresso/a.jpg": 1, "not_a_class/b.jpg": 1}, "'not_a_class' is not a class"),
    ({"espresso/a.jpg": 1, "tabby_cat/": 0}, "'tabby_cat' has no photos"),
    ({"espresso/a.jpg": 1}, "at least two"),
    ({"espresso/a.jpg": 1, "tabby_cat/b.jpg": "broken"}, "unreadable photo tabby_cat/b.jpg"),
])
def test_tune_eval_refuses_a_folder_that_cannot_measure_accuracy(tmp_path, layout, message):
    for name, kind in layout.items():
        path = tmp_path / "eval" / name
        if kind == 0:
            path.mkdir(parents=True)
        elif kind == "broken":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\xff\xd8 not a jpeg")
        else:
            _photo(path)
    out = subprocess.run([str(SHIWU), "tune", "--eval", str(tmp_path / "eval"), "--dry-run", "-q"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and str(tmp_path / "eval") in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_doctor_shows_each_verdict_with_its_numbers():
    policy.verdict(SPEC, "onnxruntime", "fp32", 192, threads=1)
    out = subprocess.run([str(SHIWU), "doctor"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "onnxruntime fp32 192px" in x)
    assert "label-free estimate" in line and ("accepted" in line or "refused" in line)
    info = json.loads(subprocess.run([str(SHIWU), "doctor", "--json"], capture_output=True, text=True,
                                     timeout=300).stdout)
    assert any(v["size"] == 192 and v["estimated_drop"] is not None for v in info["verdicts"])


def test_doctor_lists_the_verdicts_in_use_and_counts_those_of_another_setup(tmp_path, monkeypatch):
    """A verdict judged under other conditions is kept but never looked up here: `shiwu doctor`
    must not list it beside the one in use (on an AVX2 host it showed the fused int8 kernels'
    "reproduced here 69%: refused" next to the unfused kernels' "98%: accepted")."""
    from shiwu.doctor import format_verdicts

    monkeypatch.setenv("SHIWU_CACHE", str(tmp_path))
    judged = iter([0.001, 0.002])
    monkeypatch.setattr(policy, "_measure", lambda spec, runtime, precision, size, **_: policy.Verdict(
        spec.name, runtime, precision, size, "label-free estimate", estimated_drop=next(judged)))
    policy.verdict(SPEC, "onnxruntime", "int8", 224, calibration=None)
    policy.verdict(SPEC, "openvino", "fp32", 196)
    listed = {(v["runtime"], v["precision"]): v["current"] for v in policy.cached_verdicts()}
    assert listed == {("onnxruntime", "int8"): True, ("openvino", "fp32"): True}

    # the same CPU with the other int8 kernels: only the int8 verdict is of another setup
    saturates = runtimes.fused_int8_saturates()
    monkeypatch.setattr(runtimes, "fused_int8_saturates", lambda: not saturates)
    listed = {(v["runtime"], v["precision"]): v["current"] for v in policy.cached_verdicts()}
    assert listed == {("onnxruntime", "int8"): False, ("openvino", "fp32"): True}
    lines = format_verdicts(policy.cached_verdicts())
    assert not any("onnxruntime int8" in line for line in lines)
    assert any("openvino fp32 196px: accepted" in line for line in lines)
    assert "1 more judged with another CPU, runtime version, shiwu or int8 kernels" in lines[-1]
    # written before verdicts recorded their setup: shown unless a current one judges the same setting
    for runtime, size in (("openvino", 196), ("onnxruntime", 168)):
        legacy = policy.Verdict(SPEC.name, runtime, "fp32", size, "label-free estimate", estimated_drop=0.3)
        (tmp_path / "verdicts" / f"legacy-{runtime}.json").write_text(json.dumps(legacy.to_dict()), encoding="utf-8")
    lines = format_verdicts(policy.cached_verdicts())
    assert [line for line in lines if "openvino fp32 196px" in line] == [
        next(line for line in lines if "openvino fp32 196px: accepted" in line)]
    assert any("onnxruntime fp32 168px: refused" in line and "setup not recorded" in line for line in lines)
    assert "2 more judged with another CPU" in lines[-1]
    # another CPU: neither is in use here
    monkeypatch.setattr(policy, "machine", lambda: {"cpu": "another", "flags": [], "versions": {}})
    assert sorted(map(str, (v["current"] for v in policy.cached_verdicts()))) == ["False", "False", "None", "None"]
