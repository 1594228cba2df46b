"""Fixtures of the model tests: the article reader's folder of model files, shared by
test_user_model.py and test_user_model_outputs.py (made once per session: it exports three files)."""

import json

import numpy as np
import pytest
import torch

from support.article import article_tensor
from support.photos import PHOTOS

from shiwu.labels import LabelSet
from shiwu.models.registry import get_model


@pytest.fixture(scope="session")
def article(tmp_path_factory):
    """The reader's folder: the three model files, label_map.json, and the recipe's top-1s."""
    from efficientnet_lite_pytorch import EfficientNet

    folder = tmp_path_factory.mktemp("article")
    weights = get_model("efficientnet-lite0").weights_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()
    example = torch.zeros(1, 3, 224, 224)
    torch.save(model, folder / "model.pth")
    with torch.no_grad():
        torch.jit.trace(model, example).save(str(folder / "traced_model_cpu.pt"))
        # as a reader exports it: batch fixed at 1, the exporter's default names
        torch.onnx.export(model, (example,), str(folder / "model.onnx"), dynamo=False, opset_version=17)
    labels = LabelSet.imagenet()
    (folder / "label_map.json").write_text(
        json.dumps({str(i): name for i, name in enumerate(labels.zh)}, ensure_ascii=False), encoding="utf-8")
    with torch.no_grad():
        batch = torch.from_numpy(np.stack([article_tensor(p) for p in PHOTOS]))
        top1 = model(batch).argmax(1).tolist()
    return {"folder": folder, "model": model, "top1": dict(zip(PHOTOS, top1)),
            "labels": str(folder / "label_map.json")}
