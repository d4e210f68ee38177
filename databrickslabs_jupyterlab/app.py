"""The Jupyter server extension: knobs (traitlets), REST handlers, background work."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import threading
import time
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Int, List, Unicode, default

from . import gatewaykernels
from .clusters import ServiceSettings
from .config import driver_config
from .registry import ClusterRegistry
from .settings import DriverSettings

#: Seconds the extension's stop may take (the cluster watchers; kernels are stopped apart).
STOP_WITHIN = 3.0
#: Seconds after its stop began by which a stopped server's process is gone, even when worker
#: threads still wait for a workspace or driver that no longer answers (a network gone).
EXIT_WITHIN = 12.0


def _bound_exit(began: float) -> None:
    """Runs when the interpreter exits, before the thread pools are joined: a worker thread
    blocked in a workspace call (SDK timeouts and retries, 10-30 s) must not hold the exit.
    The timer is a daemon thread: once Python finalizes, it can no longer fire."""

    def leave() -> None:
        with contextlib.suppress(OSError):
            os.write(2, b"databrickslabs_jupyterlab: leaving worker threads that still wait\n")
        os._exit(0)

    timer = threading.Timer(max(EXIT_WITHIN - (time.monotonic() - began), 1.0), leave)
    timer.daemon = True
    timer.start()


class DatabricksLabsJupyterLab(ExtensionApp):
    """Watch Databricks clusters, start and prepare them, and tell the status bar."""

    name = "databrickslabs_jupyterlab"
    load_other_extensions = True

    refresh_interval = Float(
        1.0,
        config=True,
        help="Seconds between reads of a cluster while its state changes or an operation runs.",
    )
    steady_refresh_interval = Float(
        10.0,
        config=True,
        help="Seconds between reads of a cluster whose state is steady (running or terminated).",
    )
    idle_pause = Float(
        60.0,
        config=True,
        help="Stop reading a cluster after this many seconds without any request about it.",
    )
    first_read_wait = Float(
        3.0,
        config=True,
        help="How long the first status request of a cluster waits for its first read.",
    )
    ssh_check_timeout = Float(
        config=True,
        help="Seconds a reachability check (SSH handshake and login) may take. "
        "Defaults to the SSH connect timeout (DBJL_CONNECT_TIMEOUT).",
    )
    ssh_ready_timeout = Float(
        60.0,
        config=True,
        help="Seconds an operation waits for the driver's SSH server after the cluster runs.",
    )
    operation_timeout = Float(
        1800.0, config=True, help="Seconds after which a start or reconfigure is given up."
    )
    event_history = Int(50, config=True, help="Number of events kept per cluster.")
    max_clusters = Int(
        100, config=True, help="Clusters watched at most (a new one evicts an idle entry first)."
    )
    idle_evict = Float(
        1800.0,
        config=True,
        help="Seconds without a request after which a cluster without kernels is no longer watched.",
    )
    unknown_read_interval = Float(
        10.0,
        config=True,
        help="Seconds between reads of a cluster id that was never read successfully.",
    )
    gateway_poll_interval = Float(
        1.0,
        config=True,
        help="With a kernel gateway (--gateway-url): seconds between reads of the states its "
        "kernels leave in the shared state folder.",
    )

    # The first wave's names of the driver settings, read below c.DatabricksLabsDriver.
    ssh_port = Int(config=True, help="Deprecated: use c.DatabricksLabsDriver.ssh_port.")
    ssh_user = Unicode(config=True, help="Deprecated: use c.DatabricksLabsDriver.ssh_user.")
    ssh_config_file = Unicode(
        config=True, help="Deprecated: use c.DatabricksLabsDriver.ssh_config_file."
    )
    identity_file = Unicode(
        None, allow_none=True, config=True, help="Deprecated: c.DatabricksLabsDriver.identity_file."
    )
    driver_python = Unicode(
        config=True, help="Deprecated: use c.DatabricksLabsDriver.driver_python."
    )
    sudo = Unicode(config=True, help="Deprecated: use c.DatabricksLabsDriver.sudo.")
    state_dir = Unicode(config=True, help="Deprecated: use c.DatabricksLabsDriver.state_dir.")
    driver_requirements = List(
        Unicode(), config=True, help="Deprecated: c.DatabricksLabsDriver.driver_requirements."
    )
    pip_args = List(Unicode(), config=True, help="Deprecated: c.DatabricksLabsDriver.pip_args.")
    databricks_config_file = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Deprecated: use c.DatabricksLabsDriver.databricks_config_file.",
    )
    workspace_retry_timeout = Int(
        config=True, help="Deprecated: use c.DatabricksLabsDriver.workspace_retry_timeout."
    )
    workspace_http_timeout = Float(
        config=True, help="Deprecated: use c.DatabricksLabsDriver.workspace_http_timeout."
    )

    @default("ssh_check_timeout")
    def _default_ssh_check_timeout(self) -> float:
        return float(self.driver_settings().connect_timeout)

    registry: ClusterRegistry | None = None
    gateway_kernels: Any = None  # gatewaykernels.GatewayKernelStates, with --gateway-url

    def driver_settings(self) -> DriverSettings:
        """The driver settings: environment > Jupyter config > defaults (config.py)."""
        return driver_config(self.config).settings()

    def service_settings(self) -> ServiceSettings:
        return ServiceSettings(
            driver=self.driver_settings(),
            refresh_interval=self.refresh_interval,
            steady_refresh_interval=self.steady_refresh_interval,
            idle_pause=self.idle_pause,
            first_read_wait=self.first_read_wait,
            ssh_check_timeout=self.ssh_check_timeout,
            ssh_ready_timeout=self.ssh_ready_timeout,
            operation_timeout=self.operation_timeout,
            event_history=self.event_history,
            max_clusters=self.max_clusters,
            idle_evict=self.idle_evict,
            unknown_read_interval=self.unknown_read_interval,
        )

    def initialize_settings(self) -> None:
        self.registry = ClusterRegistry(
            self.service_settings(), restart_kernels=self.restart_kernels
        )
        self.settings["databrickslabs_jupyterlab_registry"] = self.registry

    def initialize_handlers(self) -> None:
        from .handlers import handlers

        self.handlers.extend(handlers())

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # Runs on the server's loop once it turns: subscribe to the kernel board now, so that
        # kernels reporting before the first status request are seen. Refresh tasks start per
        # cluster when it is first asked about.
        if self.registry is not None:
            self.registry.start()
        if gatewaykernels.gateway_enabled(serverapp):
            self.gateway_kernels = gatewaykernels.GatewayKernelStates(
                serverapp.kernel_manager,
                self.driver_settings().state_path,
                interval=self.gateway_poll_interval,
                log=self.log,
            )
            self.gateway_kernels.start()

    async def stop_extension(self) -> None:
        # The server's stop waits for this: it must end in time whatever the workspace and the
        # drivers do (a watcher that does not stop in time is left to the process's exit).
        began = time.monotonic()
        register = getattr(threading, "_register_atexit", None)
        if callable(register) and getattr(self.serverapp, "_stopping", False):
            # Only for a server that really stops (ServerApp.stop, e.g. on SIGTERM); tests
            # that clean up a server in their own process never arm it.
            with contextlib.suppress(RuntimeError):
                register(functools.partial(_bound_exit, began))
        if self.gateway_kernels is not None:
            await self.gateway_kernels.stop()
        if self.registry is None:
            return
        task = asyncio.ensure_future(self.registry.stop())
        done, _ = await asyncio.wait({task}, timeout=STOP_WITHIN)
        if not done:
            task.cancel()
            self.log.warning("The cluster watchers did not stop within %g s", STOP_WITHIN)

    async def restart_kernels(self, profile: str, cluster_id: str, kernel_ids: list[str]) -> None:
        """Restart those of the given kernels this server manages (the last step of a start)."""
        manager = self.serverapp.kernel_manager
        for kernel_id in kernel_ids:
            if kernel_id not in manager:
                continue
            self.log.info("Restarting kernel %s on cluster %s", kernel_id, cluster_id)
            result = manager.restart_kernel(kernel_id)
            if inspect.isawaitable(result):
                await result
