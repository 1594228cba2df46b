"""ResNeSt (Zhang et al., 2020, "ResNeSt: Split-Attention Networks").

The configuration is the one of ModelScope's 万物识别 model (``damo/cv_resnest101_general_recognition``)
and of ``resnest101``: radix 2, cardinality 1, bottleneck width 64, a deep stem of width 64
(three 3x3 convolutions), average-pool downsampling in the shortcut ("avg-down", ResNet-D)
and in the block ("avd", after the split-attention convolution), stages of 3-4-23-3 blocks.

Parameter names are those of the reference implementation (``conv1.0``, ``layer3.7.conv2.fc1``,
``layer2.0.downsample.1`` ...), so ModelScope checkpoints and ``resnest`` PyPI checkpoints load
without renaming. Only inference is implemented: no DropBlock, no rectified convolution,
no dilation.

The split-attention sums are taken over channel splits, the gap's after pooling (pooling is
linear), and the radix softmax over a view: the reference's arithmetic in an order that exports
to ONNX without a ReduceSum (tests/models/test_resnest.py checks the logits against the
reference to 2e-6 of their scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ResNeStConfig:
    layers: tuple[int, int, int, int] = (3, 4, 23, 3)
    radix: int = 2
    groups: int = 1  # cardinality
    bottleneck_width: int = 64
    stem_width: int = 64
    num_classes: int = 1000


VARIANTS = {
    "resnest50": ResNeStConfig(layers=(3, 4, 6, 3), stem_width=32),
    "resnest101": ResNeStConfig(layers=(3, 4, 23, 3), stem_width=64),
    "resnest200": ResNeStConfig(layers=(3, 24, 36, 3), stem_width=64),
    "resnest269": ResNeStConfig(layers=(3, 30, 48, 8), stem_width=64),
}

EXPANSION = 4


class SplitAttentionConv2d(nn.Module):
    """3x3 grouped convolution into ``radix`` splits, weighted by a softmax attention over them.

    Names as in the reference ``SplAtConv2d``: ``conv``, ``bn0``, ``fc1``, ``bn1``, ``fc2``.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, groups: int = 1,
                 radix: int = 2, reduction_factor: int = 4):
        super().__init__()
        inter_channels = max(in_channels * radix // reduction_factor, 32)
        self.radix = radix
        self.cardinality = groups
        self.channels = channels
        self.conv = nn.Conv2d(in_channels, channels * radix, 3, stride, 1,
                              groups=groups * radix, bias=False)
        self.bn0 = nn.BatchNorm2d(channels * radix)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, inter_channels, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(inter_channels)
        self.fc2 = nn.Conv2d(inter_channels, channels * radix, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn0(self.conv(x)))
        batch = x.shape[0]
        # Pooled first, summed after: pooling is linear, so the sum of the radix splits is taken
        # over (B, radix * C, 1, 1) instead of the whole feature map.
        gap = F.adaptive_avg_pool2d(x, 1)
        if self.radix > 1:
            gap = _sum_of_splits(gap, self.radix, self.channels)
        gap = self.relu(self.bn1(self.fc1(gap)))
        attention = self.fc2(gap)  # (B, radix * C, 1, 1), channel order (group, radix, c)
        if self.radix > 1:
            attention = attention.view(batch, self.cardinality, self.radix, -1)
            attention = F.softmax(attention, dim=2).transpose(1, 2)  # (B, radix, groups, C/groups)
            attention = attention.reshape(batch, self.radix * self.channels, 1, 1)
            return _sum_of_splits(x * attention, self.radix, self.channels)
        return x * torch.sigmoid(attention)


def _sum_of_splits(x: torch.Tensor, radix: int, channels: int) -> torch.Tensor:
    """(B, radix * C, ...) -> (B, C, ...): the radix splits added. Exported as Slice + Add, which
    ONNX Runtime keeps in int8 (QLinearAdd); a sum over a (B, radix, C, H, W) view exports as a
    float ReduceSum between a dequantize and a quantize: 13% of the int8 ResNeSt-101's time
    in ONNX Runtime's profile. Slices of a known width, not ``tensor_split``,
    which exports as sequence ops that ONNX Runtime's quantizer cannot follow."""
    total = x[:, :channels]
    for i in range(1, radix):
        total = total + x[:, i * channels:(i + 1) * channels]
    return total


class Bottleneck(nn.Module):
    """1x1 reduce, split-attention 3x3, (avd: 3x3 average pool for stride), 1x1 expand, residual."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, radix: int, groups: int,
                 bottleneck_width: int, is_first: bool = False):
        super().__init__()
        group_width = int(planes * (bottleneck_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, group_width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(group_width)
        # avd, not avd_first: the stride moves from the 3x3 conv to a pool after it.
        self.avd = stride > 1 or is_first
        self.avd_layer = nn.AvgPool2d(3, stride, padding=1) if self.avd else None
        self.conv2 = SplitAttentionConv2d(group_width, group_width, stride=1, groups=groups,
                                          radix=radix)
        self.conv3 = nn.Conv2d(group_width, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self.avd_layer is not None:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ResNeSt(nn.Module):
    def __init__(self, config: ResNeStConfig = VARIANTS["resnest101"]):
        super().__init__()
        self.config = config
        stem = config.stem_width
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem, stem, 3, 1, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem, stem * 2, 3, 1, 1, bias=False),
        )
        self.inplanes = stem * 2
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, config.layers[0], stride=1, is_first=False)
        self.layer2 = self._make_layer(128, config.layers[1], stride=2)
        self.layer3 = self._make_layer(256, config.layers[2], stride=2)
        self.layer4 = self._make_layer(512, config.layers[3], stride=2)
        self.fc = nn.Linear(512 * EXPANSION, config.num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int, is_first: bool = True):
        c = self.config
        downsample = None
        if stride != 1 or self.inplanes != planes * EXPANSION:
            # avg-down. Index 0 is the pool (no parameters), so the conv and BN keep the
            # reference's names ``downsample.1`` and ``downsample.2``. A 1x1, stride-1 pool is
            # the identity.
            pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)
                    if stride != 1 else nn.Identity())
            downsample = nn.Sequential(
                pool,
                nn.Conv2d(self.inplanes, planes * EXPANSION, 1, bias=False),
                nn.BatchNorm2d(planes * EXPANSION),
            )
        kwargs = dict(radix=c.radix, groups=c.groups, bottleneck_width=c.bottleneck_width)
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, is_first=is_first, **kwargs)]
        self.inplanes = planes * EXPANSION
        layers += [Bottleneck(self.inplanes, planes, **kwargs) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 2048-d embedding before the classifier."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def resnest101(num_classes: int = 1000) -> ResNeSt:
    return ResNeSt(ResNeStConfig(layers=(3, 4, 23, 3), stem_width=64, num_classes=num_classes))
