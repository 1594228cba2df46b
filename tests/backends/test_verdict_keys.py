"""A cached accuracy verdict is for the model it judged: an int8 model made another way (a new
quantizer recipe) is judged again, never given the old model's verdict (issue 22: a cached
verdict from another runtime version, CPU or calibration set is re-measured, never trusted)."""

from __future__ import annotations

from shiwu.backends import policy, runtimes
from shiwu.models.registry import get_model

SPEC = get_model(None)


def test_a_new_int8_recipe_is_judged_again_and_other_precisions_keep_their_verdicts(monkeypatch):
    before = {(runtime, precision): policy._verdict_path(SPEC, runtime, precision, 224, "views")
              for runtime in ("onnxruntime", "openvino") for precision in ("int8", "bf16")}
    monkeypatch.setitem(runtimes.INT8_RECIPES, "onnxruntime",
                        runtimes.INT8_RECIPES["onnxruntime"] + "-another-way")
    after = {key: policy._verdict_path(SPEC, *key, 224, "views") for key in before}
    assert after[("onnxruntime", "int8")] != before[("onnxruntime", "int8")]
    assert after[("openvino", "int8")] == before[("openvino", "int8")]
    assert after[("onnxruntime", "bf16")] == before[("onnxruntime", "bf16")]


def test_a_graph_written_another_way_is_judged_and_timed_again():
    import dataclasses

    from shiwu.backends import auto

    revised = dataclasses.replace(SPEC, graph_revision="another-graph")
    for precision in ("int8", "bf16"):
        assert (policy._verdict_path(revised, "openvino", precision, 224, "views")
                != policy._verdict_path(SPEC, "openvino", precision, 224, "views"))
    assert (auto.choice_path(revised, size=224, precision="auto", threads=2)
            != auto.choice_path(SPEC, size=224, precision="auto", threads=2))


def test_shipped_int8_figures_hold_for_the_recipe_that_made_them(monkeypatch):
    """The answers shipped for an int8 model are those of its recipe: once the quantizer makes the
    model another way (a new recipe, before the data is measured again on a VNNI CPU) they are not
    used, so the setting is judged by the label-free estimate instead of reading as a machine that
    fails to reproduce them."""
    shipped = policy.shipped_data()["settings"]
    for entry in shipped:
        expected = runtimes.INT8_RECIPES[entry["runtime"]] if entry["precision"] == "int8" else None
        assert entry.get("int8 recipe") == expected, entry["runtime"]
    assert policy.shipped_entry(SPEC, "onnxruntime", "int8", 224) is not None
    monkeypatch.setitem(runtimes.INT8_RECIPES, "onnxruntime",
                        runtimes.INT8_RECIPES["onnxruntime"] + "-another-way")
    assert policy.shipped_entry(SPEC, "onnxruntime", "int8", 224) is None
    assert policy.shipped_entry(SPEC, "openvino", "int8", 224) is not None   # other recipes keep theirs
    assert policy.shipped_entry(SPEC, "onnxruntime", "fp32", 224) is not None
