"""One configuration in a Jupyter server: a driver setting given only in the server's config
(``c.DatabricksLabsDriver``, what ``jupyter_server_config.py`` sets) reaches the server's own SSH
checks and the kernels its kernel manager starts.

Real parts: jupyter_server through pytest-jupyter, the simulator over HTTP and SSH.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from databrickslabs_jupyterlab import kernelspecs
from tests.test_api import Client, check, server_config
from tests.test_api_kernels import _connected, _run, _until_kernel

pytestmark = [
    pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning"),
    pytest.mark.timeout(150),
]


@pytest.fixture
def wrapper(sim_profile: Any, tmp_path: Path) -> str:
    """The simulated driver's Python behind a script that marks the kernel's environment."""
    path = tmp_path / "driver-python-from-config"
    python = shlex.quote(sim_profile.simulator.driver_python)
    path.write_text(f'#!/bin/sh\nDBJL_TEST_PYTHON_VIA=server-config exec {python} "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def jp_server_config(sim_profile: Any, wrapper: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    # Only the server's config names the driver Python: the environment would win over it.
    monkeypatch.delenv("DBJL_DRIVER_PYTHON")
    return server_config(sim_profile, driver_python=wrapper)


@pytest.fixture
def client(jp_fetch: Any) -> Client:
    return Client(jp_fetch)


async def test_a_driver_setting_of_the_server_config_reaches_the_kernel(
    client: Client,
    sim_profile: Any,
    wrapper: str,
    jp_fetch: Any,
    jp_serverapp: Any,
    jp_data_dir: Path,
) -> None:
    extension = jp_serverapp.extension_manager.extension_apps["databrickslabs_jupyterlab"]
    app = next(iter(extension))
    assert app.driver_settings().driver_python == wrapper  # the server's own checks

    await _connected(client, sim_profile)  # prepared the driver through the wrapper
    ksm = KernelSpecManager(data_dir=str(jp_data_dir))
    name = kernelspecs.create_kernelspec(
        "demo", sim_profile.cluster_id, "sim-cluster", env="lab", manager=ksm, spark=False
    )
    reply = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    kernel_id = json.loads(reply.body)["id"]
    check("KernelStatus", await _until_kernel(client, kernel_id, {"running"}, 30))
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    out = await _run(km, "import os\nprint(os.environ.get('DBJL_TEST_PYTHON_VIA'))")
    assert out == "server-config\n"
