"""Shutdowns that always finish, run as a user does, in subprocesses: the demo stopped with
Ctrl-C while nobody reads its output any more.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from databrickslabs_jupyterlab import demo
from tests.test_demo import Lab, _free_port, _processes_mentioning
from tests.test_provisioner import _alive

pytestmark = pytest.mark.timeout(300)

#: The finding's bound for a shutdown (whatever the cluster, workspace or network do) ...
SHUTDOWN_WITHIN = 15.0
#: ... and the margin a loaded 2-core machine gets on top (Python start-up, scheduling).
MARGIN = 10.0


def _wait_until(condition: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


# ------------------------------------------------------------------------------ the demo


@pytest.mark.slow
def test_demo_stops_everything_on_ctrl_c_when_its_output_pipe_is_gone(
    isolated_home: Path,
) -> None:
    """``demo 2>&1 | tee log``, then Ctrl-C: the terminal's SIGINT reaches tee too, so the demo's
    stdout is a broken pipe while it stops. JupyterLab and the remote kernel must still go."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "databrickslabs_jupyterlab",
            "demo",
            "--no-browser",
            "--time-scale",
            "0.1",
            "--port",
            str(port),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    root = isolated_home / ".databrickslabs_jupyterlab" / "demo"
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("Press Ctrl-C"):
                break
        url = next((ln.split(" ", 1)[1] for ln in lines if ln.startswith("JupyterLab: ")), None)
        assert url, "the demo printed no URL:\n" + "\n".join(lines)
        lab = Lab(url)
        nb = json.loads((root / "notebooks" / demo.NOTEBOOK).read_text())
        kernel = lab.json("POST", "/api/kernels", {"name": nb["metadata"]["kernelspec"]["name"]})
        result = asyncio.run(lab.execute(kernel["id"], "import os\nprint(os.getpid())", 120))
        assert result["reply"]["status"] == "ok", result
        kernel_pid = int(result["stdout"].strip())
        assert _alive(kernel_pid)
        labs = [p for p in _processes_mentioning("jupyterlab") if str(root) in p]
        assert labs, "no JupyterLab process of the demo"

        proc.stdout.close()  # tee is gone: every later write of the demo fails
        proc.send_signal(signal.SIGINT)
        # JupyterLab gets 20 s for a clean stop before it is killed; then the simulator stops.
        proc.wait(60)
        assert _wait_until(lambda: not _alive(kernel_pid), 30), "the remote kernel survived"
        assert _wait_until(lambda: _processes_mentioning(str(root)) == [], 30), (
            _processes_mentioning(str(root))
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for entry in _processes_mentioning(str(root)):  # never leave them to the next test
            os.kill(int(entry.split(":")[0]), signal.SIGKILL)
