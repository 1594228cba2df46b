"""``--nice``: a long run (batch, index, tag over 100,000 photos) that leaves a home server usable.

Lower CPU priority (nice 10 on Unix, "below normal" on Windows), idle-class I/O priority where
the system has one (Linux's ioprio, Windows' very-low I/O priority; macOS has none), and half the
physical cores for inference. psutil sets both priorities the same way on every system, where
os.nice covers the CPU on Unix only and I/O priority would need a raw syscall per platform.
Children (batch's decoding workers, exiftool) inherit both priorities.
"""

from __future__ import annotations

import logging
import os
import sys

from .cpu import physical_cores

log = logging.getLogger(__name__)
NICE_INCREMENT = 10


def polite_threads() -> int:
    return max(1, physical_cores() // 2)


def lower_priority() -> list[str]:
    """Lower this process's CPU and I/O priority; returns what was done, for the log."""
    done = []
    try:
        import psutil
    except ImportError:
        psutil = None
    process = psutil.Process() if psutil else None
    try:
        if sys.platform == "win32" and process is not None:
            process.nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)
            done.append("CPU priority below normal")
        elif hasattr(os, "nice"):
            done.append(f"CPU nice {os.nice(NICE_INCREMENT)}")
    except OSError as exc:
        log.warning("--nice: cannot lower the CPU priority (%s)", exc)
    if process is not None and hasattr(process, "ionice"):
        try:
            if sys.platform == "win32":
                process.ionice(psutil.IOPRIO_VERYLOW)
            else:
                process.ionice(psutil.IOPRIO_CLASS_IDLE)
            done.append("I/O priority idle")
        except (OSError, AttributeError, ValueError, psutil.Error) as exc:
            log.warning("--nice: cannot lower the I/O priority (%s)", exc)
    return done
