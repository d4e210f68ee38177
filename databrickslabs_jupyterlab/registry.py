"""All clusters this server watches: one :class:`~.clusters.ClusterConnection` per profile and
cluster, the workspace clients they share, the SSH access to drivers, and the kernel board the
provisioners report to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from . import kernelstate
from .clusters import ClusterConnection, ServiceSettings
from .driver import DriverAccess
from .operations import RestartKernels
from .workspace import NoSuchCluster, ProfileInfo, Workspace, list_profiles

WorkspaceFactory = Callable[[str], Awaitable[Any]]


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
        self.board = board or kernelstate.board
        self._connections: dict[tuple[str, str], ClusterConnection] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._profiles: tuple[float, list[ProfileInfo]] | None = None

    # ------------------------------------------------------------------- life
    def start(self) -> None:
        """Subscribe to the kernel board; must run on the server's event loop."""
        self._loop = asyncio.get_running_loop()
        if self._unsubscribe is None:
            self._unsubscribe = self.board.subscribe(self._on_kernel)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)

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
        key = (profile, cluster_id)
        conn = self._connections.get(key)
        if conn is None:
            if self._loop is None:
                self.start()
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
        conn = self.watch(profile, cluster_id)
        conn.touch()
        await conn.wait_first_read(self.settings.first_read_wait)
        if conn.not_found:
            await self.forget(profile, cluster_id)
            raise conn.read_error or NoSuchCluster(f"Cluster {cluster_id} does not exist.")
        return conn

    async def forget(self, profile: str, cluster_id: str) -> None:
        conn = self._connections.pop((profile, cluster_id), None)
        if conn is not None:
            await conn.close()

    def connections(self) -> Iterable[ClusterConnection]:
        return list(self._connections.values())


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
