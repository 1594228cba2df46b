"""The answers of `shiwu serve`, as pydantic models: ``/docs`` and ``/openapi.json`` document
every field. The routes build their JSON themselves (the models describe it, they do not
reshape it), so what a client receives is exactly what earlier releases sent."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """Every refusal: 4xx or 5xx with one line saying why."""

    detail: str


class Prediction(BaseModel):
    label: str = Field(description="中文名 (or the gallery class)")
    label_en: str
    index: int = Field(description="class index in the model's labels; for a gallery class (source "
                       "\"gallery\") its index among the gallery's classes, not a model class")
    score: float
    source: str | None = Field(None, description="\"gallery\" for a class taught by example photos")
    similarity: float | None = Field(None, description="gallery: cosine similarity of the closest example")


class ImageFailure(BaseModel):
    type: str
    message: str


class Recognition(BaseModel):
    """One image's answer, as `shiwu predict --json` writes it."""

    image: str
    predictions: list[Prediction]
    model: str
    backend: str
    precision: str
    error: ImageFailure | None


class RecognizeAnswer(BaseModel):
    results: list[Recognition] = Field(description="one per image, in upload order")
    detail: str | None = Field(None, description="only when every image failed (415/422): the first reason")


class EmbeddingResult(BaseModel):
    image: str
    embedding: list[float] | None = Field(description="unit length; null when the image failed")
    error: ImageFailure | None


class EmbedAnswer(BaseModel):
    model: str
    dimension: int | None
    backend: str
    precision: str
    results: list[EmbeddingResult]


class Match(BaseModel):
    id: str = Field(description="row id (a string: row ids exceed JavaScript's exact integers)")
    image: str = Field(description="the path as it was indexed")
    score: float = Field(description="cosine similarity")
    label: str | None = Field(None, description="the row's top-1 label when it was indexed")
    thumbnail: str = Field(description="URL of its small JPEG")


class SearchResult(BaseModel):
    image: str | None = Field(None, description="an uploaded photo's name (image queries)")
    text: str | None = Field(None, description="the words searched for (text queries)")
    matches: list[Match]
    error: ImageFailure | None


class IndexRows(BaseModel):
    rows: int


class SearchAnswer(BaseModel):
    model: str
    index: IndexRows
    results: list[SearchResult] = Field(description="per uploaded image, then per text, best match first")


class IndexInfo(BaseModel):
    configured: bool
    ready: bool
    text_search: bool
    model: str | None = Field(None, description="once ready")
    dimension: int | None = Field(None, description="once ready")
    rows: int | None = Field(None, description="once ready")


class DuplicateImage(BaseModel):
    path: str = Field(description="the path as it was indexed")
    size: int = Field(description="bytes")
    match: str | None = Field(description="how it is tied to the group's first photo: exact, near or "
                                          "similar; null for that first photo (the largest file)")
    id: str = Field(description="row id (a string: row ids exceed JavaScript's exact integers)")
    thumbnail: str = Field(description="URL of its small JPEG")


class DuplicateGroup(BaseModel):
    tier: str = Field(description="the loosest tie in the group: exact, near or similar")
    images: list[DuplicateImage]


class UnreadImage(BaseModel):
    path: str = Field(description="the path as it was indexed")
    id: str = Field(description="row id (a string: row ids exceed JavaScript's exact integers)")
    reason: str = Field(description="why its file was not read: gone or changed since it was indexed "
                                    "(then in no group), or it cannot be read or decoded (then in no "
                                    "exact or near group)")


class DuplicatesAnswer(BaseModel):
    model: str
    index: IndexRows
    tier: str = Field(description="the loosest tier asked for")
    threshold: float
    groups: list[DuplicateGroup] = Field(description="by the first photo's path")
    unread: list[UnreadImage] = Field(description="photos of the index whose file was not read, by path")


class GalleryClass(BaseModel):
    label: str
    examples: int


class GalleryInfo(BaseModel):
    configured: bool
    classes: list[GalleryClass]
    ready: bool | None = Field(None, description="when configured")
    mode: str | None = Field(None, description="merge or replace, when configured")
    min_similarity: float | None = Field(None, description="when configured")


class Skipped(BaseModel):
    image: str
    error: str


class AddedExample(BaseModel):
    image: str
    file: str = Field(description="its file name in the class folder (named by content)")


class GalleryAdded(BaseModel):
    label: str
    added: list[AddedExample]
    skipped: list[Skipped]
    examples: int
    classes: list[GalleryClass]
    detail: str | None = Field(None, description="only when no photo could be read (415/422)")


class ServedModel(BaseModel):
    name: str
    description: str
    classes: int
    input_size: int
    ready: bool
    backend: str
    precision: str


class ModelsAnswer(BaseModel):
    models: list[ServedModel]
    auth_required: bool
    limits: dict[str, float | int]
    batching: dict = Field(description="max_batch_size, max_wait_ms, chosen_by, measurement")
    version: str


class Health(BaseModel):
    status: str = Field(description="ok; stuck (503) when every thread of a pool has hung")
    detail: str | None = None


class Readiness(BaseModel):
    status: str = Field(description="ready; loading, failed or draining (503)")
    model: str | None = None
    detail: str | None = None


def problems(*statuses: int, **described: str) -> dict:
    """OpenAPI ``responses`` for refusals: {status: {"model": Problem, "description": ...}}."""
    out = {status: {"model": Problem} for status in statuses}
    for key, text in described.items():
        out[int(key.lstrip("_"))] = {"model": Problem, "description": text}
    return out


# The request body of every upload route, for /docs: FastAPI cannot infer it, as the routes
# stream the body themselves (multipart with any field names, or one raw image).
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                         "description": "one or more images (any field name)"}},
                "required": ["files"]}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}
UPLOAD_RESPONSES = problems(_401="missing or wrong API key", _403="a cross-site request (Origin)",
                            _408="the body arrived too slowly", _413="body too large, or too many images",
                            _415="not an image format shiwu reads (every image)",
                            _422="corrupt image or too many pixels (every image)",
                            _503="model still loading, too busy, or shutting down: retry later",
                            _504="no answer within the request timeout")
