"""Kernel start and execute latency: a local ipykernel against the SSH provisioner.

Five kernels, measured in the same run on this machine:

* ``local``: the ordinary local ipykernel (jupyter_client's LocalProvisioner), the baseline;
* ``sshd``: our provisioner through Debian's OpenSSH sshd on localhost (skipped without sshd);
* ``simulator``: our provisioner through the workspace simulator's driver (asyncssh server);
* ``simulator-spark``: the same with a Spark kernelspec, whose start also queues the silent
  Spark attach and asks the cluster for its gateway (no target: the baseline has no Spark);
* ``ssh-ipykernel-<version>``: the reference's kernel, ssh-ipykernel's launcher (``ssh`` client
  under pexpect), through the same sshd to the same Python, from a separate virtual environment
  (``--ssh-ipykernel-venv``; made and installed from PyPI once if missing; ``--no-peer`` skips it).

For each: start-to-ready (``start_kernel`` until ``kernel_info`` answers; median of a few
starts after one warm-up start each) and the execute round trip of ``1+1`` (request until reply and idle, 200 times after a
warm-up; median and p99). Prints one JSON document with the ratios to the local kernel.
Everything runs in a temporary HOME; nothing of the user's configuration is read or written
(only the ssh-ipykernel environment is kept, in ``~/.cache/dbjl-bench``).

    python benchmarks/kernel_latency.py [--starts 5] [--executes 200]
        [--ssh-ipykernel-venv PATH | --no-peer]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shlex
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

from benchmarks.simprocess import machine, private_home, simulator_process  # noqa: E402 - after sys.path


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
    try:
        await kc.wait_for_ready(timeout=60)
    except BaseException:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
        raise
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


# The reference's kernel, ssh-ipykernel: a launcher process that calls the ``ssh`` client.
PEER_REQUIREMENTS = ["ssh-ipykernel==1.2.3", "notebook<7"]  # its __init__ imports notebook.utils
PEER_KERNEL = "bench-ssh-ipykernel"
PEER_REMOTE_FILES = "/tmp/.ssh_ipykernel_*.json"  # fixed in its kernel.py; never removed by it


def _peer_version(python: Path) -> str | None:
    if not python.exists():
        return None
    try:
        probe = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m, ssh_ipykernel; print(m.version('ssh-ipykernel'))"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return probe.stdout.strip() if probe.returncode == 0 else None


def _peer_venv(venv: Path) -> tuple[str | None, str]:
    """ssh-ipykernel's version in ``venv``, made and installed first if missing; else None and why."""
    python = venv / "bin" / "python"
    version = _peer_version(python)
    if version:
        return version, ""
    log = venv.with_name(f"{venv.name}-install.log")
    print(
        f"kernel_latency: installing {' '.join(PEER_REQUIREMENTS)} into {venv}, once"
        f" (pip output: {log}) ...",
        file=sys.stderr, flush=True,
    )  # fmt: skip
    steps = [
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", *PEER_REQUIREMENTS]
    ]
    if not python.exists():
        steps.insert(0, [sys.executable, "-m", "venv", str(venv)])
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            for step in steps:
                done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=900)
                if done.returncode != 0:
                    out.flush()
                    lines = [line for line in log.read_text().splitlines() if line.strip()]
                    last = lines[-1].strip() if lines else "no output"
                    return None, f"`{shlex.join(step[2:])}` exited {done.returncode}: {last}"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    version = _peer_version(python)
    return (
        (version, "")
        if version
        else (None, f"installed, but ssh_ipykernel does not import (see {log})")
    )


def _peer_spec(
    home: Path, sshd: Any, venv: Path, alias: str, config_file: Path
) -> tuple[str, dict]:
    """Installs ssh-ipykernel's kernelspec in the private data dir, against ``sshd`` as ``alias``;
    returns the ssh config block for the alias and the spec."""
    from jupyter_client.kernelspec import KernelSpecManager

    ssh = shutil.which("ssh")
    if ssh is None:
        raise RuntimeError("no ssh client on PATH")
    # What the reference's `dj -k` did with ssh-keyscan: the host key in known_hosts before the
    # launcher's first `ssh`, which would otherwise fail (no tty) or ask on its pexpect pty.
    known_hosts = home / ".ssh" / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_public_key}\n")
    # OpenSSH finds ~/.ssh through the passwd entry, not $HOME: the launcher's first `ssh <alias>`
    # (no -F) would read the user's real config. A wrapper first on its PATH names ours.
    bin_dir = home / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "ssh"
    wrapper.write_text(
        f'#!/bin/sh\nexec {shlex.quote(ssh)} -F {shlex.quote(str(config_file))} "$@"\n'
    )
    wrapper.chmod(0o755)
    # It runs <prefix>/bin/python on the remote side: the Python the other kernels use.
    prefix = Path(sys.prefix)
    if not os.path.exists(prefix / "bin" / "python") or not os.path.samefile(
        prefix / "bin" / "python", sys.executable
    ):
        prefix = home / "remote-python"
        (prefix / "bin").mkdir(parents=True, exist_ok=True)
        (prefix / "bin" / "python").symlink_to(sys.executable)
    spec = {
        "argv": [
            str(venv / "bin" / "python"), "-m", "ssh_ipykernel", "--host", alias,
            "--python", str(prefix), "--timeout", "5",
            # 1.2.3 fails to start without --env (an unbound local); the reference always gave one.
            "--env", "DBJL_BENCH=ssh-ipykernel", "-f", "{connection_file}",
        ],
        "display_name": f"ssh-ipykernel {alias}",
        "language": "python",
        "env": {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "kernel.json").write_text(json.dumps(spec, indent=2))
        KernelSpecManager().install_kernel_spec(tmp, PEER_KERNEL, user=True, replace=True)
    block = (
        f"Host {alias}\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.identity_file}\n  IdentitiesOnly yes\n  BatchMode yes\n"
        f"  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking yes\n"
        "  ConnectTimeout 5\n  ServerAliveInterval 30\n  ServerAliveCountMax 5760\n"
    )
    return block, spec


def _peer_remote_files(before: set[str]) -> list[str]:
    """The remote connection files (here on this machine) that the peer's starts wrote."""
    found = []
    for path in sorted(set(glob.glob(PEER_REMOTE_FILES)) - before):
        try:
            if json.loads(Path(path).read_text()).get("kernel_name") == PEER_KERNEL:
                found.append(path)
        except (OSError, ValueError):
            pass
    return found


def _processes_naming(markers: list[str]) -> dict[int, str]:
    """Processes other than this one whose command line holds one of ``markers``."""
    try:
        listing = subprocess.run(
            ["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in listing.splitlines():
        pid, _, cmd = line.strip().partition(" ")
        if pid.isdigit() and int(pid) != os.getpid() and any(m in f"{cmd} " for m in markers):
            found[int(pid)] = cmd
    return found


def _peer_cleanup(alias: str, files_before: set[str]) -> dict[str, Any]:
    """After the peer's kernels are shut down: its launchers, their ssh children and the remote
    ipykernels must be gone (given 10 s). Whatever is left is reported, then ended; the remote
    connection files are removed."""
    files = _peer_remote_files(files_before)
    markers = [f" {alias} ", *files]
    deadline = time.monotonic() + 10
    left = _processes_naming(markers)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _processes_naming(markers)
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    for path in files:
        Path(path).unlink(missing_ok=True)
    return {
        "left_behind": [cmd[:200] for cmd in left.values()],
        "remote_connection_files_removed": len(files),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--executes", type=int, default=200)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    parser.add_argument(
        "--ssh-ipykernel-venv",
        type=Path,
        default=cache / "dbjl-bench" / "ssh-ipykernel",
        help="virtual environment with ssh-ipykernel (made if missing; default: %(default)s)",
    )
    parser.add_argument("--no-peer", action="store_true", help="do not measure ssh-ipykernel")
    args = parser.parse_args()

    notes: list[str] = []
    have_sshd = os.access("/usr/sbin/sshd", os.X_OK)
    peer_venv = args.ssh_ipykernel_venv.expanduser().absolute()
    peer_version = None
    if args.no_peer:
        notes.append("ssh-ipykernel (the reference's kernel) was not measured: --no-peer")
    elif not have_sshd:
        notes.append("ssh-ipykernel (the reference's kernel) was not measured: it needs sshd")
    else:
        # Before HOME is replaced, so that pip runs with the user's own settings.
        peer_version, why = _peer_venv(peer_venv)
        if peer_version is None:
            notes.append(f"ssh-ipykernel (the reference's kernel) was not measured: {why}")
    load_before = os.getloadavg()[0]

    home = private_home("dbjl-bench-")

    from databrickslabs_jupyterlab import kernelspecs

    sshd = None
    sshd_folder = None
    results: dict[str, Any] = {}
    peer: dict[str, Any] = {}
    peer_name = f"ssh-ipykernel-{peer_version}"
    peer_alias = f"{home.name}-ssh-ipykernel"
    peer_files_before = set(glob.glob(PEER_REMOTE_FILES))
    try:
        with simulator_process(home, "bench", 2) as sim:
            hosts, driver_python = sim.hosts, sim.driver_python
            sim_cluster, sshd_cluster = list(hosts)[:2]
            ssh_config = hosts[sim_cluster] + "\n"
            # Like for like: the baseline and the peer attach no Spark, so the measured kernels do
            # not either; "simulator-spark" shows what a Spark kernel's start adds (the silent
            # attach queued before the kernel counts as started, the gateway hand-off through a
            # REST 1.2 context), without a target.
            specs = {
                "simulator": kernelspecs.create_kernelspec(
                    "bench",
                    sim_cluster,
                    "bench-sim",
                    env="bench",
                    overrides={"driver_python": driver_python},
                    spark=False,
                ),
            }
            # Beside the first (create_kernelspec keeps one spec per cluster and profile).
            spark_spec = kernelspecs.kernel_json(
                "bench", sim_cluster, "bench-sim", "bench", {"driver_python": driver_python}
            )
            spark_dir = home / "spark-spec"
            spark_dir.mkdir()
            (spark_dir / "kernel.json").write_text(json.dumps(spark_spec))
            specs["simulator-spark"] = kernelspecs.kernel_name(spark_spec["display_name"])
            from jupyter_client.kernelspec import KernelSpecManager

            KernelSpecManager().install_kernel_spec(
                str(spark_dir), specs["simulator-spark"], user=True
            )
            if have_sshd:
                from tests.fixtures.sshd import Sshd

                sshd_folder = Path(tempfile.mkdtemp(prefix="dbjl-bench-sshd-"))
                os.chmod(sshd_folder, 0o700)
                sshd = Sshd(sshd_folder)
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
                    spark=False,
                )
                if peer_version:
                    config_file = home / ".ssh" / "config"
                    try:
                        block, peer_spec = _peer_spec(
                            home, sshd, peer_venv, peer_alias, config_file
                        )
                    except (OSError, RuntimeError) as exc:
                        notes.append(f"{peer_name} was not measured: {exc}")
                    else:
                        ssh_config += block
                        specs[peer_name] = PEER_KERNEL
                        peer.update(
                            {"name": peer_name, "venv": str(peer_venv), "argv": peer_spec["argv"]}
                        )
                        notes.append(
                            f"{peer_name}: its `ssh` calls go through a wrapper that adds -F with the"
                            " private config (OpenSSH reads ~/.ssh from the passwd entry, not $HOME);"
                            " the sshd's host key is put in a private known_hosts beforehand, as the"
                            " reference's ssh-keyscan did"
                        )
            else:
                notes.append("sshd not installed: the sshd kernel was skipped")
            (home / ".ssh" / "config").write_text(ssh_config)

            # One start of each first: builds the workspace client and warms file caches.
            # The peer is left out, with the reason in the notes, if it does not start.
            async def warm_up() -> None:
                for spec in ["python3", *specs.values()]:
                    try:
                        km, kc, _ = await _start(spec)
                    except Exception as exc:
                        if spec != PEER_KERNEL:
                            raise
                        del specs[peer_name]
                        notes.append(f"{peer_name} was not measured: it did not start ({exc!r})")
                        continue
                    kc.stop_channels()
                    await km.shutdown_kernel()

            asyncio.run(warm_up())
            results.update(
                asyncio.run(_measure_all({"local": "python3", **specs}, args.starts, args.executes))
            )
    finally:
        if peer:
            peer.update(_peer_cleanup(peer_alias, peer_files_before))
        if sshd is not None:
            sshd.stop()
        if sshd_folder is not None:
            shutil.rmtree(sshd_folder, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)

    report = {
        "benchmark": "kernel_latency",
        "machine": machine(load_before),
        "code": "1+1",
        "kernels": results,
        "ratios_to_local": {n: _ratio(results, n) for n in results if n != "local"},
        "targets": {"round_trip_median_ratio_max": 1.3, "start_ratio_max": 1.6},
        "peer": peer or None,
        "notes": notes,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
