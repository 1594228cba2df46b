"""How sure a measured drop is: settings compared photo by photo (backends/accuracy_change.py),
in `shiwu tune --eval`'s verdicts and their words."""

import shutil

import numpy as np
import pytest

from shiwu.backends import policy
from shiwu.backends.accuracy_change import paired_change
from shiwu.evaluate import accuracy_verdicts
from shiwu.recognizer import Recognizer

from support.photos import DATA


def outcomes(both: int, lost: int, gained: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    reference = np.array([True] * both + [True] * lost + [False] * gained + [False] * neither)
    setting = np.array([True] * both + [False] * lost + [True] * gained + [False] * neither)
    order = np.random.default_rng(1).permutation(len(reference))  # pairing, not position, counts
    return reference[order], setting[order]


def test_the_photos_on_which_two_settings_disagree_decide():
    change = paired_change(*outcomes(431, 9, 7, 53))
    assert (change.photos, change.lost, change.gained) == (500, 9, 7)
    assert change.drop == pytest.approx((9 - 7) / 440)
    assert change.low < 0 < change.drop < policy.DEFAULT_MAX_DROP < change.high  # 500 photos cannot tell
    assert change.undecided(policy.DEFAULT_MAX_DROP)
    # the same shares on 100 times the photos: a narrow interval around the same drop
    many = paired_change(*outcomes(43100, 900, 700, 5300))
    assert many.drop == pytest.approx(change.drop)
    assert many.low < many.drop < many.high and many.high - many.low < (change.high - change.low) / 5
    assert 0 < many.low and many.high < policy.DEFAULT_MAX_DROP and not many.undecided(policy.DEFAULT_MAX_DROP)


def test_no_changed_answer_is_not_certainty_and_a_clear_loss_is_seen():
    same = paired_change(*outcomes(440, 0, 0, 60))
    assert same.drop == 0 and same.low < 0 < same.high  # 500 photos bound a change, they do not exclude one
    assert same.high < paired_change(*outcomes(44, 0, 0, 6)).high  # and 50 photos bound it less
    worse = paired_change(*outcomes(400, 40, 0, 60))
    assert worse.low > policy.DEFAULT_MAX_DROP and not worse.undecided(policy.DEFAULT_MAX_DROP)
    with pytest.raises(ValueError, match="one outcome per photo"):
        paired_change([True, False], [True])


def _eval_folder(root, photos: list, answers_224: dict, answers_168: dict, lost: list, gained: list):
    """Folders named by class index: agreeing photos under both settings' answer; of those on which
    the settings differ, ``lost`` ones under 224 px's answer, ``gained`` ones under 168 px's."""
    for photo in photos:
        placed = []
        if answers_224[photo] == answers_168[photo]:
            placed.append(answers_224[photo])
        placed += [answers_224[photo]] * lost.count(photo) + [answers_168[photo]] * gained.count(photo)
        for i, index in enumerate(placed):
            folder = root / str(index)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(DATA / photo, folder / f"{i}-{photo}")
    return root


@pytest.mark.slow
def test_tune_eval_verdicts_say_what_was_lost_and_gained_and_how_sure(tmp_path):
    photos = sorted(p.name for p in DATA.iterdir() if p.suffix in (".jpg", ".png"))
    answers = {}
    for size in (224, 168):
        recognizer = Recognizer("efficientnet-lite0", backend="onnxruntime", precision="fp32", size=size,
                                threads=1)
        answers[size] = {p: recognizer.predict(DATA / p)[0].index for p in photos}
    differ = [p for p in photos if answers[224][p] != answers[168][p]]
    assert len(differ) >= 2, "168 px answers these photos as 224 px does: pick photos that differ"
    setting = [("onnxruntime", "fp32", 168)]

    clear = _eval_folder(tmp_path / "clear", photos, answers[224], answers[168], lost=differ, gained=differ[:1])
    found = accuracy_verdicts("efficientnet-lite0", setting, clear, max_drop=0.01, threads=1)[setting[0]]
    assert (found.lost, found.gained) == (len(differ), 1)
    agree = len(photos) - len(differ)
    assert found.drop == pytest.approx((len(differ) - 1) / (agree + len(differ)), abs=1e-5)
    low, high = found.drop_interval
    assert low < found.drop < high and not found.accepted
    assert f"{len(differ)} lost, 1 gained" in found.reason()

    even = _eval_folder(tmp_path / "even", photos, answers[224], answers[168], lost=differ[:1], gained=differ[:1])
    found = accuracy_verdicts("efficientnet-lite0", setting, even, max_drop=0.01, threads=1)[setting[0]]
    assert (found.lost, found.gained, found.drop) == (1, 1, 0.0) and found.accepted
    assert "1 lost, 1 gained" in found.reason() and "too close to tell" in found.reason()


def test_doctor_and_the_log_show_how_sure_a_labelled_drop_is():
    from shiwu.doctor import format_verdicts

    judged = policy.Verdict("efficientnet-lite0", "onnxruntime", "int8", 224, "labelled photos", 0.01,
                            drop=0.0046, top1=0.876, fp32_top1=0.88, photos=500, lost=9, gained=7,
                            drop_interval=[-0.0107, 0.0202])
    [line] = [x for x in format_verdicts([{**judged.to_dict(), "current": True}]) if "int8 224px" in x]
    assert "drop 0.46% (9 lost, 7 gained; photos like these: -1.07% to +2.02%, too close to tell" in line
    assert "9 lost, 7 gained" in judged.describe() and judged.accepted  # information: the rule decides
    assert "lost" not in judged.reason(detail=False)  # the line every run prints stays short
    plain = policy.Verdict("m", "openvino", "bf16", 224, "labelled photos", 0.01, drop=0.0, top1=0.88,
                           fp32_top1=0.88, photos=500)  # shipped before lost/gained were recorded
    assert "lost" not in plain.describe() and "drop 0.00%; limit" in plain.describe()
