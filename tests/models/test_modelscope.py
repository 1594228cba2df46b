"""The 万物识别 model from a local ModelScope download: finding it, every checkpoint variant,
labels, errors, the official preprocessing, and `shiwu predict --model DIR` end to end.

All on a SYNTHETIC model directory (random weights, 20 classes) in the real file layout,
written once per session by `python -m shiwu.models.synthetic`.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shiwu.cli import main
from shiwu.labels import LabelSet
from shiwu.models import modelscope
from shiwu.models.modelscope import PREPROCESSING, load_network, load_state_dict
from shiwu.models.registry import MODELS, ModelNotFound, get_model
from shiwu.models.synthetic import main as synthetic_main

DATA = Path(__file__).parents[1] / "data"
CLASSES = 20
SMALL = torch.from_numpy(PREPROCESSING.with_size(64).batch(
    [Image.open(DATA / "chelsea.jpg").convert("RGB"), Image.open(DATA / "coffee.jpg").convert("RGB")]))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic") / "cv_resnest101_general_recognition"
    assert synthetic_main([str(directory), "--classes", str(CLASSES), "--seed", "1"]) == 0
    return directory


@pytest.fixture(scope="session")
def plain_state(model_dir):
    """The synthetic weights under the network's own names (no wrapper, no prefix)."""
    raw = torch.load(model_dir / "pytorch_model.pt", map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in raw["state_dict"].items()}


def assert_same_network(network, plain_state, reference_logits):
    """Every checkpoint weight in ``network`` bit for bit, and the same logits to rounding (the
    weights decide; a loader promises no more than that of its outputs)."""
    ours = network.state_dict()
    for name, tensor in plain_state.items():
        if name in ours or not name.endswith("num_batches_tracked"):
            assert torch.equal(ours[name], tensor), name
    with torch.inference_mode():
        torch.testing.assert_close(network(SMALL), reference_logits, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="session")
def reference_logits(model_dir):
    with torch.inference_mode():
        return load_network(model_dir / "pytorch_model.pt", CLASSES)(SMALL)


@pytest.fixture
def no_modelscope_cache(tmp_path, monkeypatch):
    """An empty home and ModelScope cache: nothing installed."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "mscache"))
    return tmp_path


def _model_copy(model_dir: Path, target: Path, payload=None, **save_kwargs) -> Path:
    target.mkdir(parents=True)
    shutil.copy(model_dir / "meta_info.txt", target / "meta_info.txt")
    shutil.copy(model_dir / "configuration.json", target / "configuration.json")
    if payload is not None:
        torch.save(payload, target / "pytorch_model.pt", **save_kwargs)
    return target


# ----------------------------------------------------------------------------- the format


def test_synthetic_directory_has_the_modelscope_layout(model_dir):
    config = json.loads((model_dir / "configuration.json").read_text("utf-8"))
    assert config["synthetic"] is True and config["task"] == "general-recognition"
    assert config["pipeline"]["type"] == "resnet101-general-recognition"
    assert "SYNTHETIC" in (model_dir / "SYNTHETIC.txt").read_text("utf-8")
    lines = (model_dir / "meta_info.txt").read_text("utf-8").splitlines()
    assert len(lines) == CLASSES and lines[0] == "0\t合成类别00000" and lines[-1] == "19\t合成类别00019"
    checkpoint = torch.load(model_dir / "pytorch_model.pt", map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"state_dict"}
    assert all(key.startswith("module.") for key in checkpoint["state_dict"])
    assert checkpoint["state_dict"]["module.fc.weight"].shape == (CLASSES, 2048)


@pytest.mark.parametrize("wrapper, prefix, legacy", [
    (True, True, False), (True, False, False), (False, True, False), (False, False, False),
    (True, True, True),  # torch's pre-1.6 format: cannot be memory-mapped, read instead
], ids=["wrapper-prefix", "wrapper", "prefix", "bare", "wrapper-prefix-legacy-format"])
def test_every_checkpoint_variant_loads_to_the_same_network(
        model_dir, plain_state, reference_logits, tmp_path, wrapper, prefix, legacy):
    state = {f"module.{k}" if prefix else k: v for k, v in plain_state.items()}
    payload = {"state_dict": state} if wrapper else state
    copy = _model_copy(model_dir, tmp_path / "m", payload, _use_new_zipfile_serialization=not legacy)
    assert_same_network(get_model(str(copy)).build(), plain_state, reference_logits)


def test_checkpoint_saved_from_cuda_loads_on_a_cpu_only_machine(model_dir, plain_state, tmp_path,
                                                                 monkeypatch):
    # Tag every storage "cuda:0" while saving, as torch.save does for tensors on a GPU.
    registry = torch.serialization._package_registry
    monkeypatch.setattr(torch.serialization, "_package_registry",
                        [(0, lambda storage: "cuda:0", lambda storage, location: None)] + registry)
    copy = _model_copy(model_dir, tmp_path / "m", {"state_dict": plain_state})
    monkeypatch.setattr(torch.serialization, "_package_registry", registry)
    if not torch.cuda.is_available():
        # The article's FAQ error: what a loader without map_location="cpu" gets here.
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(copy / "pytorch_model.pt", weights_only=True)
    state = load_state_dict(copy / "pytorch_model.pt")
    assert all(t.device.type == "cpu" for t in state.values())
    assert torch.equal(state["fc.weight"], plain_state["fc.weight"])


def test_loader_always_passes_map_location_cpu_and_weights_only(model_dir, monkeypatch):
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    load_state_dict(model_dir / "pytorch_model.pt")
    assert calls and all(c.get("map_location") == "cpu" and c.get("weights_only") is True
                         for c in calls)
    assert calls[0].get("mmap") is True  # zip format: memory-mapped, not read into memory


def test_network_is_loaded_by_assignment_onto_the_mapped_weights(model_dir):
    """No second copy: the parameters are the (memory-mapped) checkpoint tensors themselves."""
    network = load_network(model_dir / "pytorch_model.pt", CLASSES)
    state = load_state_dict(model_dir / "pytorch_model.pt")
    assert not any(p.is_meta for p in network.parameters())
    assert not any(p.requires_grad for p in network.parameters())
    assert not network.training
    # Two loads of the same mmap'd file map the same file pages: equal values, and the
    # parameter's storage is a file mapping rather than a fresh allocation.
    assert torch.equal(network.fc.weight, state["fc.weight"])


def test_old_checkpoint_without_num_batches_tracked_loads(model_dir, plain_state, reference_logits,
                                                          tmp_path):
    state = {k: v for k, v in plain_state.items() if not k.endswith("num_batches_tracked")}
    copy = _model_copy(model_dir, tmp_path / "m", state)
    assert_same_network(get_model(str(copy)).build(), state, reference_logits)


def test_code_in_a_checkpoint_is_refused(model_dir, tmp_path):
    copy = _model_copy(model_dir, tmp_path / "m", {"state_dict": {"x": Path("/etc/passwd")}})
    with pytest.raises(ModelNotFound, match="weights_only"):
        get_model(str(copy)).build()


def test_wrong_architecture_is_a_clear_error(model_dir, plain_state, tmp_path):
    state = {k: v for k, v in plain_state.items() if not k.startswith("layer3.22.")}
    copy = _model_copy(model_dir, tmp_path / "m", state)
    with pytest.raises(ModelNotFound, match=r"missing from the checkpoint, e\.g\. layer3\.22\."):
        get_model(str(copy)).build()


# ----------------------------------------------------------------------------- labels


def test_meta_info_labels_are_clean(tmp_path):
    path = tmp_path / "meta_info.txt"
    path.write_bytes("\ufeff0\t虎斑猫\r\n1\t 咖啡 \n2\t手机\tphone\n\n\n".encode("utf-8"))
    labels = LabelSet.from_meta_info(path)
    assert labels.zh == ("虎斑猫", "咖啡", "手机") and labels.en == ("", "", "")


@pytest.mark.parametrize("text", ["0\t猫\n1\n", "0\t猫\n\n1\t狗\n", "0\t猫\n1\t \n", ""])
def test_meta_info_without_a_label_is_an_error(tmp_path, text):
    path = tmp_path / "meta_info.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="meta_info.txt"):
        LabelSet.from_meta_info(path)


def test_label_count_that_differs_from_the_classifier_is_a_clear_error(model_dir, tmp_path):
    copy = _model_copy(model_dir, tmp_path / "m")
    shutil.copy(model_dir / "pytorch_model.pt", copy / "pytorch_model.pt")
    lines = (model_dir / "meta_info.txt").read_text("utf-8").splitlines(keepends=True)
    (copy / "meta_info.txt").write_text("".join(lines[:-1]), encoding="utf-8")
    spec = get_model(str(copy))
    assert spec.num_classes == CLASSES - 1
    with pytest.raises(ModelNotFound, match=r"meta_info.txt has 19 labels but pytorch_model.pt's "
                                            r"classifier has 20 classes"):
        spec.build()


# ----------------------------------------------------------------------------- finding it


def test_missing_model_says_how_to_download_it_and_where_shiwu_looked(no_modelscope_cache):
    with pytest.raises(ModelNotFound) as caught:
        get_model("modelscope:damo/cv_resnest101_general_recognition")
    message = str(caught.value)
    assert ("modelscope download --model damo/cv_resnest101_general_recognition --local_dir "
            in message)
    cache = no_modelscope_cache / "mscache"
    home_cache = no_modelscope_cache / "home" / ".cache" / "modelscope" / "hub"
    for looked in (cache / "damo" / "cv_resnest101_general_recognition",
                   cache / "models" / "damo" / "cv_resnest101_general_recognition",
                   home_cache / "damo" / "cv_resnest101_general_recognition",
                   home_cache / "models" / "iic" / "cv_resnest101_general_recognition"):
        assert str(looked) in message


def test_missing_model_on_the_command_line_exits_2_with_the_command(no_modelscope_cache, capsys):
    code = main(["predict", "--model", "modelscope:iic/cv_resnest101_general_recognition",
                 str(DATA / "chelsea.jpg")])
    assert code == 2
    err = capsys.readouterr().err
    assert "modelscope download --model iic/cv_resnest101_general_recognition --local_dir" in err
    assert "Looked in" in err


def test_missing_directory_and_incomplete_directory(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        get_model(str(tmp_path / "nowhere"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "meta_info.txt").write_text("0\t猫\n", encoding="utf-8")
    with pytest.raises(ModelNotFound, match="no pytorch_model.pt") as caught:
        get_model(str(tmp_path / "half"))
    assert "modelscope download --model damo/cv_resnest101_general_recognition" in str(caught.value)


@pytest.mark.parametrize("layout", [
    "{cache}/damo/{name}",                       # modelscope < 1.x
    "{cache}/models/damo/{name}",                # with MODELSCOPE_CACHE set
    "{cache}/hub/models/damo/{name}",
    "{cache}/models/damo--{name}/snapshots/master",   # modelscope-hub
    "{cache}/models/iic/{name}",                 # the same model under its new organisation
    "{home}/.cache/modelscope/hub/damo/{name}",  # default cache, no MODELSCOPE_CACHE
    "{home}/.cache/modelscope/hub/models/damo/{name}",
])
def test_every_cache_layout_is_found(no_modelscope_cache, layout):
    folder = Path(layout.format(cache=no_modelscope_cache / "mscache", home=no_modelscope_cache / "home",
                                name=modelscope.MODEL_NAME))
    folder.mkdir(parents=True)
    (folder / "pytorch_model.pt").write_bytes(b"")
    (folder / "meta_info.txt").write_text("0\t猫\n1\t狗\n", encoding="utf-8")
    assert modelscope.find_model_dir("damo/cv_resnest101_general_recognition") == folder
    spec = get_model("modelscope:damo/cv_resnest101_general_recognition")
    assert spec.num_classes == 2 and spec.weights_path() == folder / "pytorch_model.pt"
    assert spec.name == "modelscope:damo/cv_resnest101_general_recognition"
    assert MODELS[modelscope.CATALOG_NAME].available


def test_model_names_that_resolve(model_dir, monkeypatch):
    assert get_model(str(model_dir)).num_classes == CLASSES
    monkeypatch.chdir(model_dir.parent)
    assert get_model(model_dir.name).num_classes == CLASSES  # bare relative directory
    assert get_model(f"./{model_dir.name}").num_classes == CLASSES
    assert get_model("efficientnet-lite0").num_classes == 1000  # names still win
    with pytest.raises(ModelNotFound, match="expected modelscope:<org>/<name>"):
        get_model("modelscope:cv_resnest101_general_recognition")
    with pytest.raises(ModelNotFound, match="not damo/cv_something_else"):
        get_model("modelscope:damo/cv_something_else")


def test_models_lists_the_modelscope_model_with_its_download_command(no_modelscope_cache, capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    row = rows["modelscope:damo/cv_resnest101_general_recognition"]
    assert row["classes"] == 54092 and row["weights_installed"] is False
    assert "modelscope download --model damo/cv_resnest101_general_recognition" in row["install"]


# ----------------------------------------------------------------------------- preprocessing


def _official_crop(image: Image.Image, short=256, crop=224) -> Image.Image:
    """torchvision Resize(256) + CenterCrop(224) on a PIL image, spelled out from its source."""
    w, h = image.size
    if w <= h:
        size = (short, int(short * h / w))
    else:
        size = (int(short * w / h), short)
    if size != (w, h):
        image = image.resize(size, Image.Resampling.BILINEAR)
    top = int(round((size[1] - crop) / 2.0))
    left = int(round((size[0] - crop) / 2.0))
    return image.crop((left, top, left + crop, top + crop))


@pytest.mark.parametrize("size", [(451, 300), (300, 451), (385, 256), (600, 401), (256, 256),
                                  (1411, 1411), (227, 500)])
def test_crop_is_torchvision_resize_then_center_crop_to_the_pixel(size):
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    ours = np.asarray(PREPROCESSING.crop(image))
    assert ours.shape == (224, 224, 3)
    assert np.array_equal(ours, np.asarray(_official_crop(image)))


def test_normalisation_is_imagenet_mean_std():
    image = Image.fromarray((np.arange(300 * 400 * 3) % 251).astype(np.uint8).reshape(300, 400, 3))
    ours = PREPROCESSING(image)
    # ToTensor + Normalize, as the official pipeline does after the crop
    pixels = np.asarray(_official_crop(image), dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
    assert np.abs(ours - (pixels - mean) / std).max() < 1e-5


def test_official_pipeline_still_preprocesses_this_way():
    """Guards the two constants above against a ModelScope release that changes them."""
    spec = importlib.util.find_spec("modelscope")
    assert spec is not None and spec.submodule_search_locations, "the test extra installs modelscope"
    source = (Path(list(spec.submodule_search_locations)[0])
              / "pipelines/cv/general_recognition_pipeline.py").read_text("utf-8")
    compact = "".join(source.split())
    for fragment in ("transforms.Resize(256)", "transforms.CenterCrop(224)",
                     "mean=[0.485,0.456,0.406]", "std=[0.229,0.224,0.225]",
                     "resnest101(num_classes=54092)", "weights_only=True"):
        assert fragment in compact


def test_jpegs_are_decoded_at_full_size_like_the_official_pipeline(model_dir, tmp_path):
    from shiwu import Recognizer

    big = tmp_path / "big.jpg"
    Image.open(DATA / "retina.jpg").convert("RGB").resize((2400, 1800)).save(big, quality=90)
    recognizer = Recognizer(str(model_dir), backend="torch", threads=2)
    assert recognizer.load(big).size == (2400, 1800)
    assert PREPROCESSING.with_size(196).decode_min_size is None
    # The default model still takes the fast draft decode.
    assert get_model().preprocessing.decode_min_size == 256


# ----------------------------------------------------------------------------- end to end


def test_predict_with_a_model_directory(model_dir, capsys):
    code = main(["predict", "--model", str(model_dir), "--backend", "torch", "--threads", "2",
                 "--topk", "3", "--json", str(DATA / "chelsea.jpg"), str(DATA / "coffee.jpg")])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["image"]).name for r in rows] == ["chelsea.jpg", "coffee.jpg"]
    for row in rows:
        assert row["model"] == str(model_dir) and row["error"] is None
        predictions = row["predictions"]
        assert len(predictions) == 3
        assert all(p["label"].startswith("合成类别") and p["label"] == f"合成类别{p['index']:05d}"
                   for p in predictions)
        scores = [p["score"] for p in predictions]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.000001

    assert main(["predict", "--model", str(model_dir), "--backend", "torch", "--topk", "2",
                 str(DATA / "chelsea.jpg")]) == 0
    text = capsys.readouterr().out
    assert "合成类别" in text and "%" in text
