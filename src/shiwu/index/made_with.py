"""How an index's vectors were made (the runtime and the precision in its manifest), followed when
the index is searched or added to on another machine.

``--precision auto`` picks the fastest accurate setting of *this* CPU: an index built on an
AVX-512 VNNI host holds onnxruntime int8 vectors, while a laptop without VNNI would pick fp32. Query
vectors made that way are not the index's kind, so a command that reads or extends an existing index
makes its vectors as the index says when this machine can: ONNX Runtime's int8 runs on any x86-64
CPU (without VNNI unfused, for the same answers, slower: backends/onnxruntime.py), torch emulates
bf16. When it cannot (OpenVINO refuses bf16 without
AVX-512 BF16 or AMX; the runtime is not installed), one line names the index and what to do. An
explicit ``--precision`` or ``--backend`` that contradicts the index is refused, as before.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from .errors import IndexMismatchError
from .manifest import Manifest

# Precisions whose vectors belong to the runtime that made them: its own int8 quantizer (ONNX
# Runtime's and NNCF's models differ) or its own choice of bf16 kernels. fp32 vectors agree
# across runtimes to rounding (cosine > 0.9999), so there the runtime is not binding.
RUNTIME_BOUND = ("int8", "bf16")
# (runtime, precision) that refuse to run without the CPU's instructions (backends.openvino);
# the other reduced settings run anywhere, only slower.
NEEDS_INSTRUCTIONS = {("openvino", "bf16")}
# (runtime, precision) whose kernels compute other roundings without the instructions (OpenVINO's
# int8 without VNNI: 82% of Lite0's recorded answers, docs/en/int8.md). ONNX Runtime's int8 is
# not here: it runs unfused on such CPUs and gives the same answers (backends/onnxruntime.py).
ROUNDS_OTHERWISE = {("openvino", "int8")}
UNSET = (None, "", "auto")


@dataclass(frozen=True)
class MadeWith:
    """What to build the query recognizer with: ``backend`` and ``precision`` (None: as
    configured, for indexes that did not record them), and ``note``, the line to show when the
    index's setting is not what this CPU would choose by itself."""

    backend: str | None
    precision: str | None
    note: str | None = None


def follow(manifest: Manifest, where: str, *, backend: str | None = None,
           precision: str | None = None) -> MadeWith:
    """The runtime and precision that make vectors of ``manifest``'s kind here, given the
    person's ``--backend`` / ``--precision`` (None or "auto": follow the index). Raises
    IndexMismatchError when the given ones contradict the index, or it cannot be followed here."""
    given_backend = None if backend in UNSET else backend
    given_precision = None if precision in UNSET else precision
    if given_precision is not None:
        manifest.check_compatible(where, precision=given_precision)
    recorded = manifest.precision
    if not recorded:  # an index made before the precision was recorded: as before
        return MadeWith(backend, precision)
    made_by = manifest.backend
    if given_backend and made_by and given_backend != made_by and recorded in RUNTIME_BOUND:
        raise IndexMismatchError(
            f"index {where} was built with {made_by} {recorded}: --backend {given_backend} would make "
            f"other {recorded} vectors, and its scores would mean nothing. Leave out --backend (its "
            "own is used), or build a new index (another --out folder or collection).")
    runtime = given_backend or made_by or None
    setting = f"{runtime} {recorded}" if runtime else recorded
    if runtime is not None:
        why = cannot_run(runtime, recorded)
        if why is not None:
            raise cannot_follow(where, setting, why)
    from ..backends.runtimes import cpu_lacks
    from ..cpu import cpu_flags

    lacks = cpu_lacks(recorded, cpu_flags())
    if lacks is None:
        return MadeWith(runtime, recorded, other_recipe(manifest, where, runtime))
    how = ("vectors for it are made the same way here" if (runtime, recorded) not in ROUNDS_OTHERWISE else
           f"vectors for it are made with the same model here, but {runtime}'s {recorded} kernels round "
           "otherwise on this CPU: a photo's vector is close to its vector in the index, not equal")
    note = (f"index {where} was built with {setting}: {how}, although {lacks} (slower than where it was "
            f"built; without the index, --precision auto would not choose {recorded} here)")
    return MadeWith(runtime, recorded, "; ".join(filter(None, (note, other_recipe(manifest, where, runtime)))))


def other_recipe(manifest: Manifest, where: str, runtime: str | None) -> str | None:
    """The line for an int8 index whose model was quantized with a recipe this shiwu no longer
    uses: its vectors and the ones made now are close, not equal (None: same recipe, or not
    recorded, as in indexes made before shiwu recorded it)."""
    from ..backends.runtimes import INT8_RECIPES

    current = INT8_RECIPES.get(runtime or "")
    if manifest.precision != "int8" or not manifest.int8_recipe or current in (None, manifest.int8_recipe):
        return None
    return (f"index {where} holds {runtime} int8 vectors of a model quantized with recipe "
            f"{manifest.int8_recipe}; this shiwu quantizes with {current}: a photo's vector is close to "
            "its vector in the index, not equal, and rows added now are of the new kind. Build the "
            "index again (another --out folder or collection) for exact scores")


def cannot_run(runtime: str, precision: str) -> str | None:
    """Why ``runtime`` cannot run ``precision`` on this machine at all (None: it can)."""
    from ..backends.runtimes import BY_NAME, cpu_lacks
    from ..cpu import cpu_flags

    entry = BY_NAME.get(runtime)
    if entry is None:
        return f"this shiwu has no runtime {runtime!r}"
    if not entry.runs(precision):
        return f"{runtime} does not run {precision}"
    try:
        importlib.metadata.version(entry.distribution)
    except importlib.metadata.PackageNotFoundError:
        return f"{runtime} is not installed here (pip install {entry.distribution})"
    if (runtime, precision) in NEEDS_INSTRUCTIONS:
        return cpu_lacks(precision, cpu_flags())
    return None


def cannot_follow(where: str, setting: str, why: str) -> IndexMismatchError:
    """The one line for an index whose vectors this machine cannot make."""
    return IndexMismatchError(
        f"index {where} was built with {setting}, which cannot run here: {why}. Search or extend it "
        "on a machine that can, or build a new index here from the same photos (another --out "
        "folder or collection; --precision fp32 runs everywhere).")
