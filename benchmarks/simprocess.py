"""What the kernel benchmarks share: a private HOME for everything the product reads and writes,
the workspace simulator in a process of its own (like a real driver: its SSH server's work
must not compete with the measuring side for one interpreter), and the report's machine entry."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def private_home(prefix: str) -> Path:
    """A new temporary HOME with ``.ssh``, and the environment pointed at it (the Databricks
    config, the state folder, the SSH config, Jupyter's data and runtime folders)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
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
    return home


def machine(load_before: float) -> dict[str, Any]:
    """The report's ``machine`` entry: Python, CPUs, platform, and the 1-minute load average
    before the run (``load_before``) and now, after it."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_1m": {
            "before": round(load_before, 2),
            "after": round(os.getloadavg()[0], 2),
        },
    }


@dataclass
class SimulatorProcess:
    """A started simulator: its ``Host <cluster_id>`` blocks in start order, and the driver's
    Python."""

    process: subprocess.Popen[str]
    hosts: dict[str, str] = field(default_factory=dict)
    driver_python: str = ""


@contextmanager
def simulator_process(
    home: Path, profile: str, clusters: int, extra: Sequence[str] = (), stop_timeout: float = 15
) -> Iterator[SimulatorProcess]:
    """``python -m databrickslabs_jupyterlab.simulator`` with ``clusters`` running clusters and
    the profile written into ``home``; stopped with SIGINT (then killed) on leaving."""
    process = subprocess.Popen(
        [
            sys.executable, "-m", "databrickslabs_jupyterlab.simulator",
            "--clusters", str(clusters), "--running", "--time-scale", "0.1",
            "--autotermination-minutes", "0", "--write-profile", profile,
            "--config-file", str(home / ".databrickscfg"), "--ssh-dir", str(home / ".ssh"),
            *extra,
        ],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    sim = SimulatorProcess(process)
    try:
        current = None
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("# simulator ready"):
                break
            if line.startswith("Host "):
                current = line.split()[1]
                sim.hosts[current] = line
            elif line.startswith("  ") and current:
                sim.hosts[current] += line
            elif line.startswith("export DBJL_DRIVER_PYTHON="):
                sim.driver_python = line.strip().split("=", 1)[1]
        else:
            raise RuntimeError("the simulator did not start")
        yield sim
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
