"""The truth about each watched cluster: its state, its SSH reachability, its operations.

One :class:`ClusterConnection` per (profile, cluster id) holds a snapshot in the vocabulary of
the REST API, a version that grows on every change, and a bounded event history. A background
task per connection reads the cluster (about every second while something changes, every few
seconds when steady, not at all when nobody asked for a while). HTTP handlers only read the
snapshot or wait for the next version, so the number of upstream calls does not grow with the
number of browser tabs.

Start and reconfigure are single-flight asyncio tasks that walk the steps ``starting``,
``configuring``, ``installing``, ``restarting-kernels`` and ``done`` (``clusterops``, mixed in).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import transport
from .clusterops import ClusterOperations, utcnow
from .connect import spark_ui_url
from .operations import OperationFailed
from .settings import DriverSettings
from .vocabulary import COMING_UP, RUNNING, STATES, STEADY
from .workspace import (
    ClusterInfo,
    NoSuchCluster,
    WorkspaceError,
)

__all__ = ["STATES", "ClusterConnection", "OperationFailed", "ServiceSettings"]

_STEP_STATE = {
    "starting": "starting",
    "configuring": "configuring",
    "installing": "installing",
    "restarting-kernels": "connected",
    "done": "connected",
}

WorkspaceFactory = Callable[[str], Awaitable[Any]]

log = logging.getLogger(__name__)


#: Seconds between two SSH checks of a cluster reached through the Databricks SSH tunnel.
TUNNEL_PROBE_INTERVAL = 60.0


@dataclass
class ServiceSettings:
    """Knobs of the service; the server extension fills them from its traitlets."""

    driver: DriverSettings = field(default_factory=DriverSettings.from_env)
    refresh_interval: float = 1.0
    steady_refresh_interval: float = 10.0
    #: Seconds after the last request (or change) during which the fast cadence stays on.
    fast_window: float = 10.0
    idle_pause: float = 60.0
    first_read_wait: float = 3.0
    ssh_check_timeout: float = 10.0
    ssh_ready_timeout: float = 60.0
    operation_timeout: float = 1800.0
    done_linger: float = 5.0
    event_history: int = 50
    profile_cache_seconds: float = 2.0
    #: Clusters watched at most; a new one first evicts an error-only or idle entry.
    max_clusters: int = 100
    #: Seconds without a request after which an entry without kernels or operation is dropped.
    idle_evict: float = 1800.0
    #: Seconds between reads of a cluster that was never read successfully (403, 5xx, unknown).
    unknown_read_interval: float = 10.0


def _meaning(view: dict[str, Any]) -> dict[str, Any]:
    """A status view without the time of the last SSH check: what a new version is for."""
    return dict(view, ssh={k: v for k, v in view.get("ssh", {}).items() if k != "checked_at"})


class ClusterConnection(ClusterOperations):
    """State machine, snapshot and operations of one cluster."""

    def __init__(self, registry: Any, profile: str, cluster_id: str) -> None:
        self.registry = registry
        self.profile = profile
        self.cluster_id = cluster_id
        self.settings = registry.settings
        self.version = 0
        self._waiters = 0
        self.updated_at = utcnow()
        self.state = "unknown"
        self.message = "Reading the state of the cluster."
        self.info: ClusterInfo | None = None
        self.spark_ui_url: str | None = None
        self.ssh: dict[str, Any] = {"reachable": False, "checked_at": None, "error": None}
        #: How the cluster is reached, judged at every read (see :mod:`.transport`).
        self.route: transport.Route | None = None
        self._op_transport: str | None = None
        self._probed_at = 0.0
        self.operation: dict[str, Any] | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=self.settings.event_history)
        self.not_found = False
        self.first_read = asyncio.Event()
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._op_task: asyncio.Task[None] | None = None
        self._op_kernels: set[str] = set()
        self._op_finished_at: float | None = None
        self._op_error: str | None = None
        self._op_error_cluster_state: str | None = None
        self._read_error: WorkspaceError | None = None
        self._probe_for: tuple[Any, ...] | None = None
        self._missing: list[str] | None = None
        self._libraries_ok_for: tuple[Any, ...] | None = None
        self._last_interest = time.monotonic()
        self._last_change = time.monotonic()
        self._paused = False
        self._view: dict[str, Any] = {}
        self._json = ""
        self._publish()

    # ----------------------------------------------------------------- reading
    def snapshot(self) -> dict[str, Any]:
        return json.loads(self._json)

    def snapshot_json(self) -> str:
        return self._json

    def touch(self) -> None:
        """Someone asked about this cluster: keep (or bring) the refresh going."""
        self._last_interest = time.monotonic()
        if self._paused:
            self._wake.set()

    @property
    def read_error(self) -> WorkspaceError | None:
        """Why the last read of the cluster failed, if it did."""
        return self._read_error

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def idle_seconds(self) -> float:
        """Seconds since someone last asked about this cluster."""
        return time.monotonic() - self._last_interest

    async def wait_for_change(self, since: int, timeout: float) -> bool:
        """Wait until ``version > since`` or ``timeout`` seconds pass; True if it changed.
        Cancelling the wait (a long-poll client that went away) ends it at once."""
        deadline = time.monotonic() + max(0.0, timeout)
        self._waiters += 1
        try:
            while self.version <= since:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.touch()
                pause = max(1.0, self.settings.idle_pause / 2)
                await wait_event(self._changed, min(remaining, pause))
            return True
        finally:
            self._waiters -= 1

    @property
    def waiters(self) -> int:
        """Long polls waiting on this cluster now."""
        return self._waiters

    async def wait_first_read(self, timeout: float) -> None:
        """Wait (bounded) until the first read brought something better than ``unknown``."""
        deadline = time.monotonic() + timeout
        while self.state == "unknown" and not self.not_found:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self.wait_for_change(self.version, remaining)

    # --------------------------------------------------------------- publishing
    def _derive(self) -> tuple[str, str]:
        cid = self.cluster_id
        if self.operation is not None:
            step = self.operation["step"]
            return _STEP_STATE[step], self.operation.get("message") or "Working."
        if self._op_error:
            return "error", self._op_error
        if self._read_error is not None:
            return "error", self._read_error.message
        info = self.info
        if info is None:
            return "unknown", "Reading the state of the cluster."
        cs = info.state or "UNKNOWN"
        why = f": {info.state_message}" if info.state_message else "."
        if cs == "TERMINATED":
            return "terminated", f"Cluster {cid} is terminated{why}"
        if cs == "TERMINATING":
            return "terminating", f"Cluster {cid} is terminating{why}"
        if cs in COMING_UP:
            verb = "restarting" if cs == "RESTARTING" else "starting"
            return "starting", f"Cluster {cid} is {verb}{why}"
        if cs in RUNNING:
            if self.route is not None and not self.route.uses_ssh:
                return (
                    "connected",
                    f"Cluster {cid} is running; its kernels use the Command Execution API.",
                )
            if self._probe_for != self._driver_key():
                return "unknown", f"Cluster {cid} is running; checking SSH to its driver."
            if not self.ssh["reachable"]:
                error = self.ssh.get("error") or "SSH does not answer."
                return (
                    "unreachable",
                    f"Cluster {cid} is running, but its driver cannot be reached: {error}",
                )
            if self._missing:
                return (
                    "error",
                    f"The driver of cluster {cid} lacks {', '.join(self._missing)}; "
                    "start or reconfigure installs it.",
                )
            return "connected", f"Connected to the driver of cluster {cid} ({info.public_dns})."
        return "error", f"Cluster {cid} is in state {cs}{why}"

    def _driver_key(self) -> tuple[Any, ...] | None:
        if self.info is None:
            return None
        return (self.info.driver_start, self.info.public_dns)

    def _kernels(self) -> list[dict[str, str]]:
        return [
            {"kernel_id": r.kernel_id, "kernel_state": r.state}
            for r in self.registry.board.for_cluster(self.profile, self.cluster_id)
        ]

    def _publish(self) -> None:
        """Recompute the snapshot; bump the version and wake waiters when anything changed."""
        state, message = self._derive()
        info = self.info
        operation = None
        if self.operation is not None:
            operation = {k: v for k, v in self.operation.items() if k != "message"}
        view = {
            "profile": self.profile,
            "cluster_id": self.cluster_id,
            "cluster_name": info.cluster_name if info else None,
            "state": state,
            "cluster_state": info.state if info else None,
            "message": message,
            "ssh": dict(self.ssh),
            "transport": self.route.transport if self.route else None,
            "transport_reason": self.route.why if self.route else None,
            "spark_ui_url": self.spark_ui_url,
            "operation": operation,
            "kernels": self._kernels(),
        }
        if view == self._view and self._json:
            return
        if self._json and _meaning(view) == _meaning(self._view):
            # Only the time of the last SSH check moved: the served status shows it, but the
            # version stays and no long poll wakes (a steady client is not answered every check).
            self._view = view
            self._json = json.dumps(dict(json.loads(self._json), ssh=view["ssh"]))
            return
        if self._is_news(state, message):
            self.events.append({"at": utcnow(), "state": state, "message": message})
        if (state, view["cluster_state"], operation) != (
            self.state,
            self._view.get("cluster_state"),
            self._view.get("operation"),
        ):
            # Only real changes keep the fast cadence; a fresh ssh.checked_at does not.
            self._last_change = time.monotonic()
        self.state, self.message = state, message
        self._view = view
        self.version += 1
        self.updated_at = utcnow()
        body = dict(
            view, version=self.version, updated_at=self.updated_at, events=list(self.events)
        )
        self._json = json.dumps(body)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _is_news(self, state: str, message: str) -> bool:
        """Whether (state, message) belongs in the history.

        A new state always does. Within one state, a message already recorded since that state
        began does not: an unreachable driver whose error alternates between two texts would
        otherwise push the rest of the history out.
        """
        if not self.events or state != self.state:
            return True
        if message == self.message:
            return False
        for event in reversed(self.events):
            if event["state"] != state:
                break
            if event["message"] == message:
                return False
        return True

    def kernel_changed(self, state: str, text: str) -> None:
        """A kernel of this cluster changed state; a lost one is news and worth a refresh."""
        if state in ("disconnected", "dead"):
            self.note(text)
            self._wake.set()
        else:
            self._publish()

    def note(self, message: str) -> None:
        """Record an event that is not a state change (e.g. a kernel lost its link)."""
        self.events.append({"at": utcnow(), "state": self.state, "message": message})
        self._view = {}
        self._publish()

    # ------------------------------------------------------------ refreshing
    def start_refresh(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(
                self._refresh_loop(), name=f"dbjl-refresh-{self.cluster_id}"
            )

    def _interval(self) -> float:
        s = self.settings
        info = self.info
        if info is None and self._read_error is not None and not self.op_running():
            return s.unknown_read_interval
        if self.op_running() or info is None or self._read_error is not None:
            return s.refresh_interval
        if info.state not in STEADY:
            return s.refresh_interval
        if time.monotonic() - self._last_change < s.fast_window:
            return s.refresh_interval
        return s.steady_refresh_interval

    async def _refresh_loop(self) -> None:
        while True:
            try:
                if not self.op_running():
                    idle = time.monotonic() - self._last_interest
                    if idle > self.settings.idle_pause:
                        self._paused = True
                        self._wake.clear()
                        await self._wake.wait()
                        self._paused = False
                    await self.refresh()
                self._wake.clear()
                await wait_event(self._wake, self._interval())
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must survive any surprise
                log.exception("Refresh of cluster %s failed", self.cluster_id)
                await asyncio.sleep(self.settings.refresh_interval)

    async def refresh(self) -> None:
        """Read the cluster once, then check SSH when it runs."""
        try:
            workspace = await self.registry.workspace(self.profile)
            self._link_spark_ui(workspace)
            info = await workspace.get_cluster(self.cluster_id)
        except NoSuchCluster as err:
            if self.info is None:
                self.not_found = True
            self._read_error = err
            self.first_read.set()
            self._publish()
            return
        except WorkspaceError as err:
            self._read_error = err
            self.first_read.set()
            self._publish()
            return
        if self.op_running():  # the operation reads and probes itself
            return
        self._read_error = None
        self._apply(info)
        self.route = await self._route(info)
        self.first_read.set()
        self._publish()
        if info.state in RUNNING and self.route.uses_ssh and self._probe_due(info):
            await self._probe(info)

    def _probe_due(self, info: ClusterInfo) -> bool:
        """Every refresh for SSH; through the Databricks SSH tunnel, whose ProxyCommand is a
        Databricks CLI run with workspace calls of its own, at most once a minute while the
        driver stays the same."""
        if self.route is None or self.route.transport != transport.TUNNEL:
            return True
        if self._probe_for != (info.driver_start, info.public_dns):
            return True
        return time.monotonic() - self._probed_at >= TUNNEL_PROBE_INTERVAL

    def _apply(self, info: ClusterInfo) -> None:
        if self._op_error and info.state != self._op_error_cluster_state:
            self._op_error = None
        if self.info is not None and self._driver_key() != (info.driver_start, info.public_dns):
            self._probe_for = None
            self._missing = None
        self.info = info
        if info.state not in RUNNING:
            self._probe_for = None
            if self.ssh["reachable"] or self.ssh["error"] is None:
                self.ssh = {
                    "reachable": False,
                    "checked_at": self.ssh["checked_at"],
                    "error": "The cluster is not running.",
                }

    async def _route(self, info: ClusterInfo) -> transport.Route:
        try:
            return await asyncio.to_thread(transport.choose, info, self.settings.driver)
        except Exception as exc:  # noqa: BLE001 - an unreadable SSH config: SSH says why later
            return transport.Route(transport.SSH, None, f"The SSH config could not be read: {exc}")

    async def _probe(self, info: ClusterInfo) -> None:
        key = (info.driver_start, info.public_dns)
        libraries = self._libraries_ok_for != key
        probe = await self.registry.driver_access.probe(self.profile, info, libraries=libraries)
        if self.op_running() or self.info is not info:
            return
        self.ssh = {"reachable": probe.reachable, "checked_at": utcnow(), "error": probe.error}
        if probe.missing is not None:
            self._missing = probe.missing
            if not probe.missing:
                self._libraries_ok_for = key
        self._probe_for, self._probed_at = key, time.monotonic()
        self._publish()

    def _link_spark_ui(self, workspace: Any) -> None:
        """The cluster's Spark UI in the workspace, from the profile's host and the workspace id
        databricks-sdk resolved (a lookup of the client's configuration, no request)."""
        config = getattr(getattr(workspace, "client", None), "config", None)
        host = getattr(workspace, "host", None) or getattr(config, "host", None)
        self.spark_ui_url = spark_ui_url(
            host, self.cluster_id, getattr(config, "workspace_id", None)
        )

    async def _read(self, workspace: Any) -> ClusterInfo:
        self._link_spark_ui(workspace)
        info = await workspace.get_cluster(self.cluster_id)
        self._read_error = None
        self._apply(info)
        self.route = await self._route(info)
        self._publish()
        return info

    # ------------------------------------------------------------------ closing
    async def close(self) -> None:
        tasks = [t for t in (self._task, self._op_task) if t is not None and not t.done()]
        loop = asyncio.get_running_loop()
        for task in tasks:
            # On Python < 3.12 an ``asyncio.wait_for`` deep inside (SSH, threads) can swallow a
            # cancellation that arrives as its inner call finishes: cancel until the task ends,
            # and never let the server's shutdown wait for it for long.
            deadline = loop.time() + 10
            while not task.done() and loop.time() < deadline:
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            if not task.done():
                log.warning("Cluster %s: %s did not stop", self.cluster_id, task.get_name())
            elif not task.cancelled():
                task.exception()  # retrieved: a failure while closing is of no interest


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; True when it is set.

    Unlike ``asyncio.wait_for`` on Python < 3.12, a cancellation arriving together with the
    event is never swallowed, so background loops always stop when cancelled.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)
