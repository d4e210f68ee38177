"""The driver-side watchdog: a remote kernel whose controlling side is gone ends by itself.

The controlling side is a real kernel manager in a subprocess (``CONTROLLER``), killed or frozen
as a Jupyter server is by ``kill -9``, a laptop's sleep or a network gone for good. The kernel
runs on the simulated driver (same machine), so its processes and run folder are looked at
through /proc; the driver's processes carry its mark in their environment.
"""

# ruff: noqa: F811 - the fixtures of test_provisioner are imported by name

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

from databrickslabs_jupyterlab import remotekernel
from databrickslabs_jupyterlab.config import driver_config
from databrickslabs_jupyterlab.settings import DEFAULT_WATCHDOG_GRACE, DriverSettings
from tests.test_provisioner import (  # noqa: F401 - fixtures used by name
    _alive,
    _set_spec_env,
    running_cluster,
    sim_kernel_no_spark,
)

pytestmark = pytest.mark.timeout(180)

#: The grace the tests give the watchdog, and what a loaded machine gets on top.
GRACE = 3.0
MARGIN = 20.0

CONTROLLER = r"""
import asyncio, json, sys
from jupyter_client.manager import AsyncKernelManager

async def main():
    km = AsyncKernelManager(kernel_name=sys.argv[1])
    await km.start_kernel()
    prov = km.provisioner
    info = await prov.get_provisioner_info()
    info["connection_info"] = {
        k: v.decode() if isinstance(v, bytes) else v for k, v in info["connection_info"].items()
    }
    print(json.dumps(info), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _driver_processes(simulator: Any, cluster_id: str) -> dict[int, str]:
    """PID -> command line of every live process of the cluster's simulated driver."""
    name, value = simulator.cluster(cluster_id).driver.mark_env
    mark = f"{name}={value}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if mark not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if _alive(int(entry.name)):
            found[int(entry.name)] = cmdline[:200]
    return found


def _wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


@pytest.fixture
def controller(sim_kernel_no_spark: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Starts the controlling kernel manager in a subprocess (watchdog grace ``GRACE``)."""
    monkeypatch.setenv("DBJL_WATCHDOG_GRACE", str(GRACE))
    procs: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", CONTROLLER, sim_kernel_no_spark],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()


def _provisioner_info(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the controller could not start the kernel"
    return dict(json.loads(line))


def _started(proc: subprocess.Popen[str]) -> tuple[int, str]:
    info = _provisioner_info(proc)
    return int(info["pid"]), str(info["run_dir"])


def test_kernel_of_a_killed_server_ends_within_the_grace(
    controller: Any, running_cluster: Any
) -> None:
    proc = controller()
    pid, run_dir = _started(proc)
    bootstrap = _ppid(pid)
    assert _alive(pid) and _alive(bootstrap) and Path(run_dir).is_dir()

    proc.kill()  # SIGKILL: no shutdown, the SSH connection just closes
    proc.wait()
    killed = time.monotonic()
    assert _wait_until(lambda: not _alive(pid), GRACE + MARGIN), "the kernel outlived its grace"
    took = time.monotonic() - killed
    assert took >= GRACE * 0.8, f"the kernel went after {took:.1f} s, before its grace"
    assert _wait_until(lambda: not _alive(bootstrap), 10), "the launcher stayed"
    assert _wait_until(lambda: not Path(run_dir).exists(), 10), "the run folder stayed"


def test_heartbeats_keep_the_kernel_and_a_frozen_server_loses_it(
    controller: Any, running_cluster: Any
) -> None:
    """A server that stops answering (SIGSTOP: its TCP connection stays open, as after a laptop
    went to sleep) sends no heartbeat any more; while it runs, its heartbeats keep the kernel."""
    proc = controller()
    pid, run_dir = _started(proc)
    time.sleep(3 * GRACE)  # three graces: only heartbeats can keep the kernel alive so long
    assert _alive(pid), "the watchdog stopped a kernel whose server is alive"

    proc.send_signal(signal.SIGSTOP)
    assert _wait_until(lambda: not _alive(pid), GRACE + MARGIN), "the kernel outlived its grace"
    assert _wait_until(lambda: not Path(run_dir).exists(), 10), "the run folder stayed"


def test_a_reattached_provisioner_keeps_the_kernel_controlled(
    controller: Any, sim_kernel_no_spark: str, running_cluster: Any
) -> None:
    """Another process takes the kernel over (``load_provisioner_info``): its ``hold`` keeps the
    kernel after the first process was killed, and once it lets go the watchdog counts."""
    from jupyter_client.kernelspec import KernelSpecManager

    from databrickslabs_jupyterlab.provisioner import DatabricksSshProvisioner

    proc = controller()
    info = _provisioner_info(proc)
    pid, run_dir = int(info["pid"]), str(info["run_dir"])
    spec = KernelSpecManager().get_kernel_spec(sim_kernel_no_spark)

    async def scenario() -> None:
        prov = DatabricksSshProvisioner(kernel_id=info["kernel_id"], kernel_spec=spec)
        prov.connection_info = info["connection_info"]
        await prov.load_provisioner_info(info)
        assert prov.has_process and await prov.poll() is None
        proc.kill()  # the first controller goes for good
        await asyncio.sleep(3 * GRACE)
        assert _alive(pid), "the watchdog stopped a kernel held by a re-attached provisioner"
        await remotekernel.on_ssh_loop(prov._close_link())  # the second one lets go

    asyncio.run(scenario())
    assert _wait_until(lambda: not _alive(pid), GRACE + MARGIN), "the kernel outlived its grace"
    assert _wait_until(lambda: not Path(run_dir).exists(), 10), "the run folder stayed"


def test_client_gone_during_the_start_leaves_nothing_on_the_driver(
    controller: Any,
    sim_kernel_no_spark: str,
    running_cluster: Any,
    simulator: Any,
    tmp_path: Path,
) -> None:
    """The kernel is slow to come up (its import takes long); the client is killed meanwhile.
    The launcher must not wait for the kernel's ready timeout (60 s) with nobody left."""
    fake = tmp_path / "slow"
    fake.mkdir()
    (fake / "ipykernel_launcher.py").write_text("import time\ntime.sleep(120)\n")
    _set_spec_env(sim_kernel_no_spark, {"PYTHONPATH": str(fake)})
    cluster_id = running_cluster.cluster_id
    proc = controller()

    def launching() -> bool:
        return any(
            "ipykernel_launcher" in c for c in _driver_processes(simulator, cluster_id).values()
        )

    assert _wait_until(launching, 60), "the kernel never started on the driver"
    proc.kill()
    proc.wait()
    assert _wait_until(lambda: not _driver_processes(simulator, cluster_id), 15), _driver_processes(
        simulator, cluster_id
    )


def test_failed_start_leaves_nothing_on_the_driver(
    sim_kernel_no_spark: str,
    running_cluster: Any,
    simulator: Any,
    tmp_path: Path,
) -> None:
    """A module the kernel needs is missing on the driver: the start fails with its reason and
    nothing of it (launcher under sudo, kernel, run folder) stays."""
    fake = tmp_path / "broken"
    fake.mkdir()
    (fake / "ipykernel_launcher.py").write_text("import dbjl_no_such_module\n")
    _set_spec_env(sim_kernel_no_spark, {"PYTHONPATH": str(fake)})
    cluster_id = running_cluster.cluster_id
    before = set(Path("/tmp").glob("dbjl-kernel-*"))

    async def start() -> None:
        km = AsyncKernelManager(kernel_name=sim_kernel_no_spark)
        with pytest.raises(Exception, match="dbjl_no_such_module"):
            await km.start_kernel()

    asyncio.run(start())
    assert _wait_until(lambda: not _driver_processes(simulator, cluster_id), 15), _driver_processes(
        simulator, cluster_id
    )
    ours = [p for p in set(Path("/tmp").glob("dbjl-kernel-*")) - before if "dbjl_no" in str(p)]
    assert ours == []


# ------------------------------------------------------------------------------ the setting


def test_watchdog_grace_setting_follows_the_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    from traitlets.config import Config

    assert DriverSettings().watchdog_grace == DEFAULT_WATCHDOG_GRACE == 600
    config = Config({"DatabricksLabsDriver": {"watchdog_grace": 30.0}})
    assert driver_config(config).settings().watchdog_grace == 30
    monkeypatch.setenv("DBJL_WATCHDOG_GRACE", "45")
    assert driver_config(config).settings().watchdog_grace == 45
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv("DBJL_WATCHDOG_GRACE", bad)
        with pytest.raises(ValueError, match="(?i)watchdog_grace"):
            driver_config(config).settings()
    # A few heartbeats per grace, never a flood, never less than one per 30 s.
    assert remotekernel.heartbeat_interval(600) == 30
    assert remotekernel.heartbeat_interval(3) == 0.75
    assert remotekernel.heartbeat_interval(0.01) == 0.1
