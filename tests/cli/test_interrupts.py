"""Ctrl-C at any moment of a command: exit 130 with at most one line, never a traceback
(real `shiwu` processes, real SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from support.batch import SHIWU


def _mapped(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False


NUMPY = "_multiarray_umath"  # numpy's extension: mapped as `import numpy` begins its work


def _interrupt(args, *, after: float):
    """Start ``shiwu args`` and send SIGINT ``after`` seconds after the process has mapped
    numpy's extension (shiwu's own code is running then, importing its libraries: an earlier
    SIGINT can fall in Python's own start-up, whose errors no program can catch); its return
    code and stderr."""
    run = subprocess.Popen([SHIWU, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _mapped(run.pid, NUMPY) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(after)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    return run.returncode, stderr.decode("utf-8", "replace")


def test_ctrl_c_while_the_command_is_still_importing_is_quiet():
    # numpy loading, and a few moments later, while the rest of shiwu's libraries load (before:
    # a KeyboardInterrupt traceback from `import numpy` in shiwu/__init__.py, which the console
    # script's `from shiwu.cli import main` ran before main could catch anything)
    for after in (0.0, 0.01, 0.03, 0.06, 0.1):
        code, stderr = _interrupt(["models"], after=after)
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, (after, stderr)
        assert code == 130, (after, code, stderr)
        assert stderr.strip() in ("shiwu: interrupted", ""), (after, stderr)


def test_ctrl_c_during_tune_says_so_in_one_line_and_saves_nothing(tmp_path):
    settings = tmp_path / "config.toml"
    env = {**os.environ, "SHIWU_CONFIG": str(settings)}
    with open(tmp_path / "stdout", "wb") as stdout:  # the report to a file, as in a script
        run = subprocess.Popen([SHIWU, "tune", "--seconds", "1"], stdout=stdout, stderr=subprocess.PIPE,
                               env=env, start_new_session=True)
        time.sleep(4)  # measuring (its bench workers are in the process group, as with Ctrl-C)
        assert run.poll() is None
        os.killpg(run.pid, signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
    stderr = stderr.decode("utf-8", "replace")
    assert run.returncode == 130, stderr
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines()]
    # before: stderr had only the progress bar; the one word of it, on stdout, read like a result
    assert lines.count("shiwu: interrupted: nothing was saved") == 1, stderr
    assert "Traceback" not in stderr
    assert not settings.exists()
