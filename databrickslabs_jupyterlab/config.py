"""One configuration of the driver and SSH settings for the server, the kernels and the CLI.

:class:`DatabricksLabsDriver` is a traitlets ``Configurable``: set its traits in any Jupyter config
file (``c.DatabricksLabsDriver.ssh_port = 2222`` in ``jupyter_server_config.py``). Every consumer
builds a :class:`~.settings.DriverSettings` from it with one precedence, highest first:

1. the kernelspec's ``metadata.databricks`` (for a kernel: ``driver_python``, ``sudo``,
   ``ssh_user``, ``ssh_port``, ``identity_file``),
2. the environment (``DBJL_SSH_PORT``, ``DBJL_DRIVER_PYTHON``, ... see :data:`.settings.ENV_VARS`),
3. Jupyter config (``c.DatabricksLabsDriver.*``; the first wave's ``c.DatabricksLabsJupyterLab.*``
   names of the same settings still count, below the new section),
4. the defaults, those of a real Databricks driver.

The provisioner reads the config of the kernel manager it runs in (the server's) and, in a
kernel manager of its own (nbconvert, papermill, ``jupyter console``), the
``jupyter_server_config`` files of Jupyter's config path, so the same kernel behaves alike
everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from traitlets import Float, Int, List, Unicode, default
from traitlets.config import Config, Configurable
from traitlets.config.loader import JSONFileConfigLoader, PyFileConfigLoader

from .settings import (
    DEFAULT_DRIVER_REQUIREMENTS,
    DEFAULT_WATCHDOG_GRACE,
    SUDO_MODES,
    DriverSettings,
    env_values,
)

SECTION = "DatabricksLabsDriver"
#: The server extension's section, where the first wave documented these settings.
LEGACY_SECTION = "DatabricksLabsJupyterLab"
#: Driver settings a kernelspec may set for its kernel (``metadata.databricks``).
SPEC_OVERRIDES = ("driver_python", "sudo", "ssh_user", "ssh_port", "identity_file")
#: The Jupyter config files read by a consumer outside the server.
CONFIG_FILE_BASE = "jupyter_server_config"

log = logging.getLogger(__name__)


class DatabricksLabsDriver(Configurable):
    """How to reach and use the driver of a Databricks cluster (see the module docstring)."""

    ssh_port = Int(2200, config=True, help="SSH port of the drivers (DBJL_SSH_PORT).")
    ssh_user = Unicode("ubuntu", config=True, help="SSH user on the drivers (DBJL_SSH_USER).")
    ssh_config_file = Unicode(
        "~/.ssh/config",
        config=True,
        help="OpenSSH config whose `Host <cluster_id>` entries win (DBJL_SSH_CONFIG).",
    )
    identity_file = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Private key for every profile (DBJL_IDENTITY_FILE); default ~/.ssh/id_<profile>.",
    )
    driver_python = Unicode(
        "/databricks/python/bin/python",
        config=True,
        help="Absolute path of the driver's Python (DBJL_DRIVER_PYTHON).",
    )
    sudo = Unicode(
        "auto",
        config=True,
        help=f"Use sudo -n on the driver: one of {', '.join(SUDO_MODES)} (DBJL_SUDO); auto means "
        "when the SSH user is not root.",
    )
    state_dir = Unicode(
        "~/.databrickslabs_jupyterlab",
        config=True,
        help="Folder for known host keys, prepared drivers and runtime files (DBJL_STATE_DIR).",
    )
    connect_timeout = Float(
        10.0, config=True, help="Seconds an SSH connection may take (DBJL_CONNECT_TIMEOUT)."
    )
    keepalive_interval = Float(
        5.0, config=True, help="Seconds between SSH keepalives (DBJL_KEEPALIVE_INTERVAL)."
    )
    keepalive_count_max = Int(
        2,
        config=True,
        help="Unanswered keepalives before the link counts as lost (DBJL_KEEPALIVE_COUNT_MAX).",
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
        help="Databricks config file (DATABRICKS_CONFIG_FILE); default ~/.databrickscfg.",
    )
    workspace_retry_timeout = Int(
        20,
        config=True,
        help="Seconds databricks-sdk keeps retrying a failing workspace call (429, 503, "
        "connection errors) before the workspace counts as unavailable "
        "(DBJL_WORKSPACE_RETRY_TIMEOUT).",
    )
    workspace_http_timeout = Float(
        10.0,
        config=True,
        help="Seconds databricks-sdk waits for one HTTP answer (DBJL_WORKSPACE_HTTP_TIMEOUT).",
    )

    watchdog_grace = Float(
        DEFAULT_WATCHDOG_GRACE,
        config=True,
        help="Seconds a kernel on the driver outlives its controlling connection (the server "
        "killed, the laptop asleep, the network gone): then it exits and removes its run "
        "folder (DBJL_WATCHDOG_GRACE).",
    )

    @default("driver_requirements")
    def _default_requirements(self) -> list[str]:
        return list(DEFAULT_DRIVER_REQUIREMENTS)

    def settings(
        self,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> DriverSettings:
        """The effective settings: ``overrides`` (kernelspec) > environment > config > defaults.

        Raises ``ValueError`` with a sentence for a value that cannot be used.
        """
        values: dict[str, Any] = {}
        for name in self.trait_names(config=True):
            value = getattr(self, name)
            values[name] = tuple(value) if isinstance(value, list) else value
        values.update(env_values(dict(environ) if environ is not None else None))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            return DriverSettings(**values)
        except TypeError as err:
            raise ValueError(str(err)) from None


def driver_config(config: Config | None = None) -> DatabricksLabsDriver:
    """The driver configuration of a Jupyter ``Config`` (both sections, the new one winning)."""
    merged = Config()
    if config is not None:
        legacy = config.get(LEGACY_SECTION) if LEGACY_SECTION in config else None
        if legacy:
            names = set(DatabricksLabsDriver.class_trait_names(config=True))
            merged[SECTION] = Config({k: v for k, v in legacy.items() if k in names})
        if SECTION in config:
            merged.merge(Config({SECTION: config[SECTION]}))
    return DatabricksLabsDriver(config=merged)


def jupyter_config_files(base: str = CONFIG_FILE_BASE) -> list[Path]:
    """The ``jupyter_server_config.{json,py}`` files on Jupyter's config path, lowest priority
    first (the order in which they are merged)."""
    from jupyter_core.paths import jupyter_config_path

    found: list[Path] = []
    for folder in reversed(jupyter_config_path()):
        for suffix in (".json", ".py"):
            path = Path(folder) / f"{base}{suffix}"
            if path.is_file():
                found.append(path)
    return found


def load_jupyter_config(base: str = CONFIG_FILE_BASE) -> Config:
    """Jupyter's config files, as a consumer outside the server sees them (blocking file I/O:
    call it in a thread from async code). A broken file is logged and skipped."""
    config = Config()
    for path in jupyter_config_files(base):
        loader_class = JSONFileConfigLoader if path.suffix == ".json" else PyFileConfigLoader
        try:
            loaded = loader_class(path.name, path=str(path.parent), log=log).load_config()
        except Exception as err:  # noqa: BLE001 - a broken user file must not stop a kernel
            log.warning("Ignoring the Jupyter config file %s: %s", path, err)
            continue
        config.merge(loaded)
    return config


def for_consumer(parent_config: Config | None = None) -> DatabricksLabsDriver:
    """The configuration seen by a consumer: Jupyter's config files, then the config of the
    application it runs in (the server's, with its command line), which wins."""
    config = load_jupyter_config()
    if parent_config is not None:
        config.merge(parent_config)
    return driver_config(config)
