"""What the server benchmarks share: a simulated workspace, a real ``jupyter server`` subprocess
with this extension (token auth), and a minimal keep-alive HTTP client."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from databrickslabs_jupyterlab.simulator import SimulatorThread, make_keypair  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port: int, token: str, method: str, path: str) -> dict[str, Any]:
    """One JSON request (a POST with an empty body); raises on an HTTP error."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=b"" if method == "POST" else None,
        headers={"Authorization": f"token {token}"},
    )
    with urllib.request.urlopen(request, timeout=70) as response:  # noqa: S310 - localhost
        return json.loads(response.read())


class Connection:
    """A minimal keep-alive HTTP/1.1 client, so the load generator costs little per request."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, path: str) -> tuple[int, bytes]:
        """GET ``path``: the status code and the body."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: token {self.token}\r\nConnection: keep-alive\r\n\r\n"
        )
        self.writer.write(request.encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)

    async def get(self, path: str) -> int:
        return (await self.request(path))[0]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def simulated_workspace(prefix: str, cluster_name: str) -> tuple[Path, SimulatorThread, str]:
    """A fresh home with the profile ``demo`` and one TERMINATED cluster that accepts its key."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    (home / ".ssh").mkdir(mode=0o700)
    sim = SimulatorThread(time_scale=0.1, state_dir=home / "sim")
    sim.start()
    identity = home / ".ssh" / "id_demo"
    cluster_id = sim.add_cluster(cluster_name, ssh_public_keys=[make_keypair(identity)])
    (home / ".databrickscfg").write_text(sim.profile_text("demo"))
    (home / ".ssh" / "config").write_text(sim.ssh_config_entry(cluster_id, str(identity)))
    return home, sim, cluster_id


def start_server(home: Path, sim: SimulatorThread) -> tuple[subprocess.Popen[bytes], int, str]:
    """``jupyter server`` with this extension on a free port; returns once it answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "DBJL_"))}
    env.update(
        HOME=str(home),
        DATABRICKS_CONFIG_FILE=str(home / ".databrickscfg"),
        DBJL_SSH_CONFIG=str(home / ".ssh" / "config"),
        DBJL_STATE_DIR=str(home / ".databrickslabs_jupyterlab"),
        DBJL_DRIVER_PYTHON=sim.driver_python,
        JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
    )
    port, token = free_port(), secrets.token_hex(16)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            f"--port={port}",
            "--ip=127.0.0.1",
            "--no-browser",
            "--allow-root",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={home}",
            "--ServerApp.jpserver_extensions={'databrickslabs_jupyterlab': True}",
            "--ServerApp.log_level=WARN",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "server.log", "wb"),  # noqa: SIM115 - lives as long as the server
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            http(port, token, "GET", "/api/status")
            return server, port, token
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                sys.stderr.write((home / "server.log").read_text())
                raise
            time.sleep(0.2)


def stop_server(server: subprocess.Popen[bytes] | None) -> None:
    if server is None:
        return
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)
