"""All clusters this server watches: one :class:`~.clusters.ClusterConnection` per profile and
cluster, the workspace clients they share, the SSH access to drivers, and the kernel board the
provisioners report to.

Any authenticated client can name any cluster id, so what is watched is bounded: at most
``max_clusters`` entries; a new one first evicts an entry whose reads all failed, then the one
idle longest; entries nobody asked about for ``idle_evict`` seconds go on their own. An entry
with kernels, an operation or a long poll is in use and stays. An id the workspace does not
know is remembered for ``unknown_read_interval`` seconds, so asking again costs no read."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from . import kernelstate, vocabulary
from .clusters import ClusterConnection, ServiceSettings
from .driver import DriverAccess
from .operations import RestartKernels
from .workspace import NoSuchCluster, ProfileInfo, Workspace, WorkspaceError, list_profiles

log = logging.getLogger(__name__)

WorkspaceFactory = Callable[[str], Awaitable[Any]]


class TooManyClusters(WorkspaceError):
    status = 429
    code = "too_many_clusters"


class ClusterRegistry:
    """All watched clusters of this server, plus the shared workspace clients and SSH access."""

    def __init__(
        self,
        settings: ServiceSettings | None = None,
        *,
        restart_kernels: RestartKernels | None = None,
        driver_access: Any = None,
        workspace_factory: WorkspaceFactory | None = None,
        board: kernelstate.KernelBoard | None = None,
    ) -> None:
        self.settings = settings or ServiceSettings()
        self.restart_kernels = restart_kernels
        self.driver_access = driver_access or DriverAccess(
            self.settings.driver, self.settings.ssh_check_timeout
        )
        self._workspace_factory = workspace_factory
        self.board = board if board is not None else kernelstate.board
        self._connections: dict[tuple[str, str], ClusterConnection] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._profiles: tuple[float, list[ProfileInfo]] | None = None
        #: Ids the workspace did not know: when, and the error to repeat.
        self._misses: dict[tuple[str, str], tuple[float, WorkspaceError]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------- life
    def start(self) -> None:
        """Subscribe to the kernel board; must run on the server's event loop."""
        self._loop = asyncio.get_running_loop()
        if self._unsubscribe is None:
            self._unsubscribe = self.board.subscribe(self._on_kernel)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="dbjl-registry-sweep")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(
            *(c.close() for c in connections), *self._closing, return_exceptions=True
        )

    def _on_kernel(self, record: kernelstate.KernelRecord) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is loop:
            self._kernel_changed(record)
        else:
            loop.call_soon_threadsafe(self._kernel_changed, record)

    def _kernel_changed(self, record: kernelstate.KernelRecord) -> None:
        conn = self._connections.get((record.profile, record.cluster_id))
        if conn is None:
            return
        conn.kernel_changed(
            record.state,
            f"Kernel {record.kernel_id} is {record.state}"
            + (f": {record.message}" if record.message else "."),
        )

    # ------------------------------------------------------------- workspaces
    async def workspace(self, profile: str) -> Any:
        if self._workspace_factory is not None:
            return await self._workspace_factory(profile)
        d = self.settings.driver
        return await Workspace.for_profile(
            profile,
            config_file=d.databricks_config_file,
            retry_timeout=d.workspace_retry_timeout,
            http_timeout=d.workspace_http_timeout,
        )

    async def profiles(self) -> list[ProfileInfo]:
        """Profiles of the config file, re-read at most every couple of seconds (off the loop)."""
        now = time.monotonic()
        if (
            self._profiles is not None
            and now - self._profiles[0] < self.settings.profile_cache_seconds
        ):
            return self._profiles[1]
        profiles = await asyncio.to_thread(
            list_profiles, self.settings.driver.databricks_config_file
        )
        self._profiles = (time.monotonic(), profiles)
        return profiles

    async def profile_exists(self, profile: str) -> bool:
        if any(p.name == profile for p in await self.profiles()):
            return True
        self._profiles = None  # maybe just added: read the file again
        return any(p.name == profile for p in await self.profiles())

    # ------------------------------------------------------------ connections
    def get(self, profile: str, cluster_id: str) -> ClusterConnection | None:
        return self._connections.get((profile, cluster_id))

    def watch(self, profile: str, cluster_id: str) -> ClusterConnection:
        if not (vocabulary.is_profile(profile) and vocabulary.is_cluster_id(cluster_id)):
            raise ValueError(f"{profile!r}/{cluster_id!r} is not a profile and cluster id")
        key = (profile, cluster_id)
        conn = self._connections.get(key)
        if conn is None:
            if self._loop is None:
                self.start()
            self._make_room()
            conn = ClusterConnection(self, profile, cluster_id)
            self._connections[key] = conn
        conn.start_refresh()
        return conn

    async def connection(self, profile: str, cluster_id: str) -> ClusterConnection:
        """The connection of a cluster, registering it (and waiting briefly for its first read).

        Raises NoSuchCluster when the workspace says the cluster does not exist.
        """
        conn = self._connections.get((profile, cluster_id))
        if conn is not None and not conn.not_found:
            conn.touch()
            if conn.paused:
                await conn.wait_for_change(conn.version, self.settings.first_read_wait)
            return conn
        miss = self._misses.get((profile, cluster_id))
        if miss is not None and time.monotonic() - miss[0] < self.settings.unknown_read_interval:
            raise miss[1]
        conn = self.watch(profile, cluster_id)
        conn.touch()
        await conn.wait_first_read(self.settings.first_read_wait)
        if conn.not_found:
            await self.forget(profile, cluster_id)
            err = conn.read_error or NoSuchCluster(f"Cluster {cluster_id} does not exist.")
            self._remember_miss((profile, cluster_id), err)
            raise err
        return conn

    async def forget(self, profile: str, cluster_id: str) -> None:
        conn = self._connections.pop((profile, cluster_id), None)
        if conn is not None:
            await conn.close()

    def connections(self) -> Iterable[ClusterConnection]:
        return list(self._connections.values())

    # --------------------------------------------------------------- bounds
    def _remember_miss(self, key: tuple[str, str], err: WorkspaceError) -> None:
        self._misses.pop(key, None)
        self._misses[key] = (time.monotonic(), err)
        while len(self._misses) > 4 * max(1, self.settings.max_clusters):
            del self._misses[next(iter(self._misses))]  # the oldest

    def _in_use(self, conn: ClusterConnection) -> bool:
        kernels = self.board.for_cluster(conn.profile, conn.cluster_id)
        return conn.op_running() or conn.waiters > 0 or any(k.state != "dead" for k in kernels)

    def _evict(self, conn: ClusterConnection, why: str) -> None:
        if self._connections.get((conn.profile, conn.cluster_id)) is not conn:
            return
        del self._connections[(conn.profile, conn.cluster_id)]
        log.info(
            "Stopped watching cluster %s of profile %s (%s).", conn.cluster_id, conn.profile, why
        )
        task = asyncio.ensure_future(conn.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _make_room(self) -> None:
        """Evict one entry when the registry is full: one whose reads all failed, else the one
        idle longest; TooManyClusters when every entry is in use."""
        if len(self._connections) < self.settings.max_clusters:
            return
        free = [c for c in self._connections.values() if not self._in_use(c)]
        if not free:
            raise TooManyClusters(
                f"This server already watches {len(self._connections)} clusters, all in use "
                "(the limit is max_clusters); try again once one of them is idle."
            )
        failed = [c for c in free if c.info is None and c.read_error is not None]
        victim = max(failed or free, key=lambda c: c.idle_seconds)
        self._evict(victim, "read failed" if failed else "the registry was full")

    def sweep(self) -> None:
        """Evict entries that nobody asked about for ``idle_evict`` seconds and do not use."""
        for conn in list(self._connections.values()):
            if conn.idle_seconds > self.settings.idle_evict and not self._in_use(conn):
                self._evict(conn, f"idle for {conn.idle_seconds:.0f} s")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, max(0.05, self.settings.idle_evict / 4)))
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the sweep must go on
                log.exception("Sweeping the watched clusters failed")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
