"""`shiwu tune` and the settings file: the saved choice is what later commands run with."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.photos import DATA
from shiwu import config
from shiwu.bench import BenchReport, Row
from shiwu.tune import choose, default_sizes

SHIWU = Path(sys.executable).parent / "shiwu"
COFFEE = DATA / "coffee.jpg"


@pytest.fixture
def settings_file(tmp_path, monkeypatch):
    path = tmp_path / "config" / "config.toml"
    monkeypatch.setenv("SHIWU_CONFIG", str(path))
    return path


def test_settings_file_location(monkeypatch, tmp_path):
    monkeypatch.delenv("SHIWU_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config.config_path() == tmp_path / "shiwu" / "config.toml"
    monkeypatch.setenv("SHIWU_CONFIG", str(tmp_path / "elsewhere.toml"))
    assert config.config_path() == tmp_path / "elsewhere.toml"


def test_saving_keeps_other_models_and_tables(settings_file):
    settings_file.parent.mkdir()
    settings_file.write_text('[server]\nport = 8080\n[tuned."efficientnet-lite2"]\nbackend = "torch"\n')
    config.save_tuned("modelscope:damo/cv_resnest101_general_recognition",
                      {"backend": "openvino", "precision": "bf16", "threads": 2, "size": 224,
                       "batch_size": 8, "agreement": 0.993, "cpu": 'Intel "Xeon"\t8', "note": "中文"})
    data = config.read_config()
    assert data["server"] == {"port": 8080}
    assert data["tuned"]["efficientnet-lite2"] == {"backend": "torch"}
    entry = data["tuned"]["modelscope:damo/cv_resnest101_general_recognition"]
    assert entry["cpu"] == 'Intel "Xeon"\t8' and entry["note"] == "中文" and entry["agreement"] == 0.993
    assert config.tuned_for("modelscope:damo/cv_resnest101_general_recognition") == {
        "backend": "openvino", "precision": "bf16", "threads": 2, "size": 224, "batch_size": 8}
    assert config.forget_tuned("efficientnet-lite2") and config.tuned_for("efficientnet-lite2") is None


def test_explicit_options_win_and_precision_goes_with_its_backend(settings_file):
    config.save_tuned("m", {"backend": "openvino", "precision": "int8", "threads": 1, "size": 196,
                            "batch_size": 4})
    tuned = config.resolve("m")
    assert (tuned.backend, tuned.precision, tuned.threads, tuned.size, tuned.batch_size) == (
        "openvino", "int8", 1, 196, 4)
    assert tuned.uses_tuned and set(tuned.source.values()) == {"tuned"}
    other = config.resolve("m", backend="torch", size=224)
    assert (other.backend, other.precision, other.threads, other.size, other.batch_size) == (
        "torch", "fp32", 1, 224, 4)
    assert other.source == {"backend": "option", "precision": "default", "threads": "tuned",
                            "size": "option", "batch_size": "tuned"}
    assert config.resolve("m", backend="openvino").precision == "int8"
    assert config.resolve("another model") == config.Settings("auto", "fp32", None, None, 8, {
        k: "default" for k in config.TUNED_FIELDS})


def test_a_broken_or_odd_file_never_stops_recognition(settings_file, capsys):
    settings_file.parent.mkdir()
    settings_file.write_text("[tuned.\nbackend = ")
    assert config.resolve("m").backend == "auto"
    assert "not valid TOML" in capsys.readouterr().err
    with pytest.raises(config.ConfigError):
        config.save_tuned("m", {"backend": "torch"})   # never overwrite what we cannot read
    settings_file.write_text('[tuned.m]\nbackend = "cuda"\nprecision = "fp8"\nthreads = 0\nsize = 224\n')
    assert config.tuned_for("m") == {"size": 224}


def test_doctor_shows_the_tuned_settings(settings_file):
    from shiwu.doctor import format_report, report

    assert "no tuned settings" in format_report(report())
    config.save_tuned("efficientnet-lite0", {"backend": "onnxruntime", "precision": "fp32", "threads": 1,
                                             "size": 160, "batch_size": 4, "ms_per_image": 3.21,
                                             "agreement": 1.0, "cpu": "another CPU"})
    info = report()
    assert info["settings"]["tuned"]["efficientnet-lite0"]["backend"] == "onnxruntime"
    text = format_report(info)
    assert str(settings_file) in text
    assert "efficientnet-lite0: onnxruntime fp32, 160px, 1 threads, batch 4" in text
    assert "3.21 ms per image" in text and "tuned on another CPU" in text


def test_commands_leave_unset_options_to_the_settings():
    from shiwu.cli import build_parser

    parser = build_parser()
    for argv in (["predict", "x.jpg"], ["batch", "x", "--out", "o.jsonl"], ["serve"], ["eval", "d"]):
        args = parser.parse_args(argv)
        assert (args.backend, args.precision, args.threads, args.size) == (None, None, None, None), argv
    assert parser.parse_args(["predict", "x.jpg"]).batch_size is None


def row(backend, precision, size, batch, ms, agreement, threads=2):
    return Row(backend, precision, size, threads, batch, status="ok", runs_as=backend, ms_p50=ms,
               images_per_s=1000 / ms, agreement=agreement, agreement_images=144)


def verdicts(drops: dict, max_drop: float) -> dict:
    from shiwu.backends.policy import Verdict

    return {k: Verdict("m", k[0], k[1], k[2], "labelled photos", max_drop, drop=d, top1=0.88 * (1 - d),
                       fp32_top1=0.88, photos=500) for k, d in drops.items()}


def test_choose_the_fastest_setting_that_keeps_fp32_accuracy():
    report = BenchReport(model="m", native_size=224, machine={"cpu": "c"}, reference={}, images={}, seconds=1)
    report.rows = [
        row("torch", "fp32", 224, 1, 20, 1.0), row("torch", "fp32", 224, 8, 15, 1.0),
        row("openvino", "fp32", 224, 1, 4, 1.0), row("openvino", "fp32", 224, 8, 3, 1.0),
        row("openvino", "int8", 224, 1, 2, 0.97), row("openvino", "int8", 224, 8, 1.5, 0.97),
        row("onnxruntime", "fp32", 168, 1, 2.5, 0.9), row("onnxruntime", "fp32", 168, 8, 2.4, 0.9),
        Row("ipex", "fp32", 224, 2, 1, status="unavailable", error="missing"),
    ]
    drops = {("torch", "fp32", 224): 0.0, ("openvino", "fp32", 224): 0.0,
             ("openvino", "int8", 224): 0.02, ("onnxruntime", "fp32", 168): 0.04}
    chosen, best, busiest = choose(report, verdicts(drops, 0.01))
    assert {k: chosen[k] for k in config.TUNED_FIELDS} == {
        "backend": "openvino", "precision": "fp32", "threads": 2, "size": 224, "batch_size": 8}
    assert chosen["ms_per_image"] == 4 and chosen["drop"] == 0.0 and chosen["max_drop"] == 0.01
    chosen, _, _ = choose(report, verdicts(drops, 0.03))
    assert (chosen["backend"], chosen["precision"], chosen["batch_size"]) == ("openvino", "int8", 8)
    assert chosen["accuracy_basis"] == "labelled photos" and chosen["drop"] == 0.02
    chosen, _, _ = choose(report, verdicts(drops, 0.05))
    assert (chosen["backend"], chosen["size"]) == ("openvino", 224)   # int8 at 2.0 beats 168px at 2.5
    assert choose(report, verdicts({("openvino", "int8", 224): 0.02}, 0.01)) == (None, None, None)
    assert choose(report, {}) == (None, None, None)   # a setting without a verdict is never chosen


def test_close_settings_are_timed_again_in_interleaved_rounds_before_one_is_saved(monkeypatch):
    """The bench had openvino a little ahead in its own stretch of time; timed in turns, onnxruntime
    is faster, and that is what is saved. A setting far behind is not built again."""
    import time

    from shiwu import backends, tune as tuning
    from shiwu.models.registry import get_model

    report = BenchReport(model="m", native_size=224, machine={"cpu": "c"}, reference={}, images={}, seconds=1)
    report.rows = [row("openvino", "fp32", 224, 1, 8.3, 1.0), row("openvino", "fp32", 224, 8, 6.0, 1.0),
                   row("onnxruntime", "fp32", 224, 1, 8.8, 1.0), row("onnxruntime", "fp32", 224, 8, 5.0, 1.0),
                   row("torch", "fp32", 224, 1, 24.0, 1.0)]
    judged = verdicts({(r, "fp32", 224): 0.0 for r in ("openvino", "onnxruntime", "torch")}, 0.01)
    seconds = {"openvino": 0.004, "onnxruntime": 0.002}
    built, shapes = [], set()

    def fake_class(name):
        class Fake:
            def __init__(self, spec, *, size, precision, threads):
                built.append((name, size, precision, threads))

            def run(self, batch):
                shapes.add(batch.shape)
                time.sleep(seconds[name])
        return Fake

    monkeypatch.setattr(backends, "backend_class", fake_class)
    close = tuning.contenders(report, judged)
    assert sorted(r.backend for r in close) == ["onnxruntime", "openvino"]      # torch: 2.9x behind
    confirmed = tuning.confirm(get_model(None), close)
    assert sorted(built) == [("onnxruntime", 224, "fp32", 2), ("openvino", 224, "fp32", 2)]
    assert shapes == {(1, 3, 224, 224)}
    assert confirmed["onnxruntime fp32 224px 2 threads"] < confirmed["openvino fp32 224px 2 threads"]
    assert choose(report, judged)[0]["backend"] == "openvino"                    # the bench alone
    chosen, _, busiest = choose(report, judged, confirmed)
    assert chosen["backend"] == "onnxruntime" and busiest.batch == 8
    assert chosen["ms_per_image"] == round(confirmed["onnxruntime fp32 224px 2 threads"], 3)
    assert tuning.confirm(get_model(None), close[:1]) == {}                      # one setting: nothing to confirm


def test_default_sizes_follow_the_article():
    assert default_sizes(224) == [224, 196, 168]
    assert default_sizes(260) == [260, 228, 196]


@pytest.mark.slow
def test_tune_writes_settings_that_predict_and_batch_then_use(tmp_path, monkeypatch):
    """A real (tiny) tune at 160px; then `shiwu predict` and `shiwu batch` run with its choice
    without being told, and an option still overrides it."""
    import numpy as np

    from shiwu import Recognizer

    path = tmp_path / "config.toml"
    env = {**os.environ, "SHIWU_CONFIG": str(path)}
    run = subprocess.run(
        [str(SHIWU), "tune", "--backends", "torch,onnxruntime", "--precision", "fp32", "--sizes", "160",
         "--threads", "1", "--batch", "1,4", "--seconds", "0.2", "--views", "18",
         "--max-drop", "1", "--json", str(tmp_path / "tune.json"), "-q"],
        capture_output=True, text=True, encoding="utf-8", timeout=600, env=env)
    assert run.returncode == 0, run.stderr
    assert "saved to" in run.stdout
    monkeypatch.setenv("SHIWU_CONFIG", str(path))
    saved = config.tuned_for("efficientnet-lite0")
    assert saved["backend"] in ("torch", "onnxruntime")
    assert {k: saved[k] for k in ("precision", "threads", "size")} == {"precision": "fp32", "threads": 1, "size": 160}
    assert saved["batch_size"] in (1, 4)
    result = json.loads((tmp_path / "tune.json").read_text(encoding="utf-8"))
    assert result["chosen"]["backend"] == saved["backend"]
    assert len(result["bench"]["rows"]) == 4

    at_160 = Recognizer(backend=saved["backend"], precision="fp32", size=160, threads=1).predict(COFFEE, topk=3)
    at_224 = Recognizer(backend=saved["backend"], precision="fp32", size=224, threads=1).predict(COFFEE, topk=3)
    assert abs(at_160[0].score - at_224[0].score) > 1e-3   # the size shows in the scores

    run = subprocess.run([str(SHIWU), "predict", "--json", "-k", "3", str(COFFEE)],
                         capture_output=True, text=True, encoding="utf-8", timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["backend"] == saved["backend"] and answer["precision"] == "fp32"
    assert [p["index"] for p in answer["predictions"]] == [p.index for p in at_160]
    assert np.allclose([p["score"] for p in answer["predictions"]], [p.score for p in at_160], atol=2e-3)

    run = subprocess.run([str(SHIWU), "predict", "--json", "-k", "3", "--size", "224", str(COFFEE)],
                         capture_output=True, text=True, encoding="utf-8", timeout=300, env=env)
    answer = json.loads(run.stdout)
    assert answer["backend"] == saved["backend"]
    assert np.allclose([p["score"] for p in answer["predictions"]], [p.score for p in at_224], atol=2e-3)

    from shiwu.batch import run_batch

    out = tmp_path / "rows.jsonl"
    summary = run_batch([str(COFFEE)], str(out), workers=0, progress=False, log=lambda m: None)
    assert summary.backend == saved["backend"] and summary.done == 1
    row = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert np.isclose(row["predictions"][0]["score"], at_160[0].score, atol=2e-3)


@pytest.mark.slow
def test_tuned_settings_that_cannot_run_here_fall_back_with_a_warning(settings_file, capsys):
    from shiwu import Recognizer

    config.save_tuned("efficientnet-lite0", {"backend": "onnxruntime", "precision": "bf16", "size": 160})
    r = Recognizer(threads=1)
    assert "cannot run here" in capsys.readouterr().err
    assert r.backend.precision == "fp32" and r.preprocessing.size == 224
    assert not r.settings.uses_tuned
    with pytest.raises(Exception, match="bf16"):   # an explicit request still fails loudly
        Recognizer(backend="onnxruntime", precision="bf16", threads=1)


@pytest.mark.slow
def test_serve_uses_the_tuned_settings(tmp_path):
    import urllib.request

    from shiwu.server.process import ServerProcess

    path = tmp_path / "config.toml"
    config.save_tuned("efficientnet-lite0", {"backend": "torch", "precision": "fp32", "threads": 1,
                                             "size": 160, "batch_size": 2}, path)
    with ServerProcess(["--warmup-seconds", "0", "--max-batch-size", "2"],
                       env={"SHIWU_CONFIG": str(path)}) as server:
        with urllib.request.urlopen(server.url + "/v1/models", timeout=30) as response:
            model = json.loads(response.read())["models"][0]
    assert (model["backend"], model["precision"], model["input_size"]) == ("torch", "fp32", 160)


@pytest.mark.parametrize("flags, measured", [
    ({"sse2", "avx2", "fma"}, ["fp32"]),
    ({"sse2", "avx2", "fma", "avx512f", "avx512_vnni"}, ["fp32", "int8"]),
    ({"sse2", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}, ["fp32", "bf16", "int8"]),
])
def test_tune_measures_the_precisions_this_cpu_runs_natively_unless_told(monkeypatch, flags, measured):
    """As --precision auto: emulated bf16 and int8 without VNNI are slower than fp32 (torch's
    emulated bf16 took 40 s per size in tune on an AVX2 EPYC), so tune leaves them out and says so;
    an explicit --precision measures what it names."""
    import shiwu.cpu
    import shiwu.tune

    monkeypatch.setattr(shiwu.cpu, "cpu_flags", lambda: frozenset(flags))
    asked = []

    def bench(model, *, precisions, **options):
        asked.append(list(precisions))
        report = BenchReport(model="m", native_size=224, machine={}, seconds=1,
                             reference={"backend": "torch", "precision": "fp32", "size": 224},
                             images={"count": 0, "photos": 0, "source": "bundled"})
        report.interrupted = True  # stop tune here: what it was asked to measure is the point
        return report

    monkeypatch.setattr(shiwu.tune, "run_bench", bench)
    result = shiwu.tune.tune(None, save=False, progress=False)
    assert asked == [measured]
    assert set(result.not_measured) == {"fp32", "bf16", "int8"} - set(measured)
    assert result.to_dict()["not_measured"] == result.not_measured
    text = shiwu.tune.format_result(result)
    for precision in result.not_measured:
        assert f"{precision} not measured: this CPU has no" in text
    shiwu.tune.tune(None, precisions=["fp32", "bf16", "int8"], save=False, progress=False)
    assert asked[-1] == ["fp32", "bf16", "int8"]


def test_the_result_says_whether_the_choice_was_saved():
    from shiwu.bench import BenchReport
    from shiwu.tune import TuneResult, format_result

    report = BenchReport(model="m", native_size=224, machine={}, seconds=1,
                         reference={"backend": "torch", "precision": "fp32", "size": 224},
                         images={"count": 0, "photos": 0, "source": "bundled"})
    chosen = {"backend": "onnxruntime", "precision": "fp32", "size": 224, "threads": 2, "batch_size": 8,
              "ms_per_image": 8.0, "drop": None, "accuracy_basis": None}
    dry = format_result(TuneResult(report, 0.01, chosen, None, None))  # --dry-run said nothing of it
    assert dry.splitlines()[-1] == "not saved (--dry-run): run without it to make this the default"
    saved = format_result(TuneResult(report, 0.01, chosen, None, None, config_path="/x/config.toml"))
    assert "saved to /x/config.toml" in saved and "not saved" not in saved
