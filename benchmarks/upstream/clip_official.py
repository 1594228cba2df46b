"""The official ModelScope Chinese-CLIP, as a baseline for the benchmarks: its own model class
loading the model directory (fp16 weights cast to fp32 on the CPU, as the pipeline does)."""

from __future__ import annotations

from pathlib import Path


def official_encode_image(directory: Path):
    """``CLIPForMultiModalEmbedding(directory).clip_model.encode_image``: the image tower of the
    official pipeline, without its preprocessing (needs the modelscope package and addict)."""
    import torch
    from modelscope.models.multi_modal.clip.model import CLIPForMultiModalEmbedding

    model = CLIPForMultiModalEmbedding(str(directory)).clip_model.eval()

    def encode(image: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.encode_image(image)

    return encode
