"""Cluster states, their timed transitions, the event log and the cluster JSON.

The transitions and their order follow a real workspace: TERMINATED -> PENDING -> RUNNING,
RUNNING -> RESTARTING -> RUNNING, any live state -> TERMINATING -> TERMINATED, and a driver
(SSH server) that exists only while RUNNING. Durations are real ones times ``time_scale``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .commands import DriverRuntime
from .driver import SshDriver
from .tunnel import TunnelServer

PENDING_SECONDS = 6.0
RESTARTING_SECONDS = 4.0
TERMINATING_SECONDS = 3.0
LIBRARY_INSTALL_SECONDS = 2.0

STATES = ("PENDING", "RUNNING", "RESTARTING", "RESIZING", "TERMINATING", "TERMINATED")
CREATOR = "simulator@example.com"

_TERMINATION_TYPES = {
    "INACTIVITY": "SUCCESS",
    "USER_REQUEST": "SUCCESS",
    "JOB_FINISHED": "SUCCESS",
    "CLOUD_PROVIDER_SHUTDOWN": "CLOUD_FAILURE",
    "SPOT_INSTANCE_TERMINATION": "CLOUD_FAILURE",
    "DRIVER_UNREACHABLE": "SERVICE_FAULT",
    "DRIVER_UNRESPONSIVE": "SERVICE_FAULT",
    "INTERNAL_ERROR": "SERVICE_FAULT",
}

# Fields `clusters/edit` may change (the rest of the body is accepted and ignored).
EDITABLE = (
    "cluster_name",
    "spark_version",
    "node_type_id",
    "driver_node_type_id",
    "num_workers",
    "autotermination_minutes",
    "ssh_public_keys",
    "spark_conf",
    "spark_env_vars",
    "custom_tags",
    "data_security_mode",
    "single_user_name",
    "runtime_engine",
    "policy_id",
)

#: ``data_security_mode`` values of the Clusters API (databricks-sdk's ``DataSecurityMode``).
ACCESS_MODES = (
    "SINGLE_USER",
    "USER_ISOLATION",
    "NONE",
    "DATA_SECURITY_MODE_DEDICATED",
    "DATA_SECURITY_MODE_STANDARD",
    "DATA_SECURITY_MODE_AUTO",
    "LEGACY_SINGLE_USER",
    "LEGACY_SINGLE_USER_STANDARD",
    "LEGACY_TABLE_ACL",
    "LEGACY_PASSTHROUGH",
)
DEDICATED_MODES = ("SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED")


class ClusterStateError(Exception):
    """An operation the current state does not allow (the API answers 400 INVALID_STATE)."""


def now_ms() -> int:
    return int(time.time() * 1000)


def _pretty(state: str) -> str:
    return state.capitalize()


class SimCluster:
    """One simulated cluster. All methods run on the simulator's loop."""

    def __init__(
        self,
        cluster_id: str,
        name: str,
        *,
        ssh_port: int,
        time_scale: float,
        rng: random.Random,
        ssh_public_keys: Iterable[str] = (),
        autotermination_minutes: float = 120,
        spark_version: str = "15.4.x-scala2.12",
        num_workers: int = 0,
        data_security_mode: str = "SINGLE_USER",
        single_user_name: str | None = CREATOR,
        public_ip: bool = True,
        policy_id: str | None = None,
        tunnel_user: str | None = None,
        bin_dir: Callable[[], Path | None],
        home_dir: Path,
    ) -> None:
        """``public_ip=False``: secure cluster connectivity, no ``driver.public_dns`` and no
        classic sshd reachable (only the Databricks SSH tunnel, see tunnel.py).
        ``tunnel_user``: the user the tunnel's sshd runs as (default: by access mode)."""
        if data_security_mode not in ACCESS_MODES:
            raise ValueError(f"data_security_mode must be one of {', '.join(ACCESS_MODES)}")
        self.cluster_id = cluster_id
        self.public_ip = public_ip
        self.tunnel_user = tunnel_user
        self.time_scale = time_scale
        self._rng = rng
        self.spec: dict[str, Any] = {
            "cluster_name": name,
            "spark_version": spark_version,
            "node_type_id": "i3.xlarge",
            "driver_node_type_id": "i3.xlarge",
            "num_workers": num_workers,
            "autotermination_minutes": autotermination_minutes,
            "ssh_public_keys": [k.strip() for k in ssh_public_keys],
            "spark_conf": {},
            "spark_env_vars": {"PYSPARK_PYTHON": "/databricks/python3/bin/python3"},
            "custom_tags": {},
            "data_security_mode": data_security_mode,
            "single_user_name": single_user_name,
            "runtime_engine": "STANDARD",
            "policy_id": policy_id,
        }
        self.state = "TERMINATED"
        self.state_message = ""
        self.created = now_ms() - 86_400_000
        self.start_time = self.created
        self.terminated_time: int | None = None
        self.last_state_loss_time: int | None = None
        self.last_activity_time = self.created
        self.driver_start: int | None = None
        self.driver_node_id = ""
        self.private_ip = ""
        self.spark_context_id: int | None = None
        self.termination_reason: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []
        self.libraries: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._kills: set[asyncio.Task[None]] = set()
        self.driver = SshDriver(
            cluster_id, ssh_port, bin_dir=bin_dir, home_dir=home_dir, on_activity=self.touch
        )
        # Beside the SSH home: the documented driver layout, Spark and the REST 1.2 contexts.
        self.runtime = DriverRuntime(
            cluster_id,
            root=home_dir.parent / "root",
            bin_dir=bin_dir,
            mark=self.driver.mark_env,
            spark_version=lambda: self.spec["spark_version"],
            touch=self.touch,
        )
        self.tunnel = TunnelServer(self)

    # -- public read-only view ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec["cluster_name"]

    @property
    def ssh_port(self) -> int:
        return self.driver.port

    @property
    def ssh_public_keys(self) -> list[str]:
        return list(self.spec["ssh_public_keys"])

    @property
    def autotermination_minutes(self) -> float:
        return self.spec["autotermination_minutes"]

    @property
    def host_key(self) -> str | None:
        """Public host key of the current driver (None when no driver runs)."""
        return self.driver.host_key_text if self.driver.listening else None

    @property
    def ssh_mode(self) -> str:
        return self.driver.mode

    @property
    def data_security_mode(self) -> str:
        return self.spec["data_security_mode"]

    @property
    def single_user_name(self) -> str | None:
        return self.spec["single_user_name"] or None

    @property
    def dedicated_single_user(self) -> bool:
        """Dedicated access mode assigned to one user (what the SSH tunnel requires)."""
        return self.data_security_mode in DEDICATED_MODES and bool(self.single_user_name)

    def to_json(self) -> dict[str, Any]:
        # Unset fields are absent from a real cluster's JSON, not null.
        spec = {k: v for k, v in copy.deepcopy(self.spec).items() if v is not None}
        data: dict[str, Any] = {
            "cluster_id": self.cluster_id,
            **spec,
            "state": self.state,
            "state_message": self.state_message,
            "start_time": self.start_time,
            "last_activity_time": self.last_activity_time,
            "creator_user_name": CREATOR,
            "cluster_source": "UI",
            "enable_elastic_disk": True,
            "enable_local_disk_encryption": False,
            "disk_spec": {},
            "default_tags": {
                "Vendor": "Databricks",
                "Creator": CREATOR,
                "ClusterName": self.name,
                "ClusterId": self.cluster_id,
            },
            "aws_attributes": {"availability": "SPOT_WITH_FALLBACK", "zone_id": "auto"},
            "effective_spark_version": self.spec["spark_version"],
            "spark_context_id": self.spark_context_id or 0,
            "jdbc_port": 10000,
            "cluster_memory_mb": 31232,
            "cluster_cores": 4.0,
            "init_scripts_safe_mode": False,
        }
        if self.last_state_loss_time is not None:
            data["last_state_loss_time"] = self.last_state_loss_time
        if self.state in ("RUNNING", "RESTARTING", "RESIZING") and self.driver_start:
            data["driver"] = {
                "private_ip": self.private_ip,
                "node_id": self.driver_node_id,
                "instance_id": f"i-{self.driver_node_id[:17]}",
                "start_timestamp": self.driver_start,
                "host_private_ip": self.private_ip,
            }
            if self.public_ip:
                data["driver"]["public_dns"] = "127.0.0.1"
            data["executors"] = []
        if self.state in ("TERMINATING", "TERMINATED") and self.termination_reason:
            data["termination_reason"] = copy.deepcopy(self.termination_reason)
        if self.state == "TERMINATED" and self.terminated_time is not None:
            data["terminated_time"] = self.terminated_time
        return data

    # -- helpers -----------------------------------------------------------------------------
    def touch(self) -> None:
        self.last_activity_time = now_ms()

    def _event(
        self, kind: str, details: dict[str, Any] | None = None, at: int | None = None
    ) -> None:
        self.events.append(
            {
                "cluster_id": self.cluster_id,
                "timestamp": at if at is not None else now_ms(),
                "type": kind,
                "details": details or {},
            }
        )

    def _set_state(self, state: str, message: str = "") -> None:
        self.state = state
        self.state_message = message
        self.changed.set()
        self.changed = asyncio.Event()

    def _run(self, coro: Any) -> None:
        current = asyncio.current_task()
        if self._task is not None and self._task is not current and not self._task.done():
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(coro)

    def _seconds(self, seconds: float) -> float:
        return seconds * self.time_scale

    def seed_history(self, state: str) -> None:
        """Events of a cluster created a day ago (and, when TERMINATED, terminated since)."""
        t0 = self.created
        self._event("CREATING", {"user": CREATOR}, at=t0)
        self._event("RUNNING", {"current_num_workers": 0, "target_num_workers": 0}, at=t0 + 300_000)
        if state == "TERMINATED":
            reason = self._reason("INACTIVITY")
            self.termination_reason = reason
            self._event("TERMINATING", {"reason": reason}, at=t0 + 3_600_000)
            self.terminated_time = t0 + 3_603_000
            self.last_activity_time = t0 + 300_000
            self.state_message = self._terminated_message(reason)

    def _reason(self, code: str) -> dict[str, Any]:
        reason: dict[str, Any] = {
            "code": code,
            "type": _TERMINATION_TYPES.get(code, "SERVICE_FAULT"),
        }
        if code == "INACTIVITY":
            minutes = self.spec["autotermination_minutes"]
            reason["parameters"] = {"inactivity_duration_min": str(minutes)}
        elif code == "USER_REQUEST":
            reason["parameters"] = {"username": CREATOR}
        return reason

    def _terminated_message(self, reason: dict[str, Any]) -> str:
        code = reason.get("code")
        if code == "INACTIVITY":
            minutes = self.spec["autotermination_minutes"]
            return f"Inactive cluster terminated (inactive for {minutes} minutes)."
        if code == "USER_REQUEST":
            return f"Terminated by {CREATOR}"
        return f"Cluster terminated. Reason: {str(code).replace('_', ' ').title()}"

    # -- driver up / down --------------------------------------------------------------------
    def _driver_up(self) -> None:
        if self.public_ip:  # without one, port 2200 is out of reach: nothing listens
            self.driver.listen(self.spec["ssh_public_keys"])
        self.runtime.driver_up()
        self.driver_start = now_ms()
        self.last_state_loss_time = self.driver_start
        self.driver_node_id = f"{self._rng.getrandbits(128):032x}"
        self.private_ip = f"10.{self._rng.randint(0, 255)}.{self._rng.randint(0, 255)}.{self._rng.randint(2, 254)}"
        self.spark_context_id = self._rng.getrandbits(62)
        self.touch()
        for lib in self.libraries:
            lib["status"] = "INSTALLED"
        workers = self.spec["num_workers"]
        self._set_state("RUNNING", "")
        self._event("RUNNING", {"current_num_workers": workers, "target_num_workers": workers})
        self._event("DRIVER_HEALTHY", {})

    def _driver_down(self) -> asyncio.Task[None]:
        self.tunnel.down()
        self.runtime.driver_down()
        sids = self.driver.close()
        task = asyncio.get_running_loop().create_task(self.driver.kill(sids))
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)
        return task

    async def wait_killed(self) -> None:
        if self._kills:
            await asyncio.gather(*list(self._kills), return_exceptions=True)

    async def _boot(self, seconds: float) -> None:
        await asyncio.sleep(self._seconds(seconds))
        await self.wait_killed()
        self._driver_up()
        await self._watch_inactivity()

    async def _watch_inactivity(self) -> None:
        while self.state == "RUNNING":
            minutes = self.spec["autotermination_minutes"] or 0
            if minutes <= 0:
                return
            limit = self._seconds(float(minutes) * 60)
            if self.driver.connection_count or self.runtime.busy:
                self.touch()
            idle = time.time() - self.last_activity_time / 1000
            if idle >= limit:
                self._begin_terminate("INACTIVITY")
                return
            await asyncio.sleep(max(limit - idle, 0.02))

    # -- operations (API and controls) -------------------------------------------------------
    def start(self) -> None:
        if self.state != "TERMINATED":
            raise ClusterStateError(
                f"Cluster {self.cluster_id} is in unexpected state {_pretty(self.state)}."
            )
        self.start_time = now_ms()
        self.terminated_time = None
        self.touch()
        self._set_state(
            "PENDING", "Finding instances for new nodes, acquiring more instances if necessary"
        )
        self._event("STARTING", {"user": CREATOR})
        self._run(self._boot(PENDING_SECONDS))

    def boot_now(self) -> None:
        """Bring the cluster up immediately (a cluster added as RUNNING)."""
        self.start_time = now_ms()
        self._driver_up()
        self._run(self._watch_inactivity())

    def restart(self) -> None:
        if self.state != "RUNNING":
            raise ClusterStateError(
                f"Cluster {self.cluster_id} is in unexpected state {_pretty(self.state)}."
            )
        self._restart()

    def _restart(self) -> None:
        self.touch()
        self._set_state("RESTARTING", "Restarting Spark.")
        self._event("RESTARTING", {"user": CREATOR})
        self._driver_down()
        self._run(self._boot(RESTARTING_SECONDS))

    def edit(self, changes: dict[str, Any]) -> None:
        if self.state not in ("RUNNING", "TERMINATED"):
            raise ClusterStateError(
                f"Cluster {self.cluster_id} is in unexpected state {_pretty(self.state)}."
            )
        previous = {k: copy.deepcopy(self.spec[k]) for k in EDITABLE}
        for key in EDITABLE:
            if key in changes:
                value = changes[key]
                if key == "ssh_public_keys":
                    value = [str(k).strip() for k in value]
                self.spec[key] = value
        attributes = {k: copy.deepcopy(self.spec[k]) for k in EDITABLE}
        self._event(
            "EDITED",
            {"user": CREATOR, "previous_attributes": previous, "attributes": attributes},
        )
        if self.state == "RUNNING":
            self._restart()
        else:
            self.changed.set()
            self.changed = asyncio.Event()

    def _begin_terminate(self, code: str) -> asyncio.Task[None] | None:
        if self.state in ("TERMINATING", "TERMINATED"):
            return None
        reason = self._reason(code)
        self.termination_reason = reason
        self._set_state("TERMINATING", "Terminating the cluster.")
        self._event("TERMINATING", {"reason": reason})
        kill = self._driver_down()
        self._run(self._finish_terminate(reason))
        return kill

    async def terminate(self, code: str = "INACTIVITY") -> None:
        """Begin termination now; returns once the driver's processes are killed."""
        kill = self._begin_terminate(code)
        if kill is not None:
            with contextlib.suppress(Exception):
                await kill

    async def _finish_terminate(self, reason: dict[str, Any]) -> None:
        await asyncio.sleep(self._seconds(TERMINATING_SECONDS))
        await self.wait_killed()
        self.terminated_time = now_ms()
        self.driver_start = None
        self._set_state("TERMINATED", self._terminated_message(reason))

    def install_libraries(self, libraries: list[dict[str, Any]]) -> None:
        known = [lib["library"] for lib in self.libraries]
        for library in libraries:
            if library in known:
                continue
            status = "INSTALLING" if self.state == "RUNNING" else "PENDING"
            self.libraries.append(
                {"library": library, "status": status, "is_library_for_all_clusters": False}
            )
        if self.state == "RUNNING":
            asyncio.get_running_loop().create_task(self._finish_install())

    async def _finish_install(self) -> None:
        await asyncio.sleep(self._seconds(LIBRARY_INSTALL_SECONDS))
        if self.state == "RUNNING":
            for lib in self.libraries:
                if lib["status"] == "INSTALLING":
                    lib["status"] = "INSTALLED"

    async def shutdown(self) -> None:
        """Simulator stop: cancel timers, take the driver down, kill its processes."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._driver_down()
        await self.wait_killed()
        tasks = list(self.driver._proc_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
