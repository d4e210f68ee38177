"""Status endpoint under load: 1, 10 and 100 clients polling one cluster's status.

A real ``jupyter server`` (subprocess, token auth, this extension enabled) and the workspace
simulator (in a thread of this process) with one RUNNING cluster, connected through the API
first. For each number of clients, every client sends GETs one after the other on its own
keep-alive connection for ``--duration`` seconds against our
``GET .../clusters/{profile}/{cluster_id}`` and as long against jupyter_server's own
``GET /api/status`` (the baseline, same run, same machine). The two alternate in ``--slices``
turns, so that a drift of the machine's load weighs on both alike. Prints one JSON document:
p50/p99 latency of both, their ratio, requests per second, how many requests took over 100 ms,
and the upstream ``clusters/get`` calls per second the simulator received while our endpoint was
polled (it should not depend on the number of clients).

With 100 clients, p99 is decided by the server's full garbage collections: each stops the event
loop for about 0.2 s every few seconds and delays all 100 waiting requests at once, which is near
1 % of a turn's requests. ``over_100ms`` counts them; when one endpoint met one pause more than
the other, its p99 jumps from tens of milliseconds to the length of a pause.

    python benchmarks/status_load.py [--duration 10] [--slices 5] [--clients 1 10 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    Connection,
    http,
    simulated_workspace,
    start_server,
    stop_server,
)

GET_CALL = "GET /api/2.1/clusters/get"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def _load(port: int, token: str, path: str, clients: int, duration: float) -> list[float]:
    """Latencies of ``clients`` keep-alive clients polling ``path`` for ``duration`` seconds.

    A non-200 answer counts as NaN, so the caller can tell errors apart.
    """
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration

    async def client() -> None:
        conn = Connection(port, token)
        try:
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                status = await conn.get(path)
                took = time.perf_counter() - began
                latencies.append(took if status == 200 else math.nan)
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def _summary(latencies: list[float], elapsed: float) -> dict[str, Any]:
    good = [x for x in latencies if not math.isnan(x)]
    return {
        "requests": len(latencies),
        "errors": len(latencies) - len(good),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(good, 50) * 1000, 3),
        "p99_ms": round(_percentile(good, 99) * 1000, 3),
        "over_100ms": sum(1 for x in good if x > 0.1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per endpoint and number of clients"
    )
    parser.add_argument(
        "--slices", type=int, default=5, help="alternating turns the duration is split into"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100])
    args = parser.parse_args()

    home, sim, cluster_id = simulated_workspace("dbjl-bench-", "bench")
    server = None
    try:
        server, port, token = start_server(home, sim)
        ours = f"/databrickslabs-jupyterlab/api/v1/clusters/demo/{cluster_id}"
        http(port, token, "POST", ours + "/start")
        status = http(port, token, "GET", ours)
        deadline = time.monotonic() + 120
        while status["state"] != "connected" or status["operation"] is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not connect: {status['message']}")
            status = http(port, token, "GET", f"{ours}?wait=10&since={status['version']}")
        time.sleep(12)  # past the fast window: measure the steady cadence

        results = []
        turn = args.duration / args.slices
        for clients in args.clients:
            samples: dict[str, list[float]] = {ours: [], "/api/status": []}
            elapsed = dict.fromkeys(samples, 0.0)
            upstream_calls = 0
            for _ in range(args.slices):
                for path in samples:
                    before = sim.calls().get(GET_CALL, 0)
                    began = time.monotonic()
                    samples[path] += asyncio.run(_load(port, token, path, clients, turn))
                    elapsed[path] += time.monotonic() - began
                    if path == ours:
                        upstream_calls += sim.calls().get(GET_CALL, 0) - before
            ours_result = _summary(samples[ours], elapsed[ours])
            baseline = _summary(samples["/api/status"], elapsed["/api/status"])
            upstream = upstream_calls / elapsed[ours]
            results.append(
                {
                    "clients": clients,
                    "status_endpoint": ours_result,
                    "api_status_baseline": baseline,
                    "p50_ratio": round(ours_result["p50_ms"] / baseline["p50_ms"], 3),
                    "p99_ratio": round(ours_result["p99_ms"] / baseline["p99_ms"], 3),
                    "upstream_clusters_get_per_s": round(upstream, 3),
                }
            )
        final = http(port, token, "GET", ours)
        print(
            json.dumps(
                {
                    "benchmark": "status_load",
                    "duration_s": args.duration,
                    "slices": args.slices,
                    "cluster_state": final["state"],
                    "python": sys.version.split()[0],
                    "cpus": os.cpu_count(),
                    "results": results,
                },
                indent=2,
            )
        )
    finally:
        stop_server(server)
        sim.stop()


if __name__ == "__main__":
    main()
