"""`shiwu serve` under hostile clients and faults: the figures of the README's reliability table.

Every scenario runs against real server processes on free 127.0.0.1 ports, with bounded loads:

- memory: 32 simultaneous ~19 MB JPEG uploads (multipart); the server's resident memory
  before, its peak during (sampled every 20 ms), after; how many got 200 / 503;
- fairness: the latency of a normal photo (tests/data/coffee.jpg) on an idle server, and
  while 4 requests of 4 PNGs of 7000x7000 (49 MP each, legal) are being decoded; the ratio;
- metrics: 2,000 requests with invented HTTP methods; /metrics size and RSS before and after;
- slow heads: 200 connections sending their request head at 1 byte/s; how many are still open
  after --header-timeout + 2 s;
- overload: 4 x --max-queue concurrent clients; statuses, Retry-After, reset connections;
- drain: SIGTERM with 2 big and 4 small requests in flight; /readyz right after, what each
  request got, time to exit and exit code;
- soak: --soak requests (default 20,000) of small photos from 8 clients; RSS after the
  warm-up (the first 5%) and at the end, and the drift.

``--before REF`` runs the same scenarios on the server of a git commit (its ``src`` exported to
a temporary folder; options it does not know are left out), for a before/after table.

    python benchmarks/serving/serve_faults.py [--soak 20000] [--before 717dedb] [--only memory,fairness]
                                      [--backend torch] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from shiwu.server.process import ServerProcess
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import ROOT, record_run  # noqa: E402

DATA = ROOT / "tests" / "data"
MB = 1024 * 1024
NEW_OPTIONS = {"--max-inflight-mb", "--max-decode-megapixels", "--header-timeout",
               "--keep-alive-timeout", "--max-connections", "--graceful-timeout"}
BASE = ["--warmup-seconds", "0", "--no-access-log"]  # + --backend/--threads from the command line


class Variant:
    """The server under test: this checkout, or the ``src`` of an older commit."""

    def __init__(self, label: str, src: Path | None):
        self.label, self.src = label, src

    def server(self, args: list[str], **kwargs) -> ServerProcess:
        args = BASE + args
        env = {}
        if self.src is not None:  # the old server: its own code, only the options it knows
            env["PYTHONPATH"] = str(self.src)
            kept, skip = [], False
            for arg in args:
                if skip:
                    skip = False
                elif arg in NEW_OPTIONS:
                    skip = True
                else:
                    kept.append(arg)
            args = kept
        return ServerProcess(args, env=env, **kwargs)


def export_src(ref: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="shiwu-before-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


class PeakRSS:
    """Samples a process's resident memory every 20 ms while in the ``with`` block."""

    def __init__(self, server: ServerProcess):
        self.server, self.peak, self._stop = server, 0, threading.Event()

    def __enter__(self):
        self.peak = self.server.rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.server.rss_bytes())
            except OSError:
                return
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def big_jpeg() -> bytes:
    """~19 MB of valid JPEG (4600x3600 noise, quality 95): just under the 20 MiB limit."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (3600, 4600, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def big_png() -> bytes:
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((7000, 7000), Image.Resampling.NEAREST)
    image = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90),
                                gradient.transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def post(url: str, *, data: bytes | None = None, files=None, timeout: float = 120):
    headers = {"Content-Type": "image/jpeg"} if data is not None else None
    return httpx.post(url + "/v1/recognize", content=data, files=files, headers=headers, timeout=timeout)


def in_threads(n: int, work) -> list:
    """``work(i)`` in n threads started together; each outcome, or the exception's repr."""
    out = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            out[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - reported, it is what is measured
            out[i] = f"{type(exc).__name__}: {exc}"
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def counts(outcomes) -> str:
    seen: dict[str, int] = {}
    for o in outcomes:
        key = str(o.status_code) if isinstance(o, httpx.Response) else "reset/error"
        seen[key] = seen.get(key, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(seen.items()))


# ------------------------------------------------------------------------------- scenarios


def memory(variant: Variant, jpeg: bytes) -> dict:
    with variant.server([]) as server:
        post(server.url, data=(DATA / "coffee.jpg").read_bytes())
        before = server.rss_bytes()
        with PeakRSS(server) as peak:
            outcomes = in_threads(32, lambda i: post(server.url, files=[("files", (f"{i}.jpg", jpeg, "image/jpeg"))]))
        time.sleep(1)
        after = server.rss_bytes()
    return {"memory": f"{before / MB:.0f} -> peak {peak.peak / MB:.0f} -> {after / MB:.0f} MB",
            "memory_peak_mb": peak.peak / MB, "memory_added_mb": (peak.peak - before) / MB,
            "memory_statuses": counts(outcomes)}


def fairness(variant: Variant, png: bytes, rounds: int = 5) -> dict:
    photo = (DATA / "coffee.jpg").read_bytes()
    with variant.server(["--timeout", "120"]) as server:
        def timed():
            started = time.perf_counter()
            response = post(server.url, data=photo)
            return time.perf_counter() - started, response.status_code
        for _ in range(3):
            timed()
        idle = [timed()[0] for _ in range(rounds)]
        files = [("files", (f"big{j}.png", png, "image/png")) for j in range(4)]
        results = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, post(server.url, files=files)))
                   for i in range(4)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(1.0)
        busy, statuses = [], []
        for _ in range(rounds):
            seconds, status = timed()
            busy.append(seconds)
            statuses.append(status)
        in_flight = sum(t.is_alive() for t in threads)
        for t in threads:
            t.join()
        big_seconds = time.perf_counter() - started
    return {"fairness": f"idle {statistics.median(idle) * 1000:.0f} ms, with big in flight "
                        f"{statistics.median(busy) * 1000:.0f} ms (max {max(busy) * 1000:.0f})",
            # the worst small photo while big ones decode, against the idle median
            "fairness_ratio": max(busy) / statistics.median(idle),
            "fairness_small_statuses": ",".join(map(str, sorted(set(statuses)))),
            "fairness_big": f"{counts(results.values())} in {big_seconds:.1f} s; "
                            f"{in_flight} of 4 still in flight after the small ones"}


def metrics_growth(variant: Variant) -> dict:
    with variant.server([]) as server:
        size_before = len(httpx.get(server.url + "/metrics").text)
        rss_before = server.rss_bytes()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(2000):
                client.request("X" + "".join(random.choices("ABCDEFGHJKLMNPQRSTUVWXYZ", k=10)), "/")
        size_after = len(httpx.get(server.url + "/metrics").text)
        rss_after = server.rss_bytes()
    return {"metrics": f"{size_before / 1024:.1f} -> {size_after / 1024:.1f} KB, "
                       f"RSS {(rss_after - rss_before) / MB:+.1f} MB"}


def slow_heads(variant: Variant, n: int = 200, timeout: float = 3.0) -> dict:
    with variant.server(["--header-timeout", str(timeout)]) as server:
        socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(n)]
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        open_ = set(range(n))
        started = time.monotonic()
        for k in range(int(timeout + 2)):
            for i in list(open_):
                try:
                    socks[i].sendall(head[k:k + 1])
                except OSError:
                    open_.discard(i)
            time.sleep(1)
        for i in list(open_):  # closed by the server: reading gives b"" (or a 408) at once
            socks[i].settimeout(0.05)
            try:
                data = socks[i].recv(4096)
                if data == b"" or data.startswith(b"HTTP/1.1 408"):
                    open_.discard(i)
            except (socket.timeout, BlockingIOError):
                pass
            except OSError:
                open_.discard(i)
        for sock in socks:
            sock.close()
        log_lines = len(server.log().splitlines())
    return {"slow_heads": f"{len(open_)} of {n} still open after {time.monotonic() - started:.0f} s "
                          f"(header timeout {timeout:g} s); {log_lines} log lines in all"}


def overload(variant: Variant, max_queue: int = 16) -> dict:
    photo = (DATA / "chelsea.jpg").read_bytes()
    with variant.server(["--max-queue", str(max_queue)]) as server:
        def client(i):
            out = []
            with httpx.Client(base_url=server.url, timeout=60) as http:
                for _ in range(4):
                    r = http.post("/v1/recognize", content=photo, headers={"Content-Type": "image/jpeg"})
                    out.append(r)
            return out
        outcomes = in_threads(4 * max_queue, client)
    flat = [r for o in outcomes for r in (o if isinstance(o, list) else [o])]
    no_retry = sum(1 for r in flat if isinstance(r, httpx.Response) and r.status_code == 503
                   and "retry-after" not in r.headers)
    return {"overload": f"{4 * max_queue} clients x 4: {counts(flat)}; 503 without Retry-After: {no_retry}"}


def drain(variant: Variant, png: bytes, graceful: float = 5.0) -> dict:
    server = variant.server(["--graceful-timeout", str(graceful), "--timeout", "120"])
    server.start()
    answers = {}
    try:
        files = [("files", (f"big{j}.png", png, "image/png")) for j in range(4)]
        photo = (DATA / "coffee.jpg").read_bytes()

        def call(name, fn):
            try:
                answers[name] = fn()
            except Exception as exc:  # noqa: BLE001
                answers[name] = f"{type(exc).__name__}"
        threads = [threading.Thread(target=call, args=(f"big{i}", lambda: post(server.url, files=files)))
                   for i in range(2)]
        threads += [threading.Thread(target=call, args=(f"small{i}", lambda: post(server.url, data=photo)))
                    for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            readyz = str(httpx.get(server.url + "/readyz", timeout=5).status_code)
        except httpx.HTTPError as exc:
            readyz = type(exc).__name__
        for t in threads:
            t.join(60)
        code = server.process.wait(60)
        took = time.monotonic() - signalled
    finally:
        server.stop()
    return {"drain": f"readyz {readyz}; {counts(answers.values())}; exit {code} after {took:.1f} s "
                     f"(graceful {graceful:g} s)"}


def soak(variant: Variant, requests: int, clients: int = 8) -> dict:
    photos = [(DATA / name).read_bytes() for name in ("coffee.jpg", "chelsea.jpg", "horse.png", "camera.jpg")]
    with variant.server([]) as server:
        done = [0]
        lock = threading.Lock()
        warm = max(100, requests // 20)
        marks = {}
        failures = [0]

        def client(i):
            with httpx.Client(base_url=server.url, timeout=60) as http:
                while True:
                    with lock:
                        if done[0] >= requests:
                            return
                        done[0] += 1
                        n = done[0]
                        if n == warm:
                            marks["warm"] = server.rss_bytes()
                    r = http.post("/v1/recognize", content=photos[n % len(photos)])
                    if r.status_code != 200:
                        failures[0] += 1
        started = time.monotonic()
        in_threads(clients, client)
        seconds = time.monotonic() - started
        time.sleep(1)
        end = server.rss_bytes()
    warm_rss = marks.get("warm", end)
    return {"soak": f"{requests:,} requests in {seconds:.0f} s, {failures[0]} not 200; RSS after warm-up "
                    f"{warm_rss / MB:.0f} MB, at the end {end / MB:.0f} MB ({(end - warm_rss) / warm_rss:+.1%})"}


SCENARIOS = ("memory", "fairness", "metrics", "slow_heads", "overload", "drain", "soak")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", type=int, default=20000, help="requests in the soak (default 20000)")
    parser.add_argument("--before", metavar="REF", help="also run the server of this git commit")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--backend", default="torch", help="server backend (default torch)")
    parser.add_argument("--threads", type=int, default=1, help="server inference threads (default 1)")
    args = parser.parse_args()
    BASE.extend(["--backend", args.backend, "--threads", str(args.threads)])
    only = set(args.only.split(","))
    variants = [Variant("now", None)]
    if args.before:
        variants.insert(0, Variant(f"before ({args.before})", export_src(args.before)))
    jpeg = big_jpeg() if "memory" in only else b""
    png = big_png() if only & {"fairness", "drain"} else b""
    rows: dict[str, dict[str, str]] = {}
    for variant in variants:
        figures: dict = {}
        for name in SCENARIOS:
            if name not in only:
                continue
            print(f"[{variant.label}] {name} ...", file=sys.stderr, flush=True)
            try:
                if name == "memory":
                    figures.update(memory(variant, jpeg))
                elif name == "fairness":
                    figures.update(fairness(variant, png))
                elif name == "metrics":
                    figures.update(metrics_growth(variant))
                elif name == "slow_heads":
                    figures.update(slow_heads(variant))
                elif name == "overload":
                    figures.update(overload(variant))
                elif name == "drain":
                    figures.update(drain(variant, png))
                elif name == "soak":
                    figures.update(soak(variant, args.soak))
            except Exception as exc:  # noqa: BLE001 - an old server may not survive a scenario
                figures[name] = f"failed: {type(exc).__name__}: {exc}"
        for key, value in figures.items():
            if isinstance(value, float):
                value = f"{value:.2f}"
            rows.setdefault(key, {})[variant.label] = str(value)
    labels = [v.label for v in variants]
    width = max(len(k) for k in [*rows, "figure"]) + 2
    print(f"{'figure':<{width}}" + " | ".join(labels))
    for key, values in rows.items():
        print(f"{key:<{width}}" + " | ".join(values.get(label, "-") for label in labels))
    return 0


if __name__ == "__main__":
    sys.exit(record_run("serve_faults", main))
