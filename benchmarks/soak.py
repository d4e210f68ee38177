"""Soak: many long-pollers and short pollers on one cluster while it terminates and starts again.

A real ``jupyter server`` (subprocess, token auth, this extension enabled) and the workspace
simulator (in a thread of this process) with one cluster, connected through the API first.
Then, in the same run:

1. baseline: ``--baseline`` seconds with no client at all: the server's RSS and open file
   descriptors, and the upstream reads of the workspace per minute (the simulator counts them);
2. load: ``--long-pollers`` clients long-poll the cluster's status (``?wait=60&since=V``, each on
   its own keep-alive connection) and ``--short-pollers`` clients GET it every
   ``--short-interval`` seconds, for ``--duration`` seconds. A third into the run the cluster
   terminates (as an auto-termination would); once the status says so, the benchmark starts it
   through the API (``POST .../start``) and waits until it is connected again;
3. end: the clients go away; after ``--settle`` seconds RSS and descriptors are read again.

Prints one JSON document: errors (any answer that is not 200, any broken connection), requests,
upstream reads per minute idle vs under load (flat means the clients do not add reads), RSS and
open descriptors at start/peak/end, and the long-pollers' answers per client per minute while
the cluster's state is steady (before the termination, and from ``--settle`` s after it is
connected again), with the goals: 0 errors, RSS growth <= 5 MB, descriptors back to the
baseline, <= 3 answers per long-poller per minute.

    python benchmarks/soak.py [--duration 60] [--long-pollers 200] [--short-pollers 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from databrickslabs_jupyterlab.simulator import SimulatorThread  # noqa: E402


def _reads(calls: dict[str, int]) -> int:
    """Upstream reads of the workspace API among the simulator's counted calls."""
    return sum(n for key, n in calls.items() if key.startswith("GET /api/"))


class Server:
    """RSS and open descriptors of the server process, sampled to keep the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0
        self.peak_fds = 0

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def sample(self) -> tuple[int, int]:
        rss, fds = self.rss(), self.fds()
        self.peak_rss, self.peak_fds = max(self.peak_rss, rss), max(self.peak_fds, fds)
        return rss, fds


class Soak:
    def __init__(self, args: argparse.Namespace, port: int, token: str, path: str) -> None:
        self.args = args
        self.port, self.token, self.path = port, token, path
        self.errors: list[str] = []
        self.long_answers: list[float] = []  # monotonic time of each long-poll answer
        # ... but a client's first (it asks since=0, answered at once)
        self.short_answers = 0
        self.stop = asyncio.Event()

    def _error(self, text: str) -> None:
        self.errors.append(text)

    async def _get(self, conn: Connection, query: str = "") -> dict[str, Any] | None:
        """One GET on the connection; the body, or None after an error (recorded)."""
        try:
            status, body = await conn.request(self.path + query)
        except (OSError, asyncio.IncompleteReadError, ValueError) as err:
            self._error(f"{type(err).__name__}: {err}")
            conn.close()
            await asyncio.sleep(0.5)
            return None
        if status != 200:
            self._error(f"HTTP {status}")
            await asyncio.sleep(0.5)
            return None
        return json.loads(body)

    async def long_poller(self) -> None:
        conn = Connection(self.port, self.token)
        version = 0
        try:
            while not self.stop.is_set():
                body = await self._get(conn, f"?wait=60&since={version}")
                if body is not None:
                    if version:
                        self.long_answers.append(time.monotonic())
                    version = body["version"]
        finally:
            conn.close()

    async def short_poller(self) -> None:
        conn = Connection(self.port, self.token)
        try:
            while not self.stop.is_set():
                if await self._get(conn) is not None:
                    self.short_answers += 1
                try:
                    await asyncio.wait_for(self.stop.wait(), self.args.short_interval)
                except asyncio.TimeoutError:  # not TimeoutError before 3.11
                    pass
        finally:
            conn.close()


async def _until(soak: Soak, states: set[str], timeout: float) -> dict[str, Any]:
    """Long-poll (as one more client, not counted) until the state is one of ``states``."""
    conn = Connection(soak.port, soak.token)
    deadline = time.monotonic() + timeout
    try:
        status, body = await conn.request(soak.path)
        snap = json.loads(body)
        while snap["state"] not in states or snap["operation"] is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"state {snap['state']} after {timeout} s: {snap['message']}")
            status, body = await conn.request(f"{soak.path}?wait=10&since={snap['version']}")
            snap = json.loads(body)
        return snap
    finally:
        conn.close()


async def _run(soak: Soak, sim: SimulatorThread, server: Server, cluster_id: str) -> dict:
    args = soak.args
    began = time.monotonic()
    calls = await asyncio.to_thread(sim.calls)

    async def sampler() -> None:
        while not soak.stop.is_set():
            await asyncio.to_thread(server.sample)
            try:
                await asyncio.wait_for(soak.stop.wait(), 0.5)
            except asyncio.TimeoutError:  # not TimeoutError before 3.11
                pass

    tasks = [asyncio.ensure_future(soak.long_poller()) for _ in range(args.long_pollers)]
    tasks += [asyncio.ensure_future(soak.short_poller()) for _ in range(args.short_pollers)]
    tasks.append(asyncio.ensure_future(sampler()))

    # steady window 1: until the termination (after the clients' first answers)
    await asyncio.sleep(args.duration / 3)
    window1 = (began + min(5.0, args.duration / 6), time.monotonic())
    reads1 = _reads(await asyncio.to_thread(sim.calls)) - _reads(calls)
    terminate_at = time.monotonic() - began
    await asyncio.to_thread(sim.terminate, cluster_id)
    await _until(soak, {"terminated"}, 120)
    terminated_at = time.monotonic() - began
    await asyncio.to_thread(http, soak.port, soak.token, "POST", soak.path + "/start")
    connected = await _until(soak, {"connected"}, 300)
    connected_at = time.monotonic() - began
    # steady window 2: from settle s after the reconnection to the end
    start2 = time.monotonic() + args.settle
    end = max(began + args.duration, start2 + 5)
    await asyncio.sleep(max(0.0, start2 - time.monotonic()))
    calls2 = await asyncio.to_thread(sim.calls)
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    calls_end = await asyncio.to_thread(sim.calls)
    window2 = (start2, time.monotonic())
    soak.stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - began

    steady_s = sum(b - a for a, b in (window1, window2))
    steady_answers = sum(
        1 for t in soak.long_answers if any(a <= t <= b for a, b in (window1, window2))
    )
    steady_reads = reads1 + _reads(calls_end) - _reads(calls2)
    return {
        "elapsed_s": round(elapsed, 1),
        "terminate_at_s": round(terminate_at, 1),
        "terminated_seen_s": round(terminated_at, 1),
        "connected_again_s": round(connected_at, 1),
        "state_after_start": connected["state"],
        "long_poll_answers_after_the_first": len(soak.long_answers),
        "short_poll_answers": soak.short_answers,
        "upstream_calls": {
            k: v - calls.get(k, 0) for k, v in sorted(calls_end.items()) if v - calls.get(k, 0)
        },
        "upstream_reads_per_min": round((_reads(calls_end) - _reads(calls)) / elapsed * 60, 2),
        "steady_s": round(steady_s, 1),
        "steady_upstream_reads_per_min": round(steady_reads / steady_s * 60, 2),
        "steady_answers_per_long_poller_per_min": round(
            steady_answers / max(1, args.long_pollers) / steady_s * 60, 3
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--long-pollers", type=int, default=200)
    parser.add_argument("--short-pollers", type=int, default=20)
    parser.add_argument("--short-interval", type=float, default=2.0, help="seconds between GETs")
    parser.add_argument("--baseline", type=float, default=15.0, help="idle seconds measured first")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before end readings")
    args = parser.parse_args(argv)

    home, sim, cluster_id = simulated_workspace("dbjl-soak-", "soak")
    server = None
    try:
        server, port, token = start_server(home, sim)
        path = f"/databrickslabs-jupyterlab/api/v1/clusters/demo/{cluster_id}"
        soak = Soak(args, port, token, path)
        http(port, token, "POST", path + "/start")
        asyncio.run(_until(soak, {"connected"}, 300))

        watch = Server(server.pid)
        time.sleep(args.settle)  # past the fast refreshes that follow a connection
        before = sim.calls()
        rss0, fds0 = watch.sample()
        time.sleep(args.baseline)
        idle_reads = _reads(sim.calls()) - _reads(before)
        run = asyncio.run(_run(soak, sim, watch, cluster_id))
        time.sleep(args.settle)  # the server closes the clients' connections
        rss1, fds1 = watch.sample()
        growth_mb = (rss1 - rss0) / 2**20
        steady = run["steady_answers_per_long_poller_per_min"]
        result = {
            "benchmark": "soak",
            "duration_s": args.duration,
            "long_pollers": args.long_pollers,
            "short_pollers": args.short_pollers,
            "short_interval_s": args.short_interval,
            "errors": len(soak.errors),
            "error_samples": sorted(set(soak.errors))[:5],
            **run,
            "baseline_upstream_reads_per_min": round(idle_reads / args.baseline * 60, 2),
            "server": {
                "rss_mb": {
                    "start": round(rss0 / 2**20, 1),
                    "peak": round(watch.peak_rss / 2**20, 1),
                    "end": round(rss1 / 2**20, 1),
                    "growth": round(growth_mb, 1),
                },
                "open_fds": {"start": fds0, "peak": watch.peak_fds, "end": fds1},
            },
            "goals": {
                "no_errors": not soak.errors,
                "rss_growth_le_5mb": growth_mb <= 5,
                "fds_back_to_baseline": fds1 <= fds0,
                "steady_answers_le_3_per_min": steady <= 3,
            },
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        }
        print(json.dumps(result, indent=2))
        return result
    finally:
        stop_server(server)
        sim.stop()


if __name__ == "__main__":
    main()
