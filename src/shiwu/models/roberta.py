"""The Chinese RoBERTa-wwm text tower of Chinese-CLIP: a BERT encoder, as the reference builds it.

Parameter names are the reference ``BertModel``'s (``embeddings.{word,position,token_type}_embeddings``,
``embeddings.LayerNorm``, ``encoder.layer.N.attention.self.{query,key,value}``,
``attention.output.{dense,LayerNorm}``, ``intermediate.dense``, ``output.{dense,LayerNorm}``), so
the checkpoint's ``bert.*`` tensors load as they are. Like the reference there is no pooler:
Chinese-CLIP takes the last hidden state of the ``[CLS]`` token and projects it
(``ChineseCLIP.encode_text``).

Padding is masked the reference's way, ``-10000`` added to the scores of padded keys (not
``-inf``): the same numbers, and a row can never be all ``-inf``. Attention is
``F.scaled_dot_product_attention`` with that additive mask.
"""

from __future__ import annotations


import torch
from torch import nn
from torch.nn import functional as F

from .clip_config import ACTIVATION_NAMES, TextConfig  # noqa: F401 - defined there without torch


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


# The reference's ACT2FN: "gelu" is the exact (erf) GELU.
ACTIVATIONS = dict(zip(ACTIVATION_NAMES, (F.gelu, _gelu_tanh, F.relu, F.silu)))


class Embeddings(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Positions 0..L-1 and token type 0 for every token, as the reference defaults them.
        positions = self.position_embeddings.weight[: input_ids.shape[1]]
        x = self.word_embeddings(input_ids) + positions + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, length, self.heads, width // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)),
                                             heads(self.value(x)), attn_mask=mask)
        return out.transpose(1, 2).reshape(n, length, width)


class SelfOutput(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = SelfOutput(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


class Output(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Layer(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class RoBERTa(nn.Module):
    """(N, L) token ids + (N, L) attention mask (1 = token, 0 = padding) -> (N, L, hidden)."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # The reference's initialisation, so that a network built without a checkpoint (tests,
        # the synthetic model) has activations of the scale trained weights give.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # (N, 1, 1, L), broadcast over heads and queries: 0 for tokens, -10000 for padding.
        mask = (1.0 - attention_mask[:, None, None, :].to(self.embeddings.LayerNorm.weight.dtype))
        mask = mask * -10000.0
        return self.encoder(self.embeddings(input_ids), mask)

