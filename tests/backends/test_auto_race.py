"""--backend auto by successive elimination: every setting runs the first interleaved rounds, the
accuracy verdicts go in order of speed up to the first accepted setting, the clearly slower ones
(over 1.5x its median) are dropped without a verdict, and the close ones run all the rounds. The
winner is the one a full measurement would pick; the first default run does not pay for the slow
ones (torch eager and TorchScript at 30-80 ms a call next to 3 ms ones)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiwu.backends import auto
from shiwu.cpu import usable_cpus

BATCH = np.zeros((1, 3, 8, 8), np.float32)


class Fake:
    def __init__(self, name, seconds):
        self.name, self.seconds, self.calls = name, seconds, 0

    def run(self, batch):
        self.calls += 1
        time.sleep(self.seconds)


def judge_with(refused=()):
    judged = []

    def judge(name, backend):
        judged.append(name)
        return "drop 2.04% > 1.0%" if name in refused else None
    return judge, judged


def test_the_clearly_slower_are_dropped_unjudged_and_the_close_run_every_round():
    backends = {"int8": Fake("int8", 0.010), "bf16": Fake("bf16", 0.013), "eager": Fake("eager", 0.08)}
    judge, judged = judge_with()
    out = auto.race(backends, BATCH, judge, rounds=5, screen=2, seconds=0.03)
    assert out.winner == "int8"
    assert sorted(judged) == ["bf16", "int8"]          # the slow one never costs a verdict
    assert set(out.eliminated) == {"eager"} and "over 1.5x int8's" in out.eliminated["eager"]
    assert len(out.samples["int8"]) == len(out.samples["bf16"]) == 5 and len(out.samples["eager"]) == 2
    assert set(out.finishers()) == {"int8", "bf16"}
    assert backends["eager"].calls <= 5                 # warm-up within the round time, then a call a round


def test_a_refused_fastest_setting_makes_the_next_accepted_one_the_yardstick():
    """int8 is fastest but refused: bf16 becomes the yardstick, so fp32 at 1.3x bf16 stays in the
    race (measured against int8 it would have been dropped) and the winner is what a full
    measurement of the accepted settings gives."""
    backends = {"int8": Fake("int8", 0.002), "bf16": Fake("bf16", 0.010), "fp32": Fake("fp32", 0.013),
                "eager": Fake("eager", 0.08)}
    judge, judged = judge_with(refused={"int8"})
    out = auto.race(backends, BATCH, judge, rounds=4, screen=2, seconds=0.03)
    assert out.winner == "bf16" and out.refused == {"int8": "drop 2.04% > 1.0%"}
    assert judged[0] == "int8" and sorted(judged) == ["bf16", "fp32", "int8"] and set(out.eliminated) == {"eager"}
    assert len(out.samples["fp32"]) == 4


def test_nothing_accepted_is_no_winner():
    judge, _ = judge_with(refused={"a", "b"})
    out = auto.race({"a": Fake("a", 0.001), "b": Fake("b", 0.001)}, BATCH, judge, rounds=3, screen=1,
                    seconds=0.005)
    assert out.winner is None and set(out.refused) == {"a", "b"}


def test_a_single_setting_is_judged_and_not_timed():
    judge, judged = judge_with()
    out = auto.race({"only": Fake("only", 0.001)}, BATCH, judge)
    assert out.winner == "only" and judged == ["only"] and out.samples == {}


def test_doctor_shows_the_eliminated_settings_as_such(tmp_path):
    """The remembered choice keeps the eliminated settings apart from the timed ones."""
    folder = tmp_path / "cache" / "auto"
    folder.mkdir(parents=True)
    (folder / "efficientnet-lite0-224-auto-auto-x.json").write_text(json.dumps({
        "model": "efficientnet-lite0", "size": 224, "precision": "auto", "backend": "auto", "threads": 2,
        "winner": "onnxruntime", "winner_precision": "int8",
        "ms_per_image": {"onnxruntime int8": 2.31, "openvino bf16": 2.62},
        "eliminated": {"torch fp32": "41.20 ms, over 1.5x onnxruntime int8's 2.40 ms after 2 rounds: not judged"},
        "skipped": {}, "measured_at": "2026-12-04T00:00:00+0000"}), encoding="utf-8")
    out = subprocess.run([str(Path(sys.executable).with_name("shiwu")), "doctor"], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "SHIWU_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "-> onnxruntime int8" in x)
    assert "onnxruntime int8 2.31 ms" in line and "torch fp32 eliminated (41.20 ms, over 1.5x" in line


def test_doctor_lists_the_choices_in_use_and_counts_those_of_another_setup(tmp_path):
    """After a runtime upgrade the old measurements stay in the cache, but no run looks them up:
    doctor lists only the current ones (and those written before the setup was recorded)."""
    folder = tmp_path / "cache" / "auto"
    folder.mkdir(parents=True)
    now = auto._measured_with()
    older = {**now, "versions": {**now["versions"], "onnxruntime": "0.0.1"}}

    def entry(name, winner, measured_with):
        extra = {} if measured_with is None else {"measured_with": measured_with}
        (folder / f"efficientnet-lite0-224-auto-auto-{name}.json").write_text(json.dumps({
            "model": "efficientnet-lite0", "size": 224, "precision": "auto", "backend": "auto", "threads": 2,
            "winner": winner, "winner_precision": "fp32", "ms_per_image": {f"{winner} fp32": 2.0},
            "skipped": {}, "measured_at": "2026-12-04T00:00:00+0000", **extra}), encoding="utf-8")
    entry("a", "openvino", now)
    entry("b", "torch", older)
    entry("c", "torchscript", None)
    env = {**os.environ, "SHIWU_CACHE": str(tmp_path / "cache")}
    shiwu = str(Path(sys.executable).with_name("shiwu"))
    out = subprocess.run([shiwu, "doctor"], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "-> openvino fp32" in out.stdout and "-> torch fp32" not in out.stdout
    assert "(1 more measured with another CPU, runtime version or shiwu" in out.stdout
    unknown = next(x for x in out.stdout.splitlines() if "-> torchscript fp32" in x)
    assert "machine not recorded" in unknown
    chosen = next(x for x in out.stdout.splitlines() if "-> openvino fp32" in x)  # each field named
    assert chosen.startswith("  efficientnet-lite0 224px, backend auto, precision auto, 2 threads -> openvino fp32")
    assert "(openvino fp32 2.00 ms; measured 2026-12-04" in chosen
    data = json.loads(subprocess.run([shiwu, "doctor", "--json"], capture_output=True, text=True, timeout=300,
                                     env=env).stdout)
    assert sorted((c["winner"], c["current"]) for c in data["auto_choices"]) == [
        ("openvino", True), ("torch", False), ("torchscript", None)]


@pytest.mark.slow
def test_a_choice_timed_while_other_programs_compete_is_provisional(tmp_path):
    """On a busy machine the runtime that suffers least wins, not the fastest (the README's first run
    beside CI's tests timed onnxruntime at 20.9 ms, openvino at 13.5; quiet, 8.8 and 10.5): programs
    spinning on every CPU during the rounds make the remembered choice provisional, and doctor says so."""
    from support.tiny_models import red_and_blue

    model = red_and_blue(tmp_path / "model.onnx", red_first=True)
    photo = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (250, 10, 10)).save(photo)
    env = {**os.environ, "SHIWU_CACHE": str(tmp_path / "cache")}
    shiwu = str(Path(sys.executable).with_name("shiwu"))
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in usable_cpus()]
    try:
        busy = subprocess.run([shiwu, "predict", str(photo), "--model", str(model), "-v"], capture_output=True,
                              text=True, timeout=300, env=env)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert busy.returncode == 0, busy.stderr
    assert "measured again by a later run that finds the machine quiet" in busy.stderr
    (memo,) = (tmp_path / "cache" / "auto").glob("*.json")
    saved = json.loads(memo.read_text(encoding="utf-8"))
    assert saved["provisional"] and saved["others_cpu"] > auto.CONTENDED and saved["attempts"] == 1
    doctor = subprocess.run([shiwu, "doctor"], capture_output=True, text=True, timeout=300, env=env)
    assert "timed while other programs used" in doctor.stdout, doctor.stdout


def test_a_provisional_choice_is_measured_again_by_the_first_run_that_finds_the_machine_quiet(
        tmp_path, monkeypatch):
    """What other programs use of the CPUs is scripted here (the test above makes it real)."""
    from support.tiny_models import red_and_blue

    from shiwu.models.registry import get_model

    monkeypatch.setenv("SHIWU_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(auto, "QUIET_PROBE_SECONDS", 0)
    spec = get_model(str(red_and_blue(tmp_path / "model.onnx", red_first=True)))
    looks = []

    def script(*shares):
        values = iter(shares)

        class Scripted:
            def __init__(self):
                self.value = next(values)  # StopIteration: a look the script did not expect
                looks.append(self.value)

            def share(self):
                return self.value
        monkeypatch.setattr(auto, "OthersLoad", Scripted)

    def choose():
        auto.select(spec, size=spec.preprocessing.size, precision="fp32", threads=1)
        (memo,) = (tmp_path / "cache" / "auto").glob("*.json")
        return json.loads(memo.read_text(encoding="utf-8"))

    script(0.6)                       # timed while others used 60%
    saved = choose()
    assert saved["provisional"] and saved["others_cpu"] == 0.6 and looks == [0.6]
    script(0.5)                       # still busy when looked up: the choice is used as it is
    assert choose()["attempts"] == 1 and looks == [0.6, 0.5]
    script(0.1, 0.05)                 # quiet: measured again, and quiet while timed
    saved = choose()
    assert not saved["provisional"] and saved["attempts"] == 2 and saved["others_cpu"] == 0.05
    script()                          # final: no look at all
    assert choose()["attempts"] == 2 and looks == [0.6, 0.5, 0.1, 0.05]
    # busy at every measurement: measured at most REMEASURES times in all
    for path in (tmp_path / "cache" / "auto").glob("*.json"):
        path.unlink()
    script(*[0.6, 0.1] * auto.REMEASURES)
    for _ in range(auto.REMEASURES + 1):
        saved = choose()
    assert saved["provisional"] and saved["attempts"] == auto.REMEASURES
