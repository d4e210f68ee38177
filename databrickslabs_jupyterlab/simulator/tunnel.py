"""The server side of the Databricks SSH tunnel on a simulated driver.

On Databricks, ``databricks ssh connect`` starts an SSH server on the cluster as a job, which
publishes its port; each connection then goes as a websocket through the workspace's driver
proxy (``/driver-proxy-api/o/<workspace_id>/<cluster_id>/<port>/ssh``) to an ``sshd -i`` on the
driver. The client key pair and the server's host key live in a secret scope, so both survive
a cluster restart; the server itself dies with the driver.

Here, :class:`TunnelServer` is that server for one cluster: ``start()`` stands for the job (and
hands out the secret scope's client key), and each websocket of :class:`DriverProxySsh` is
relayed to an SSH server connection over a socket pair. There is no TCP port at all: for a
cluster without a public IP the relay is the only way in. Sessions run as processes of the
simulated driver (same environment, activity and cleanup as classic SSH sessions).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import socket
from typing import TYPE_CHECKING, Any

import asyncssh
import tornado.web
import tornado.websocket

from .driver import _DriverSshServer

if TYPE_CHECKING:
    from . import Simulator
    from .lifecycle import SimCluster

#: The port the Databricks CLI's server tries first, and how many after it.
SERVER_PORT = 7772
SERVER_PORT_RANGE = 100
#: The Databricks Runtime the SSH tunnel needs (documented: 17.0 or above).
MIN_RUNTIME = (17, 0)


class TunnelError(Exception):
    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def runtime_version(spark_version: str) -> tuple[int, int] | None:
    """``17.3.x-scala2.13`` -> (17, 3); None when it names no version."""
    match = re.match(r"(\d+)\.(\d+)", spark_version or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


class _TunnelSshServer(_DriverSshServer):
    """Like the driver's sshd, but only the server's own account (and, for root, every local
    account of the driver) may log in, as with ``sshd -i`` run by that user."""

    def __init__(self, driver: Any, users: frozenset[str]) -> None:
        super().__init__(driver)
        self._users = users

    def begin_auth(self, username: str) -> bool:
        if username not in self._users and self._conn is not None:
            self._conn.set_authorized_keys(asyncssh.SSHAuthorizedKeys())
        return True


class TunnelServer:
    """The tunnel's SSH server of one cluster. Lives on the simulator's loop."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        #: The published port while the server runs (the driver is up and it was started).
        self.port: int | None = None
        self.user: str | None = None
        self.connections = 0
        # The secret scope: created on first use, kept across restarts.
        self._host_key: asyncssh.SSHKey | None = None
        self._client_key: asyncssh.SSHKey | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the secret scope ---------------------------------------------------------------------
    def client_key(self) -> tuple[str, str]:
        """The client key pair (OpenSSH private key text, public key line), made once."""
        if self._client_key is None:
            self._client_key = asyncssh.generate_private_key("ssh-ed25519")
        key = self._client_key
        private = key.export_private_key("openssh").decode()
        public = key.export_public_key("openssh").decode().strip()
        return private, public

    @property
    def host_key_text(self) -> str | None:
        if self._host_key is None:
            return None
        return self._host_key.export_public_key().decode().strip()

    # -- the server job ----------------------------------------------------------------------
    def default_user(self) -> str:
        """Who the server runs as: root on a dedicated single-user or no-isolation cluster,
        else an isolated ``spark-...`` account (a guess, see docs/simulator.md)."""
        cluster = self.cluster
        if cluster.tunnel_user:
            return cluster.tunnel_user
        if cluster.dedicated_single_user or cluster.data_security_mode == "NONE":
            return "root"
        return "spark-" + hashlib.sha256(cluster.cluster_id.encode()).hexdigest()[:8]

    def start(self) -> dict[str, Any]:
        """Start the server (once per driver start) and describe it: what the CLI learns from
        the job, the metadata file and the secret scope."""
        cluster = self.cluster
        if cluster.state != "RUNNING":
            raise TunnelError(
                400,
                "INVALID_STATE",
                f"Cluster {cluster.cluster_id} is not running "
                f"(state {cluster.state.capitalize()}).",
            )
        version = runtime_version(cluster.spec["spark_version"])
        if version is None or version < MIN_RUNTIME:
            shown = ".".join(map(str, version)) if version else cluster.spec["spark_version"]
            raise TunnelError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"The SSH server cannot run on Databricks Runtime {shown}: the SSH tunnel "
                f"needs Databricks Runtime {MIN_RUNTIME[0]}.{MIN_RUNTIME[1]} or above.",
            )
        started = self.port is None
        if started:
            if self._host_key is None:
                self._host_key = asyncssh.generate_private_key("ssh-ed25519")
            offset = int(hashlib.sha256(cluster.cluster_id.encode()).hexdigest(), 16)
            self.port = SERVER_PORT + offset % SERVER_PORT_RANGE
            self.user = self.default_user()
        private, public = self.client_key()
        return {
            "cluster_id": cluster.cluster_id,
            "port": self.port,
            "user": self.user,
            "started": started,
            "host_key": self.host_key_text,
            "client_private_key": private,
            "client_public_key": public,
        }

    def down(self) -> None:
        """The driver went down: the server and its relays are gone (processes are killed
        with the driver's)."""
        self.port = None
        self.user = None
        for task in list(self._tasks):
            task.cancel()

    async def channel(self) -> socket.socket:
        """A new SSH server connection; returns the socket to relay the client's bytes to."""
        assert self.user is not None and self._host_key is not None
        _, public = self.client_key()
        users = frozenset({self.user, "ubuntu"} if self.user == "root" else {self.user})
        driver = self.cluster.driver
        options = await asyncssh.SSHServerConnectionOptions.construct(
            server_factory=lambda: _TunnelSshServer(driver, users),
            server_host_keys=[self._host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(public),
            process_factory=driver._run_process,
            sftp_factory=True,
            allow_scp=True,
            encoding=None,
            login_timeout=30,
            keepalive_interval=0,
        )
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        task = asyncio.get_running_loop().create_task(driver._serve(theirs, options))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.connections += 1
        return ours


class DriverProxySsh(tornado.websocket.WebSocketHandler):
    """``GET /driver-proxy-api/o/<workspace_id>/<cluster_id>/<port>/ssh`` (a websocket):
    binary messages carry the SSH stream both ways."""

    def initialize(self, sim: Simulator) -> None:
        self.sim = sim
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None

    def check_origin(self, origin: str) -> bool:
        return True  # not a browser endpoint; the token decides

    def _refuse(self, status: int, error_code: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error_code": error_code, "message": message}))

    async def get(self, workspace_id: str, cluster_id: str, port: str) -> None:
        self.sim.calls["GET /driver-proxy-api/ssh"] += 1
        scheme, _, credential = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.sim._token_matches(credential.strip()):
            self._refuse(401, "UNAUTHENTICATED", "Invalid access token.")
            return
        cluster = self.sim._clusters.get(cluster_id)
        if workspace_id != self.sim.workspace_id or cluster is None:
            self._refuse(404, "RESOURCE_DOES_NOT_EXIST", f"Cluster {cluster_id} does not exist")
            return
        if (
            cluster.state != "RUNNING"
            or cluster.tunnel.port is None
            or str(cluster.tunnel.port) != port
        ):
            self._refuse(502, "BAD_GATEWAY", f"Nothing listens on port {port} of the driver.")
            return
        self.cluster = cluster
        await super().get(workspace_id, cluster_id, port)

    async def open(self, *args: str) -> None:
        sock = await self.cluster.tunnel.channel()
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        self._writer = writer
        self._pump = asyncio.get_running_loop().create_task(self._pump_out(reader))

    async def _pump_out(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self.write_message(data, binary=True)
        except (tornado.websocket.WebSocketClosedError, ConnectionError):
            pass
        finally:
            self.close()

    async def on_message(self, message: str | bytes) -> None:
        if self._writer is None:
            return
        data = message.encode() if isinstance(message, str) else message
        try:
            self._writer.write(data)
            await self._writer.drain()
        except ConnectionError:
            self.close()

    def on_close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        if self._pump is not None:
            self._pump.cancel()


def routes(sim: Simulator) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    return [(r"/driver-proxy-api/o/([^/]+)/([^/]+)/(\d+)/ssh", DriverProxySsh, {"sim": sim})]
