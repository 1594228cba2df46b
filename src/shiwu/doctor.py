"""What this machine offers for CPU inference: device, versions, threads, CPU features, backends."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform

from .backends.auto import remembered_choices
from .backends.policy import cached_verdicts, how_sure
from .cache import cache_dir, read_only_dir
from .config import describe as describe_settings
from .cpu import cpu_features, cpu_model, default_threads, physical_cores, usable_cpus
from .version import __version__

# backend name -> (python module, distribution for its version, why it may be missing)
OPTIONAL_RUNTIMES = {
    "onnxruntime": ("onnxruntime", "onnxruntime", "pip install onnxruntime"),
    "openvino": ("openvino", "openvino", "pip install openvino"),
    "nncf (openvino int8)": ("nncf", "nncf", "pip install 'shiwu[int8]'"),
    "ipex": ("intel_extension_for_pytorch", "intel-extension-for-pytorch",
             "Intel Extension for PyTorch stopped at 2.8 and has no build for torch 2.13; "
             "the other backends cover what it did"),
}

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SHIWU_THREADS")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def report() -> dict:
    import torch

    runtimes = {"torch": {"available": True, "version": torch.__version__}}
    for name, (module, dist, hint) in OPTIONAL_RUNTIMES.items():
        found = importlib.util.find_spec(module) is not None
        runtimes[name] = {"available": found, "version": _version(dist) if found else None,
                          "note": None if found else hint}
    return {
        "shiwu": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": "CPU",
        "cpu": cpu_model(),
        "cpus_usable": len(usable_cpus()),
        "physical_cores": physical_cores(),
        "cpu_features": cpu_features(),
        "reduced_precision": reduced_precision(),
        "threads": {
            "shiwu_default": default_threads(),
            "torch_intra_op": torch.get_num_threads(),
            "torch_inter_op": torch.get_num_interop_threads(),
            "environment": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        },
        "torch": {
            "version": torch.__version__,
            "cuda_build": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
            "mkldnn": torch.backends.mkldnn.is_available(),
        },
        "backends": runtimes,
        "cache_dir": str(cache_dir()),
        "cache_read_only": None if read_only_dir() is None else str(read_only_dir()),
        "auto_choices": remembered_choices(),
        "verdicts": cached_verdicts(),
        "settings": describe_settings(),
    }


def reduced_precision() -> dict[str, str]:
    """What this CPU does with bf16 and int8: whether --precision auto considers them, and how
    ONNX Runtime runs int8 where its fused kernels would clip (backends/onnxruntime.py)."""
    from .backends.runtimes import cpu_lacks, fused_int8_saturates
    from .cpu import cpu_flags

    out = {}
    for precision in ("bf16", "int8"):
        lacks = cpu_lacks(precision, cpu_flags())
        out[precision] = ("native: --precision auto judges and times it" if lacks is None else
                          f"not considered by --precision auto: {lacks}")
    if fused_int8_saturates():
        out["int8"] += ("; an explicit --precision int8 or an int8 index runs ONNX Runtime's int8 graph "
                        "unfused here: the answers of CPUs with VNNI, slower than fp32")
    return out


def format_report(info: dict) -> str:
    yes = lambda flag: "yes" if flag else "no"  # noqa: E731
    lines = [
        f"shiwu {info['shiwu']}  (Python {info['python']}, {info['platform']})",
        f"device:          {info['device']} — shiwu always runs on the CPU",
        f"cpu:             {info['cpu']}",
        f"cores:           {info['physical_cores']} physical, {info['cpus_usable']} usable logical CPUs",
        "cpu features:    " + ", ".join(f"{k} {yes(v)}" for k, v in info["cpu_features"].items()),
        *(f"{precision + ':':<17}{how}" for precision, how in info.get("reduced_precision", {}).items()),
        f"threads:         shiwu default {info['threads']['shiwu_default']}, "
        f"torch intra-op {info['threads']['torch_intra_op']}, "
        f"inter-op {info['threads']['torch_inter_op']}",
    ]
    env = info["threads"]["environment"]
    if env:
        lines.append("thread env:      " + ", ".join(f"{k}={v}" for k, v in env.items()))
    torch_info = info["torch"]
    cuda = f"CUDA build {torch_info['cuda_build']}" if torch_info["cuda_build"] else "CPU-only build"
    lines.append(f"torch:           {torch_info['version']} ({cuda}, oneDNN {yes(torch_info['mkldnn'])}, "
                 f"GPU visible {yes(torch_info['cuda_available'])})")
    lines.append("backends:")
    for name, entry in info["backends"].items():
        state = f"available ({entry['version']})" if entry["available"] else "missing"
        note = f" — {entry['note']}" if entry.get("note") else ""
        lines.append(f"  {name:<12} {state}{note}")
    lines.append(f"cache:           {info['cache_dir']}" + (
        f" (temporary; the read-only cache {info['cache_read_only']} is read too)"
        if info.get("cache_read_only") else ""))
    choices = info["auto_choices"]
    lines.append("--backend auto:  " + ("nothing measured yet (the first run measures)" if not choices else
                                        "remembered choices"))
    stale = [c for c in choices if c.get("current") is False]
    for c in (c for c in choices if c.get("current") is not False):
        timings = ", ".join([f"{k} {v:.2f} ms" for k, v in c.get("ms_per_image", {}).items()]
                            + [f"{k} eliminated ({v})" for k, v in c.get("eliminated", {}).items()])
        winner = f"{c['winner']} {c.get('winner_precision', c['precision'])}"
        timed = f"{timings}; " if timings else ""  # a single candidate is chosen without timing
        lines.append(f"  {c['model']} {c['size']}px, backend {c.get('backend', 'auto')}, precision {c['precision']}, "
                     f"{c['threads']} thread{'s' * (c['threads'] != 1)} -> {winner}  "
                     f"({timed}measured {c.get('measured_at', '?')})"
                     + ("; machine not recorded, may be another's" if c.get("current") is None else "")
                     + (f"; timed while other programs used {c.get('others_cpu', 0):.0%} of these CPUs: "
                        "measured again by a run that finds the machine quiet" if c.get("provisional") else ""))
    if stale:
        lines.append(f"  ({len(stale)} more measured with another CPU, runtime version or shiwu: kept, not used "
                     "here; --json lists them)")
    lines.extend(format_verdicts(info.get("verdicts", [])))
    lines.extend(format_settings(info.get("settings")))
    return "\n".join(lines)


def format_verdicts(verdicts: list[dict]) -> list[str]:
    """The accuracy policy's verdicts in use on this machine, each with its numbers; those of
    another setup (CPU, runtime version, shiwu, int8 kernels) counted, not listed."""
    if not verdicts:
        return ["accuracy:        no verdicts yet (the first run with --precision auto measures)"]
    here = cpu_model()
    setting = lambda v: (v["model"], v["runtime"], v["precision"], v["size"])  # noqa: E731
    judged_now = {setting(v) for v in verdicts if v.get("current")}
    # one written before shiwu recorded its setup is shown unless a current verdict judges the same setting
    shown = [v for v in verdicts if v.get("current") or (v.get("current") is None and setting(v) not in judged_now)]
    lines = ["accuracy:        verdicts (top-1 must stay >= 99% of fp32's; --max-drop)"]
    for v in shown:
        state = "accepted" if v["accepted"] else "refused"
        numbers = []
        if v.get("top1") is not None:
            sure = how_sure(v.get("lost"), v.get("gained"), v.get("drop_interval"), v["max_drop"])
            numbers.append(f"top-1 {v['top1']:.1%} vs fp32 {v['fp32_top1']:.1%} on {v['photos']} labelled "
                           f"photos, drop {v['drop']:.2%}{sure}")
        if v.get("reproduced") is not None:
            numbers.append(f"reproduced here {v['reproduced']:.0%}")
        if v.get("estimated_drop") is not None:
            numbers.append(f"label-free estimate {v['estimated_drop']:.2%}")
        if v.get("figures_from"):
            numbers.append(f"labelled figures from {v['figures_from']}")
        if v.get("measured_on", {}).get("cpu") not in (None, here):
            numbers.append(f"measured on another CPU ({v['measured_on']['cpu']})")
        if v.get("current") is None:
            numbers.append("setup not recorded, may be another's")
        lines.append(f"  {v['model']} {v['runtime']} {v['precision']} {v['size']}px: {state} by "
                     f"{v['basis']} ({'; '.join(numbers)})")
    stale = len(verdicts) - len(shown)
    if stale:
        lines.append(f"  ({stale} more judged with another CPU, runtime version, shiwu or int8 kernels: kept, "
                     "not used here; --json lists them)")
    return lines


def format_settings(settings: dict | None) -> list[str]:
    """`shiwu tune`'s saved choices: used by predict, batch, serve and eval unless overridden."""
    if not settings:
        return []
    where = settings["path"] + ("" if settings["exists"] else " (none yet)")
    lines = [f"settings:        {where}"]
    if settings.get("error"):
        lines.append(f"  ignored: {settings['error']}")
    if not settings["tuned"]:
        lines.append("  no tuned settings: run `shiwu tune` to measure and save the fastest one")
    here = cpu_model()
    for model, t in settings["tuned"].items():
        notes = []
        if t.get("ms_per_image") is not None:
            notes.append(f"{t['ms_per_image']:.2f} ms per image")
        if t.get("agreement") is not None:
            notes.append(f"top-1 agreement with fp32 {t['agreement']:.1%}")
        if t.get("tuned_at"):
            notes.append(f"tuned {t['tuned_at']}")
        if t.get("cpu") and t["cpu"] != here:
            notes.append(f"tuned on another CPU ({t['cpu']}): run `shiwu tune` again")
        lines.append(f"  {model}: {t.get('backend', 'auto')} {t.get('precision', 'fp32')}, "
                     f"{t.get('size', 'model')}px, {t.get('threads', 'default')} threads, "
                     f"batch {t.get('batch_size', 8)}" + (f"  ({'; '.join(notes)})" if notes else ""))
    return lines
