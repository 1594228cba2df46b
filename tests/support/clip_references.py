"""The two reference implementations of Chinese-CLIP, for the equivalence tests.

- ModelScope's ``modelscope.models.multi_modal.clip`` (``CLIP``, ``CLIPForMultiModalEmbedding``,
  ``FullTokenizer``): imported as it is (the test extra installs its ``addict``).
- The ``cn-clip`` package (``cn_clip.clip.model.CLIP``, ``bert_tokenizer.FullTokenizer``,
  ``utils.tokenize``): its ``cn_clip/clip/__init__.py`` imports ``utils.py``, which imports
  torchvision for the image transform; torchvision is not installed (PyPI's does not work with
  this torch). So the package's module files are loaded one by one under their own names, and
  ``utils.py`` with a stand-in ``torchvision.transforms`` that only satisfies its import line:
  the functions used from it (``tokenize``) never touch torchvision.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path


def cn_clip_folder() -> Path:
    spec = importlib.util.find_spec("cn_clip")
    assert spec is not None and spec.submodule_search_locations, \
        "the test command installs cn-clip (pip install --no-deps cn-clip)"
    return Path(list(spec.submodule_search_locations)[0]) / "clip"


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def cn_clip() -> types.SimpleNamespace:
    """cn_clip's ``bert_tokenizer``, ``model`` and ``utils`` modules (``model.CLIP`` etc.)."""
    folder = cn_clip_folder()
    package = types.ModuleType("cn_clip.clip")
    package.__path__ = [str(folder)]
    sys.modules["cn_clip.clip"] = package
    bert_tokenizer = _load("cn_clip.clip.bert_tokenizer", folder / "bert_tokenizer.py")
    package.FullTokenizer = bert_tokenizer.FullTokenizer
    package._tokenizer = bert_tokenizer.FullTokenizer()  # what __init__.py would have made
    _load("cn_clip.clip.configuration_bert", folder / "configuration_bert.py")
    _load("cn_clip.clip.modeling_bert", folder / "modeling_bert.py")
    model = _load("cn_clip.clip.model", folder / "model.py")

    stand_in = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.transforms")}
    for attribute in ("Compose", "ToTensor", "Normalize", "Resize", "InterpolationMode"):
        setattr(stand_in["torchvision.transforms"], attribute, object)
    saved = {name: sys.modules.get(name) for name in stand_in}
    sys.modules.update(stand_in)
    try:
        utils = _load("cn_clip.clip.utils", folder / "utils.py")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return types.SimpleNamespace(bert_tokenizer=bert_tokenizer, model=model, utils=utils, folder=folder)


@functools.lru_cache(maxsize=1)
def modelscope_clip() -> types.SimpleNamespace:
    from modelscope.models.multi_modal.clip import bert_tokenizer, model

    return types.SimpleNamespace(bert_tokenizer=bert_tokenizer, model=model)


def model_info(vision: dict, text: dict) -> dict:
    """The constructor arguments both references build ``CLIP`` from (the two configs merged)."""
    info = dict(vision)
    info.update(text)
    return info


def cn_clip_model(vision: dict, text: dict, state: dict):
    """cn_clip's CLIP with ``state`` (fp32, shiwu's names = the reference's), eval mode."""
    clip = cn_clip().model.CLIP(**model_info(vision, text))
    clip.load_state_dict({k: v.float() for k, v in state.items() if not k.startswith("bert.pooler.")},
                         strict=True)
    return clip.float().eval().requires_grad_(False)


def modelscope_model(directory: Path):
    """The official ``CLIPForMultiModalEmbedding`` loading a model directory (strictly)."""
    return modelscope_clip().model.CLIPForMultiModalEmbedding(str(directory))
