"""Each transport end to end through a Jupyter server: the Databricks SSH tunnel (a dedicated
cluster without a public IP) and the Command Execution API (a standard access mode cluster).

For each: the status says connected with its transport, a kernel runs a cell, the cluster's
termination leaves the kernel disconnected (what brings the restart dialog), and the start
the dialog asks for brings the kernel back, where cells run again. Real parts: the simulator
over real HTTP, the stand-in ``databricks`` executable relaying SSH over the driver proxy's
websocket, jupyter_server's kernel manager.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from databrickslabs_jupyterlab import kernelspecs
from tests.test_api import Client, assert_no_secret, server_config
from tests.test_api_kernels import _run, _until_kernel

pytestmark = [
    pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning"),
    pytest.mark.timeout(240),
]

RUNTIME = "17.3.x-scala2.13"


@pytest.fixture
def jp_home_dir(isolated_home):
    """One home for the server and the test: the tunnel's ProxyCommand writes its key there."""
    return isolated_home


@pytest.fixture
def jp_server_config(sim_profile):
    return server_config(sim_profile)


@pytest.fixture
def client(jp_fetch):
    return Client(jp_fetch)


async def _start(client: Client, profile: Any) -> dict[str, Any]:
    code, body = await client.call("POST", "clusters", "demo", profile.cluster_id, "start")
    assert code in (200, 202), body
    final = (await client.until(profile, {"connected", "error"}, timeout=90))[-1]
    assert final["state"] == "connected", final["message"]
    return final


async def _kernel_on(
    client: Client, profile: Any, jp_fetch: Any, jp_serverapp: Any, jp_data_dir: Path, **kw: Any
) -> tuple[str, Any]:
    ksm = KernelSpecManager(data_dir=str(jp_data_dir))
    name = kernelspecs.create_kernelspec(
        "demo", profile.cluster_id, "c", env="t", manager=ksm, spark=False, **kw
    )
    reply = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    kernel_id = json.loads(reply.body)["id"]
    await _until_kernel(client, kernel_id, {"running"}, 60)
    return kernel_id, jp_serverapp.kernel_manager.get_kernel(kernel_id)


async def _terminate_and_restart(
    client: Client, profile: Any, kernel_id: str, km: Any, transport: str
) -> None:
    sim = profile.simulator
    await asyncio.to_thread(sim.terminate, profile.cluster_id)
    body = await _until_kernel(client, kernel_id, {"disconnected", "dead"}, 30)
    assert body["kernel_state"] == "disconnected"
    status = (await client.until(profile, {"terminated"}, timeout=30))[-1]
    assert status["transport"] == transport
    # what the restart dialog asks for: a start, which restarts the disconnected kernel
    await _start(client, profile)
    assert (await _until_kernel(client, kernel_id, {"running", "dead"}, 60))["kernel_state"] == (
        "running"
    )
    assert await _run(km, "print(6 * 7)") == "42\n"


async def test_a_dedicated_cluster_without_public_ip_through_the_ssh_tunnel(
    client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir, isolated_home, databricks_cli, caplog
):
    sim = sim_profile.simulator
    cid = await asyncio.to_thread(
        sim.add_cluster, "tunnel", spark_version=RUNTIME, public_ip=False
    )
    profile = dataclasses.replace(sim_profile, cluster_id=cid)
    setup = await asyncio.to_thread(
        subprocess.run,
        ["databricks", "ssh", "setup", "--name", "box", "--cluster", cid, "--profile", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(isolated_home)},
    )
    assert setup.returncode == 0, setup.stderr

    status = await _start(client, profile)
    assert status["transport"] == "ssh-tunnel", status
    assert "Host box" in status["transport_reason"]
    assert sim.cluster(cid).ssh_public_keys == []  # the tunnel brings its own key
    kernel_id, km = await _kernel_on(client, profile, jp_fetch, jp_serverapp, jp_data_dir)
    assert await _run(km, "import getpass; print(getpass.getuser() != '')") == "True\n"
    await _terminate_and_restart(client, profile, kernel_id, km, "ssh-tunnel")
    assert_no_secret(sim_profile, client, caplog)


async def test_a_standard_access_mode_cluster_through_the_command_api(
    client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir
):
    sim = sim_profile.simulator
    cid = await asyncio.to_thread(
        sim.add_cluster, "shared", data_security_mode="USER_ISOLATION", single_user_name=None
    )
    profile = dataclasses.replace(sim_profile, cluster_id=cid)
    status = await _start(client, profile)
    assert status["transport"] == "command-api", status
    assert "standard access mode" in status["transport_reason"]
    assert sim.cluster(cid).ssh_public_keys == []
    kernel_id, km = await _kernel_on(
        client, profile, jp_fetch, jp_serverapp, jp_data_dir, transport="command-api"
    )
    assert await _run(km, "x = 20\nprint(x + 1)") == "21\n"
    await _terminate_and_restart(client, profile, kernel_id, km, "command-api")


async def test_an_impossible_transport_is_409_before_anything_changes(client, sim_profile):
    sim = sim_profile.simulator
    cid = await asyncio.to_thread(
        sim.add_cluster, "shared", data_security_mode="USER_ISOLATION", single_user_name=None
    )
    profile = dataclasses.replace(sim_profile, cluster_id=cid)
    status = (await client.until(profile, {"terminated"}))[-1]
    assert status["transport"] == "command-api"
    for asked, needle in (("ssh", "allows no SSH"), ("ssh-tunnel", "dedicated to one user")):
        code, body = await client.call(
            "POST", "clusters", "demo", cid, "start", body=json.dumps({"transport": asked})
        )
        assert (code, body["error"]) == (409, "transport_impossible"), body
        assert needle in body["message"]
    code, body = await client.call(
        "POST", "clusters", "demo", cid, "start", body=json.dumps({"transport": "telnet"})
    )
    assert (code, body["error"]) == (400, "invalid_body")
    assert sim.cluster(cid).state == "TERMINATED"
    assert not sim.calls().get("POST /api/2.1/clusters/start")
