"""Load on `shiwu serve` over loopback: micro-batching against one image per inference.

Starts a real server process twice on a free 127.0.0.1 port — once with ``--max-batch-size 1``
(every request its own inference, the baseline) and once with micro-batching — and sends each
the same bounded load: ``--concurrency`` clients (default 32) sending ``--requests`` requests
in total (default 2,000), one photo from tests/data per request as a raw body, cycling through
the photos. Reports, per server: throughput, p50 / p95 / p99 latency, 5xx and other failures,
answers that disagree with the first answer for the same photo, mean inference batch size
(from /metrics), and the server's resident memory before and after the load; then the ratios
against the baseline measured in the same run.

Clients and server share this machine's cores, so the absolute numbers include the clients'
own cost; the ratio is the point. Usage:

    python benchmarks/serve_load.py [--requests 2000] [--concurrency 32] [--backend auto]
                                    [--max-batch-size 16] [--max-wait-ms 5] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from pathlib import Path

import httpx

from shiwu.server.process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def load(url: str, photos: list[tuple[str, bytes]], requests: int, concurrency: int) -> dict:
    latencies, statuses, top1 = [], [], {}
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
                if top1.setdefault(name, index) != index:
                    disagreements += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "latencies": latencies, "statuses": statuses,
            "disagreements": disagreements, "transport_errors": transport_errors}


def run_one(label: str, server_args: list[str], photos, args) -> dict:
    with ServerProcess(server_args) as server:
        print(f"  {label}: server pid {server.pid}, {' '.join(server_args)}", file=sys.stderr, flush=True)
        asyncio.run(load(server.url, photos, args.warmup, min(args.concurrency, args.warmup)))
        before_metrics = httpx.get(server.url + "/metrics").text
        rss_before = server.rss_bytes()
        result = asyncio.run(load(server.url, photos, args.requests, args.concurrency))
        rss_after = server.rss_bytes()
        after_metrics = httpx.get(server.url + "/metrics").text
    batches = metric(after_metrics, "shiwu_batch_size_count") - metric(before_metrics, "shiwu_batch_size_count")
    images = metric(after_metrics, "shiwu_batch_size_sum") - metric(before_metrics, "shiwu_batch_size_sum")
    ok = sum(1 for s in result["statuses"] if s == 200)
    return {
        "label": label,
        "throughput": ok / result["elapsed"],
        "p50": percentile(result["latencies"], 50) * 1000,
        "p95": percentile(result["latencies"], 95) * 1000,
        "p99": percentile(result["latencies"], 99) * 1000,
        "mean": statistics.fmean(result["latencies"]) * 1000 if result["latencies"] else float("nan"),
        "ok": ok,
        "5xx": sum(1 for s in result["statuses"] if s >= 500),
        "other": sum(1 for s in result["statuses"] if s != 200 and s < 500) + result["transport_errors"],
        "wrong": result["disagreements"],
        "batch": images / batches if batches else float("nan"),
        "rss_before": rss_before / 2**20,
        "rss_after": rss_after / 2**20,
        "elapsed": result["elapsed"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per server (default 2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--warmup", type=int, default=64, help="requests before measuring (default 64)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="server inference threads")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data")
    args = parser.parse_args()

    photos = [(p.name, p.read_bytes()) for p in sorted(args.images.iterdir())
              if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    common = ["--backend", args.backend, "--no-access-log", "--max-queue", str(max(256, 4 * args.concurrency))]
    if args.threads:
        common += ["--threads", str(args.threads)]
    print(f"{len(photos)} photos, {args.requests} requests per server, {args.concurrency} concurrent "
          f"clients, backend {args.backend}", file=sys.stderr)
    rows = [
        run_one("batch size 1", common + ["--max-batch-size", "1", "--max-wait-ms", "0"], photos, args),
        run_one(f"micro-batch ≤{args.max_batch_size}, {args.max_wait_ms:g} ms",
                common + ["--max-batch-size", str(args.max_batch_size),
                          "--max-wait-ms", str(args.max_wait_ms)], photos, args),
    ]
    base = rows[0]
    header = (f"{'server':<26} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'5xx':>4} "
              f"{'other':>5} {'wrong':>5} {'batch':>6} {'RSS MB before→after':>20} {'throughput':>10}")
    print(header)
    print("-" * len(header))
    for row in rows:
        rss = f"{row['rss_before']:.0f} → {row['rss_after']:.0f}"
        print(f"{row['label']:<26} {row['throughput']:>7.1f} {row['p50']:>8.1f} {row['p95']:>8.1f} "
              f"{row['p99']:>8.1f} {row['5xx']:>4} {row['other']:>5} {row['wrong']:>5} {row['batch']:>6.2f} "
              f"{rss:>20} {row['throughput'] / base['throughput']:>9.2f}×")
    best = rows[1]
    print(f"\nmicro-batching vs batch size 1: throughput {best['throughput'] / base['throughput']:.2f}×, "
          f"p50 latency {base['p50'] / best['p50']:.2f}× lower, p99 {base['p99'] / best['p99']:.2f}× lower")
    failed = any(row["5xx"] or row["wrong"] for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
