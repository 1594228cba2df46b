"""Where the logits (and the embedding) are in what a network returns: a tensor, or tuples,
lists and dicts of them. No torch import: the answers are positions, read from any tensor type.
"""

from __future__ import annotations


def flat_outputs(output) -> list:
    """A model's output as a flat list of tensors (tuples, lists and dicts in their order)."""
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in flat_outputs(item)]
    return [output]


def pick_logits(output, index: int | None):
    """The logits tensor of a model's output (see ModelFacts.output_index); a single tensor is
    the logits already (a wrapper picked them)."""
    if index is None or not isinstance(output, (tuple, list, dict)):
        return output
    return flat_outputs(output)[index]


def split_outputs(output, spec) -> tuple:
    """(logits, embedding or None) from what a network built by ``embedding.with_outputs`` (or a
    trace of it) returns."""
    if spec.embedding_layer:
        return output[0], output[1]
    return pick_logits(output, spec.output_index), None
