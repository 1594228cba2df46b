"""The user's own model: a file (model.pth, TorchScript, ONNX, OpenVINO IR) or a folder of one."""

from __future__ import annotations

import os
from pathlib import Path

from .spec import ModelNotFound, ModelRef, ModelSpec


def handles(name: str) -> bool:
    return os.sep in name or name.startswith((".", "~")) or Path(name).expanduser().exists()


def resolve(ref: ModelRef) -> ModelSpec:
    path = Path(ref.name).expanduser()
    if not path.exists():
        raise ModelNotFound(f"{ref.name} does not exist: give a model name (see `shiwu models`), "
                            "a ModelScope folder, or your own model file or folder")
    raise ModelNotFound(f"{ref.name}: own model files are not supported yet")


def catalog() -> list[ModelSpec]:
    return []
