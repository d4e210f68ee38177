"""Driver and SSH defaults shared by the server extension, the kernel provisioner and the CLI.

The defaults are those of a real Databricks driver. :mod:`.config` fills a :class:`DriverSettings`
with one precedence for every process (kernelspec metadata > environment > Jupyter config >
defaults); a ``Host <cluster_id>`` entry in ``~/.ssh/config`` then wins for the SSH endpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

DEFAULT_SSH_PORT = 2200
DEFAULT_SSH_USER = "ubuntu"
DEFAULT_DRIVER_PYTHON = "/databricks/python/bin/python"
DEFAULT_DRIVER_REQUIREMENTS = ("ipykernel>=6.0",)
#: Seconds a remote kernel outlives the last sign of its controlling connection (10 minutes).
DEFAULT_WATCHDOG_GRACE = 600.0

# Environment variable -> field name. Values are parsed with the field's type.
ENV_VARS = {
    "DBJL_SSH_PORT": "ssh_port",
    "DBJL_SSH_USER": "ssh_user",
    "DBJL_SSH_CONFIG": "ssh_config_file",
    "DBJL_IDENTITY_FILE": "identity_file",
    "DBJL_DRIVER_PYTHON": "driver_python",
    "DBJL_SUDO": "sudo",
    "DBJL_STATE_DIR": "state_dir",
    "DBJL_CONNECT_TIMEOUT": "connect_timeout",
    "DBJL_KEEPALIVE_INTERVAL": "keepalive_interval",
    "DBJL_KEEPALIVE_COUNT_MAX": "keepalive_count_max",
    "DBJL_PIP_ARGS": "pip_args",
    "DBJL_DRIVER_REQUIREMENTS": "driver_requirements",
    "DATABRICKS_CONFIG_FILE": "databricks_config_file",
    "DBJL_WORKSPACE_RETRY_TIMEOUT": "workspace_retry_timeout",
    "DBJL_WORKSPACE_HTTP_TIMEOUT": "workspace_http_timeout",
    "DBJL_WATCHDOG_GRACE": "watchdog_grace",
}

SUDO_MODES = ("auto", "always", "never")


def env_values(environ: dict[str, str] | None = None) -> dict[str, object]:
    """The settings the environment sets, parsed with each field's type; a bad value is a
    ``ValueError`` naming the variable."""
    env = os.environ if environ is None else environ
    types = {f.name: f.type for f in fields(DriverSettings)}
    values: dict[str, object] = {}
    for var, name in ENV_VARS.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        kind = str(types[name])
        try:
            if kind == "int":
                values[name] = int(raw)
            elif kind == "float":
                values[name] = float(raw)
            elif kind.startswith("tuple"):
                values[name] = tuple(raw.split())
            else:
                values[name] = raw
        except ValueError:
            raise ValueError(f"{var}={raw!r} is not a valid {kind}") from None
    return values


@dataclass(frozen=True)
class DriverSettings:
    """How to reach and use a cluster driver."""

    ssh_port: int = DEFAULT_SSH_PORT
    ssh_user: str = DEFAULT_SSH_USER
    #: Private key; ``None`` means ``~/.ssh/id_<profile>``.
    identity_file: str | None = None
    ssh_config_file: str = "~/.ssh/config"
    driver_python: str = DEFAULT_DRIVER_PYTHON
    #: ``auto``: use ``sudo -n`` when the SSH user is not root (a real driver's Python belongs
    #: to root and ``ubuntu`` has passwordless sudo).
    sudo: str = "auto"
    #: Folder for the product's own state: known hosts per cluster, kernel runtime files.
    state_dir: str = "~/.databrickslabs_jupyterlab"
    connect_timeout: float = 10.0
    keepalive_interval: float = 5.0
    keepalive_count_max: int = 2
    #: Extra arguments for the driver's ``pip install`` (for example an index URL).
    pip_args: tuple[str, ...] = ()
    driver_requirements: tuple[str, ...] = field(default=DEFAULT_DRIVER_REQUIREMENTS)
    #: The Databricks config file; ``None`` means ``$DATABRICKS_CONFIG_FILE`` or ``~/.databrickscfg``.
    databricks_config_file: str | None = None
    #: Seconds databricks-sdk keeps retrying a failing call (429, 503, connection errors).
    workspace_retry_timeout: int = 20
    #: Seconds databricks-sdk waits for one HTTP answer.
    workspace_http_timeout: float = 10.0
    #: Seconds a kernel on the driver outlives its controlling connection (the server that
    #: started it was killed, the laptop slept, the network went for good): then the kernel
    #: and its launcher exit and remove their run folder (the driver-side watchdog).
    watchdog_grace: float = DEFAULT_WATCHDOG_GRACE

    def __post_init__(self) -> None:
        if self.sudo not in SUDO_MODES:
            raise ValueError(f"sudo must be one of {', '.join(SUDO_MODES)}, not {self.sudo!r}")
        if not 0 < int(self.ssh_port) < 65536:
            raise ValueError(f"ssh_port must be a TCP port, not {self.ssh_port!r}")
        if not 0 < float(self.watchdog_grace) < float("inf"):
            raise ValueError(
                f"watchdog_grace must be a positive number of seconds, not {self.watchdog_grace!r}"
            )
        if not self.driver_python.startswith("/"):
            raise ValueError(f"driver_python must be an absolute path, not {self.driver_python!r}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> DriverSettings:
        """Defaults, then ``DBJL_*`` environment variables, then explicit overrides."""
        values = env_values(environ)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def with_overrides(self, **overrides: object) -> DriverSettings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def identity_file_for(self, profile: str) -> Path:
        if self.identity_file:
            return Path(self.identity_file).expanduser()
        return Path("~/.ssh").expanduser() / f"id_{profile}"

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser()

    def use_sudo(self, user: str) -> bool:
        if self.sudo == "always":
            return True
        if self.sudo == "never":
            return False
        return user != "root"
