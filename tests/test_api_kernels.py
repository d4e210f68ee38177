"""A remote kernel in a Jupyter server (with its auto-restarter) whose link to the driver dies.

Real parts only: jupyter_server's kernel manager starts the kernel through the provisioner, the
simulator's cluster runs it on its driver over real SSH, and the REST API reports it. The
restarter is made to look every half second, so that an auto-restart that should not happen
would happen during the test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from tornado.httpclient import HTTPClientError

from databrickslabs_jupyterlab import kernelspecs
from tests.test_api import Client, assert_no_secret, check, server_config

pytestmark = [
    pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning"),
    pytest.mark.timeout(150),
]

RESTARTER_TICK = 0.5


@pytest.fixture
def jp_server_config(sim_profile):
    config = server_config(sim_profile)
    config["KernelRestarter"] = {"time_to_dead": RESTARTER_TICK}
    return config


@pytest.fixture
def client(jp_fetch, caplog):
    caplog.set_level(logging.DEBUG)  # the tests read the server's log
    return Client(jp_fetch)


async def _connected(client: Client, sim_profile: Any) -> None:
    code, body = await client.call("POST", "clusters", "demo", sim_profile.cluster_id, "start")
    assert code == 202, body
    final = (await client.until(sim_profile, {"connected", "error"}, timeout=60))[-1]
    assert final["state"] == "connected", final["message"]


async def _live_kernel(
    client: Client, sim_profile: Any, jp_fetch: Any, jp_serverapp: Any, jp_data_dir: Path
) -> tuple[str, Any]:
    """A running kernel (no Spark) on the started cluster, through the server's kernel API:
    its id and its KernelManager (the server shuts it down at the end of the test)."""
    await _connected(client, sim_profile)
    ksm = KernelSpecManager(data_dir=str(jp_data_dir))
    name = kernelspecs.create_kernelspec(
        "demo", sim_profile.cluster_id, "sim-cluster", env="lab", manager=ksm, spark=False
    )
    reply = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    kernel_id = json.loads(reply.body)["id"]
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    assert (await _until_kernel(client, kernel_id, {"running"}, 30))["cluster_id"] == (
        sim_profile.cluster_id
    )
    return kernel_id, km


async def _kernel(client: Client, kernel_id: str) -> dict[str, Any]:
    code, body = await client.call("GET", "kernels", kernel_id)
    assert code == 200, body
    return check("KernelStatus", body)


async def _until_kernel(
    client: Client, kernel_id: str, states: set[str], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body = await _kernel(client, kernel_id)
    while body["kernel_state"] not in states:
        assert time.monotonic() < deadline, f"kernel still {body['kernel_state']}"
        await asyncio.sleep(0.2)
        body = await _kernel(client, kernel_id)
    return body


async def _run(km: Any, code: str) -> str:
    """Execute ``code`` through a new client (a restart may have moved the ports)."""
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=90)
        out: list[str] = []
        reply = await kc.execute_interactive(
            code,
            timeout=20,
            output_hook=lambda m: out.append(m["content"].get("text", "")),
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out)
    finally:
        kc.stop_channels()


def _pid_alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _problems(caplog: Any, since: int) -> list[str]:
    """Log records since index ``since`` that carry a traceback or an exception handler's line."""
    return [
        f"{r.name}: {r.getMessage()[:200]}"
        for r in caplog.records[since:]
        if r.exc_info or "Traceback" in r.getMessage() or "Exception in callback" in r.getMessage()
    ]


def _messages(caplog: Any, since: int, text: str, level: int = logging.INFO) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records[since:]
        if r.levelno >= level and text in r.getMessage()
    ]


async def test_terminated_cluster_leaves_the_kernel_disconnected_until_a_start(
    client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir, caplog
):
    sim = sim_profile.simulator
    cid = sim_profile.cluster_id
    kernel_id, km = await _live_kernel(client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir)
    assert "driver" in await _run(km, "import sys; print(sys.executable)")
    old_pid = km.provisioner.pid

    mark = len(caplog.records)
    await asyncio.to_thread(sim.terminate, cid)
    started = time.monotonic()
    body = await _until_kernel(client, kernel_id, {"disconnected", "dead"}, 15)
    assert body["kernel_state"] == "disconnected"
    assert not await km.is_alive()  # what nbclient and jupyter console look at
    # Long enough for several restarter ticks: none of them may try a restart.
    await asyncio.to_thread(sim.wait_state, cid, "TERMINATED")
    await asyncio.sleep(max(0.0, 8 * RESTARTER_TICK - (time.monotonic() - started)))
    await client.until(sim_profile, {"terminated"}, timeout=20)
    body = await _kernel(client, kernel_id)
    assert body["kernel_state"] == "disconnected"
    assert body["cluster"]["state"] == "terminated"
    assert {"kernel_id": kernel_id, "kernel_state": "disconnected"} in body["cluster"]["kernels"]
    said = [e["message"] for e in body["cluster"]["events"] if kernel_id in e["message"]]
    assert any("TERMINAT" in m and "start the cluster" in m for m in said), said
    assert kernel_id in jp_serverapp.kernel_manager
    assert not _messages(caplog, mark, "restarting kernel")
    assert not _problems(caplog, mark)
    warnings = _messages(caplog, mark, kernel_id, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "TERMINAT" in warnings[0] and "not restarted automatically" in warnings[0]
    assert not _pid_alive(old_pid)

    # A restart asked by the user meanwhile fails (jupyter_server logs our reason); the kernel
    # still waits for its cluster.
    mark = len(caplog.records)
    with pytest.raises(HTTPClientError) as refused:
        await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    assert refused.value.code == 500
    assert _messages(caplog, mark, "is TERMINATED: start it", logging.ERROR)
    assert (await _kernel(client, kernel_id))["kernel_state"] == "disconnected"

    # The cluster's start restarts the kernel (restarting-kernels step) and a cell runs.
    mark = len(caplog.records)
    await _connected(client, sim_profile)
    body = await _until_kernel(client, kernel_id, {"running", "dead"}, 30)
    assert body["kernel_state"] == "running"
    assert await _run(km, "print(6 * 7)") == "42\n"
    assert km.provisioner.pid != old_pid
    assert not _problems(caplog, mark)
    assert not _messages(caplog, mark, "Could not", logging.WARNING)
    assert_no_secret(sim_profile, client, caplog)


async def _drop_link(client: Client, sim_profile: Any, kernel_id: str) -> None:
    """Abort the driver's SSH connections (the driver runs on) and wait for the kernel to notice."""
    assert await asyncio.to_thread(sim_profile.simulator.drop_ssh, sim_profile.cluster_id) >= 1
    body = await _until_kernel(client, kernel_id, {"disconnected", "dead"}, 15)
    assert body["kernel_state"] == "disconnected"


async def test_dropped_link_on_a_running_cluster_is_restarted_automatically(
    client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir, caplog
):
    kernel_id, km = await _live_kernel(client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir)
    await _run(km, "x = 1")
    old_pid = km.provisioner.pid

    mark = len(caplog.records)
    await _drop_link(client, sim_profile, kernel_id)
    body = await _until_kernel(client, kernel_id, {"running", "dead"}, 30)
    assert body["kernel_state"] == "running"
    assert km.provisioner.pid != old_pid
    # the old kernel was stopped on the driver (the link dropped, the driver did not)
    deadline = time.monotonic() + 10
    while _pid_alive(old_pid):
        assert time.monotonic() < deadline, "the old kernel survived the restart"
        await asyncio.sleep(0.1)
    # a new kernel: the old one's variables are gone, and cells run
    assert await _run(km, "print('x' in dir())") == "False\n"
    assert len(_messages(caplog, mark, "restarting kernel (1/")) == 1
    warnings = _messages(caplog, mark, kernel_id, logging.WARNING)
    assert len(warnings) == 1 and "still runs" in warnings[0], warnings
    assert not _problems(caplog, mark)
    assert_no_secret(sim_profile, client, caplog)


async def test_dropped_link_to_a_refusing_driver_waits_for_a_reconfigure(
    client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir, caplog
):
    sim = sim_profile.simulator
    cid = sim_profile.cluster_id
    kernel_id, km = await _live_kernel(client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir)

    mark = len(caplog.records)
    sim.set_ssh_mode(cid, "refuse")
    await _drop_link(client, sim_profile, kernel_id)
    deadline = time.monotonic() + 15
    while not _messages(caplog, mark, kernel_id, logging.WARNING):
        assert time.monotonic() < deadline, "no word about the lost kernel"
        await asyncio.sleep(0.2)
    for _ in range(6):
        await asyncio.sleep(RESTARTER_TICK)
    assert (await _kernel(client, kernel_id))["kernel_state"] == "disconnected"
    warnings = _messages(caplog, mark, kernel_id, logging.WARNING)
    assert len(warnings) == 1 and "does not answer" in warnings[0], warnings
    assert not _messages(caplog, mark, "restarting kernel")
    assert not _problems(caplog, mark)

    sim.set_ssh_mode(cid, "ok")
    code, body = await client.call("POST", "clusters", "demo", cid, "reconfigure")
    assert code == 202, body
    assert (await client.until(sim_profile, {"connected", "error"}, 60))[-1]["state"] == "connected"
    body = await _until_kernel(client, kernel_id, {"running", "dead"}, 30)
    assert body["kernel_state"] == "running"
    assert await _run(km, "print(1 + 1)") == "2\n"
    assert not _problems(caplog, mark)
    assert_no_secret(sim_profile, client, caplog)


async def test_start_and_reconfigure_of_a_connected_cluster_keep_the_kernel(
    client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir, caplog
):
    """A start of a connected cluster does nothing; a reconfigure that installs nothing leaves
    the running kernels alone, whatever it was told, unless told ``always``."""
    cid = sim_profile.cluster_id
    kernel_id, km = await _live_kernel(client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir)
    await _run(km, "kept = 41")
    pid = km.provisioner.pid
    before = await client.status(sim_profile)

    code, body = await client.call("POST", "clusters", "demo", cid, "start")
    # the answer is the status as it was: at most the finished start lingers as "done"
    assert code == 200 and body["state"] == "connected"
    assert body["operation"] == before["operation"]
    check("ClusterStatus", body)

    for choice in ("never", "if-installed"):
        code, body = await client.call(
            "POST",
            "clusters",
            "demo",
            cid,
            "reconfigure",
            body=json.dumps({"restart_kernels": choice}),
        )
        assert code == 202 and body["operation"]["restart_kernels"] == choice
        seen = await _until_operation_ends(client, sim_profile)
        assert seen[-1]["state"] == "connected", seen[-1]["message"]
        assert all("kernels" not in (s["operation"] or {}) for s in seen)
    assert km.provisioner.pid == pid
    assert await _run(km, "print(kept + 1)") == "42\n"
    assert (await client.status(sim_profile))["version"] > before["version"]

    code, body = await client.call(
        "POST", "clusters", "demo", cid, "reconfigure", body='{"restart_kernels": "sometimes"}'
    )
    assert (code, body["error"]) == (400, "invalid_body")

    code, body = await client.call(
        "POST", "clusters", "demo", cid, "reconfigure", body='{"restart_kernels": "always"}'
    )
    assert code == 202
    seen = await _until_operation_ends(client, sim_profile)
    assert any((s["operation"] or {}).get("kernels") == [kernel_id] for s in seen)
    await _until_kernel(client, kernel_id, {"running"}, 30)
    assert km.provisioner.pid != pid
    assert await _run(km, "print('kept' in dir())") == "False\n"
    assert_no_secret(sim_profile, client, caplog)


async def _until_operation_ends(client: Client, sim_profile: Any) -> list[dict[str, Any]]:
    """Long-poll until no operation runs (or only its final ``done`` lingers)."""
    seen = [await client.status(sim_profile)]
    deadline = time.monotonic() + 60
    while seen[-1]["operation"] is not None and seen[-1]["operation"]["step"] != "done":
        assert time.monotonic() < deadline, seen[-1]
        seen.append(await client.status(sim_profile, wait=5, since=seen[-1]["version"]))
    return seen
