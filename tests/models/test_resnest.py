"""shiwu's ResNeSt-101 is the reference ResNeSt-101: same parameter names, same logits.

Two references: the ``resnest`` PyPI package (Hang Zhang's code) and ModelScope's own module
``modelscope/models/cv/animal_recognition/resnet.py``, which GeneralRecognitionPipeline builds
the 万物识别 model from. That module file is loaded directly, so neither torchvision nor the rest
of modelscope is imported.
"""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from shiwu.models.resnest import ResNeSt, resnest101
from shiwu.models.synthetic import synthetic_state_dict

NUM_CLASSES = 37


def _resnest_package():
    import resnest.torch  # the test extra installs it

    return resnest.torch.resnest101(num_classes=NUM_CLASSES)


def _modelscope_module():
    spec = importlib.util.find_spec("modelscope")  # finds the package without importing it
    assert spec is not None and spec.submodule_search_locations, "the test extra installs modelscope"
    folder = Path(list(spec.submodule_search_locations)[0]) / "models/cv/animal_recognition"
    assert (folder / "resnet.py").is_file(), f"{folder}/resnet.py not in this modelscope version"
    package = types.ModuleType("_modelscope_animal_recognition")
    package.__path__ = [str(folder)]
    sys.modules[package.__name__] = package
    try:
        for name in ("splat", "resnet"):
            full = f"{package.__name__}.{name}"
            module_spec = importlib.util.spec_from_file_location(full, folder / f"{name}.py")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[full] = module
            module_spec.loader.exec_module(module)
        resnet = sys.modules[f"{package.__name__}.resnet"]
    finally:
        for key in [k for k in sys.modules if k.startswith(package.__name__)]:
            del sys.modules[key]
    # Exactly the constructor call of GeneralRecognitionPipeline.__init__ (resnest101 there).
    return resnet.ResNet(resnet.Bottleneck, [3, 4, 23, 3], radix=2, groups=1, bottleneck_width=64,
                         deep_stem=True, stem_width=64, avg_down=True, avd=True, avd_first=False,
                         num_classes=NUM_CLASSES)


REFERENCES = {"resnest-package": _resnest_package, "modelscope-module": _modelscope_module}


@pytest.fixture(scope="module")
def weights():
    # Random weights with random batch-norm statistics, so that they matter.
    return synthetic_state_dict(NUM_CLASSES, seed=3, calibrate=False)


@pytest.fixture(scope="module")
def ours(weights):
    network = resnest101(NUM_CLASSES)
    network.load_state_dict(weights, strict=True)
    return network.eval()


@pytest.fixture(scope="module", params=list(REFERENCES))
def reference(request, weights):
    network = REFERENCES[request.param]()
    network.load_state_dict(weights, strict=True)  # strict: every name and shape agrees
    return network.eval()


@pytest.mark.slow
def test_parameter_names_and_shapes_are_the_reference_ones(reference, ours):
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs


@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (2, 3, 64, 96)])
def test_logits_match_the_reference(reference, ours, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.inference_mode():
        expected = reference(x)
        actual = ours(x)
    assert expected.abs().max() > 0.5  # not a degenerate all-zero comparison
    # Relative to the logits' scale: the split-attention sums are added in another order than
    # the reference's (float rounding, ~1e-7 of the scale after 101 layers); a wrong channel
    # order or softmax axis is off by the scale itself.
    scale = expected.abs().max().item()
    assert (actual - expected).abs().max().item() < 2e-6 * scale
    assert torch.equal(actual.argmax(1), expected.argmax(1))


def test_resnest101_shape_and_size():
    with torch.device("meta"):
        network = resnest101(54092)
    assert isinstance(network, ResNeSt)
    parameters = sum(p.numel() for p in network.parameters())
    # 630 MB of fp32 weights: the figure the memory goal is about.
    assert 155e6 < parameters < 160e6
    assert network.fc.out_features == 54092
    assert [len(getattr(network, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
