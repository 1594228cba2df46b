"""The schema a ``manifest.json`` (or a Milvus collection's description) must meet before any of
its values is used: types, ranges and the known kinds. A hand-edited ``"hnsw_m": 0`` would make
faiss abort the process; ``"dimension": "x"`` would raise deep inside; an unknown engine kind
would fall back silently. Here each is one line naming the field (``Manifest.from_json``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .faiss_engine import DEFAULT_NPROBE, FLAT_MAX_VALUES

BIG = 1 << 20


class _Checked(BaseModel):
    # strict: "3" is not 3 and true is not 1; unknown keys are ignored (a newer shiwu's extras)
    model_config = ConfigDict(strict=True, extra="ignore")


class FaissEngineFile(_Checked):
    engine: Literal["faiss"] = "faiss"
    kind: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    flat_max_values: int = Field(FLAT_MAX_VALUES, ge=0)
    nlist: int | None = Field(None, ge=1, le=BIG)
    nprobe: int = Field(DEFAULT_NPROBE, ge=1, le=BIG)
    hnsw_m: int = Field(32, ge=2, le=256)  # faiss aborts the process on 0
    ef_construction: int = Field(40, ge=1, le=BIG)
    ef_search: int = Field(64, ge=1, le=BIG)
    threads: int | None = Field(None, ge=1, le=4096)


class MilvusEngineFile(_Checked):
    model_config = ConfigDict(strict=True, extra="allow")
    engine: Literal["milvus"]
    index_type: str = Field("FLAT", min_length=1, max_length=64)
    params: dict = Field(default_factory=dict)


ENGINES = {"faiss": FaissEngineFile, "milvus": MilvusEngineFile}


class ModelRefFile(_Checked):
    """How to rebuild the model; ``trust_model_code`` is deliberately not a field (dropped)."""

    name: str | None = Field(None, max_length=4096)
    labels: str | list[str] | None = None
    resize: Literal["crop", "squash"] | None = None
    mean: list[float] | None = Field(None, min_length=3, max_length=3)
    std: list[float] | None = Field(None, min_length=3, max_length=3)
    interpolation: Literal["bilinear", "bicubic"] | None = None
    prompt: str | None = Field(None, max_length=4096)


class PreprocessingFile(_Checked):
    size: int = Field(ge=1, le=8192)
    resize: Literal["crop", "squash"]
    crop_ratio: float = Field(gt=0, le=1)
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    interpolation: int = Field(ge=0, le=16)
    full_decode: bool = False


class ManifestFile(_Checked):
    model: str = Field(min_length=1, max_length=4096)
    dimension: int = Field(ge=1, le=65_536)
    weights_hash: str = Field("", max_length=256)
    metric: Literal["cosine"] = "cosine"
    engine: dict = Field(default_factory=dict)
    model_ref: ModelRefFile = Field(default_factory=ModelRefFile)
    counts: dict[str, int] = Field(default_factory=dict)
    preprocessing: PreprocessingFile | None = None
    precision: str = Field("", max_length=32)
    backend: str = Field("", max_length=32)
    int8_recipe: str = Field("", max_length=256)
    format: Literal["shiwu-index"]
    format_version: Literal[1]

    @field_validator("preprocessing", mode="before")
    @classmethod
    def _unrecorded(cls, value):
        return None if value == {} else value  # indexes made before it was recorded

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value):
        if not isinstance(value, dict):
            raise ValueError("must be an object")
        kind = value.get("engine", "faiss")
        schema = ENGINES.get(kind) if isinstance(kind, str) else None
        if schema is None:
            raise ValueError(f"unknown engine {kind!r} (known: {', '.join(ENGINES)})")
        try:
            return schema.model_validate(value).model_dump()
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    def model_dump(self, **kwargs) -> dict:
        data = super().model_dump(**kwargs)
        data["model_ref"] = {k: v for k, v in data["model_ref"].items() if v is not None}
        data["preprocessing"] = data["preprocessing"] or {}
        return data
