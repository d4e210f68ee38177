"""A Databricks workspace simulator for tests and demos.

A real HTTP server speaking the REST subset the product uses (through the unmodified
databricks-sdk), a faithful cluster lifecycle, and a real SSH server per running cluster that
accepts only the cluster's ``ssh_public_keys`` and runs real processes. Controls let tests and
demos terminate clusters, fail API calls, add latency and break SSH on purpose.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import hmac
import json
import random
import re
import secrets
import shutil
import string
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil

from .api import make_app
from .driver import SSH_MODES, ensure_driver_env, free_port
from .keys import make_keypair
from .lifecycle import ACCESS_MODES, CREATOR, SimCluster
from .oidc import CLI_CLIENT_ID, Issuer
from .policies import NO_SSH_KEYS, ClusterPolicy, validate_definition

__all__ = [
    "ACCESS_MODES",
    "NO_SSH_KEYS",
    "SSH_MODES",
    "SimCluster",
    "Simulator",
    "SimulatorThread",
    "make_keypair",
]

_INITIAL_STATES = ("TERMINATED", "RUNNING", "PENDING")


def default_state_dir() -> Path:
    return Path("~/.cache/databrickslabs_jupyterlab/simulator").expanduser()


class Simulator:
    """The workspace and its clusters. Lives on one asyncio loop."""

    def __init__(
        self,
        *,
        token: str | None = None,
        time_scale: float = 1.0,
        state_dir: str | Path | None = None,
        seed: int | None = None,
        pyspark_path: str | Path | None = None,
        spark: bool | None = None,
        public_ip: bool = True,
        oauth_token_lifetime: float = 3600.0,
    ) -> None:
        """``public_ip=False``: the workspace uses secure cluster connectivity, so its clusters
        (unless :meth:`add_cluster` says otherwise) have no ``driver.public_dns`` and no
        reachable sshd. ``pyspark_path``: a folder holding pyspark (``pip install --target``), put on the
        driver's PYTHONPATH; the driver then runs one Spark application per cluster start.
        ``spark=True`` runs Spark with the driver Python's own pyspark; without either, no JVM
        is ever started. ``oauth_token_lifetime``: seconds an OAuth access token is good for
        (Databricks: one hour; short ones make clients refresh)."""
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self._rng = random.Random(seed)
        self.token = token or "dapi" + "".join(self._rng.choices("0123456789abcdef", k=32))
        if seed is None and token is None:
            self.token = "dapi" + secrets.token_hex(16)
        self.time_scale = time_scale
        self.pyspark_path = str(Path(pyspark_path).expanduser()) if pyspark_path else None
        self.spark = bool(spark) if spark is not None else self.pyspark_path is not None
        self.state_dir = Path(state_dir).expanduser() if state_dir else default_state_dir()
        self.driver_python = str(self.state_dir / "driver" / "python" / "bin" / "python")
        self.workspace_id = str(self._rng.randint(10**15, 10**16 - 1))
        self.latency = 0.0
        #: Seconds announced in ``Retry-After`` of injected 429/503 answers: Databricks' 1 s,
        #: scaled like every other duration (the SDK waits this plus up to 1 s of jitter).
        self.retry_after = max(0, round(time_scale))
        self.calls: collections.Counter[str] = collections.Counter()
        self.url = ""
        self.host = "127.0.0.1"
        self.public_ip = public_ip
        self._clusters: dict[str, SimCluster] = {}
        self.oidc = Issuer(oauth_token_lifetime)
        self.policies: dict[str, ClusterPolicy] = {}
        self._failures: list[tuple[int, str | None]] = []
        self._server: tornado.httpserver.HTTPServer | None = None
        self._bin_dir: Path | None = None
        # Homes of the simulated drivers: private to this instance, removed by stop().
        self._runtime: Path | None = Path(tempfile.mkdtemp(prefix="dbjl-sim-"))
        self._started = False

    # -- life --------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        python, bin_dir = await asyncio.to_thread(ensure_driver_env, self.state_dir)
        self.driver_python = str(python)
        self._bin_dir = bin_dir
        sockets = tornado.netutil.bind_sockets(port, host)
        self._server = tornado.httpserver.HTTPServer(make_app(self))
        self._server.add_sockets(sockets)
        bound = sockets[0].getsockname()[1]
        self.host = host
        self.url = f"http://{host}:{bound}"
        self._started = True
        for cluster in self._clusters.values():
            if cluster.state == "RUNNING" and cluster.driver_start is None:
                cluster.boot_now()
            elif cluster.state == "PENDING" and cluster._task is None:
                cluster.state = "TERMINATED"
                cluster.start()

    async def stop(self) -> None:
        """Stop HTTP and every driver; kill all processes started over SSH."""
        if self._server is not None:
            self._server.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.close_all_connections(), 2)
            self._server = None
        await asyncio.gather(
            *(c.shutdown() for c in self._clusters.values()), return_exceptions=True
        )
        if self._runtime is not None:
            await asyncio.to_thread(shutil.rmtree, self._runtime, True)
            self._runtime = None
        self._started = False

    # -- clusters ----------------------------------------------------------------------------
    def _new_cluster_id(self) -> str:
        stamp = time.strftime("%m%d-%H%M%S", time.gmtime())
        while True:
            suffix = "".join(self._rng.choices(string.ascii_lowercase + string.digits, k=8))
            cluster_id = f"{stamp}-{suffix}"
            if cluster_id not in self._clusters:
                return cluster_id

    def add_cluster(
        self,
        name: str,
        *,
        cluster_id: str | None = None,
        state: str = "TERMINATED",
        ssh_public_keys: Iterable[str] = (),
        autotermination_minutes: int = 120,
        spark_version: str = "15.4.x-scala2.12",
        num_workers: int = 0,
        data_security_mode: str = "SINGLE_USER",
        single_user_name: str | None = CREATOR,
        public_ip: bool | None = None,
        policy: str | dict[str, Any] | None = None,
        tunnel_user: str | None = None,
    ) -> str:
        """Add a cluster; with ``state="RUNNING"`` its driver listens when this returns
        (or when :meth:`start` runs, if the simulator is not started yet).

        ``data_security_mode``: ``SINGLE_USER`` (dedicated; ``single_user_name`` names its user,
        None for a group-dedicated cluster), ``USER_ISOLATION`` (standard), ``NONE`` or
        another API value. ``public_ip=False``: no ``driver.public_dns``, classic SSH out of
        reach (default: the simulator's ``public_ip``). ``policy``: a policy id from
        :meth:`add_policy`, or a definition for a new policy (e.g. ``NO_SSH_KEYS``).
        ``tunnel_user``: the account the SSH tunnel's server runs as (default by access mode:
        root for dedicated single-user and no-isolation clusters)."""
        if state not in _INITIAL_STATES:
            raise ValueError(f"state must be one of {', '.join(_INITIAL_STATES)}")
        if isinstance(policy, dict):
            policy = self.add_policy(f"policy of {name}", policy)
        if policy is not None and policy not in self.policies:
            raise ValueError(f"no cluster policy {policy}")
        cluster_id = cluster_id or self._new_cluster_id()
        if cluster_id in self._clusters:
            raise ValueError(f"cluster {cluster_id} exists already")
        cluster = SimCluster(
            cluster_id,
            name,
            ssh_port=free_port(),
            time_scale=self.time_scale,
            rng=self._rng,
            ssh_public_keys=ssh_public_keys,
            autotermination_minutes=autotermination_minutes,
            spark_version=spark_version,
            num_workers=num_workers,
            data_security_mode=data_security_mode,
            single_user_name=single_user_name,
            public_ip=self.public_ip if public_ip is None else public_ip,
            policy_id=policy,
            tunnel_user=tunnel_user,
            bin_dir=lambda: self._bin_dir,
            home_dir=self._home_for(cluster_id),
        )
        cluster.runtime.pyspark_path = self.pyspark_path
        cluster.runtime.spark_enabled = self.spark
        cluster.seed_history(state)
        self._clusters[cluster_id] = cluster
        if state == "RUNNING":
            cluster.state = "RUNNING"
            if self._started:
                cluster.boot_now()
        elif state == "PENDING":
            cluster.state = "PENDING"
            if self._started:
                cluster.state = "TERMINATED"
                cluster.start()
        return cluster_id

    def add_policy(self, name: str, definition: dict[str, Any]) -> str:
        """Add a cluster policy (see policies.py for the rules modelled); returns its id."""
        validate_definition(definition)
        while True:
            policy_id = "".join(self._rng.choices("0123456789ABCDEF", k=16))
            if policy_id not in self.policies:
                break
        self.policies[policy_id] = ClusterPolicy(policy_id, name, dict(definition))
        return policy_id

    def _home_for(self, cluster_id: str) -> Path:
        assert self._runtime is not None, "the simulator was stopped"
        return self._runtime / "clusters" / cluster_id / "home"

    def cluster(self, cluster_id: str) -> SimCluster:
        try:
            return self._clusters[cluster_id]
        except KeyError:
            raise KeyError(f"no simulated cluster {cluster_id}") from None

    @property
    def clusters(self) -> list[SimCluster]:
        return list(self._clusters.values())

    async def terminate(self, cluster_id: str, reason: str = "INACTIVITY") -> None:
        """RUNNING (or PENDING/RESTARTING) -> TERMINATING now, TERMINATED after 3 s x time_scale.
        Returns when TERMINATING has begun and the driver's processes are gone.
        ``reason`` is a termination reason code (INACTIVITY, USER_REQUEST, DRIVER_UNREACHABLE...)."""
        if not re.fullmatch(r"[A-Z][A-Z_]{0,63}", reason):
            raise ValueError("reason must be a termination reason code such as INACTIVITY")
        await self.cluster(cluster_id).terminate(reason)

    async def wait_state(self, cluster_id: str, state: str, timeout: float = 30) -> None:
        cluster = self.cluster(cluster_id)
        deadline = asyncio.get_running_loop().time() + timeout
        while cluster.state != state:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(
                    f"cluster {cluster_id} is {cluster.state}, not {state}, after {timeout} s"
                )
            event = cluster.changed
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def wait_spark(self, cluster_id: str, timeout: float = 120) -> dict[str, Any]:
        """Wait until the running driver's Spark application is ready (or failed to start);
        returns its description (``application_id``, ``ready_time``, ``error``, ``pid``)."""
        runtime = self.cluster(cluster_id).runtime
        if not runtime.spark_enabled:
            raise RuntimeError("this simulator runs no Spark (give it pyspark_path)")
        if not runtime.up:
            raise RuntimeError(f"cluster {cluster_id} has no running driver")
        await asyncio.wait_for(runtime.spark_ready.wait(), timeout)
        return runtime.describe()

    # -- controls ----------------------------------------------------------------------------
    def fail_next(self, n: int, status: int, path: str | None = None) -> None:
        """The next ``n`` API calls (whose path starts with ``path``, if given) answer ``status``."""
        if not 400 <= int(status) <= 599:
            raise ValueError("status must be an HTTP error status (4xx or 5xx)")
        self._failures.extend([(int(status), path)] * int(n))

    def clear_failures(self) -> int:
        """Forget the failures still queued by :meth:`fail_next`; returns how many there were."""
        count = len(self._failures)
        self._failures.clear()
        return count

    def _take_failure(self, path: str) -> int | None:
        for index, (status, prefix) in enumerate(self._failures):
            if prefix is None or path.startswith(prefix):
                del self._failures[index]
                return status
        return None

    def _token_matches(self, credential: str) -> bool:
        return hmac.compare_digest(credential.encode(), self.token.encode())

    def set_ssh_mode(self, cluster_id: str, mode: str) -> None:
        if mode not in SSH_MODES:
            raise ValueError(f"ssh mode must be one of {', '.join(SSH_MODES)}")
        driver = self.cluster(cluster_id).driver
        driver.mode = mode
        if mode != "hang":
            for sock in list(driver._hung):
                sock.close()
            driver._hung.clear()

    async def drop_ssh(self, cluster_id: str) -> int:
        """Abort live SSH connections of the cluster's driver; processes keep running."""
        return self.cluster(cluster_id).driver.drop()

    # -- profile text ------------------------------------------------------------------------
    def profile_text(self, profile: str = "demo") -> str:
        return f"[{profile}]\nhost = {self.url}\ntoken = {self.token}\n"

    def add_service_principal(self) -> tuple[str, str]:
        """A service principal with an OAuth secret: ``(client_id, client_secret)``."""
        return self.oidc.add_service_principal()

    def m2m_profile_text(self, profile: str = "demo-m2m") -> str:
        """A profile of a new service principal (OAuth machine-to-machine)."""
        client_id, secret = self.add_service_principal()
        return (
            f"[{profile}]\nhost = {self.url}\nclient_id = {client_id}\nclient_secret = {secret}\n"
        )

    def u2m_profile_text(self, profile: str = "demo-u2m", user: str = CREATOR) -> str:
        """A user-to-machine profile as if ``user`` had logged in through the browser: writes
        databricks-sdk's token cache entry for it under the current ``~`` (a refresh token and
        an access token that has expired already, so the first use refreshes)."""
        from databricks.sdk.oauth import OidcEndpoints, TokenCache

        refresh = self.oidc.add_user_session(user)
        access = self.oidc.access_token(
            user, CLI_CLIENT_ID, "all-apis offline_access", f"{self.url}/oidc", lifetime=0
        )
        cache = TokenCache(
            host=self.url,
            oidc_endpoints=OidcEndpoints(
                authorization_endpoint=f"{self.url}/oidc/v1/authorize",
                token_endpoint=f"{self.url}/oidc/v1/token",
            ),
            client_id=CLI_CLIENT_ID,
            scopes=["all-apis", "offline_access"],
            profile=profile,
        )
        expired = datetime.datetime.now() - datetime.timedelta(minutes=5)
        entry = {
            "token": {
                "access_token": access,
                "token_type": "Bearer",
                "expiry": expired.isoformat(),
                "refresh_token": refresh,
            }
        }
        path = Path(cache.filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(entry))
        return f"[{profile}]\nhost = {self.url}\nauth_type = external-browser\n"

    def ssh_config_entry(self, cluster_id: str, identity_file: str) -> str:
        """A classic ``Host <cluster_id>`` entry (port 2200 of a driver with a public IP)."""
        cluster = self.cluster(cluster_id)
        if not cluster.public_ip:
            raise ValueError(
                f"cluster {cluster_id} has no public IP: its driver is reached only through "
                "the Databricks SSH tunnel"
            )
        return (
            f"Host {cluster_id}\n"
            f"  HostName 127.0.0.1\n"
            f"  Port {cluster.ssh_port}\n"
            f"  User ubuntu\n"
            f"  IdentityFile {identity_file}\n"
        )

    def _describe(self, cluster: SimCluster) -> dict[str, Any]:
        return {
            "cluster_id": cluster.cluster_id,
            "cluster_name": cluster.name,
            "state": cluster.state,
            "ssh_port": cluster.ssh_port,
            "ssh_mode": cluster.ssh_mode,
            "ssh_connections": cluster.driver.connection_count,
            "host_key": cluster.host_key,
            "public_ip": cluster.public_ip,
            "tunnel": {
                "port": cluster.tunnel.port,
                "user": cluster.tunnel.user,
                "host_key": cluster.tunnel.host_key_text,
                "connections": cluster.tunnel.connections,
            },
            "start_time": cluster.start_time,
            "driver_start": cluster.driver_start,
            "spark": cluster.runtime.describe(),
        }


from .thread import SimulatorThread  # noqa: E402
