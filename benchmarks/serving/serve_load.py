"""Load on `shiwu serve` over loopback: micro-batching against one image per inference.

Starts three real server processes on free 127.0.0.1 ports — ``--max-batch-size 1`` (every
request its own inference: the baseline), micro-batching up to ``--max-batch-size`` (16), and
the default ``auto`` (the batch size measured at start-up) — and sends each
the same bounded load: ``--concurrency`` clients (default 32) sending ``--requests`` requests
(default 2,000) per server, one photo from tests/data per request as a raw body, cycling
through the photos. The load alternates between the servers in ``--rounds`` rounds, so that
other work on the machine hurts both alike. Reports, per server: throughput, p50 / p95 / p99
latency, 5xx and other failures, answers whose top-1 differs from the first answer for the
same photo, mean inference batch size and model time per image (from /metrics), and the
server's resident memory before and after the load; then the ratios against the baseline.

Clients and servers share this machine's cores, so the absolute numbers include the clients'
own cost; the ratio is the point. Usage:

    python benchmarks/serving/serve_load.py [--requests 2000] [--concurrency 32] [--backend auto]
                                    [--max-batch-size 16] [--max-wait-ms 5] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

import httpx

from shiwu.server.process import ServerProcess
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helper
from bench_common import ROOT, record_run, percentile  # noqa: E402


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


TOP1: dict[str, int] = {}  # photo -> top-1 index of the first answer, across servers and rounds


async def load(url: str, photos: list[tuple[str, bytes]], requests: int, concurrency: int) -> dict:
    latencies, statuses = [], []
    disagreements = transport_errors = 0
    next_index = 0

    async def client(http: httpx.AsyncClient):
        nonlocal next_index, disagreements, transport_errors
        while next_index < requests:
            i = next_index
            next_index += 1
            name, data = photos[i % len(photos)]
            started = time.perf_counter()
            try:
                response = await http.post("/v1/recognize", content=data, params={"topk": 1},
                                           headers={"Content-Type": "application/octet-stream"})
            except httpx.HTTPError:
                transport_errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            statuses.append(response.status_code)
            if response.status_code == 200:
                index = response.json()["results"][0]["predictions"][0]["index"]
                if TOP1.setdefault(name, index) != index:
                    disagreements += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "latencies": latencies, "statuses": statuses,
            "disagreements": disagreements, "transport_errors": transport_errors}


def summarise(label: str, runs: list[dict], server: ServerProcess, rss_before: int,
              before_metrics: str, after_metrics: str) -> dict:
    def delta(name):
        return metric(after_metrics, name) - metric(before_metrics, name)

    latencies = [x for run in runs for x in run["latencies"]]
    statuses = [x for run in runs for x in run["statuses"]]
    elapsed = sum(run["elapsed"] for run in runs)
    batches, images = delta("shiwu_batch_size_count"), delta("shiwu_batch_size_sum")
    ok = sum(1 for s in statuses if s == 200)
    return {
        "label": label,
        "throughput": ok / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p95": percentile(latencies, 95) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "ok": ok,
        "5xx": sum(1 for s in statuses if s >= 500),
        "other": sum(1 for s in statuses if s != 200 and s < 500) + sum(r["transport_errors"] for r in runs),
        "wrong": sum(run["disagreements"] for run in runs),
        "batch": images / batches if batches else float("nan"),
        "infer_ms": delta("shiwu_inference_duration_seconds_sum") / images * 1000 if images else float("nan"),
        "rss_before": rss_before / 2**20,
        "rss_after": server.rss_bytes() / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per server (default 2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--warmup", type=int, default=64, help="requests before measuring (default 64)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating rounds the requests are split into (default 4)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="server inference threads")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra `shiwu serve` argument for both servers (repeatable), "
                             "e.g. --server-arg=--decode-threads=1")
    args = parser.parse_args()

    photos = [(p.name, p.read_bytes()) for p in sorted(args.images.iterdir())
              if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    common = ["--backend", args.backend, "--no-access-log", "--max-queue", str(max(256, 4 * args.concurrency))]
    if args.threads:
        common += ["--threads", str(args.threads)]
    common += args.server_arg
    print(f"{len(photos)} photos, {args.requests} requests per server, {args.concurrency} concurrent "
          f"clients, backend {args.backend}", file=sys.stderr)
    configs = [
        ("batch size 1", ["--max-batch-size", "1", "--max-wait-ms", "0"]),
        (f"micro-batch ≤{args.max_batch_size}, {args.max_wait_ms:g} ms",
         ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]),
        (f"auto (measured), {args.max_wait_ms:g} ms", ["--max-wait-ms", str(args.max_wait_ms)]),
    ]
    servers = []
    try:
        for label, extra in configs:
            servers.append(ServerProcess(common + extra).start())
            batching = httpx.get(servers[-1].url + "/v1/models").json()["batching"]
            print(f"  {label}: server pid {servers[-1].pid}, batches of up to "
                  f"{batching['max_batch_size']}", file=sys.stderr, flush=True)
            if batching["measurement"]:
                print(f"    measured: {batching['measurement']}", file=sys.stderr, flush=True)
        # Other work on this machine comes and goes: both servers stay up (an idle one costs
        # nothing) and take the load in alternating rounds, so a busy minute hurts both alike.
        for server in servers:
            asyncio.run(load(server.url, photos, args.warmup, min(args.concurrency, args.warmup)))
        before = [httpx.get(server.url + "/metrics").text for server in servers]
        rss = [server.rss_bytes() for server in servers]
        runs = [[] for _ in servers]
        per_round = -(-args.requests // args.rounds)
        done = 0
        while done < args.requests:
            n = min(per_round, args.requests - done)
            for i, server in enumerate(servers):
                runs[i].append(asyncio.run(load(server.url, photos, n, args.concurrency)))
            done += n
            print(f"  {done}/{args.requests} requests per server", file=sys.stderr, flush=True)
        rows = [summarise(label, runs[i], servers[i], rss[i], before[i],
                          httpx.get(servers[i].url + "/metrics").text)
                for i, (label, _) in enumerate(configs)]
    finally:
        for server in servers:
            server.stop()
    base = rows[0]
    header = (f"{'server':<28} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'5xx':>4} "
              f"{'other':>5} {'wrong':>5} {'batch':>6} {'infer ms/img':>12} {'RSS MB before→after':>20} {'throughput':>10}")
    print(header)
    print("-" * len(header))
    for row in rows:
        rss = f"{row['rss_before']:.0f} → {row['rss_after']:.0f}"
        print(f"{row['label']:<28} {row['throughput']:>7.1f} {row['p50']:>8.1f} {row['p95']:>8.1f} "
              f"{row['p99']:>8.1f} {row['5xx']:>4} {row['other']:>5} {row['wrong']:>5} {row['batch']:>6.2f} "
              f"{row['infer_ms']:>12.1f} "
              f"{rss:>20} {row['throughput'] / base['throughput']:>9.2f}×")
    print()
    for row in rows[1:]:
        print(f"{row['label']} vs batch size 1: throughput {row['throughput'] / base['throughput']:.2f}×, "
              f"p50 latency {base['p50'] / row['p50']:.2f}× lower, p99 {base['p99'] / row['p99']:.2f}× lower")
    failed = any(row["5xx"] or row["wrong"] for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(record_run("serve_load", main))
