"""Spark in the remote kernel against the Command Execution API (REST 1.2), on one simulated
cluster whose driver runs one Spark application (real pyspark, Java 17).

Measured in the same run, on the same cluster and the same Spark application:

* ``start``: kernel start until ``spark`` is usable, i.e. ``start_kernel`` of a Spark kernelspec
  until its first cell, ``spark.range(1).count()``, has answered (the cell queues behind the
  silent attach: the gateway hand-off through a REST 1.2 context, then ``dbcontext()``). The
  baseline is the same through REST 1.2 alone: a new Python context until the same command has
  finished in it. Median of a few starts after one warm-up start each.
* ``round_trip``: ``spark.range(10**6).count()`` in the kernel (request until reply and idle)
  against the same command through REST 1.2 in one context, two ways: databricks-sdk's own
  ``command_execution.execute(...).result()`` (what a script with the SDK does; its waiter polls
  with back-off) and ``execute`` followed by ``command_status`` polled every 10 ms (the protocol's
  floor). Median and p90 after warm-up runs. Kernel and REST 1.2 runs alternate, so that a
  changing load weighs on both alike.

Prints one JSON document with the ratios kernel / REST 1.2. Everything runs in a temporary HOME;
nothing of the user's configuration is read or written.

    python benchmarks/spark_attach.py [--pyspark-path DIR] [--starts 3] [--runs 20]

``--pyspark-path`` names a folder holding pyspark (``pip install --target DIR pyspark``); default
``DBJL_TEST_PYSPARK_PATH``, then the cache folder scripts/test.sh fills.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.kernel_latency import _percentile, _quiet  # noqa: E402 - after sys.path
from benchmarks.simprocess import machine, private_home, simulator_process  # noqa: E402

COMMAND = "spark.range(10**6).count()"
FIRST = "spark.range(1).count()"
PROFILE = "bench"


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(values), 4),
        "p90_s": round(_percentile(values, 90), 4),
        "min_s": round(min(values), 4),
        "n": len(values),
    }


class Rest:
    """REST 1.2 through databricks-sdk's own client, on the benchmark's profile."""

    def __init__(self, cluster_id: str) -> None:
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config

        config = Config(profile=PROFILE, retry_timeout_seconds=60, http_timeout_seconds=60)
        self.w = WorkspaceClient(config=config)
        self.api = self.w.command_execution
        self.cluster_id = cluster_id

    def context(self) -> str:
        from databricks.sdk.service.compute import ContextStatus, Language

        ctx = self.api.create(cluster_id=self.cluster_id, language=Language.PYTHON).response.id
        while self.api.context_status(self.cluster_id, ctx).status == ContextStatus.PENDING:
            time.sleep(0.01)
        return ctx

    def run_polled(self, ctx: str, code: str) -> str:
        """``execute``, then ``command_status`` every 10 ms until the command ended."""
        from databricks.sdk.service.compute import CommandStatus, Language

        command = self.api.execute(
            cluster_id=self.cluster_id, context_id=ctx, language=Language.PYTHON, command=code
        ).response.id
        done = (CommandStatus.FINISHED, CommandStatus.ERROR, CommandStatus.CANCELLED)
        while True:
            answer = self.api.command_status(
                cluster_id=self.cluster_id, context_id=ctx, command_id=command
            )
            if answer.status in done:
                return _text(answer)
            time.sleep(0.01)

    def run_sdk(self, ctx: str, code: str) -> str:
        """databricks-sdk's own waiter, as a script with the SDK runs a command."""
        from databricks.sdk.service.compute import Language

        answer = self.api.execute(
            cluster_id=self.cluster_id, context_id=ctx, language=Language.PYTHON, command=code
        ).result()
        return _text(answer)

    def destroy(self, ctx: str) -> None:
        self.api.destroy(self.cluster_id, ctx)


def _text(answer: Any) -> str:
    results = answer.results
    if results is None or str(getattr(results.result_type, "value", "")) != "text":
        raise RuntimeError(f"the command did not finish with text: {answer}")
    return str(results.data)


async def _kernel_start(kernel_name: str) -> tuple[Any, Any, float]:
    """Start a Spark kernel and time it until its first Spark command answered."""
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(kernel_name=kernel_name)
    began = time.perf_counter()
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        reply = await kc.execute_interactive(FIRST, output_hook=_quiet, timeout=180)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"Spark was not usable in the kernel: {reply['content']}")
    except BaseException:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
        raise
    return km, kc, time.perf_counter() - began


async def _kernel_round_trips(kc: Any, n: int) -> list[float]:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        reply = await kc.execute_interactive(
            COMMAND, store_history=False, output_hook=_quiet, timeout=120
        )
        times.append(time.perf_counter() - began)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"{COMMAND} failed in the kernel: {reply['content']}")
    return times


def measure(kernel_name: str, rest: Rest, starts: int, runs: int) -> dict[str, Any]:
    """Kernel and REST 1.2 measurements interleaved (one of each in turn), so that a load that
    changes during the run weighs on both alike."""
    # Warm-up: Spark is up and REST 1.2 has run the command once.
    ctx = rest.context()
    assert rest.run_polled(ctx, COMMAND) == "1000000"
    rest.destroy(ctx)

    def rest_start() -> float:
        began = time.perf_counter()
        ctx = rest.context()
        assert rest.run_polled(ctx, FIRST) == "1"
        took = time.perf_counter() - began
        rest.destroy(ctx)
        return took

    def rest_trip(ctx: str, run: Any) -> float:
        began = time.perf_counter()
        assert run(ctx, COMMAND) == "1000000"
        return time.perf_counter() - began

    async def interleaved() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {k: [] for k in ("ks", "rs", "kt", "rt", "sdk")}
        for i in range(starts + 1):  # the first of each is a warm-up
            km, kc, took = await _kernel_start(kernel_name)
            rest_took = await asyncio.to_thread(rest_start)
            if i > 0:
                out["ks"].append(took)
                out["rs"].append(rest_took)
            if i < starts:
                kc.stop_channels()
                await km.shutdown_kernel()
        ctx = await asyncio.to_thread(rest.context)
        try:
            for i in range(runs + 3):  # three warm-up runs of each
                [kernel_took] = await _kernel_round_trips(kc, 1)
                rest_took = await asyncio.to_thread(rest_trip, ctx, rest.run_polled)
                if i >= 3:
                    out["kt"].append(kernel_took)
                    out["rt"].append(rest_took)
            for _ in range(max(3, runs // 4)):  # the SDK's waiter sleeps about 1 s per poll
                out["sdk"].append(await asyncio.to_thread(rest_trip, ctx, rest.run_sdk))
        finally:
            await asyncio.to_thread(rest.destroy, ctx)
            kc.stop_channels()
            await km.shutdown_kernel()
        return out

    got = asyncio.run(interleaved())
    return {
        "kernel": {"start": _summary(got["ks"]), "round_trip": _summary(got["kt"])},
        "rest_1_2": {
            "start": _summary(got["rs"]),
            "round_trip_polled_10ms": _summary(got["rt"]),
            "round_trip_sdk_waiter": _summary(got["sdk"]),
        },
    }


def _default_pyspark() -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return os.environ.get("DBJL_TEST_PYSPARK_PATH") or str(
        cache / "databrickslabs-jupyterlab-tests" / "pyspark-4.3.0"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyspark-path", default=_default_pyspark())
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    pyspark = Path(args.pyspark_path).expanduser().absolute()
    if not (pyspark / "pyspark" / "__init__.py").is_file():
        sys.exit(f"no pyspark in {pyspark}: pip install --target {pyspark} pyspark")
    if shutil.which("java") is None:
        sys.exit("Spark needs Java 17 or newer on the PATH")
    load_before = os.getloadavg()[0]

    home = private_home("dbjl-bench-spark-")
    from databrickslabs_jupyterlab import kernelspecs

    extra = ["--pyspark-path", str(pyspark), "--state-dir", str(home / "simulator")]
    try:
        with simulator_process(home, PROFILE, 1, extra, stop_timeout=30) as sim:
            hosts, driver_python = sim.hosts, sim.driver_python
            [cluster_id] = list(hosts)
            (home / ".ssh" / "config").write_text(hosts[cluster_id] + "\n")
            kernel_name = kernelspecs.create_kernelspec(
                PROFILE,
                cluster_id,
                "bench-spark",
                env="bench",
                overrides={"driver_python": driver_python},
                kernel_env={"PYTHONPATH": str(pyspark)},  # the driver's pyspark, as on Databricks
            )
            results = measure(kernel_name, Rest(cluster_id), args.starts, args.runs)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    kernel, rest = results["kernel"], results["rest_1_2"]

    def ratio(a: dict[str, float], b: dict[str, float]) -> float:
        return round(a["median_s"] / b["median_s"], 3)

    report = {
        "benchmark": "spark_attach",
        "machine": machine(load_before),
        "pyspark": str(pyspark),
        "command": COMMAND,
        **results,
        "ratios_kernel_to_rest_1_2": {
            "start": ratio(kernel["start"], rest["start"]),
            "round_trip_vs_polled_10ms": ratio(
                kernel["round_trip"], rest["round_trip_polled_10ms"]
            ),
            "round_trip_vs_sdk_waiter": ratio(kernel["round_trip"], rest["round_trip_sdk_waiter"]),
        },
        "notes": [
            "start: the kernel's time includes the gateway hand-off (a REST 1.2 context of its "
            "own on the cluster) and the SSH kernel start; the baseline is a REST 1.2 context "
            "until the same first command finished",
            "both sides use the cluster's one Spark application (the proof test shows it)",
        ],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
