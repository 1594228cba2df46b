"""The sizes of a Chinese-CLIP model, read from its ``vision_model_config.json`` and
``text_model_config.json``: plain dataclasses, no torch, so that finding and describing a model
(and running its exported graph on ONNX Runtime / OpenVINO) never imports torch. The networks
that take these configs are in ``vit.py``, ``roberta.py`` and ``clip.py``."""

from __future__ import annotations

from dataclasses import dataclass

# The reference's ACT2FN names that ``roberta.ACTIVATIONS`` implements.
CONTEXT_LENGTH = 52  # the official preprocessor's (and every released model's) text length
DEFAULT_PROMPT = "一张{}的照片。"  # "a photo of {}.", the template of Chinese-CLIP's zero-shot evaluation
ACTIVATION_NAMES = ("gelu", "gelu_new", "relu", "swish")


@dataclass(frozen=True)
class VisionConfig:
    embed_dim: int = 512
    image_resolution: int = 224
    layers: int = 12
    width: int = 768
    patch_size: int = 16
    head_width: int = 64  # ViT-H/14 has 80; the heads are width // head_width, as in the reference

    @classmethod
    def from_json(cls, config: dict) -> "VisionConfig":
        """From the keys of ``vision_model_config.json``."""
        layers = config.get("vision_layers")
        if isinstance(layers, (str, list, tuple)):
            # "[3,4,6,3]": the stage depths of a ModifiedResNet (RN50), not a layer count.
            raise ValueError(
                f"this is a ResNet image tower (vision_layers={layers!r}, the RN50 model); shiwu "
                "runs the ViT Chinese-CLIP models (ViT-B/16, ViT-L/14, ViT-L/14@336, ViT-H/14)")
        try:
            result = cls(embed_dim=int(config["embed_dim"]),
                         image_resolution=int(config["image_resolution"]),
                         layers=int(layers), width=int(config["vision_width"]),
                         patch_size=int(config["vision_patch_size"]),
                         head_width=int(config.get("vision_head_width", 64)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"vision_model_config.json: missing or invalid value ({exc!r})") from None
        if result.width % result.head_width:
            raise ValueError(f"vision_model_config.json: vision_width {result.width} is not a "
                             f"multiple of vision_head_width {result.head_width}")
        return result

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def grid(self) -> int:
        return self.image_resolution // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12  # what the reference CLIP passes to its BertConfig

    @classmethod
    def from_json(cls, config: dict) -> "TextConfig":
        """From the keys of ``text_model_config.json`` (``vocab_size``, ``text_hidden_size``, ...)."""
        try:
            result = cls(
                vocab_size=int(config["vocab_size"]),
                hidden_size=int(config["text_hidden_size"]),
                num_hidden_layers=int(config["text_num_hidden_layers"]),
                num_attention_heads=int(config["text_num_attention_heads"]),
                intermediate_size=int(config["text_intermediate_size"]),
                max_position_embeddings=int(config["text_max_position_embeddings"]),
                type_vocab_size=int(config["text_type_vocab_size"]),
                hidden_act=str(config.get("text_hidden_act", "gelu")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"text_model_config.json: missing or invalid value ({exc!r})") from None
        if result.hidden_act not in ACTIVATION_NAMES:
            raise ValueError(f"text_model_config.json: text_hidden_act {result.hidden_act!r} is not "
                             f"one of {', '.join(ACTIVATION_NAMES)}")
        if result.hidden_size % result.num_attention_heads:
            raise ValueError(f"text_model_config.json: text_hidden_size {result.hidden_size} is not "
                             f"a multiple of text_num_attention_heads {result.num_attention_heads}")
        return result


@dataclass(frozen=True)
class CLIPConfig:
    vision: VisionConfig
    text: TextConfig

    @classmethod
    def from_json(cls, vision: dict, text: dict) -> "CLIPConfig":
        """From the contents of ``vision_model_config.json`` and ``text_model_config.json``."""
        return cls(VisionConfig.from_json(vision), TextConfig.from_json(text))

    @property
    def embed_dim(self) -> int:
        return self.vision.embed_dim
