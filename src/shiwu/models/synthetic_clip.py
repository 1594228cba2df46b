"""Write a SYNTHETIC Chinese-CLIP model directory: the official ModelScope format, random weights.

The real ``damo/multi-modal_clip-vit-base-patch16_zh`` cannot be downloaded in CI or offline, yet
its loader, tokenizer, zero-shot head and speed need testing. This writes the layout of a
ModelScope download, which ``CLIPForMultiModalEmbedding`` itself loads::

    configuration.json        the official task / pipeline / model types, plus "synthetic": true
    vision_model_config.json  the cn_clip package's config of the chosen image tower (ViT-B-16, ...)
    text_model_config.json    the cn_clip package's config of its text tower
    vocab.txt                 the cn_clip package's vocabulary (the real one, 21,128 tokens)
    pytorch_model.bin         {'state_dict': {'module.visual.conv1.weight': ...}} with the unused
                              BERT pooler ModelScope loads strictly; fp16 where
                              cn_clip's convert_weights makes it fp16, fp32 elsewhere
    SYNTHETIC.txt             says in plain words that the weights are random

``--small`` shrinks both towers (2 layers, 2 heads) for fast tests; the configs written say so,
so the directory stays consistent. Nothing it predicts means anything. Command line::

    python -m shiwu.models.synthetic_clip DIR [--config ViT-B-16] [--text-config NAME] [--small]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

VISION_CONFIGS = ("ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14")
# The text tower each released model pairs with its image tower (cn_clip's _MODEL_INFO).
TEXT_FOR_VISION = {"ViT-B-16": "RoBERTa-wwm-ext-base-chinese", "ViT-L-14": "RoBERTa-wwm-ext-base-chinese",
                   "ViT-L-14-336": "RoBERTa-wwm-ext-base-chinese", "ViT-H-14": "RoBERTa-wwm-ext-large-chinese"}
# --small: 2 layers and 2 heads of the config's own head width (80 for ViT-H/14), in each tower.
SMALL_VISION = {"embed_dim": 128, "vision_layers": 2}
SMALL_TEXT = {"text_hidden_size": 64, "text_num_hidden_layers": 2, "text_num_attention_heads": 2,
              "text_intermediate_size": 128}

CONFIGURATION = {
    "framework": "pytorch",
    "task": "multi-modal-embedding",
    "pipeline": {"type": "multi-modal-embedding"},
    "model": {"type": "clip-multi-modal-embedding"},
    "synthetic": True,
    "description": "SYNTHETIC stand-in for ModelScope's Chinese-CLIP written by shiwu: random weights, "
                   "the real configs and vocabulary. Its predictions mean nothing.",
}


def cn_clip_files() -> Path:
    """The ``cn_clip/clip`` folder of the installed ``cn-clip`` package (found, not imported:
    importing it needs torchvision)."""
    spec = importlib.util.find_spec("cn_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the synthetic Chinese-CLIP model takes its configs and vocabulary from the "
                           "cn-clip package: pip install --no-deps cn-clip")
    return Path(list(spec.submodule_search_locations)[0]) / "clip"


def read_config(name: str) -> dict:
    path = cn_clip_files() / "model_configs" / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.json"))
        raise ValueError(f"no config {name!r} in the cn-clip package; it has {', '.join(known)}")
    return json.loads(path.read_text(encoding="utf-8"))


def synthetic_state_dict(config, seed: int = 0, calibrate: bool = True) -> dict:
    """Random weights for ``config`` in the checkpoint's dtypes: what cn_clip's ``convert_weights``
    makes fp16 (convolutions, linear layers, attention projections, ``proj``, ``text_projection``
    and the whole text tower) is fp16, the rest (the image tower's layer norms, class and
    positional embeddings, the logit scale) fp32. Plus the unused BERT pooler.

    ``calibrate``: left at random, every photo gets nearly the same embedding (the class token
    and positional embeddings dominate), so one label wins everywhere by a hair. The last layer
    norm of each tower is set to centre its [CLS] features over a few smooth-noise images and
    random texts, so that, as with a trained model, the top label depends on the photo and wins
    by a margin.
    """
    import torch

    from .clip import ChineseCLIP

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    network = ChineseCLIP(config).eval()
    with torch.no_grad():
        network.logit_scale.fill_(math.log(100.0))  # where training ends: CLIP clamps it at 100
        if calibrate:
            _text_dependent(network, generator)
            _calibrate(network, generator)
    fp32 = ("visual.class_embedding", "visual.positional_embedding", "logit_scale")
    state = {}
    for key, value in network.state_dict().items():
        keep = key in fp32 or (key.startswith("visual.") and ".ln_" in key)
        state[key] = value if keep else value.half()
    # ModelScope's BertModel has a pooler that CLIP never uses, and loads strictly: the official
    # checkpoint carries it, so this one does (cn_clip drops it; so does shiwu).
    hidden = config.text.hidden_size
    state["bert.pooler.dense.weight"] = (torch.randn(hidden, hidden, generator=generator) * 0.02).half()
    state["bert.pooler.dense.bias"] = torch.zeros(hidden, dtype=torch.half)
    return state


def _text_dependent(network, generator) -> None:
    """Variance-preserving text-tower weights, sharper attention. BERT's initialisation (std 0.02)
    leaves the [CLS] state nearly the same for every text (its common part 8x the text-dependent
    part at 768 wide, 280x at 64): rounding in that common part then dominates what tells labels
    apart. At std 1/sqrt(fan-in), query and key doubled, the ratio is about 2, as trained."""
    import torch

    for name, module in network.bert.named_modules():
        if isinstance(module, torch.nn.Linear):
            std = module.in_features ** -0.5 * (2.0 if name.endswith(("query", "key")) else 1.0)
            module.weight.normal_(0, std, generator=generator)


def _calibrate(network, generator, images: int = 4, texts: int = 8) -> None:
    import torch
    from torch.nn import functional as F

    from .synthetic import _photo_like_noise

    def standardise(norm, features):
        # Centre, with one gain for all features: per-feature gains would blow up the directions
        # that barely vary over a few samples, and with them float rounding.
        unit = F.layer_norm(features, features.shape[-1:], eps=norm.eps)
        centred = unit - unit.mean(0)
        gain = 1 / centred.pow(2).mean().sqrt()
        norm.weight.fill_(gain)
        norm.bias.copy_(-unit.mean(0) * gain)

    captured = []
    hook = network.visual.ln_post.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    network.visual(_photo_like_noise(images, network.config.vision.image_resolution, generator))
    hook.remove()
    standardise(network.visual.ln_post, captured.pop())

    text = network.config.text
    ids = torch.randint(1000, text.vocab_size, (texts, 16), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    last = network.bert.encoder.layer[-1].output.LayerNorm
    hook = last.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    network.bert(ids, torch.ones_like(ids))
    hook.remove()
    standardise(last, captured.pop()[:, 0])


def write_synthetic_clip(directory: str | Path, vision: str = "ViT-B-16", text: str | None = None, *,
                         small: bool = False, seed: int = 0, wrapper: bool = True,
                         module_prefix: bool = True, legacy_format: bool = False) -> Path:
    """Write a synthetic Chinese-CLIP model directory and return its path.

    ``wrapper``: save ``{'state_dict': sd}`` instead of ``sd``. ``module_prefix``: keys start with
    ``module.`` (saved from DataParallel). ``legacy_format``: torch's pre-1.6 serialisation
    (cannot be memory-mapped).
    """
    import torch

    from .clip_config import CLIPConfig

    text = text or TEXT_FOR_VISION.get(vision, "RoBERTa-wwm-ext-base-chinese")
    vision_config, text_config = read_config(vision), read_config(text)
    if small:
        vision_config.update(SMALL_VISION, vision_width=2 * vision_config.get("vision_head_width", 64))
        text_config.update(SMALL_TEXT)
    config = CLIPConfig.from_json(vision_config, text_config)  # refuses RN50 with its reason

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in (("vision_model_config.json", vision_config), ("text_model_config.json", text_config),
                          ("configuration.json", CONFIGURATION)):
        (directory / name).write_text(json.dumps(content, ensure_ascii=False, indent=4) + "\n",
                                      encoding="utf-8")
    shutil.copyfile(cn_clip_files() / "vocab.txt", directory / "vocab.txt")

    state = synthetic_state_dict(config, seed)
    if module_prefix:
        state = {f"module.{key}": value for key, value in state.items()}
    torch.save({"state_dict": state} if wrapper else state, directory / "pytorch_model.bin",
               _use_new_zipfile_serialization=not legacy_format)
    del state

    size = f"{vision}@{text}" + (" shrunk to 2 layers of 2 heads (--small)" if small else "")
    (directory / "SYNTHETIC.txt").write_text(
        f"SYNTHETIC model written by `python -m shiwu.models.synthetic_clip`: Chinese-CLIP {size} with "
        f"random weights (seed {seed}), the real configs and vocabulary, in the file layout of "
        "ModelScope's damo/multi-modal_clip-vit-base-patch16_zh. For tests and benchmarks only; its "
        "predictions mean nothing.\n"
        "合成模型：随机权重，仅用于测试和基准测试，预测结果没有意义。\n", encoding="utf-8")
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shiwu.models.synthetic_clip",
        description="Write a SYNTHETIC (random weights) Chinese-CLIP model directory in the official "
                    "ModelScope format, for tests and benchmarks.")
    parser.add_argument("directory", help="where to write it (created if missing)")
    parser.add_argument("--config", default="ViT-B-16", choices=VISION_CONFIGS,
                        help="image tower (default ViT-B-16, the 188M-parameter base model)")
    parser.add_argument("--text-config", default=None,
                        help="text tower config of the cn-clip package (default: the one the "
                             "released model pairs with the image tower)")
    parser.add_argument("--small", action="store_true",
                        help="2 layers of 2 heads in each tower (fast tests; the configs say so)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--no-wrapper", action="store_true",
                        help="save the bare state dict, without {'state_dict': ...}")
    parser.add_argument("--no-module-prefix", action="store_true",
                        help="keys without the DataParallel 'module.' prefix")
    args = parser.parse_args(argv)
    try:
        path = write_synthetic_clip(args.directory, args.config, args.text_config, small=args.small,
                                    seed=args.seed, wrapper=not args.no_wrapper,
                                    module_prefix=not args.no_module_prefix)
    except (RuntimeError, ValueError) as exc:
        parser.error(str(exc))
    size = (path / "pytorch_model.bin").stat().st_size / 1e6
    print(f"wrote SYNTHETIC Chinese-CLIP model ({args.config}, {size:.0f} MB weights) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
