"""The Jupyter server extension: knobs (traitlets), REST handlers, background work."""

from __future__ import annotations

import inspect
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Int, List, Unicode, default

from .clusters import ClusterRegistry, ServiceSettings
from .settings import SUDO_MODES, DriverSettings


def _env_default(name: str) -> Any:
    return getattr(DriverSettings.from_env(), name)


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
    workspace_retry_timeout = Int(
        20,
        config=True,
        help="Seconds databricks-sdk keeps retrying a failing workspace call (429, 503, "
        "connection errors) before the API reports the workspace unavailable.",
    )
    workspace_http_timeout = Float(
        10.0, config=True, help="Seconds databricks-sdk waits for one HTTP answer of the workspace."
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
    ssh_port = Int(config=True, help="SSH port of the drivers (DBJL_SSH_PORT, default 2200).")
    ssh_user = Unicode(config=True, help="SSH user on the drivers (DBJL_SSH_USER, default ubuntu).")
    ssh_config_file = Unicode(
        config=True, help="OpenSSH config whose `Host <cluster_id>` entries win (DBJL_SSH_CONFIG)."
    )
    identity_file = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Private key for every profile (DBJL_IDENTITY_FILE); default ~/.ssh/id_<profile>.",
    )
    driver_python = Unicode(
        config=True,
        help="Absolute path of the driver's Python (DBJL_DRIVER_PYTHON, default "
        "/databricks/python/bin/python).",
    )
    sudo = Unicode(
        config=True,
        help=f"Use sudo -n on the driver: one of {', '.join(SUDO_MODES)} (DBJL_SUDO).",
    )
    state_dir = Unicode(
        config=True, help="Folder for known host keys and runtime files (DBJL_STATE_DIR)."
    )
    driver_requirements = List(
        Unicode(),
        config=True,
        help="PEP 508 requirements the driver's Python must satisfy (DBJL_DRIVER_REQUIREMENTS).",
    )
    pip_args = List(
        Unicode(),
        config=True,
        help="Extra arguments for pip install on the driver, e.g. an index URL (DBJL_PIP_ARGS).",
    )
    databricks_config_file = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Databricks config file; default $DATABRICKS_CONFIG_FILE or ~/.databrickscfg.",
    )

    @default("ssh_port")
    def _default_ssh_port(self) -> int:
        return _env_default("ssh_port")

    @default("ssh_user")
    def _default_ssh_user(self) -> str:
        return _env_default("ssh_user")

    @default("ssh_config_file")
    def _default_ssh_config_file(self) -> str:
        return _env_default("ssh_config_file")

    @default("identity_file")
    def _default_identity_file(self) -> str | None:
        return _env_default("identity_file")

    @default("driver_python")
    def _default_driver_python(self) -> str:
        return _env_default("driver_python")

    @default("sudo")
    def _default_sudo(self) -> str:
        return _env_default("sudo")

    @default("state_dir")
    def _default_state_dir(self) -> str:
        return _env_default("state_dir")

    @default("driver_requirements")
    def _default_driver_requirements(self) -> list[str]:
        return list(_env_default("driver_requirements"))

    @default("pip_args")
    def _default_pip_args(self) -> list[str]:
        return list(_env_default("pip_args"))

    @default("ssh_check_timeout")
    def _default_ssh_check_timeout(self) -> float:
        return float(_env_default("connect_timeout"))

    registry: ClusterRegistry | None = None

    def driver_settings(self) -> DriverSettings:
        return DriverSettings.from_env(
            ssh_port=self.ssh_port,
            ssh_user=self.ssh_user,
            ssh_config_file=self.ssh_config_file,
            identity_file=self.identity_file,
            driver_python=self.driver_python,
            sudo=self.sudo,
            state_dir=self.state_dir,
            driver_requirements=tuple(self.driver_requirements),
            pip_args=tuple(self.pip_args),
        )

    def service_settings(self) -> ServiceSettings:
        return ServiceSettings(
            driver=self.driver_settings(),
            config_file=self.databricks_config_file,
            refresh_interval=self.refresh_interval,
            steady_refresh_interval=self.steady_refresh_interval,
            idle_pause=self.idle_pause,
            first_read_wait=self.first_read_wait,
            retry_timeout=self.workspace_retry_timeout,
            http_timeout=self.workspace_http_timeout,
            ssh_check_timeout=self.ssh_check_timeout,
            ssh_ready_timeout=self.ssh_ready_timeout,
            operation_timeout=self.operation_timeout,
            event_history=self.event_history,
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

    async def stop_extension(self) -> None:
        if self.registry is not None:
            await self.registry.stop()

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
