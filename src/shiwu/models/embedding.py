"""The image embedding: the pooled features that feed a classifier's last linear layer.

One inference gives both outputs: a network is wrapped so that its forward returns
``(logits, embedding)``, the embedding taken (by a forward pre-hook) as the input of the
``nn.Linear`` that produces the logits. The wrapper traces and exports like the network itself,
so exported ONNX / TorchScript graphs have both outputs. Embeddings are L2-normalised later, on
the numpy side, the same way for every backend.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .outputs import pick_logits


@contextmanager
def exportable_attention():
    # nn.TransformerEncoderLayer / MultiheadAttention take a fused "fast path" in eval mode
    # without grad (aten::_transformer_encoder_layer_fwd), which neither ONNX nor a portable
    # TorchScript trace can express; the plain path computes the same values.
    import torch

    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def classifier_layer(network: nn.Module, example: torch.Tensor, output_index: int | None) -> str | None:
    """The name of the ``nn.Linear`` whose output is the logits, or None (no such layer: the
    model gives no embedding). ScriptModules cannot be hooked: None."""
    if isinstance(network, torch.jit.ScriptModule):
        return None
    seen: list[tuple[str, torch.Tensor]] = []
    hooks = [module.register_forward_hook(lambda m, args, out, name=name: seen.append((name, out)))
             for name, module in network.named_modules() if isinstance(module, nn.Linear)]
    try:
        with torch.inference_mode():
            logits = pick_logits(network(example), output_index)
    finally:
        for hook in hooks:
            hook.remove()
    for name, out in reversed(seen):  # the last linear layer that produced exactly the logits
        if out is logits or (out.shape == logits.shape and torch.equal(out, logits)):
            return name
    return None


class LogitsAndEmbedding(nn.Module):
    """``forward(x) -> (logits, embedding)``; the embedding is the classifier's (N, D) input."""

    def __init__(self, network: nn.Module, layer: str, output_index: int | None = None):
        super().__init__()
        self.network = network
        self.output_index = output_index
        self._features: list[torch.Tensor] = []
        network.get_submodule(layer).register_forward_pre_hook(self._keep)

    def _keep(self, module, args):
        self._features.append(args[0])

    def forward(self, x):
        self._features.clear()
        logits = pick_logits(self.network(x), self.output_index)
        features = self._features[-1]
        self._features.clear()
        return logits, features.flatten(1)


class LogitsOnly(nn.Module):
    """``forward(x) -> logits`` for a network with several outputs (no classifier layer found)."""

    def __init__(self, network: nn.Module, output_index: int | None):
        super().__init__()
        self.network = network
        self.output_index = output_index

    def forward(self, x):
        return pick_logits(self.network(x), self.output_index)


def with_outputs(network, spec, embedding: bool = True):
    """The network as the backends run it: (logits, embedding) when the spec names a classifier
    layer (and ``embedding``), else logits (picked from several outputs where needed). A
    ScriptModule (the user's TorchScript file) is returned as it is: it cannot be wrapped for
    tracing."""
    if isinstance(network, torch.jit.ScriptModule):
        return network
    if spec.embedding_layer and embedding:
        return LogitsAndEmbedding(network, spec.embedding_layer, spec.output_index).eval()
    if spec.output_index is not None:
        return LogitsOnly(network, spec.output_index).eval()
    return network
