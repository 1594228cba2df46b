"""``shiwu export``: the model as ONNX, TorchScript or OpenVINO IR, with its labels and shiwu.json."""

from __future__ import annotations

import logging

from .options import (EXIT_OK, OutputFailed, UsageError, add_calibration, add_model_choice, check_outputs,
                      input_size, model_ref)


def add(commands) -> None:
    export = commands.add_parser("export", help="write the model as ONNX, TorchScript or OpenVINO IR")
    export.add_argument("--format", "-f", required=True, choices=("onnx", "torchscript", "openvino"))
    export.add_argument("--out", "-o", required=True, help="output file (.onnx, .pt or .xml)")
    add_model_choice(export)
    export.add_argument("--size", "-s", type=input_size, default=None, help="input resolution")
    export.add_argument("--precision", "-p", default="fp32", choices=("fp32", "int8"))
    add_calibration(export)
    export.set_defaults(run=run)


def run(args) -> int:
    from ..backends.deploy import existing_settings_of_another, export_for_deployment
    from pathlib import Path

    from ..cache import CacheFull
    from ..models.registry import get_model

    # the files export_for_deployment writes (its folder is created if missing), checked before
    # the model is built, exported or calibrated
    out = Path(args.out)
    check_outputs(args.out, parents=True)
    check_outputs(*(str(p) for p in (out.with_suffix(".bin"), out.with_name(out.name + ".labels.tsv"),
                                     out.with_name("shiwu.json")) if p.exists()))
    other = existing_settings_of_another(out)
    if other is not None:  # one shiwu.json per folder: a second model there would silently re-point it
        raise UsageError(f"{other.parent} already holds another export's shiwu.json ({other}); "
                         "choose another folder for this one")
    spec = get_model(model_ref(args))
    size = args.size or spec.preprocessing.size
    try:
        written = export_for_deployment(spec, size=size, fmt=args.format, out=args.out,
                                        precision=args.precision, calibration=args.calibration)
    except CacheFull:
        raise  # the cache's disk, said as such by cli.main
    except OSError as exc:  # the disk filled while writing: each file is whole or not there
        raise OutputFailed(f"cannot write {exc.filename or args.out}: {_reason(exc)}") from None
    for path in written:
        print(path)
    pre = spec.preprocessing.with_size(size)
    how = (f"resize to {size}x{size}" if pre.resize == "squash"
           else f"resize short side to {pre.resize_short}, centre crop {size}")
    # a fact for the person deploying the file (also in its shiwu.json): --quiet hides it
    logging.getLogger("shiwu.export").info(
        "input: float32 NCHW (batch, 3, %d, %d), RGB; %s, (pixel - %s) / %s on the 0-255 scale; "
        "output: logits", size, size, how, _numbers(pre.mean), _numbers(pre.std))
    return EXIT_OK


def _numbers(values) -> str:
    """(123.675, 116.28, 103.53), not the float sums' 57.120000000000005."""
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]  # "cannot write PATH: no space left on device"
