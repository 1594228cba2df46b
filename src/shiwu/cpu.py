"""Facts about this machine's CPU that decide how to run a model on it."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

# /proc/cpuinfo flag -> what we call it
FEATURES = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX BF16",
    "amx_int8": "AMX INT8",
}


@lru_cache(maxsize=1)
def hardware_flags() -> frozenset[str]:
    """The CPU's flags from /proc/cpuinfo: what a runtime's own kernel dispatch sees (CPUID)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_flags() -> frozenset[str]:
    """The flags shiwu's choices are made from. Tests simulate another CPU by replacing this;
    what a runtime's kernels do follows hardware_flags(), which nothing can simulate."""
    return hardware_flags()


def cpu_features() -> dict[str, bool]:
    flags = cpu_flags()
    return {label: flag in flags for flag, label in FEATURES.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (hyper-threads counted once)."""
    cores = set()
    for cpu in usable_cpus():
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


THREADS_PER_CPU = 4


def max_threads() -> int:
    """The most intra-op threads shiwu starts: 4 per usable CPU. More only adds stacks and
    contention (``--threads 100000`` took 2.5 GB and made no progress)."""
    return max(4, THREADS_PER_CPU * len(usable_cpus()))


def default_threads() -> int:
    """Intra-op threads: $SHIWU_THREADS (up to max_threads), else one per physical core
    (hyper-threads share a core's vector units, so they slow convolutions down rather than
    speed them up)."""
    value = os.environ.get("SHIWU_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return min(int(value), max_threads())
    return physical_cores()


class OthersLoad:
    """The share of this process's CPUs that other programs used from creation to ``share()``
    (0 = they were idle, 1 = fully busy), hypervisor steal included. A timing taken while others
    competed favours the runtime that suffers least, not the fastest one."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float, int]:
        import time

        import psutil

        per_cpu = psutil.cpu_times(percpu=True)
        mine = [per_cpu[i] for i in usable_cpus() if i < len(per_cpu)] or per_cpu
        # the busy fields one by one: on Linux "guest" is already counted in "user"
        busy = sum(sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
                   for t in mine)
        own = psutil.Process().cpu_times()
        return time.monotonic(), busy, own.user + own.system, len(mine)

    def share(self) -> float:
        (t0, busy0, own0, cpus), (t1, busy1, own1, _) = self.start, self._sample()
        others = (busy1 - busy0) - (own1 - own0)
        return min(1.0, max(0.0, others / (max(t1 - t0, 1e-3) * cpus)))
