"""`shiwu eval DIR`: known accuracies on a generated labelled folder."""

import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.photos import DATA
from shiwu.evaluate import ClassNames, EvalError, evaluate, format_report
from shiwu.labels import LabelSet

SHIWU = Path(sys.executable).parent / "shiwu"
COFFEE = DATA / "coffee.jpg"   # the reference puts espresso (967) on top
TABBY = 281


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """espresso photos under its index, English and Chinese names (one class, three folders),
    the same photo filed as tabby cat (wrong), an unreadable file, a folder naming no class."""
    root = tmp_path_factory.mktemp("labelled")
    for folder, copies in (("967", 2), ("espresso", 1), ("浓缩咖啡", 1), (str(TABBY), 1), ("not a class", 1)):
        (root / folder).mkdir()
        for i in range(copies):
            shutil.copy(COFFEE, root / folder / f"coffee-{i}.jpg")
    (root / "espresso" / "deeper").mkdir()
    shutil.copy(COFFEE, root / "espresso" / "deeper" / "nested.jpg")
    (root / "浓缩咖啡" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    (root / "967" / "notes.txt").write_text("not an image, not counted")
    return root


def test_folder_names_map_to_classes():
    names = ClassNames(LabelSet.imagenet())
    assert names.lookup("967") == (967, None)
    assert names.lookup("espresso") == (967, None)
    assert names.lookup("浓缩咖啡") == (967, None)
    assert names.lookup("Great_White_Shark")[0] == 2
    assert names.lookup("0002")[0] == 2
    # ImageNet's own layout (n01440764/...), as labelled sets keep it; the ids in class order
    assert names.lookup("n01440764") == (0, None) and names.lookup("n07920052") == (967, None)
    assert names.lookup("n15075141") == (999, None)
    index, why = names.lookup("1000")
    assert index is None and "out of range" in why
    index, why = names.lookup("not a class")
    assert index is None and "not a class index" in why
    ambiguous = ClassNames(LabelSet(("猫", "猫", "狗"), ("", "", "")))
    index, why = ambiguous.lookup("猫")
    assert index is None and "several classes" in why
    assert ambiguous.lookup("狗") == (2, None)
    assert ambiguous.lookup("n01440764")[0] is None  # not ImageNet's classes: no WordNet IDs
    assert "WordNet" not in ambiguous.lookup("n01440764")[1]


def test_known_accuracies(labelled, recognizer):
    report = evaluate(labelled, recognizer=recognizer, progress=False)
    # 6 readable photos of espresso: 5 under its three folders, 1 filed as tabby cat
    assert report.images == 6
    assert report.top1 == 5 and report.top1_accuracy == pytest.approx(5 / 6)
    coffee_top5 = [p.index for p in recognizer.predict(COFFEE, topk=5)]
    assert report.top5 == 5 + (TABBY in coffee_top5)

    by_index = {c.index: c for c in report.classes}
    assert set(by_index) == {967, TABBY}
    espresso = by_index[967]
    assert espresso.images == 5 and espresso.top1_accuracy == 1.0 and espresso.top5_accuracy == 1.0
    assert set(espresso.folder.split(" + ")) == {"967", "espresso", "浓缩咖啡"}
    tabby = by_index[TABBY]
    assert tabby.images == 1 and tabby.top1 == 0 and tabby.most_confused_with == "967 浓缩咖啡"
    assert report.confused == [{
        "true": TABBY, "true_label": "虎斑猫", "true_label_en": "tabby cat", "predicted": 967,
        "predicted_label": "浓缩咖啡", "predicted_label_en": "espresso", "count": 1, "share_of_class": 1.0}]

    assert len(report.unreadable) == 1
    assert report.unreadable[0]["image"].endswith("broken.jpg") and report.unreadable[0]["error"]
    assert report.unknown_folders == [{"folder": "not a class", "files": 1,
                                       "reason": "is not a class index, English name, Chinese name or "
                                                 "WordNet ID (n01440764) of this model"}]

    text = format_report(report)
    assert "top-1 accuracy: 83.3% (5/6)" in text
    assert "| 967 | 浓缩咖啡 (espresso) |" in text
    assert "281 虎斑猫" in text and "-> 967 浓缩咖啡  1x" in text
    assert "unreadable images: 1" in text and "broken.jpg" in text


@pytest.mark.slow
def test_cli_json_and_exit_code(labelled, tmp_path):
    out = tmp_path / "eval.json"
    run = subprocess.run([str(SHIWU), "eval", str(labelled), "--backend", "torch", "--threads", "1",
                          "--json", str(out), "-q"],
                         capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert run.returncode == 1, run.stderr   # an unreadable image: reported, not fatal
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["images"] == 6 and data["top1_correct"] == 5
    assert data["top1_accuracy"] == pytest.approx(5 / 6)
    assert data["unreadable_count"] == 1 and data["backend"] == "torch"
    assert [c["index"] for c in data["classes"]] == [TABBY, 967]
    assert "top-1 accuracy: 83.3%" in run.stdout


@pytest.mark.slow
def test_a_folder_without_classes_is_a_usage_error(tmp_path, recognizer):
    (tmp_path / "cats and dogs").mkdir()
    with pytest.raises(EvalError, match="no sub-folder"):
        evaluate(tmp_path, recognizer=recognizer, progress=False)
    with pytest.raises(EvalError, match="not a folder"):
        evaluate(tmp_path / "missing", recognizer=recognizer, progress=False)
    run = subprocess.run([str(SHIWU), "eval", str(tmp_path), "--backend", "torch"],
                         capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert run.returncode == 2 and "no sub-folder" in run.stderr
    # said before the model is built and timed (the default --backend auto would time runtimes
    # and remember a choice in the cache): one line, naming the folder and why
    cache = tmp_path / "cache"
    run = subprocess.run([str(SHIWU), "eval", str(tmp_path)], capture_output=True, text=True, encoding="utf-8",
                         timeout=300, env={**os.environ, "SHIWU_CACHE": str(cache)})
    assert run.returncode == 2 and not (cache.exists() and any(cache.rglob("*.json"))), run.stderr
    assert run.stderr.strip().splitlines() == [
        f"shiwu: error: no sub-folder of {tmp_path} names a class of efficientnet-lite0 ('cats and dogs' is "
        "not a class index, English name, Chinese name or WordNet ID (n01440764) of this model). Expected one "
        "folder per class, named by index, English name, Chinese name or WordNet ID (n01440764)."]
