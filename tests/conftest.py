"""Shared test setup: every test runs with a private HOME and no DATABRICKS_* variables,
so the user's own ~/.databrickscfg, ~/.ssh and Jupyter settings are never read or written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = [
    "pytest_jupyter.jupyter_server",
    "tests.fixtures.simulator",
    "tests.fixtures.sshd",
    "tests.fixtures.driverpython",
    "tests.fixtures.cli",
]


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith("DATABRICKS_") or name.startswith("DBJL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(home / ".databrickscfg"))
    monkeypatch.setenv("DBJL_STATE_DIR", str(home / ".databrickslabs_jupyterlab"))
    monkeypatch.setenv("DBJL_SSH_CONFIG", str(home / ".ssh" / "config"))
    return home


@pytest.fixture
def jupyter_dirs(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Kernelspecs and runtime files of the kernel tests in the private HOME."""
    for name in ("JUPYTER_PATH", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(isolated_home / "jupyter-data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(isolated_home / "jupyter-runtime"))
    return isolated_home
