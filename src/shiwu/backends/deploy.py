"""`shiwu export`: the model in ONNX, TorchScript or OpenVINO form for use outside shiwu, fp32
or int8, with its labels and the settings that run it the same way.

Beside ``export`` (which builds the graphs) and ``quantize`` (which builds int8 from them), and
above both: the graph builder never imports the quantizer back.
"""

from __future__ import annotations

import json
from pathlib import Path

from .export import cached_onnx, export_torchscript, openvino_source

FORMATS = ("onnx", "torchscript", "openvino")


def export_for_deployment(spec, *, size: int, fmt: str, out: Path, precision: str = "fp32",
                          calibration=None) -> list[Path]:
    """Write the model in ``fmt`` to ``out`` for use outside shiwu, with its labels beside it
    (``<out>.labels.tsv``: index, Chinese, English). Returns the files written."""
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
        export_torchscript(spec, size, out, embedding=False)  # module(x) gives the logits, as expected
    elif fmt == "onnx":
        if precision == "int8":
            from .quantize import cached_onnx_int8
            source = cached_onnx_int8(spec, size, calibration=calibration)
        else:
            source = cached_onnx(spec, size)
        shutil.copyfile(source, out)
    else:
        if precision == "int8":
            from .quantize import cached_openvino_int8
            source = cached_openvino_int8(spec, size, calibration=calibration)
            shutil.copyfile(source.with_suffix(".bin"), out.with_suffix(".bin"))
            shutil.copyfile(source, out)
        else:
            import openvino as ov
            ov.save_model(ov.Core().read_model(str(openvino_source(spec, size))), str(out),
                          compress_to_fp16=False)
        written.append(out.with_suffix(".bin"))
    labels = spec.labels()
    label_file = out.with_name(out.name + ".labels.tsv")
    label_file.write_text("".join(f"{i}\t{zh}\t{en}\n" for i, (zh, en) in enumerate(zip(labels.zh, labels.en))),
                          encoding="utf-8")
    settings = out.with_name("shiwu.json")
    settings.write_text(json.dumps(deployment_settings(spec, size, out, label_file), ensure_ascii=False,
                                   indent=2) + "\n", encoding="utf-8")
    return written + [label_file, settings]


def deployment_settings(spec, size: int, model_file: Path, label_file: Path) -> dict:
    """shiwu.json for an exported model: what `--model` that folder needs to run it the same way."""
    from PIL import Image

    pre = spec.preprocessing.with_size(size)
    filters = {Image.Resampling.BILINEAR: "bilinear", Image.Resampling.BICUBIC: "bicubic"}
    return {"model": model_file.name, "labels": label_file.name, "resize": pre.resize, "size": size,
            "mean": [m / 255 for m in pre.mean], "std": [s / 255 for s in pre.std],
            "interpolation": filters.get(pre.resample, "bilinear")}
