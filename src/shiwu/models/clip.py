"""Chinese-CLIP as one network: the ViT image tower, the RoBERTa text tower, the text projection
and the logit scale, under the reference ``CLIP`` module's parameter names (``visual.*``,
``bert.*``, ``text_projection``, ``logit_scale``); and the zero-shot head built from it.

Zero-shot recognition is a classifier whose weights are text: the label texts are encoded once,
L2-normalised and multiplied by ``logit_scale.exp()``; that matrix is a bias-free linear layer
on the L2-normalised image embedding. ``ZeroShotHead`` is that image-only graph, so it exports,
quantises and runs like any image classifier, and can return the embedding beside the logits
(one inference for both labels and search).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .clip_config import DEFAULT_PROMPT  # noqa: F401 - callers import it from here too
from .clip_config import CLIPConfig, TextConfig, VisionConfig  # noqa: F401 - re-exported
from .roberta import RoBERTa
from .vit import VisionTransformer

TEXT_BATCH = 64


class ChineseCLIP(nn.Module):
    def __init__(self, config: CLIPConfig, pad_id: int = 0, text_tower: bool = True):
        """``text_tower=False``: the image tower and logit scale only (texts encoded elsewhere)."""
        super().__init__()
        self.config = config
        self.pad_id = pad_id  # the vocabulary's [PAD]: the reference masks every token equal to it
        self.visual = VisionTransformer(config.vision)
        if text_tower:
            self.bert = RoBERTa(config.text)
            self.text_projection = nn.Parameter(
                torch.randn(config.text.hidden_size, config.embed_dim) * config.text.hidden_size ** -0.5)
        else:
            self.bert = self.text_projection = None
        self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) normalised pixels -> (N, embed_dim), not normalised."""
        return self.visual(image)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids (``ClipTokenizer``) -> (N, embed_dim), not normalised."""
        if self.bert is None:
            raise RuntimeError("this ChineseCLIP was loaded without its text tower (text_tower=False)")
        hidden = self.bert(ids, ids.ne(self.pad_id))
        return hidden[:, 0] @ self.text_projection

    def similarity(self, image: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``logits_per_image`` (N images, M texts) of the reference ``get_similarity``."""
        image_features = F.normalize(self.encode_image(image), dim=-1)
        text_features = F.normalize(self.encode_text(ids), dim=-1)
        return self.logit_scale.exp() * image_features @ text_features.T


def encode_texts(clip: ChineseCLIP, ids: torch.Tensor, batch: int = TEXT_BATCH) -> torch.Tensor:
    """``clip.encode_text`` for many texts, each batch cut to its longest text.

    Padding is masked, so trailing padding changes nothing but the cost: labels of ten-odd
    tokens padded to the context of 52 would cost four times the work. Texts are batched by
    length for the same reason, and returned in the input order.
    """
    lengths = ids.ne(clip.pad_id).sum(1)
    order = torch.argsort(lengths, stable=True)
    out = torch.empty(ids.shape[0], clip.config.embed_dim)
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            chosen = order[start:start + batch]
            longest = int(lengths[chosen].max())
            out[chosen] = clip.encode_text(ids[chosen, :longest]).float()
    return out


class ZeroShotHead(nn.Module):
    """Image -> zero-shot logits (and, if asked, the L2-normalised image embedding).

    ``classifier.weight`` is ``logit_scale.exp() * normalise(text embeddings)``: the logits are
    the reference's ``logits_per_image`` for these texts.
    """

    def __init__(self, visual: nn.Module, class_weights: torch.Tensor, return_embedding: bool = False):
        super().__init__()
        self.visual = visual
        self.classifier = nn.Linear(class_weights.shape[1], class_weights.shape[0], bias=False)
        with torch.no_grad():
            self.classifier.weight.copy_(class_weights)
        self.return_embedding = return_embedding

    def forward_with_embedding(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = F.normalize(self.visual(image), dim=-1)
        return self.classifier(embedding), embedding

    def forward(self, image: torch.Tensor):
        logits, embedding = self.forward_with_embedding(image)
        return (logits, embedding) if self.return_embedding else logits


def prompt_texts(labels: Sequence[str], prompt: str = DEFAULT_PROMPT) -> list[str]:
    """The texts to encode: each label put into ``prompt`` (``"{}"``: the label as it is)."""
    if prompt.count("{}") != 1:
        raise ValueError(f"the prompt must contain '{{}}' exactly once (where the label goes), "
                         f"got {prompt!r}")
    if not labels:
        raise ValueError("no labels: zero-shot recognition needs at least one label")
    empty = [i for i, label in enumerate(labels) if not str(label).strip()]
    if empty:
        raise ValueError(f"label {empty[0] + 1} of {len(labels)} is empty")
    return [prompt.replace("{}", str(label)) for label in labels]


def class_weights(clip: ChineseCLIP, tokenizer, labels: Sequence[str],
                  prompt: str = DEFAULT_PROMPT) -> torch.Tensor:
    """(len(labels), embed_dim): normalised text embeddings of the prompted labels x logit scale."""
    ids = torch.from_numpy(tokenizer(prompt_texts(labels, prompt)))
    text = F.normalize(encode_texts(clip, ids), dim=-1)
    return clip.logit_scale.detach().float().exp() * text


def zero_shot_head(clip: ChineseCLIP, tokenizer, labels: Sequence[str],
                   prompt: str = DEFAULT_PROMPT, *, return_embedding: bool = False) -> ZeroShotHead:
    """The image-only zero-shot classifier for ``labels``; it shares ``clip.visual``'s weights."""
    head = ZeroShotHead(clip.visual, class_weights(clip, tokenizer, labels, prompt), return_embedding)
    head.requires_grad_(False)
    return head.eval()
