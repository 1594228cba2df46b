"""Chinese-CLIP as a model source: zero-shot recognition with any labels the user types.

``--model modelscope:damo/multi-modal_clip-vit-base-patch16_zh`` (also ``iic/…``, the other
sizes, or a downloaded directory) ``--labels 快递柜,电饭煲,油菜花田`` (or a file, one label per
line; none: the 1000 Chinese ImageNet names) ``--prompt "一张{}的照片。"``.

The label texts are encoded once per (model, labels, prompt) by the text tower and cached;
their normalised embeddings times the logit scale become the final linear layer of the image
tower (``clip.ZeroShotHead``). So the image side is one ordinary classifier graph: exported
to ONNX / OpenVINO and cached per label set (the spec's ``identity``), and top-k softmax,
batch, serve, bench, tune, eval and the agreement gate work unchanged. The classifier's input
is the L2-normalised image embedding, which ``shiwu index`` stores and ``shiwu search --text``
compares with encoded query texts (``spec.text_encoder``).

No torch at import time, like the other model sources.
"""

from __future__ import annotations

import logging
import hashlib
import json
from pathlib import Path

import numpy as np

from ..labels import LabelSet
from . import clip_files
from .clip_config import DEFAULT_PROMPT
from .modelscope import PREFIX
from .spec import ModelNotFound, ModelRef, ModelSpec

log = logging.getLogger(__name__)

CATALOG_NAME = PREFIX + clip_files.MODEL_ID
TEXT_CACHE_VERSION = 1


def handles(name: str) -> bool:
    ident = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if ident.count("/") == 1 and ident.split("/")[1] in clip_files.MODEL_NAMES:
        return True
    path = Path(name).expanduser()
    return path.is_dir() and (path / clip_files.VISION_CONFIG_FILE).is_file()


def catalog() -> list[ModelSpec]:
    directory = clip_files.find_model_dir(clip_files.MODEL_ID)
    return [ModelSpec(
        name=CATALOG_NAME,
        description="Chinese-CLIP ViT-B/16 (ModelScope; your local download): zero-shot, any Chinese "
                    "labels (--labels 快递柜,电饭煲), search photos by text",
        num_classes=1000, preprocessing=clip_files.clip_preprocessing(),
        locate_weights=lambda: None if directory is None else directory / clip_files.WEIGHTS_FILE,
        install_hint=f"Download it with: {clip_files.download_command()} (then --model that directory)",
        load_labels=LabelSet.imagenet)]


def resolve(ref: ModelRef) -> ModelSpec:
    given = [f"--{k}" for k in ref.preprocessing_options]
    if given:
        raise ModelNotFound(f"Chinese-CLIP has its own preprocessing (Resize((224, 224)) bicubic, CLIP "
                            f"mean/std): {', '.join(given)} cannot change it")
    directory = clip_files.locate(ref.name)
    config = clip_files.read_configs(directory)
    ident = ref.name[len(PREFIX):] if ref.name.startswith(PREFIX) else ref.name
    name = PREFIX + ident if not Path(ref.name).expanduser().is_dir() else str(directory)
    prompt = ref.prompt if ref.prompt is not None else DEFAULT_PROMPT
    if prompt.count("{}") != 1:
        raise ModelNotFound(f"--prompt must contain '{{}}' exactly once (where the label goes), got {prompt!r}")
    labels = zero_shot_labels(ref.labels, directory, prompt)
    weights = directory / clip_files.WEIGHTS_FILE
    v = config.vision
    kind = "SYNTHETIC (random weights) " if clip_files.is_synthetic(directory) else ""
    identity = json.dumps({"labels": list(labels.zh), "prompt": prompt}, ensure_ascii=False)

    def build(spec, size):
        from .clip import ZeroShotHead

        class_weights = text_classifier(directory, labels.zh, prompt, spec.fingerprint())
        visual = clip_files.load_clip(directory, image_size=size, text_tower=False).visual
        head = ZeroShotHead(visual, class_weights)
        head.requires_grad_(False)
        return head.eval()

    return ModelSpec(
        name=name, key=name,
        description=f"{kind}Chinese-CLIP ViT ({v.layers} layers, width {v.width}, patch {v.patch_size}, "
                    f"{v.image_resolution}px, {v.embed_dim}-d), zero-shot over {len(labels):,} labels, "
                    f"prompt {prompt!r}, from {directory}",
        num_classes=len(labels),
        preprocessing=clip_files.clip_preprocessing(config.vision.image_resolution),
        locate_weights=lambda: weights,
        install_hint=f"Download it with:\n    {clip_files.download_command(clip_files.MODEL_ID, directory)}",
        load_labels=lambda: labels,
        build_network=build,
        embedding_layer="classifier",  # its input: the L2-normalised CLIP image embedding
        identity=identity,
        text_encoder=lambda texts: encode_texts(directory, texts),
    )


# ----------------------------------------------------------------------------- labels

def zero_shot_labels(labels, directory: Path, prompt: str = DEFAULT_PROMPT) -> LabelSet:
    """The label texts: a comma list (ASCII or full-width commas), a file (one per line), or —
    with none — the 1000 Chinese ImageNet names. Duplicates are merged with a warning; a label
    longer than the text context is cut with a warning; an empty one is an error."""
    if labels is None:
        return LabelSet.imagenet()
    if isinstance(labels, (tuple, list)):
        texts = [str(t) for t in labels]
    elif _names_a_file(labels):
        try:
            lines = Path(labels).expanduser().read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelNotFound(f"cannot read the labels file {labels}: {exc}") from None
        texts = [line.strip() for line in lines if line.strip()]
        if not texts:
            raise ModelNotFound(f"the labels file {labels} has no labels")
    else:
        texts = [t.strip() for t in str(labels).replace("，", ",").split(",")]
        if any(not t for t in texts):
            raise ModelNotFound(f"--labels {labels!r} has an empty label: give comma-separated labels "
                                "such as 快递柜,电饭煲, or a file with one label per line")
    if not texts:
        raise ModelNotFound("--labels is empty: zero-shot recognition needs at least one label")
    unique = list(dict.fromkeys(texts))
    if len(unique) < len(texts):
        repeated = sorted({t for t in texts if texts.count(t) > 1})
        log.warning(f"repeated labels merged: {', '.join(repeated)}")
    tokenizer = clip_files.load_tokenizer(directory)
    room = tokenizer.context_length - 2  # the start and end marks take two
    _refuse_labels_cut_alike(tokenizer, unique, prompt, room)
    too_long = [t for t in unique if tokenizer.count_tokens(prompt.replace("{}", t)) > room]
    if too_long:
        log.warning(f"{len(too_long)} label(s) longer than the model's {tokenizer.context_length} "
                    f"tokens are cut there, e.g. {too_long[0][:30]!r}")
    return LabelSet(tuple(unique), ("",) * len(unique))


def _names_a_file(text) -> bool:
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError):  # a comma list longer than a file name can be, or with a NUL
        return False


def _refuse_labels_cut_alike(tokenizer, labels: list[str], prompt: str, room: int) -> None:
    """Texts longer than the context are cut at ``room`` tokens. When the cut leaves two labels
    the same text (a prompt that fills the context before the label, or long labels that share
    their beginning), they would score exactly alike: refuse, saying which and why."""
    before = prompt.split("{}")[0]
    used = tokenizer.count_tokens(before)
    if used >= room:
        raise ModelNotFound(f"--prompt {prompt!r} takes {used} tokens before the label, and the text context "
                            f"holds {room} (of the model's {tokenizer.context_length}, less the start and end "
                            "marks): every label would be cut away and read the same; use a shorter prompt")
    seen: dict[tuple, str] = {}
    for label in labels:
        kept = tuple(tokenizer.tokenize(prompt.replace("{}", label))[:room])
        if kept in seen:
            raise ModelNotFound(f"labels {seen[kept][:40]!r} and {label[:40]!r} read the same once cut to the "
                                f"model's {tokenizer.context_length}-token text context with --prompt {prompt!r}: "
                                "shorten them (or the prompt) so that they differ early")
        seen[kept] = label


# ----------------------------------------------------------------------------- text side

def text_classifier(directory: Path, labels, prompt: str, fingerprint: str):
    """(len(labels), D) torch tensor: the zero-shot classifier's weights, from the cache or
    encoded now by the text tower (then cached, so the text tower is loaded once per label set)."""
    import torch

    from ..cache import atomic_output, find

    path = find("clip-text", f"{hashlib.sha256(f'{TEXT_CACHE_VERSION}|{fingerprint}'.encode()).hexdigest()[:32]}.npy")
    try:
        cached = np.load(path)
        if cached.shape[0] == len(labels):
            return torch.from_numpy(cached)
    except (OSError, ValueError):
        pass
    from .clip import class_weights

    log.info(f"encoding {len(labels):,} label texts with the text tower (once; cached)")
    clip = clip_files.load_clip(directory, text_tower=True)
    with torch.inference_mode():
        weights = class_weights(clip, clip_files.load_tokenizer(directory), list(labels), prompt).float()
    del clip
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, weights.numpy())
    return weights


def encode_texts(directory: Path, texts) -> np.ndarray:
    """(N, D) L2-normalised text embeddings of query texts, as they are (no prompt): what
    ``shiwu search --text`` compares with an index of image embeddings."""
    import torch
    import torch.nn.functional as F

    from .clip import encode_texts as encode

    texts = [str(t).strip() for t in texts]
    if not texts or any(not t for t in texts):
        raise ModelNotFound("an empty search text")
    clip = clip_files.load_clip(directory, text_tower=True)
    ids = torch.from_numpy(clip_files.load_tokenizer(directory)(texts))
    with torch.inference_mode():
        return F.normalize(encode(clip, ids), dim=-1).float().numpy()
