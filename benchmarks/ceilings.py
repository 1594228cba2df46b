"""This CPU's ceilings, measured in the same run as the numbers they bound: the best n x n x n GEMM
each runtime gives per precision (onnxruntime and OpenVINO; the torch matmul is not this CPU's
limit: onnxruntime fp32 ran a ResNeSt at 152% of it), the instruction set's nominal peak, and a
model's GFLOP — so a table can say what share of the possible a row reaches, and a goal what the
hardware allows at all."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from shiwu.backends.runtimes import BY_NAME, cpu_lacks
from shiwu.cpu import cpu_flags


def _best_seconds(call, repeats: int = 10) -> float:
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def ort_gemm(precision: str, n: int, threads: int) -> float:
    """onnxruntime: MatMul (fp32) or MatMulInteger (u8 x s8, int8) of two n x n matrices."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    if precision == "fp32":
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
        node, types, out = helper.make_node("MatMul", ["a", "b"], ["c"]), (TensorProto.FLOAT,) * 2, TensorProto.FLOAT
    else:
        a = rng.integers(0, 255, (n, n), dtype=np.uint8)
        b = rng.integers(-127, 127, (n, n), dtype=np.int8)
        node, types, out = (helper.make_node("MatMulInteger", ["a", "b"], ["c"]),
                            (TensorProto.UINT8, TensorProto.INT8), TensorProto.INT32)
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", types[0], [n, n]),
                                               helper.make_tensor_value_info("b", types[1], [n, n])],
                              [helper.make_tensor_value_info("c", out, [n, n])])
    session = _ort_session(graph, threads)
    return 2 * n ** 3 / _best_seconds(lambda: session.run(None, {"a": a, "b": b})) / 1e9


def _ort_session(graph, threads: int):
    """An onnxruntime CPU session of one ONNX graph, on ``threads`` threads."""
    import onnxruntime as ort
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def openvino_gemm(precision: str, n: int, threads: int) -> float:
    """OpenVINO: MatMul at f32 or bf16 inference precision; int8 through FakeQuantize'd inputs,
    which its CPU plugin runs as a u8 x s8 GEMM."""
    import openvino as ov
    import openvino.opset13 as ops

    a = ops.parameter([n, n], np.float32, name="a")
    weights = ops.constant(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    left, right = a, weights
    if precision == "int8":
        def fq(x, lo, hi, levels):
            return ops.fake_quantize(x, ops.constant(np.float32(lo)), ops.constant(np.float32(hi)),
                                     ops.constant(np.float32(lo)), ops.constant(np.float32(hi)), levels)
        left, right = fq(a, 0.0, 4.0, 256), fq(weights, -4.0, 4.0, 255)
    model = ov.Model([ops.matmul(left, right, False, False)], [a])
    hint = {"bf16": "bf16"}.get(precision, "f32")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                     "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    x = np.abs(np.random.default_rng(1).standard_normal((n, n)).astype(np.float32))
    return 2 * n ** 3 / _best_seconds(lambda: request.infer({0: x})) / 1e9


def isa_peaks(threads: int) -> dict[str, float]:
    """Nominal GFLOP/s (int8: GOP/s) of the instruction set: cores x clock x operations per cycle,
    assuming two FMA pipes of the vector width (AMD Zen 4 runs AVX-512 on 256-bit pipes); with AMX,
    Intel's figures for its tile unit: 1024 bf16 and 2048 int8 operations per cycle and core."""
    flags = cpu_flags()
    mhz = 0.0
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            mhz = max(mhz, float(line.split(":")[1]))
    amd = "AuthenticAMD" in Path("/proc/cpuinfo").read_text()
    lanes = 8 if ("avx512f" not in flags or amd) else 16      # fp32 lanes per pipe
    fp32 = 2 * 2 * lanes                                         # 2 pipes x FMA
    peaks = {"fp32": fp32}
    if cpu_lacks("bf16", flags) is None:
        peaks["bf16"] = 2 * fp32                                 # dot products of bf16 pairs
    if cpu_lacks("int8", flags) is None:
        peaks["int8"] = 4 * fp32                                 # dot products of u8 x s8 quads
    if "amx_bf16" in flags:
        peaks["bf16"] = 1024
    if "amx_int8" in flags:
        peaks["int8"] = 2048
    return {k: round(v * mhz / 1e3 * threads, 1) for k, v in peaks.items()}


def runtime_ceilings(threads: int, n: int = 1024) -> dict[str, dict[str, float]]:
    """GFLOP/s of an n x n x n GEMM in each runtime and precision (the best of a few calls)."""
    out: dict[str, dict[str, float]] = {}
    for name, fn in (("onnxruntime", ort_gemm), ("openvino", openvino_gemm)):
        for precision in BY_NAME[name].precisions:
            if cpu_lacks(precision, cpu_flags()) and precision == "bf16":
                continue
            try:
                out.setdefault(precision, {})[name] = round(fn(precision, n, threads), 1)
            except Exception as exc:  # noqa: BLE001 - a runtime without that kernel
                print(f"  ceiling {name} {precision}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return out


# Weights above this size do not stay in cache from one photo to the next (shiwu's own threshold
# for quantizing a classifier, quantize_onnx.FLOAT_CLASSIFIER_BYTES): each photo reads them from memory.
CACHE_RESIDENT_BYTES = 32 * 2 ** 20
BYTES_PER_WEIGHT = {"fp32": 4, "bf16": 2, "int8": 1}


def memory_gbs(threads: int, megabytes: int = 448) -> float:
    """GB/s at which this CPU streams weights from memory: onnxruntime's GEMV of one 2048-vector by
    a 2048 x N fp32 matrix of ``megabytes`` (the size of the 万物识别 classifier, larger than a
    2-core share of any cache here), the best of a few calls."""
    from onnx import TensorProto, helper, numpy_helper

    columns = megabytes * 2 ** 20 // (4 * 2048)
    weights = np.random.default_rng(0).standard_normal((2048, columns), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2048])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, columns])],
                              [numpy_helper.from_array(weights, "w")])
    session = _ort_session(graph, threads)
    x = np.ones((1, 2048), dtype=np.float32)
    return weights.nbytes / _best_seconds(lambda: session.run(None, {"x": x})) / 1e9


def streamed_layers(network, size: int) -> list[tuple[float, int]]:
    """(GFLOP, weights) of each convolution or linear layer whose fp32 weights are too large to
    stay in cache (CACHE_RESIDENT_BYTES), for one image: a batch-1 classifier of 54,092 classes
    is a GEMV whose time is the reading of its weights, not its arithmetic."""
    import torch

    found, hooks = [], []

    def measure(module, _inputs, output):
        per_output = module.weight[0].numel() if isinstance(module, torch.nn.Conv2d) else module.in_features
        found.append((2 * output.numel() * per_output / 1e9, module.weight.numel()))

    for module in network.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and module.weight.numel() * 4 > CACHE_RESIDENT_BYTES:
            hooks.append(module.register_forward_hook(measure))
    try:
        with torch.inference_mode():
            network(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return found


def model_gflop(spec, size: int) -> float | None:
    """The model's GFLOP for one image (bench_common.model_gflop), None for a graph-only model."""
    from bench_common import model_gflop as network_gflop

    try:
        network = spec.build(size)
    except Exception:  # noqa: BLE001 - a graph-only model: no figure
        return None
    return network_gflop(network, size)


def _in_child(call: str):
    """``call`` (a function of this file, with its arguments) run in a process of its own and its
    JSON result: no runtime's threads left behind in the caller, none of the caller's beside it."""
    import json
    import subprocess

    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import ceilings; print(json.dumps(ceilings.{call}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def ceilings_in_child(threads: int) -> dict[str, dict[str, float]]:
    """runtime_ceilings measured in a process of its own."""
    return _in_child(f"runtime_ceilings({int(threads)})")


def bandwidth_in_child(threads: int) -> float:
    """memory_gbs measured in a process of its own."""
    return float(_in_child(f"memory_gbs({int(threads)})"))


def speed_up_bounds(model_dir: Path, baseline_seconds: float, threads: int, earlier=None,
                    size: int = 224) -> dict[str, tuple[float, str]]:
    """The largest speed-up over ``baseline_seconds`` this CPU allows, per precision: the model's
    GFLOP at the best GEMM any runtime gives here, and the weights too large to stay in cache read
    from memory at the best rate measured here where that takes longer than their arithmetic
    (a layer takes at least the longer of the two); decode and resize not even counted, attention
    products of a ViT not counted by every torch op: a generous bound. ``earlier``: ceilings
    measured before the contenders started; the best of those and of two measurements now is
    used, because this machine's GEMM speed drifts by a third within minutes (clock,
    neighbours), and a bound should err on the generous side."""
    from bench_common import model_gflop as network_gflop
    from shiwu.models.registry import get_model

    try:
        network = get_model(str(model_dir)).build(size)
    except Exception:  # noqa: BLE001 - a graph-only model: no figure
        return {}
    gflop, streamed = network_gflop(network, size), streamed_layers(network, size)
    best: dict[str, dict[str, float]] = {}
    for measured in (earlier or {}, ceilings_in_child(threads), ceilings_in_child(threads)):
        for precision, by_runtime in measured.items():
            for runtime, gflops in by_runtime.items():
                mine = best.setdefault(precision, {})
                mine[runtime] = max(gflops, mine.get(runtime, 0.0))
    gbs = max(bandwidth_in_child(threads), bandwidth_in_child(threads)) if streamed else 0.0
    bounds = {}
    for precision, by_runtime in best.items():
        runtime, gflops = max(by_runtime.items(), key=lambda item: item[1])
        megabytes = sum(weights for _, weights in streamed) * BYTES_PER_WEIGHT[precision] / 1e6
        reading = sum(max(0.0, weights * BYTES_PER_WEIGHT[precision] / (gbs * 1e9) - layer_gflop / gflops)
                      for layer_gflop, weights in streamed)
        model_seconds = gflop / gflops + reading
        bound = baseline_seconds / model_seconds
        memory = (f" and {megabytes:.0f} MB of weights too large for the cache read at {gbs:.1f} GB/s "
                  f"(a GEMV of that size here)" if reading else "")
        bounds[precision] = (bound, f"{gflop:.1f} GFLOP at the best {precision} GEMM here ({gflops:.0f} "
                                    f"GFLOP/s, {runtime}){memory} take {model_seconds * 1e3:.0f} ms: "
                                    f"at most {bound:.2f}x")
    return bounds
