"""The CLIP Vision Transformer image tower, as Chinese-CLIP (``cn_clip`` / ModelScope) builds it.

Parameter names and shapes are the reference ``VisualTransformer``'s (``conv1``,
``class_embedding``, ``positional_embedding``, ``ln_pre``, ``transformer.resblocks.N.{attn,
ln_1, mlp.c_fc, mlp.c_proj, ln_2}``, ``ln_post``, ``proj``), so a checkpoint's ``visual.*``
tensors load as they are. Two things differ from the reference, neither in the numbers:

- tokens stay batch-first (N, L, D): the reference's (L, N, D) comes from
  ``nn.MultiheadAttention``'s old default and costs two transposes per image;
- attention is ``F.scaled_dot_product_attention`` on a fused q/k/v projection: one matmul
  for q, k and v, and the fused kernel in eager torch; it exports to ONNX as plain
  MatMul / Softmax, which ONNX Runtime and OpenVINO fuse again.

Sizes come from ``vision_model_config.json``; ViT-B/16, ViT-L/14, ViT-L/14@336 and ViT-H/14 are
this one class. The ResNet-50 tower (RN50) is another architecture and is refused.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .clip_config import VisionConfig  # noqa: F401 - defined there without torch


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the GELU approximation the OpenAI CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(width * 4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names
    (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), batch-first."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's initialisation
        nn.init.zeros_(self.in_proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = MLP(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """(N, 3, R, R) normalised pixels -> (N, embed_dim) image embeddings (not normalised)."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.conv1 = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size,
                               bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(config.grid ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, config.layers, config.heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, config.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (N, grid², width)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


def resize_positional_embedding(embedding: torch.Tensor, grid: int) -> torch.Tensor:
    """The (1 + g², D) positional embedding of a g×g patch grid, for a ``grid``×``grid`` one.

    What ``cn_clip.clip.model.resize_pos_embed`` does when a model is run at another input
    size: the class token's row unchanged, the patch rows interpolated bicubically with
    ``align_corners=True``.
    """
    old = int(math.isqrt(embedding.shape[0] - 1))
    if old * old != embedding.shape[0] - 1:
        raise ValueError(f"positional embedding of {embedding.shape[0]} rows is not 1 + a square grid")
    if old == grid:
        return embedding
    cls, patches = embedding[:1], embedding[1:]
    patches = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=(grid, grid), mode="bicubic", align_corners=True)
    patches = patches.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(embedding.dtype)
    return torch.cat([cls, patches], dim=0)
