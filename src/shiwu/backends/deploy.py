"""`shiwu export`: the model in ONNX, TorchScript or OpenVINO form for use outside shiwu, fp32
or int8, with its labels and the settings that run it the same way.

Beside ``export`` (which builds the graphs) and ``quantize`` (which builds int8 from them), and
above both: the graph builder never imports the quantizer back.
"""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..cache import CacheFull
from ..fsutil import TEMP_PREFIX, atomic_output, atomic_write, fsync_folder
from .export import cached_onnx, export_torchscript, openvino_source

FORMATS = ("onnx", "torchscript", "openvino")
SETTINGS = "shiwu.json"  # one per folder: what `--model FOLDER` runs


def export_for_deployment(spec, *, size: int, fmt: str, out: Path, precision: str = "fp32",
                          calibration=None) -> list[Path]:
    """Write the model in ``fmt`` to ``out`` for use outside shiwu, with its labels beside it
    (``<out>.labels.tsv``: index, Chinese, English). Returns the files written.

    Every file is written whole or not at all (fsutil's temporary file + rename): a disk that
    fills leaves an earlier export as it was and no temporary file, and raises OSError naming
    the file (a full cache while building the graph: cache.CacheFull)."""
    import shutil

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if precision not in ("fp32", "int8") or (precision == "int8" and fmt == "torchscript"):
        from . import BackendUnavailable
        raise BackendUnavailable(f"{fmt} export supports fp32{' and int8' if fmt != 'torchscript' else ''}, "
                                 f"not {precision}")
    written = [out]
    if fmt == "torchscript":
        with _naming(out):
            export_torchscript(spec, size, out, embedding=False)  # module(x) gives the logits, as expected
    elif fmt == "onnx":
        if precision == "int8":
            from .quantize import cached_onnx_int8
            source = cached_onnx_int8(spec, size, calibration=calibration)
        else:
            source = cached_onnx(spec, size)
        with _naming(out), atomic_output(out) as tmp:
            shutil.copyfile(source, tmp)
    else:
        import openvino as ov

        if precision == "int8":
            from .quantize import cached_openvino_int8
            source = cached_openvino_int8(spec, size, calibration=calibration)
            weights = source.with_suffix(".bin")
        else:
            source = weights = openvino_source(spec, size)
        _save_ir(ov, ov.Core().read_model(str(source)), out, need=weights.stat().st_size)
        written.append(out.with_suffix(".bin"))
    labels = spec.labels()
    label_file = out.with_name(out.name + ".labels.tsv")
    with _naming(label_file):
        atomic_write(label_file, "".join(f"{i}\t{zh}\t{en}\n" for i, (zh, en) in enumerate(zip(labels.zh, labels.en))))
    settings = out.with_name(SETTINGS)
    with _naming(settings):
        atomic_write(settings, json.dumps(deployment_settings(spec, size, out, label_file), ensure_ascii=False,
                                          indent=2) + "\n")
    return written + [label_file, settings]


def _save_ir(ov, model, out: Path, *, need: int) -> None:
    """The IR saved in a temporary folder beside ``out``, then its .bin and its .xml renamed into
    place (the .xml last: an .xml beside its new weights). ``need``: about the bytes it takes."""
    import tempfile

    with _naming(out), tempfile.TemporaryDirectory(dir=out.parent, prefix=TEMP_PREFIX) as folder:
        xml = Path(folder) / "model.xml"
        try:
            ov.save_model(model, str(xml), compress_to_fp16=False)
        except RuntimeError as exc:
            if "iostream" not in str(exc):
                raise
            # OpenVINO's failed write ("basic_ios::clear: iostream error"), its partial files
            # already removed: a disk without room for the weights is said as such
            free = os.statvfs(folder)
            if free.f_bavail * free.f_frsize < need:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
            raise OSError(errno.EIO, f"OpenVINO could not write it ({exc})") from None
        for made, final in ((xml.with_suffix(".bin"), out.with_suffix(".bin")), (xml, out)):
            with open(made, "rb+") as file:
                os.fsync(file.fileno())
            os.replace(made, final)
        fsync_folder(out.parent)


@contextmanager
def _naming(target: Path) -> Iterator[None]:
    """An OSError while writing ``target`` names ``target`` (not its temporary file)."""
    try:
        yield
    except CacheFull:
        raise
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from None


def existing_settings_of_another(out: Path) -> Path | None:
    """The shiwu.json in ``out``'s folder when it describes another model file than ``out`` (one
    per folder: exporting there would re-point it), else None."""
    settings = Path(out).with_name(SETTINGS)
    if not settings.exists():
        return None
    try:
        model = json.loads(settings.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        model = None
    return None if model == Path(out).name else settings


def deployment_settings(spec, size: int, model_file: Path, label_file: Path) -> dict:
    """shiwu.json for an exported model: what `--model` that folder needs to run it the same way."""
    from PIL import Image

    pre = spec.preprocessing.with_size(size)
    filters = {Image.Resampling.BILINEAR: "bilinear", Image.Resampling.BICUBIC: "bicubic"}
    return {"model": model_file.name, "labels": label_file.name, "resize": pre.resize, "size": size,
            "mean": [m / 255 for m in pre.mean], "std": [s / 255 for s in pre.std],
            "interpolation": filters.get(pre.resample, "bilinear")}
