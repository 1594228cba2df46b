"""Chinese-CLIP model files from ModelScope: find a downloaded model, load its towers, its tokenizer, and
preprocess photos exactly as the official pipeline does.

The ModelScope model directory (``damo/multi-modal_clip-vit-base-patch16_zh`` and its siblings,
also under ``iic/``), as ``CLIPForMultiModalEmbedding`` reads it::

    configuration.json        task multi-modal-embedding, model type clip-multi-modal-embedding
    vision_model_config.json  embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size
                              (+ vision_head_width for ViT-H/14)
    text_model_config.json    vocab_size, text_hidden_size, text_num_hidden_layers, ...
    vocab.txt                 the BERT vocabulary (21,128 tokens)
    pytorch_model.bin         {'state_dict': sd} or sd; keys maybe prefixed "module." (DataParallel)
                              and then "clip_model." (a ModelScope fine-tune); fp16 tensors except
                              where cn_clip's convert_weights leaves fp32 (the image tower's layer
                              norms, class and positional embeddings, the logit scale); with
                              ModelScope's unused BERT pooler (bert.pooler.*), which shiwu drops

Loading: ``torch.load(weights_only=True, mmap=True)`` when the file is torch's zip format, the
network built on the meta device, each tensor converted to fp32 once and assigned: the fp16
file stays in the page cache and only one fp32 copy of the weights is made (the official
loader holds a random fp32 network, the checkpoint and the converted copy at once).
The configs are checked against the weights' shapes, so a wrong config is an error that names
the tensor, not a crash deep inside ``load_state_dict``.

No torch at import time, like the other model sources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from ..preprocess import Preprocessing
from .modelscope import PREFIX, candidate_dirs, first_model_dir

MODEL_NAMES = (
    "multi-modal_clip-vit-base-patch16_zh",       # ViT-B/16 + RoBERTa-wwm-ext-base, 224 px
    "multi-modal_clip-vit-large-patch14_zh",      # ViT-L/14 + RoBERTa-wwm-ext-base, 224 px
    "multi-modal_clip-vit-large-patch14_336_zh",  # ViT-L/14 + RoBERTa-wwm-ext-base, 336 px
    "multi-modal_clip-vit-huge-patch14_zh",       # ViT-H/14 + RoBERTa-wwm-ext-large, 224 px
)
MODEL_ID = f"damo/{MODEL_NAMES[0]}"
ORGS = ("damo", "iic")  # ModelScope moved damo/ to iic/; the same files

CONFIG_FILE = "configuration.json"
VISION_CONFIG_FILE = "vision_model_config.json"
TEXT_CONFIG_FILE = "text_model_config.json"
VOCAB_FILE = "vocab.txt"
WEIGHTS_FILE = "pytorch_model.bin"
REQUIRED_FILES = (VISION_CONFIG_FILE, TEXT_CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPPreprocessing(Preprocessing):
    """The official ``CLIPPreprocessor`` at inference: ``Resize((R, R), BICUBIC)`` on the PIL
    image (the aspect ratio is not kept, nothing is cropped), ``ToTensor`` (/255), CLIP
    mean/std.

    torchvision's ``Resize`` on a PIL image calls ``Image.resize(size, BICUBIC)`` and nothing
    else: its ``antialias`` argument applies to tensors only, and Pillow's resampling always
    filters over the whole source footprint. So this is that call, on the full-size decode
    (JPEG draft decoding would give other pixels than the official full decode).
    """

    @property
    def decode_min_size(self) -> None:
        return None

    def with_size(self, size: int) -> "CLIPPreprocessing":
        if not 32 <= size <= 1024:
            raise ValueError(f"input size must be between 32 and 1024 pixels, got {size}")
        return replace(self, size=size)

    def crop(self, image: Image.Image) -> Image.Image:
        return image.resize((self.size, self.size), self.resample)


def clip_preprocessing(image_resolution: int = 224) -> CLIPPreprocessing:
    return CLIPPreprocessing(size=image_resolution, crop_ratio=1.0,
                             mean=tuple(m * 255 for m in CLIP_MEAN),
                             std=tuple(s * 255 for s in CLIP_STD),
                             resample=Image.Resampling.BICUBIC)


# ----------------------------------------------------------------------------- finding it

def model_ids(model_id: str = MODEL_ID) -> list[str]:
    """``model_id`` and its damo/ <-> iic/ twin."""
    org, _, name = model_id.partition("/")
    return [model_id] + [f"{o}/{name}" for o in ORGS if o != org] if org in ORGS else [model_id]


def is_model_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in REQUIRED_FILES)


def find_model_dir(model_id: str = MODEL_ID) -> Path | None:
    """The ModelScope cache's download of ``model_id`` (or its damo/iic twin), or None."""
    if model_id.startswith(PREFIX):
        model_id = model_id[len(PREFIX):]
    dirs = [d for ident in model_ids(model_id) for d in candidate_dirs(ident)]
    return first_model_dir(list(dict.fromkeys(dirs)), is_model_dir)


def download_command(model_id: str = MODEL_ID, local_dir: str | Path | None = None) -> str:
    local_dir = local_dir if local_dir is not None else f"./{model_id.partition('/')[2]}"
    return f"modelscope download --model {model_id} --local_dir {local_dir}"


def _not_found(message: str, model_id: str = MODEL_ID, local_dir: str | Path | None = None):
    from .spec import ModelNotFound

    return ModelNotFound(f"{message}\nDownload it once (needs `pip install modelscope`; shiwu never "
                         f"downloads at run time):\n    {download_command(model_id, local_dir)}")


def locate(model: str | Path) -> Path:
    """A Chinese-CLIP model directory from a directory path or a (``modelscope:``) model id."""
    text = str(model)
    ident = text[len(PREFIX):] if text.startswith(PREFIX) else text
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve()
    if ident.count("/") == 1 and not ident.startswith((".", "/", "~")):
        found = find_model_dir(ident)
        if found is None:
            raise _not_found(f"ModelScope model {ident} is not on this machine.", ident)
        return found
    raise _not_found(f"model directory {path} does not exist.", MODEL_ID, path)


# ----------------------------------------------------------------------------- loading it

def read_configs(directory: str | Path):
    """``CLIPConfig`` from the directory's two config files (ModelNotFound saying what is wrong)."""
    from .clip_config import CLIPConfig

    directory = Path(directory)
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise _not_found(f"{directory} is not a Chinese-CLIP model directory: no "
                         f"{', '.join(missing)}.", MODEL_ID, directory)
    configs = []
    for name in (VISION_CONFIG_FILE, TEXT_CONFIG_FILE):
        try:
            config = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _not_found(f"{directory / name}: cannot read it ({exc}).", MODEL_ID, directory) from None
        if not isinstance(config, dict):
            raise _not_found(f"{directory / name}: expected a JSON object.", MODEL_ID, directory)
        configs.append(config)
    try:
        return CLIPConfig.from_json(*configs)
    except ValueError as exc:
        from .spec import ModelNotFound

        raise ModelNotFound(f"{directory}: {exc}") from None


def is_synthetic(directory: str | Path) -> bool:
    try:
        config = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("synthetic"))


def _tokenizer_module():
    """shiwu.models.clip_tokenizer, or a clear error without the `clip` extra (`tokenizers`)."""
    try:
        from . import clip_tokenizer
    except ImportError as exc:
        from .spec import ModelNotFound

        raise ModelNotFound(f"Chinese-CLIP needs the {exc.name} package for its tokenizer: "
                            'pip install "shiwu[clip]"') from None
    return clip_tokenizer


def _vocab(directory: str | Path) -> dict[str, int]:
    read_vocab = _tokenizer_module().read_vocab

    path = Path(directory) / VOCAB_FILE
    try:
        return read_vocab(path)
    except OSError as exc:
        raise _not_found(f"{path}: cannot read the vocabulary ({exc}).", MODEL_ID, directory) from None
    except ValueError as exc:
        from .spec import ModelNotFound

        raise ModelNotFound(str(exc)) from None


def load_tokenizer(directory: str | Path, context_length: int | None = None):
    """The model's tokenizer (its ``vocab.txt`` through Hugging Face ``tokenizers``)."""
    from .clip_config import CONTEXT_LENGTH

    return _tokenizer_module().ClipTokenizer(_vocab(directory), context_length or CONTEXT_LENGTH)


def checkpoint_state(path: str | Path) -> dict:
    """The checkpoint's tensors under ``ChineseCLIP``'s names: ``module.`` and ``clip_model.``
    prefixes removed, the BERT pooler dropped: ModelScope's BertModel has one (so its checkpoints
    do), CLIP never uses it and cn_clip drops it too."""
    from .modelscope import load_state_dict

    state = load_state_dict(path)  # unwraps {'state_dict': ...}, strips "module.", mmaps
    prefix = "clip_model."
    if all(key.startswith(prefix) for key in state):
        state = {key[len(prefix):]: value for key, value in state.items()}
    return {key: value for key, value in state.items() if not key.startswith("bert.pooler.")}


def load_clip(directory: str | Path, *, image_size: int | None = None, text_tower: bool = True):
    """The ``ChineseCLIP`` network of a model directory, fp32, eval mode, no autograd.

    ``image_size``: run the image tower at another input size (the positional embedding is
    interpolated as cn_clip does). ``text_tower=False``: only the image tower and the logit
    scale, for when the label texts are already encoded (half the memory of ViT-B/16).
    """
    import torch

    from .clip import ChineseCLIP
    from .spec import ModelNotFound
    from .vit import resize_positional_embedding

    directory = Path(directory)
    config = read_configs(directory)
    pad_id = _vocab(directory)["[PAD]"] if text_tower else 0
    weights = directory / WEIGHTS_FILE
    state = checkpoint_state(weights)

    with torch.device("meta"):
        network = ChineseCLIP(config, pad_id=pad_id, text_tower=text_tower)
    expected = network.state_dict()
    _check_shapes(directory, state, expected, text_tower)
    state = {key: state[key] for key in expected}

    if image_size is not None and image_size != config.vision.image_resolution:
        grid = image_size // config.vision.patch_size
        if grid < 1:
            raise ValueError(f"input size {image_size} is smaller than one {config.vision.patch_size}-pixel patch")
        config = replace(config, vision=replace(config.vision, image_resolution=image_size))
        with torch.device("meta"):
            network = ChineseCLIP(config, pad_id=pad_id, text_tower=text_tower)
        key = "visual.positional_embedding"
        state[key] = resize_positional_embedding(state[key].float(), grid)

    floats = [value for value in state.values() if value.is_floating_point()]
    if any(value.dtype != torch.float32 for value in floats):
        # A half-precision file: every tensor becomes a fresh fp32 one, the few fp32 ones too, so
        # that nothing refers to the memory-mapped file once loaded and its pages (377 MB for
        # ViT-B/16) leave the process. An fp32 file stays mapped: its pages are the weights.
        state = {key: value.float() if value.dtype != torch.float32 else value.clone()
                 for key, value in state.items()}
    try:
        network.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # shapes are checked above; this is the unexpected
        raise ModelNotFound(f"{weights}: the weights do not fit the configs: {exc}") from None
    network.requires_grad_(False)
    return network.eval()


def _config_file_of(key: str) -> str:
    if key.startswith("visual."):
        return VISION_CONFIG_FILE
    if key == "text_projection":
        return f"{TEXT_CONFIG_FILE} (text_hidden_size) and {VISION_CONFIG_FILE} (embed_dim)"
    return TEXT_CONFIG_FILE


def _layer_count(state: dict, prefix: str) -> int:
    indices = {key[len(prefix):].split(".", 1)[0] for key in state if key.startswith(prefix)}
    return len([i for i in indices if i.isdigit()])


def _check_shapes(directory: Path, state: dict, expected: dict, text_tower: bool) -> None:
    from .spec import ModelNotFound

    weights = directory / WEIGHTS_FILE
    for key, tensor in expected.items():
        if key not in state:
            continue
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelNotFound(
                f"{directory}: {key} has shape {tuple(state[key].shape)} in {WEIGHTS_FILE} but "
                f"{tuple(tensor.shape)} by {_config_file_of(key)}; the configs and the weights must "
                "come from the same model")
    for prefix, config_file, field in (("visual.transformer.resblocks.", VISION_CONFIG_FILE, "vision_layers"),
                                       ("bert.encoder.layer.", TEXT_CONFIG_FILE, "text_num_hidden_layers")):
        have, want = _layer_count(state, prefix), _layer_count(expected, prefix)
        if want and have and have != want:  # none at all: not this architecture, said below
            raise ModelNotFound(f"{directory}: {config_file} says {field}={want} but {WEIGHTS_FILE} "
                                f"has {have} layers ({prefix}N); the configs and the weights must come "
                                "from the same model")
    missing = [key for key in expected if key not in state]
    if missing:
        raise ModelNotFound(
            f"{weights}: {len(missing)} of the model's {len(expected)} tensors are missing, e.g. "
            f"{', '.join(missing[:3])}; is it a Chinese-CLIP checkpoint? Its keys start with: "
            f"{', '.join(list(state)[:3]) or '(none)'}")
    towers = ("visual.", "bert.", "text_projection", "logit_scale")
    unexpected = [key for key in state if key not in expected
                  and (text_tower or not key.startswith(("bert.", "text_projection")))]
    if unexpected:
        known = [k for k in unexpected if k.startswith(towers)]
        raise ModelNotFound(
            f"{weights}: {len(unexpected)} tensors the configs do not account for, e.g. "
            f"{', '.join((known or unexpected)[:3])}; do {VISION_CONFIG_FILE} and {TEXT_CONFIG_FILE} "
            "describe this checkpoint (layer counts)?")
