"""Kernel start and execute latency: a local ipykernel against the SSH provisioner.

Three kernels, measured in the same run on this machine:

* ``local``: the ordinary local ipykernel (jupyter_client's LocalProvisioner), the baseline;
* ``sshd``: our provisioner through Debian's OpenSSH sshd on localhost (skipped without sshd);
* ``simulator``: our provisioner through the workspace simulator's driver (asyncssh server).

For each: start-to-ready (``start_kernel`` until ``kernel_info`` answers; median of a few
starts after one warm-up start each) and the execute round trip of ``1+1`` (request until reply and idle, 200 times after a
warm-up; median and p99). Prints one JSON document with the ratios to the local kernel.
Everything runs in a temporary HOME; nothing of the user's configuration is read or written.

    python benchmarks/kernel_latency.py [--starts 5] [--executes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _start(kernel_name: str) -> tuple[Any, Any, float]:
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(kernel_name=kernel_name)
    began = time.perf_counter()
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    return km, kc, time.perf_counter() - began


def _quiet(_msg: dict) -> None:
    pass


async def _executes(kc: Any, n: int) -> list[float]:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        reply = await kc.execute_interactive(
            "1+1", store_history=False, output_hook=_quiet, timeout=30
        )
        times.append(time.perf_counter() - began)
        assert reply["content"]["status"] == "ok"
    return times


async def _measure_all(specs: dict[str, str], starts: int, executes: int) -> dict[str, Any]:
    """Starts and executes interleaved between the kernels, so that machine noise and drift
    hit all of them alike."""
    start_times: dict[str, list[float]] = {n: [] for n in specs}
    for _ in range(starts):
        for name, spec in specs.items():
            km, kc, took = await _start(spec)
            start_times[name].append(took)
            kc.stop_channels()
            await km.shutdown_kernel()
    kernels = {name: await _start(spec) for name, spec in specs.items()}
    for _km, kc, _ in kernels.values():
        await _executes(kc, 20)  # warm-up
    round_trips: dict[str, list[float]] = {n: [] for n in specs}
    block = 20
    for _ in range(0, executes, block):
        for name, (_km, kc, _) in kernels.items():
            round_trips[name] += await _executes(kc, block)
    results: dict[str, Any] = {}
    for name, (km, kc, _) in kernels.items():
        kc.stop_channels()
        began = time.perf_counter()
        await km.shutdown_kernel()
        rt = round_trips[name][:executes]
        results[name] = {
            "start_to_ready_s": {
                "median": round(statistics.median(start_times[name]), 4),
                "all": [round(t, 4) for t in start_times[name]],
            },
            "execute_round_trip_ms": {
                "n": len(rt),
                "median": round(statistics.median(rt) * 1000, 3),
                "p99": round(_percentile(rt, 99) * 1000, 3),
            },
            "shutdown_s": round(time.perf_counter() - began, 4),
        }
    return results


def _ratio(results: dict[str, Any], name: str) -> dict[str, float] | None:
    if name not in results or "local" not in results:
        return None
    base, other = results["local"], results[name]
    return {
        "round_trip_median": round(
            other["execute_round_trip_ms"]["median"] / base["execute_round_trip_ms"]["median"], 3
        ),
        "round_trip_p99": round(
            other["execute_round_trip_ms"]["p99"] / base["execute_round_trip_ms"]["p99"], 3
        ),
        "start": round(other["start_to_ready_s"]["median"] / base["start_to_ready_s"]["median"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--executes", type=int, default=200)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="dbjl-bench-"))
    (home / ".ssh").mkdir(mode=0o700)
    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "DBJL_", "JUPYTER_")):
            del os.environ[name]
    os.environ.update(
        {
            "HOME": str(home),
            "DATABRICKS_CONFIG_FILE": str(home / ".databrickscfg"),
            "DBJL_STATE_DIR": str(home / ".databrickslabs_jupyterlab"),
            "DBJL_SSH_CONFIG": str(home / ".ssh" / "config"),
            "JUPYTER_DATA_DIR": str(home / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(home / "jupyter-runtime"),
        }
    )

    from databrickslabs_jupyterlab import kernelspecs

    # The simulator runs in its own process, like a real driver: the SSH server's work must not
    # compete with the client side for this process's interpreter.
    sim = subprocess.Popen(
        [
            sys.executable, "-m", "databrickslabs_jupyterlab.simulator",
            "--clusters", "2", "--running", "--time-scale", "0.1",
            "--autotermination-minutes", "0", "--write-profile", "bench",
            "--config-file", str(home / ".databrickscfg"), "--ssh-dir", str(home / ".ssh"),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    sshd = None
    results: dict[str, Any] = {}
    notes: list[str] = []
    try:
        hosts: dict[str, str] = {}
        driver_python = ""
        current = None
        assert sim.stdout is not None
        for line in sim.stdout:
            if line.startswith("# simulator ready"):
                break
            if line.startswith("Host "):
                current = line.split()[1]
                hosts[current] = line
            elif line.startswith("  ") and current:
                hosts[current] += line
            elif line.startswith("export DBJL_DRIVER_PYTHON="):
                driver_python = line.strip().split("=", 1)[1]
        else:
            raise RuntimeError("the simulator did not start")
        sim_cluster, sshd_cluster = list(hosts)[:2]
        ssh_config = hosts[sim_cluster] + "\n"
        specs = {
            "simulator": kernelspecs.create_kernelspec(
                "bench",
                sim_cluster,
                "bench-sim",
                env="bench",
                overrides={"driver_python": driver_python},
            )
        }
        if os.access("/usr/sbin/sshd", os.X_OK):
            from tests.fixtures.sshd import Sshd

            folder = Path(tempfile.mkdtemp(prefix="dbjl-bench-sshd-"))
            os.chmod(folder, 0o700)
            sshd = Sshd(folder)
            sshd.start()
            ssh_config += (
                f"Host {sshd_cluster}\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
                f"  User {sshd.user}\n  IdentityFile {sshd.identity_file}\n"
            )
            specs["sshd"] = kernelspecs.create_kernelspec(
                "bench",
                sshd_cluster,
                "bench-sshd",
                env="bench",
                overrides={"driver_python": sys.executable, "sudo": "never"},
            )
        else:
            notes.append("sshd not installed: the sshd kernel was skipped")
        (home / ".ssh" / "config").write_text(ssh_config)

        # One start of each first: builds the workspace client and warms file caches.
        async def warm_up() -> None:
            for spec in ["python3", *specs.values()]:
                km, kc, _ = await _start(spec)
                kc.stop_channels()
                await km.shutdown_kernel()

        asyncio.run(warm_up())
        results.update(
            asyncio.run(_measure_all({"local": "python3", **specs}, args.starts, args.executes))
        )
    finally:
        if sshd is not None:
            sshd.stop()
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(timeout=15)
        except subprocess.TimeoutExpired:
            sim.kill()
        shutil.rmtree(home, ignore_errors=True)

    report = {
        "benchmark": "kernel_latency",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "code": "1+1",
        "kernels": results,
        "ratios_to_local": {n: _ratio(results, n) for n in results if n != "local"},
        "targets": {"round_trip_median_ratio_max": 1.3, "start_ratio_max": 1.6},
        "notes": notes
        + ["ssh-ipykernel (the reference's kernel) was not measured: not installable here"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
