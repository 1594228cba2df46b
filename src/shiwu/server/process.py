"""Run `shiwu serve` as a real child process on a free loopback port (tests and benchmarks).

    with ServerProcess(["--backend", "torch"]) as server:
        urllib.request.urlopen(server.url + "/readyz")
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


class ServerProcess:
    def __init__(self, args: list[str] = (), *, env: dict | None = None, ready_timeout: float = 180.0,
                 log_path: str | os.PathLike | None = None, open_files: int | None = None):
        self.args = list(args)
        self.open_files = open_files  # RLIMIT_NOFILE of the server (tests of fd exhaustion)
        self.env = env
        self.ready_timeout = ready_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="shiwu-serve-", suffix=".log")
            os.close(fd)
            # a log of our own making goes when this object does (or at exit): read after stop()
            # by tests, never wanted after that (a test run left hundreds in /tmp)
            weakref.finalize(self, _remove_quietly, log_path)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> "ServerProcess":
        command = [sys.executable, "-m", "shiwu", "serve", "--port", str(self.port), *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, preexec_fn=self._limits)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"shiwu serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"shiwu serve was not ready within {self.ready_timeout:g} s:\n{self.log()}")

    def _limits(self) -> None:
        if self.open_files is not None:
            import resource

            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, hard))

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux /proc)."""
        return self._status("VmRSS")

    def peak_rss_bytes(self) -> int:
        """The highest resident memory the server process has had (VmHWM)."""
        return self._status("VmHWM")

    def open_fds(self) -> list[str]:
        """What the server's file descriptors point at (Linux /proc)."""
        found = []
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                found.append(os.readlink(fd))
            except OSError:
                pass
        return found

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait (SIGKILL after ``timeout``); the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
