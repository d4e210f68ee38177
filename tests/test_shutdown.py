"""Shutdowns that always finish, run as a user does, in subprocesses: the demo stopped with
Ctrl-C while nobody reads its output any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from databrickslabs_jupyterlab import demo, kernelspecs
from databrickslabs_jupyterlab.workspace import Workspace
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


# ------------------------------------------------------------------------------ a lost network


class Relay:
    """A TCP relay to ``upstream`` on a free local port. ``freeze()`` cuts the network the way a
    lost one is cut: bytes stop flowing both ways and new connections are accepted but never
    answered, while every socket stays open (no reset, no FIN reaches either side)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.frozen = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self._closed.set()
        for sock in [self._server, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self.frozen.is_set():
                continue  # accepted, never answered
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            self._sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if self.frozen.is_set() or self._closed.is_set():
                self._closed.wait()  # hold everything; the peer sees silence
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            try:
                dst.sendall(data)
            except OSError:
                return


@pytest.fixture
def relayed_cluster(simulator: Any, sim_profile: Any) -> Iterator[tuple[Any, Relay, Relay]]:
    """The simulator's cluster RUNNING, its workspace and driver reached only through relays."""

    async def start() -> None:
        ws = await Workspace.for_profile(sim_profile.name)
        await ws.start_cluster(sim_profile.cluster_id)

    asyncio.run(start())
    simulator.wait_state(sim_profile.cluster_id, "RUNNING", timeout=30)
    http_port = int(simulator.url.rsplit(":", 1)[1].strip("/"))
    http = Relay(("127.0.0.1", http_port))
    ssh = Relay(("127.0.0.1", simulator.cluster(sim_profile.cluster_id).ssh_port))
    config = sim_profile.config_file.read_text()
    sim_profile.config_file.write_text(
        config.replace(simulator.url, f"http://127.0.0.1:{http.port}")
    )
    entry = simulator.ssh_config_entry(sim_profile.cluster_id, str(sim_profile.identity_file))
    sim_profile.ssh_config.write_text(
        entry.replace(
            f"Port {simulator.cluster(sim_profile.cluster_id).ssh_port}", f"Port {ssh.port}"
        )
    )
    try:
        yield sim_profile, http, ssh
    finally:
        http.close()
        ssh.close()


def _start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``jupyter server`` with the extension (enabled by its installed config), like a user's."""
    port, token = _free_port(), "shutdown-test-token"
    root = folder / "notebooks"
    root.mkdir()
    log = folder / "server.log"
    argv = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        "--DatabricksLabsJupyterLab.steady_refresh_interval=0.5",
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    with open(log, "wb") as out:
        server = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/lab/?token={token}"
    lab = Lab(url)

    def ready() -> bool:
        assert server.poll() is None, log.read_text()
        try:
            return lab.request("GET", "/api/status")[0] == 200
        except OSError:
            return False

    assert _wait_until(ready, 60, 0.3), log.read_text()
    return server, url, log


def test_server_stops_within_bounds_while_the_network_to_the_driver_is_gone(
    relayed_cluster: tuple[Any, Relay, Relay], jupyter_dirs: Path, tmp_path: Path
) -> None:
    """SIGTERM to a Jupyter server with a remote kernel at the moment the network goes: the
    server must exit within SHUTDOWN_WITHIN seconds (+ MARGIN for a loaded machine) although
    neither the driver nor the workspace answers any more."""
    profile, http, ssh = relayed_cluster
    name = kernelspecs.create_kernelspec(
        profile.name, profile.cluster_id, "sim-cluster", env="shutdown", spark=False
    )
    server, url, log = _start_server(tmp_path)
    try:
        lab = Lab(url)
        # The status bar's view of the cluster: the server watches it (a refresh task).
        status = lab.json(
            "GET", f"/databrickslabs-jupyterlab/api/v1/clusters/{profile.name}/{profile.cluster_id}"
        )
        assert status["cluster_id"] == profile.cluster_id
        kernel = lab.json("POST", "/api/kernels", {"name": name})
        result = asyncio.run(lab.execute(kernel["id"], "import os\nprint(os.getpid())", 60))
        assert result["reply"]["status"] == "ok", result
        assert _alive(int(result["stdout"].strip()))

        http.freeze()
        ssh.freeze()
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(SHUTDOWN_WITHIN + MARGIN)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the server still ran {SHUTDOWN_WITHIN + MARGIN:g} s after SIGTERM:\n"
                + log.read_text()[-3000:]
            )
        took = time.monotonic() - started
        print(f"server stopped {took:.1f} s after SIGTERM with the network gone")
        assert "Kernel shutdown" in log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_stopped_server_does_not_wait_for_worker_threads_stuck_on_the_network() -> None:
    """What app.py arms when a server stops: at the interpreter's exit, a worker thread still
    blocked in a call (here a 60 s sleep in the default executor, like a workspace call on a
    network that went away) holds the exit no longer than the stop's time (EXIT_WITHIN)."""
    script = (
        "import asyncio, functools, threading, time\n"
        "from databrickslabs_jupyterlab import app\n"
        "async def main():\n"
        "    asyncio.get_running_loop().run_in_executor(None, time.sleep, 60)\n"
        "    began = time.monotonic() - app.EXIT_WITHIN + 1  # the stop began long ago\n"
        "    threading._register_atexit(functools.partial(app._bound_exit, began))\n"
        "    await asyncio.sleep(0.1)\n"
        # Like a Jupyter server: its loop stops, nothing shuts the executor down before exit.
        "asyncio.new_event_loop().run_until_complete(main())\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert took < 30, f"the exit waited {took:.1f} s for the stuck worker thread"
    assert b"leaving worker threads that still wait" in done.stderr
