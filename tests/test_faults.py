"""The fault matrix (issue 13): each fault ends in the right state, recovers with one action
and hangs nothing.

Real parts only: a Jupyter server with this extension, the simulator over real HTTP and SSH,
remote kernels on its driver through the server's own kernel manager (with its restarter,
looking every half second). Every wait is bounded; the tests synchronise on states they poll
or on events, never on a fixed sleep. Two more faults of the matrix live elsewhere: the Jupyter
server killed and started again (tests/test_watchdog.py) and the network lost during shutdown
(tests/test_shutdown.py).

``DBJL_FAULT_WORKSPACE_DOWN`` sets how long the workspace is down (default 30 s, the matrix's
figure; a shorter value makes the test quicker).
"""

# ruff: noqa: F811 - the fixtures of test_api_kernels are imported by name

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import urllib.request
from typing import Any

import pytest

from tests.test_api import Client, assert_no_secret
from tests.test_api_kernels import (  # noqa: F401 - client and jp_server_config are fixtures
    _kernel,
    _live_kernel,
    _messages,
    _pid_alive,
    _problems,
    _run,
    _until_kernel,
    client,
    jp_server_config,
)

pytestmark = [
    pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning"),
    pytest.mark.timeout(240),
]

WORKSPACE_DOWN = float(os.environ.get("DBJL_FAULT_WORKSPACE_DOWN", "30"))
#: Bound of any single answer of the server's API during a fault.
ANSWER_BOUND = 15.0


async def _bounded(coro: Any, what: str, bound: float = ANSWER_BOUND) -> Any:
    """Await ``coro``; a fault that makes it hang fails the test instead."""
    try:
        return await asyncio.wait_for(coro, bound)
    except asyncio.TimeoutError:
        pytest.fail(f"{what} hung for more than {bound:g} s")


async def _status_until(
    client: Client, sim_profile: Any, accept: Any, timeout: float, what: str
) -> list[dict[str, Any]]:
    """Long-poll the cluster until ``accept(status)``; every answer bounded."""
    seen = [await _bounded(client.status(sim_profile), "a status read")]
    deadline = time.monotonic() + timeout
    while not accept(seen[-1]):
        assert time.monotonic() < deadline, (what, [(s["state"], s["message"]) for s in seen[-5:]])
        poll = client.status(sim_profile, wait=2, since=seen[-1]["version"])
        seen.append(await _bounded(poll, "a long-poll"))
    return seen


async def _workspace_rest(sim_profile: Any, path: str, body: dict[str, Any]) -> None:
    """A call of the workspace's REST API as another user of the workspace makes it."""
    sim = sim_profile.simulator
    request = urllib.request.Request(
        f"{sim.url}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {sim.token}", "Content-Type": "application/json"},
        method="POST",
    )
    with await asyncio.to_thread(urllib.request.urlopen, request, timeout=30) as answer:
        assert answer.status == 200


async def _warned(caplog: Any, mark: int, kernel_id: str) -> list[str]:
    """The warnings about the kernel since ``mark``, once there is one (bounded wait)."""
    deadline = time.monotonic() + 40
    while not (said := _messages(caplog, mark, kernel_id, logging.WARNING)):
        assert time.monotonic() < deadline, "no word about the lost kernel"
        await asyncio.sleep(0.2)
    return said


# ------------------------------------------------------------------------- the workspace


async def test_workspace_down_leaves_kernels_alone_and_comes_back(
    client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir, caplog
):
    """The workspace down for WORKSPACE_DOWN seconds: the status is an error with the sentence,
    the kernel on the driver runs cells all along and can even be restarted (the driver is
    reached without the workspace); the status is connected again by itself afterwards."""
    sim = sim_profile.simulator
    kernel_id, km = await _live_kernel(client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir)
    await _run(km, "kept = 40")
    mark = len(caplog.records)

    sim.fail_next(1_000_000, 503)
    began = time.monotonic()
    seen = await _status_until(
        client, sim_profile, lambda s: s["state"] == "error", 30, "no error while down"
    )
    message = seen[-1]["message"]
    assert "keeps failing (503)" in message or "did not answer" in message, message
    assert await _bounded(_run(km, "print(kept + 2)"), "a cell") == "42\n"

    old_pid = km.provisioner.pid
    await _bounded(
        jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body=""), "a restart", 60
    )
    assert km.provisioner.pid != old_pid
    assert (await _kernel(client, kernel_id))["kernel_state"] == "running"
    assert await _run(km, "print('kept' in dir())") == "False\n"

    cells = 0
    while time.monotonic() - began < WORKSPACE_DOWN:
        status = await _bounded(client.status(sim_profile, wait=2), "a status read")
        assert status["state"] == "error", status["message"]
        assert await _bounded(_run(km, f"print({cells})"), "a cell") == f"{cells}\n"
        cells += 1
    assert sim.clear_failures() > 0
    final = await _status_until(
        client, sim_profile, lambda s: s["state"] != "error", 30, "no recovery after the outage"
    )
    assert final[-1]["state"] == "connected", final[-1]["message"]
    assert (await _kernel(client, kernel_id))["kernel_state"] == "running"
    assert not _messages(caplog, mark, "restarting kernel")
    assert not _problems(caplog, mark)
    assert_no_secret(sim_profile, client, caplog)


# -------------------------------------------------------------------------- the cluster


async def test_driver_restarted_under_a_running_kernel(
    client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir, caplog
):
    """Someone restarts the cluster while a kernel runs: the kernel is ``disconnected`` with
    the reason and is not restarted on the new driver behind the user's back; one action of the
    status bar restarts it."""
    cid = sim_profile.cluster_id
    kernel_id, km = await _live_kernel(client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir)
    await _run(km, "kept = 1")
    old_pid = km.provisioner.pid
    mark = len(caplog.records)

    await _workspace_rest(sim_profile, "/api/2.1/clusters/restart", {"cluster_id": cid})
    body = await _until_kernel(client, kernel_id, {"disconnected", "dead"}, 30)
    assert body["kernel_state"] == "disconnected"
    # The cluster is read after the link is lost: restarting still, or already back.
    warning = (await _warned(caplog, mark, kernel_id))[0]
    assert "is RESTARTING" in warning or "was replaced" in warning, warning
    await asyncio.to_thread(sim_profile.simulator.wait_state, cid, "RUNNING", 60)
    await _status_until(
        client, sim_profile, lambda s: s["state"] == "connected", 60, "not connected again"
    )
    body = await _kernel(client, kernel_id)
    assert body["kernel_state"] == "disconnected"
    assert not _pid_alive(old_pid)
    assert not _messages(caplog, mark, "restarting kernel")
    said = [e["message"] for e in body["cluster"]["events"] if kernel_id in e["message"]]
    assert any("start the cluster" in m or "reconfigure the cluster" in m for m in said), said

    # A start (the action the sentence names while the cluster restarts), though the cluster
    # is connected again: it restarts the disconnected kernel.
    code, body = await client.call("POST", "clusters", "demo", cid, "start")
    assert code == 202 and body["operation"]["kind"] == "start", body
    body = await _until_kernel(client, kernel_id, {"running", "dead"}, 60)
    assert body["kernel_state"] == "running"
    assert await _run(km, "print('kept' in dir())") == "False\n"
    assert not _problems(caplog, mark)
    assert_no_secret(sim_profile, client, caplog)


async def test_kernel_killed_on_the_driver_is_restarted(
    client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir, caplog
):
    """The kernel's process is killed on the driver (out of memory, ``kill -9``): the kernel is
    ``dead`` with the exit status, and Jupyter's restarter starts a new one on the same driver
    (the driver answers), as for a local kernel; cells run again."""
    kernel_id, km = await _live_kernel(client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir)
    await _run(km, "kept = 1")
    old_pid = km.provisioner.pid
    mark = len(caplog.records)

    os.kill(old_pid, signal.SIGKILL)  # the simulated driver runs on this machine
    deadline = time.monotonic() + 40
    states = []
    while km.provisioner.pid == old_pid or not states or states[-1] != "running":
        assert time.monotonic() < deadline, states
        state = (await _kernel(client, kernel_id))["kernel_state"]
        if not states or states[-1] != state:
            states.append(state)
        await asyncio.sleep(0.1)
    print("kernel killed:", states)
    assert await _run(km, "print('kept' in dir())") == "False\n"
    assert len(_messages(caplog, mark, "restarting kernel (1/")) == 1
    assert not _problems(caplog, mark)
    assert (await client.status(sim_profile))["state"] == "connected"
    assert_no_secret(sim_profile, client, caplog)
