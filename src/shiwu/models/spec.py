"""The one door every model comes through: ``ModelRef`` (what the user asked for) and
``ModelSpec`` (what a model source answers: preprocessing as data, labels, how to build it or
which ready graph file to run).

No torch here: ``shiwu models`` and the cached ONNX / OpenVINO paths must stay light. Building
the network (``ModelSpec.build``) is the only step that needs it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from ..labels import LabelSet
from ..preprocess import Preprocessing
from ..errors import ShiwuError

DEFAULT_MODEL = "efficientnet-lite0"
RESIZE_MODES = ("crop", "squash")
INTERPOLATIONS = ("bilinear", "bicubic")


class ModelNotFound(ShiwuError, LookupError):
    """A model name is unknown, its files are missing or unreadable, or it cannot be used as
    asked; the message says what to do instead."""


class UntrustedModel(ModelNotFound):
    """A model file that only a full unpickle (which runs code) can load, and the user did not
    say ``--trust-model-code``."""


@dataclass(frozen=True)
class ModelRef:
    """Which model, and what the user said about it beyond its name.

    Picklable and JSON-friendly (``to_dict``): batch decoders, Ray actors, bench workers and
    server workers rebuild the same model from it. ``mean`` and ``std`` are on the 0-1 scale,
    as torchvision's ``Normalize`` takes them.
    """

    name: str | None = None
    labels: str | tuple[str, ...] | None = None  # a labels file, or label texts (zero-shot models)
    resize: str | None = None                     # "crop" or "squash"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str | None = None              # "bilinear" or "bicubic"
    trust_model_code: bool = False
    prompt: str | None = None                     # zero-shot models: "一张{}的照片。"

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if isinstance(self.labels, list):
            object.__setattr__(self, "labels", tuple(self.labels))
        if self.resize is not None and self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, not {self.resize!r}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                             f"not {self.interpolation!r}")

    @classmethod
    def of(cls, model: "str | ModelRef | dict | None") -> "ModelRef":
        if isinstance(model, ModelRef):
            return model
        if isinstance(model, dict):
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in model.items() if k in known})
        return cls(name=model)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def preprocessing_options(self) -> dict:
        """The preprocessing the user set explicitly (only these override a model's own)."""
        return {k: v for k, v in (("resize", self.resize), ("mean", self.mean), ("std", self.std),
                                  ("interpolation", self.interpolation)) if v is not None}


@dataclass(frozen=True)
class ModelSpec:
    """A model as the rest of shiwu sees it.

    ``name`` is what results show (a file's name for the user's own model); ``key`` is unique
    per model on this machine (tuned settings are stored under it). A model either has a
    ``build_network`` (a torch network: every backend can run it, exports are derived from it)
    or ready graph files (``onnx_file``, ``openvino_file``) that only the runtimes reading that
    format can run (``runtimes``).
    """

    name: str
    description: str
    num_classes: int
    preprocessing: Preprocessing
    locate_weights: Callable[[], Path | None] = field(repr=False)
    install_hint: str
    load_labels: Callable[[], LabelSet] = field(repr=False)
    build_network: Callable[["ModelSpec", int], object] | None = field(default=None, repr=False)
    key: str = ""
    onnx_file: Path | None = None
    openvino_file: Path | None = None
    runtimes: tuple[str, ...] | None = None  # None: every backend
    fixed_size: int | None = None             # a graph built for one input size only
    fixed_batch: int | None = None            # a graph built for one batch size only
    output_index: int | None = None           # which of several outputs is the logits
    embedding_layer: str | None = None        # the nn.Linear giving the logits (its input: the embedding)
    file_kind: str = ""                       # the user's file: pickle, torchscript, onnx, openvino
    # texts -> (N, D) L2-normalised embeddings in the image embedding's space (Chinese-CLIP)
    text_encoder: Callable[[list[str]], object] | None = field(default=None, repr=False)
    identity: str = ""                        # mixed into cache keys besides the file contents
    # How shiwu writes this network's graph: in the export cache keys only (not the fingerprint,
    # which indexes compare), so a faster graph of the same weights is exported again.
    graph_revision: str = ""
    # Layers whose int8 costs top-1, kept in float by the OpenVINO int8 recipe: NNCF ignored-scope
    # patterns over OpenVINO node names, found by NNCF's accuracy control on labelled photos
    # (benchmarks/openvino_accuracy_control.py). In the int8 model's cache key.
    int8_float_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name)

    def weights_path(self) -> Path:
        path = self.locate_weights()
        if path is None or not path.is_file():
            raise ModelNotFound(f"weights for {self.name} are not installed. {self.install_hint}")
        return path

    @property
    def available(self) -> bool:
        try:
            self.weights_path()
        except ModelNotFound:
            return False
        return True

    def graph_fields(self) -> dict:
        """The graph revision for the keys of what was measured on a graph (verdicts, auto's
        choices): absent when never revised, so that older entries of unchanged graphs stay valid."""
        return {"graph": self.graph_revision} if self.graph_revision else {}

    def fingerprint(self) -> str:
        """Content hash of everything the model's output depends on: cache keys use it, so a
        changed file is exported again."""
        from ..cache import weights_fingerprint

        files = [self.weights_path()]
        if self.openvino_file is not None and self.openvino_file not in files:
            files.append(self.openvino_file)
        digests = [weights_fingerprint(p) for p in files]
        if len(digests) == 1 and not self.identity:
            return digests[0]
        return hashlib.sha256("|".join(digests + [self.identity]).encode()).hexdigest()

    def labels(self) -> LabelSet:
        labels = self.load_labels()
        if len(labels) != self.num_classes:
            raise ModelNotFound(f"{self.name}: {len(labels)} labels for {self.num_classes} classes")
        return labels

    def supports(self, backend: str) -> bool:
        return self.runtimes is None or backend in self.runtimes

    def build(self, size: int | None = None):
        """The torch network with its weights loaded, in eval mode, built for input ``size``."""
        if self.build_network is None:
            kind = "ONNX" if self.onnx_file is not None else "OpenVINO IR"
            raise ModelNotFound(f"{self.name} is an {kind} file: torch cannot run it; use "
                                f"--backend {' or '.join(self.runtimes or ('onnxruntime', 'openvino'))}")
        return self.build_network(self, size or self.preprocessing.size)
