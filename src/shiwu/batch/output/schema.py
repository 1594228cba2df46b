"""The columns of a results file: a JSON row (see docs: the result schema) flattened for CSV
and Parquet as ``image``, then ``label_1, label_en_1, index_1, score_1`` ... up to ``topk``,
then ``model, backend, precision, error_type, error_message, path``."""

from __future__ import annotations

PREDICTION_FIELDS = ("label", "label_en", "index", "score")
TRAILING_COLUMNS = ("model", "backend", "precision", "error_type", "error_message")
# The image's identity, its resolved real path (``sources.image_key``), beside ``image`` as the
# user spelled it: --resume matches it from any folder, and readers find the file from anywhere.
# Files written before it existed have no such column; they are resumed by ``resume.row_key``.
PATH_COLUMN = "path"


def columns(topk: int, with_path: bool = True) -> list[str]:
    """The flat column names for CSV and Parquet (``with_path=False``: files of earlier
    versions, without the ``path`` column)."""
    names = ["image"]
    for rank in range(1, topk + 1):
        names += [f"{field}_{rank}" for field in PREDICTION_FIELDS]
    return names + list(TRAILING_COLUMNS) + ([PATH_COLUMN] if with_path else [])


def flatten(row: dict, topk: int) -> dict:
    """One JSON row as flat columns; missing ranks and fields are None."""
    flat: dict = {"image": row["image"]}
    predictions = row.get("predictions") or []
    for rank in range(1, topk + 1):
        prediction = predictions[rank - 1] if rank <= len(predictions) else {}
        for field in PREDICTION_FIELDS:
            flat[f"{field}_{rank}"] = prediction.get(field)
    for key in ("model", "backend", "precision"):
        flat[key] = row.get(key)
    error = row.get("error") or {}
    flat["error_type"] = error.get("type")
    flat["error_message"] = error.get("message")
    flat[PATH_COLUMN] = row.get(PATH_COLUMN)
    return flat


def parquet_schema(topk: int, with_path: bool = True):
    import pyarrow as pa

    types = {"label": pa.string(), "label_en": pa.string(), "index": pa.int32(), "score": pa.float64()}
    fields = [pa.field("image", pa.string(), nullable=False)]
    for rank in range(1, topk + 1):
        fields += [pa.field(f"{name}_{rank}", kind) for name, kind in types.items()]
    fields += [pa.field(name, pa.string()) for name in TRAILING_COLUMNS]
    if with_path:
        fields.append(pa.field(PATH_COLUMN, pa.string()))
    return pa.schema(fields)
