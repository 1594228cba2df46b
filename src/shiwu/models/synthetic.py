"""Write a SYNTHETIC ModelScope 万物识别 model directory: the real format, random weights.

The real ``damo/cv_resnest101_general_recognition`` weights cannot be fetched in CI or on an
offline machine, yet its loader, its label file and its speed need testing. This writes a
directory in exactly the layout of a ModelScope download::

    configuration.json   framework / task / pipeline type of the real model, plus "synthetic": true
    pytorch_model.pt     {'state_dict': {'module.conv1.0.weight': ...}}  (wrapper and DataParallel
                         prefix both optional)
    meta_info.txt        "index<TAB>label" per class, Chinese placeholder labels 合成类别00000 ...
    SYNTHETIC.txt        says in plain words that the weights are random

Nothing it predicts means anything. Command line::

    python -m shiwu.models.synthetic DIR [--classes 54092] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SYNTHETIC_LABEL = "合成类别{:05d}"  # "synthetic class NNNNN"
FULL_CLASSES = 54092

CONFIGURATION = {
    "framework": "pytorch",
    "task": "general-recognition",
    # No "model" section, as in the real file: with one, ModelScope would try to build a
    # registered model class instead of handing the directory to GeneralRecognitionPipeline.
    "pipeline": {"type": "resnet101-general-recognition"},
    "synthetic": True,
    "description": "SYNTHETIC stand-in for damo/cv_resnest101_general_recognition written by shiwu: "
                   "random weights, placeholder labels. Its predictions mean nothing.",
}


def synthetic_labels(num_classes: int) -> list[str]:
    return [SYNTHETIC_LABEL.format(i) for i in range(num_classes)]


def _photo_like_noise(n: int, size: int, generator):
    """Smooth random colour fields on the normalised scale: closer to photos than white noise."""
    import torch
    from torch.nn import functional as F

    images = torch.randn(n, 3, 1, 1, generator=generator) * 0.5
    for scale, weight in ((4, 1.0), (16, 0.6), (56, 0.35), (size, 0.2)):
        noise = torch.randn(n, 3, scale, scale, generator=generator)
        images = images + weight * F.interpolate(noise, size=(size, size), mode="bilinear",
                                                 align_corners=False)
    return images


def synthetic_state_dict(num_classes: int, seed: int = 0, layers=(3, 4, 23, 3),
                         stem_width: int = 64, calibrate: bool = True) -> dict:
    """Random ResNeSt weights whose top-1 depends on the photo, as a trained model's does.

    He (fan-in) normal convolutions and near-identity batch norms with small residual-branch
    gains keep activations at unit scale through all 33 blocks. Left at that, one class wins
    for every photo (the features share a large common component), so ``calibrate`` runs
    eight smooth-noise images through the backbone and whitens the classifier against their
    features: centred, per-feature scaled, logits of standard deviation ~2 on that noise.
    """
    import math

    import torch

    from .resnest import ResNeSt, ResNeStConfig

    generator = torch.Generator().manual_seed(seed)
    network = ResNeSt(ResNeStConfig(layers=tuple(layers), stem_width=stem_width,
                                    num_classes=num_classes))
    with torch.no_grad():
        for name, module in network.named_modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
                module.weight.normal_(0, math.sqrt(2.0 / fan_in), generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1, generator=generator)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.running_mean.uniform_(-0.05, 0.05, generator=generator)
                module.running_var.uniform_(0.9, 1.1, generator=generator)
                if name.endswith("bn3"):
                    module.weight.mul_(0.2)  # small residual branches: no blow-up over 23 blocks
        weight = torch.randn(num_classes, network.fc.in_features, generator=generator)
        bias = torch.zeros(num_classes)
        network.eval()
        if calibrate:
            features = network.features(_photo_like_noise(8, 160, generator))
            mean, std = features.mean(0), features.std(0) + 1e-3
            weight /= std
            weight *= 2.0 / ((features - mean) @ weight.T).std()
            bias = -(weight @ mean)
        network.fc.weight.copy_(weight)
        network.fc.bias.copy_(bias)
        del weight
    return network.state_dict()


def write_synthetic_model(directory: str | Path, num_classes: int = FULL_CLASSES, *,
                          seed: int = 0, wrapper: bool = True, module_prefix: bool = True,
                          legacy_format: bool = False, calibrate: bool = True) -> Path:
    """Write a synthetic ModelScope model directory and return its path.

    ``wrapper``: save ``{'state_dict': sd}`` (the real file's form) instead of ``sd``.
    ``module_prefix``: keys start with ``module.`` as when saved from ``nn.DataParallel``.
    ``legacy_format``: torch's pre-1.6 (non-zip) serialisation, which cannot be memory-mapped.
    """
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = synthetic_state_dict(num_classes, seed=seed, calibrate=calibrate)
    if module_prefix:
        state = {f"module.{key}": value for key, value in state.items()}
    payload = {"state_dict": state} if wrapper else state
    torch.save(payload, directory / "pytorch_model.pt",
               _use_new_zipfile_serialization=not legacy_format)
    del state, payload

    lines = [f"{i}\t{label}\n" for i, label in enumerate(synthetic_labels(num_classes))]
    (directory / "meta_info.txt").write_text("".join(lines), encoding="utf-8")
    (directory / "configuration.json").write_text(
        json.dumps(CONFIGURATION, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (directory / "SYNTHETIC.txt").write_text(
        "SYNTHETIC model written by `python -m shiwu.models.synthetic`: ResNeSt-101 with random "
        f"weights (seed {seed}) and {num_classes} placeholder labels, in the file layout of "
        "ModelScope's damo/cv_resnest101_general_recognition. For tests and benchmarks only; "
        "its predictions mean nothing.\n"
        "合成模型：随机权重，占位标签，仅用于测试和基准测试，预测结果没有意义。\n",
        encoding="utf-8")
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shiwu.models.synthetic",
        description="Write a SYNTHETIC (random weights) ModelScope 万物识别 model directory "
                    "for tests and benchmarks.")
    parser.add_argument("directory", help="where to write it (created if missing)")
    parser.add_argument("--classes", type=int, default=FULL_CLASSES,
                        help=f"number of classes (default {FULL_CLASSES}, the real model's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--no-wrapper", action="store_true",
                        help="save the bare state dict, without {'state_dict': ...}")
    parser.add_argument("--no-module-prefix", action="store_true",
                        help="keys without the DataParallel 'module.' prefix")
    args = parser.parse_args(argv)
    if args.classes < 1:
        parser.error("--classes must be at least 1")
    path = write_synthetic_model(args.directory, args.classes, seed=args.seed,
                                 wrapper=not args.no_wrapper,
                                 module_prefix=not args.no_module_prefix)
    size = (path / "pytorch_model.pt").stat().st_size / 1e6
    print(f"wrote SYNTHETIC model ({args.classes} classes, {size:.0f} MB weights) to {path}")
    print(f"try: shiwu predict --model {path} photo.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
