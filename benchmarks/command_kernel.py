"""Per-cell round trip of the Command Execution API kernel against the SSH kernel, on the
workspace simulator, and what the polling schedule costs.

Kernels, measured in the same run and interleaved (machine noise hits all alike):

* ``ssh``: the SSH kernel on the simulator's driver (ipykernel there, channels forwarded), the
  baseline;
* ``command-api``: the kernel without SSH with its default polling schedule (first status poll
  after 50 ms, then 1.5 times the previous wait, at most 1 s);
* ``command-api-fixed-1s`` and ``command-api-fixed-100ms``: the same kernel polling at a fixed
  interval, to show what the adaptive schedule buys.

Cells: ``1+1`` (``--executes`` times, median and p99) and ``time.sleep(S)`` (``--sleeps``
times; the overhead beyond S, i.e. how late the end of a longer command is seen). For each
command-api schedule, the ``commands/status`` requests per cell are counted on the simulator
(its ``/_sim/calls``): the price of a short interval on a real workspace (rate limits).

Everything runs in a temporary HOME; nothing of the user's configuration is read or written.

    python benchmarks/command_kernel.py [--executes 100] [--sleeps 5] [--sleep 1.5]
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import json
import os
import shutil
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.kernel_latency import _percentile, _quiet, _start  # noqa: E402
from benchmarks.simprocess import machine, private_home, simulator_process  # noqa: E402

#: Polling environment of each command-api variant (the kernel reads it at its start).
SCHEDULES = {
    "command-api": {},
    "command-api-fixed-1s": {"DBJL_COMMAND_POLL_MIN": "1.0", "DBJL_COMMAND_POLL_MAX": "1.0"},
    "command-api-fixed-100ms": {"DBJL_COMMAND_POLL_MIN": "0.1", "DBJL_COMMAND_POLL_MAX": "0.1"},
}
STATUS_PATH = "GET /api/1.2/commands/status"


class Workspace:
    """The simulator's host and token (from the profile it wrote), for ``/_sim/calls``."""

    def __init__(self, config_file: Path, profile: str) -> None:
        parser = configparser.ConfigParser()
        parser.read(config_file)
        self.host = parser[profile]["host"].rstrip("/")
        self.token = parser[profile].get("token", "")

    def status_polls(self) -> int:
        request = urllib.request.Request(
            self.host + "/_sim/calls", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - localhost
            return int(json.load(answer).get(STATUS_PATH, 0))


async def _timed(kc: Any, code: str) -> float:
    began = time.perf_counter()
    reply = await kc.execute_interactive(code, store_history=False, output_hook=_quiet, timeout=60)
    took = time.perf_counter() - began
    assert reply["content"]["status"] == "ok", reply["content"]
    return took


async def _start_with(spec: str, env: dict[str, str]) -> tuple[Any, Any, float]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return await _start(spec)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def _measure(
    specs: dict[str, str], ws: Workspace, executes: int, sleeps: int, sleep: float
) -> dict[str, Any]:
    kernels = {}
    for name, spec in specs.items():
        kernels[name] = await _start_with(spec, SCHEDULES.get(name, {}))
    quick: dict[str, list[float]] = {n: [] for n in specs}
    slow: dict[str, list[float]] = {n: [] for n in specs}
    polls: dict[str, list[int]] = {n: [] for n in specs}
    try:
        for _km, kc, _ in kernels.values():
            await _timed(kc, "import time")  # warm-up
            for _ in range(5):
                await _timed(kc, "1+1")
        block = 10
        for _ in range(0, executes, block):
            for name, (_km, kc, _) in kernels.items():
                for _ in range(block):
                    before = ws.status_polls()
                    quick[name].append(await _timed(kc, "1+1"))
                    polls[name].append(ws.status_polls() - before)
        for _ in range(sleeps):
            for name, (_km, kc, _) in kernels.items():
                before = ws.status_polls()
                slow[name].append(await _timed(kc, f"time.sleep({sleep})") - sleep)
                polls[name].append(ws.status_polls() - before)
    finally:
        for km, kc, _ in kernels.values():
            kc.stop_channels()
            await km.shutdown_kernel()
    results: dict[str, Any] = {}
    for name in specs:
        rt, late = quick[name][:executes], slow[name]
        results[name] = {
            "round_trip_ms": {
                "n": len(rt),
                "median": round(statistics.median(rt) * 1000, 2),
                "p99": round(_percentile(rt, 99) * 1000, 2),
            },
            f"sleep_{sleep:g}s_overhead_ms": {
                "n": len(late),
                "median": round(statistics.median(late) * 1000, 1),
                "max": round(max(late) * 1000, 1),
            },
        }
        if name != "ssh":
            short, long_ = polls[name][: len(rt)], polls[name][len(quick[name]) :]
            results[name]["status_polls_per_cell"] = {
                "1+1": round(statistics.mean(short), 2),
                f"sleep {sleep:g}s": round(statistics.mean(long_), 2),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executes", type=int, default=100)
    parser.add_argument("--sleeps", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=1.5)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    home = private_home("dbjl-bench-")
    config_file = home / ".databrickscfg"
    from jupyter_client.kernelspec import KernelSpecManager

    from databrickslabs_jupyterlab import kernelspecs

    try:
        with simulator_process(home, "bench", 1) as sim:
            [(cluster, ssh_config)] = sim.hosts.items()
            driver_python = sim.driver_python
            (home / ".ssh" / "config").write_text(ssh_config + "\n")
            ws = Workspace(config_file, "bench")
            # One spec per transport and schedule, side by side (create_kernelspec keeps one per
            # cluster, so they are installed directly).
            specs: dict[str, str] = {}
            for name, transport in [("ssh", "ssh"), *((n, "command-api") for n in SCHEDULES)]:
                spec = kernelspecs.kernel_json(
                    "bench",
                    cluster,
                    f"bench-{name}",
                    "bench",
                    {"driver_python": driver_python},
                    spark=False,
                    transport=transport,
                )
                folder = home / "specs" / name
                folder.mkdir(parents=True)
                (folder / "kernel.json").write_text(json.dumps(spec))
                specs[name] = kernelspecs.kernel_name(spec["display_name"], transport)
                KernelSpecManager().install_kernel_spec(str(folder), specs[name], user=True)

            async def warm_up() -> None:
                for name, spec in specs.items():
                    km, kc, _ = await _start_with(spec, SCHEDULES.get(name, {}))
                    kc.stop_channels()
                    await km.shutdown_kernel()

            asyncio.run(warm_up())
            results = asyncio.run(_measure(specs, ws, args.executes, args.sleeps, args.sleep))
    finally:
        shutil.rmtree(home, ignore_errors=True)

    base = results["ssh"]["round_trip_ms"]["median"]
    report = {
        "benchmark": "command_kernel",
        "machine": machine(load_before),
        "cells": {"quick": "1+1", "long": f"time.sleep({args.sleep:g})"},
        "kernels": results,
        "round_trip_median_ratio_to_ssh": {
            n: round(r["round_trip_ms"]["median"] / base, 2) for n, r in results.items()
        },
        "polling": {
            "chosen": "first status poll after 50 ms, each next wait 1.5 times the previous, "
            "at most 1 s (DBJL_COMMAND_POLL_MIN / DBJL_COMMAND_POLL_MAX)",
            "why": "REST 1.2 returns a command's output only when it ends, so the poll interval "
            "is the added latency: short first polls see a quick cell done within ~50 ms "
            "(a fixed 1 s interval costs about a second per cell), the growing wait keeps the "
            "extra delay under half of the cell's run time, and the 1 s cap limits a long cell "
            "to one status request a second (a fixed 100 ms interval costs ten, against the "
            "workspace's rate limits)",
        },
        "notes": [
            "simulator: REST 1.2 and SSH on localhost, so the API's own latency (tens to "
            "hundreds of ms on a real workspace) is not included; on a real workspace each "
            "status request costs one HTTP round trip to the control plane",
        ],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
