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
import http.server
import json
import logging
import os
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.wheels import build_wheel
from tests.test_api import Client, assert_no_secret, server_config
from tests.test_api_kernels import (  # noqa: F401 - client is a fixture
    RESTARTER_TICK,
    _connected,
    _kernel,
    _live_kernel,
    _messages,
    _pid_alive,
    _problems,
    _run,
    _until_kernel,
    client,
)

pytestmark = [
    pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning"),
    pytest.mark.timeout(240),
]

WORKSPACE_DOWN = float(os.environ.get("DBJL_FAULT_WORKSPACE_DOWN", "30"))
#: Bound of any single answer of the server's API during a fault.
ANSWER_BOUND = 15.0
#: How long a 429/503 storm lasts.
STORM = 6.0
PROBE = f"dbjl-fault-{uuid.uuid4().hex[:8]}"


class GatedIndex:
    """A find-links page for pip on loopback that holds every request until ``open()``:
    a driver install that is under way for as long as a test needs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.asked = threading.Event()
        self.gate = threading.Event()
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                index.asked.set()
                if not index.gate.wait(120):
                    self.send_error(503)
                    return
                name = self.path.strip("/")
                path = index.folder / name
                if name and path.is_file():
                    body, kind = path.read_bytes(), "application/octet-stream"
                else:
                    links = "".join(
                        f'<a href="/{w.name}">{w.name}</a>\n' for w in index.folder.glob("*.whl")
                    )
                    body, kind = f"<html><body>{links}</body></html>".encode(), "text/html"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a pip killed with its driver leaves a broken pipe here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def open(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


@pytest.fixture
def gated_index(tmp_path: Path) -> Iterator[GatedIndex]:
    folder = tmp_path / "index"
    build_wheel(folder, PROBE, "2.0")
    index = GatedIndex(folder)
    try:
        yield index
    finally:
        index.close()


@pytest.fixture
def jp_server_config(sim_profile, request):
    """test_api_kernels' config; with ``gated_index``, a driver library to install from it."""
    driver: dict[str, Any] = {}
    if "gated_index" in request.fixturenames:
        index = request.getfixturevalue("gated_index")
        driver = {
            "driver_requirements": ["ipykernel>=6.0", f"{PROBE}>=2"],
            "pip_args": ["--no-index", "--find-links", index.url, "--retries", "0"],
        }
    config = server_config(sim_profile, **driver)
    config["KernelRestarter"] = {"time_to_dead": RESTARTER_TICK}
    return config


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


@pytest.mark.parametrize("status", [429, 503])
async def test_workspace_storm_is_an_error_and_passes_by_itself(
    status, client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir, caplog
):
    """A storm of 429 or 503 answers: the status says so in a sentence, every request of ours
    is answered within its bound, the kernel keeps running cells, a start asked meanwhile fails
    with the sentence; once the storm is over the cluster is connected again by itself."""
    sim = sim_profile.simulator
    cid = sim_profile.cluster_id
    kernel_id, km = await _live_kernel(client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir)
    await _run(km, "kept = 1")
    mark = len(caplog.records)

    sim.fail_next(100000, status)
    began = time.monotonic()
    code, body = await _bounded(client.call("GET", "clusters", params={"profile": "demo"}), "list")
    assert (code, body["error"]) == (503, "workspace_unavailable"), body
    seen = await _status_until(
        client, sim_profile, lambda s: s["state"] == "error", 30, "no error during the storm"
    )
    assert f"keeps failing ({status})" in seen[-1]["message"], seen[-1]["message"]
    assert (await _kernel(client, kernel_id))["kernel_state"] == "running"
    assert await _bounded(_run(km, "print(kept + 1)"), "a cell") == "2\n"

    code, body = await client.call("POST", "clusters", "demo", cid, "start")
    assert code == 202, body
    failed = await _status_until(
        client, sim_profile, lambda s: s["operation"] is None, 30, "the start did not end"
    )
    assert failed[-1]["state"] == "error" and f"({status})" in failed[-1]["message"]
    assert sim.calls().get("POST /api/2.1/clusters/start") == 1  # the first start's alone

    # the storm lasts STORM seconds while the status keeps being read
    while time.monotonic() - began < STORM:
        await _bounded(client.status(sim_profile, wait=1, since=failed[-1]["version"]), "poll")
    reads = sim.calls().get("GET /api/2.1/clusters/get", 0)
    assert sim.clear_failures() > 0
    final = await _status_until(
        client, sim_profile, lambda s: s["state"] != "error", 30, "no recovery after the storm"
    )
    assert final[-1]["state"] == "connected", final[-1]["message"]
    code, _ = await client.call("GET", "clusters", params={"profile": "demo"})
    assert code == 200
    assert (await _kernel(client, kernel_id))["kernel_state"] == "running"
    assert await _run(km, "print(kept + 2)") == "3\n"  # the same kernel all along
    assert not _messages(caplog, mark, "restarting kernel")
    assert not _problems(caplog, mark)
    assert_no_secret(sim_profile, client, caplog)
    print(f"storm {status}: {reads} cluster reads reached the workspace in {STORM:g} s")


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


# ------------------------------------------------------------------------------ SSH


@pytest.mark.parametrize("mode", ["refuse", "hang"])
async def test_ssh_fault_is_unreachable_until_a_reconfigure(
    mode, client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir, caplog
):
    """SSH refused, or a driver that accepts TCP and never answers: the cluster is
    ``unreachable`` with the reason, the kernel whose link dropped is ``disconnected`` (not
    restarted), a reconfigure meanwhile ends in an error within its bounds; once SSH answers,
    one reconfigure connects the cluster and restarts the kernel."""
    sim = sim_profile.simulator
    cid = sim_profile.cluster_id
    kernel_id, km = await _live_kernel(client, sim_profile, jp_fetch, jp_serverapp, jp_data_dir)
    mark = len(caplog.records)

    sim.set_ssh_mode(cid, mode)
    seen = await _status_until(
        client, sim_profile, lambda s: s["state"] == "unreachable", 40, "not unreachable"
    )
    assert seen[-1]["ssh"]["reachable"] is False and seen[-1]["ssh"]["error"]
    assert "cannot be reached" in seen[-1]["message"]
    assert await asyncio.to_thread(sim.drop_ssh, cid) >= 1
    body = await _until_kernel(client, kernel_id, {"disconnected", "dead"}, 40)
    assert body["kernel_state"] == "disconnected"
    assert "does not answer" in (await _warned(caplog, mark, kernel_id))[0]

    began = time.monotonic()
    code, body = await client.call("POST", "clusters", "demo", cid, "reconfigure")
    assert code == 202, body
    failed = await _status_until(
        client, sim_profile, lambda s: s["operation"] is None, 90, "the reconfigure hung"
    )
    assert failed[-1]["state"] == "error" and failed[-1]["message"]
    print(f"ssh {mode}: the reconfigure failed after {time.monotonic() - began:.1f} s")
    assert (await _kernel(client, kernel_id))["kernel_state"] == "disconnected"
    assert not _messages(caplog, mark, "restarting kernel")

    sim.set_ssh_mode(cid, "ok")
    code, body = await client.call("POST", "clusters", "demo", cid, "reconfigure")
    assert code == 202, body
    final = await _status_until(
        client, sim_profile, lambda s: s["operation"] is None or s["state"] == "error", 60, "hung"
    )
    final = await _status_until(
        client, sim_profile, lambda s: s["state"] in ("connected", "error"), 30, "not connected"
    )
    assert final[-1]["state"] == "connected", final[-1]["message"]
    assert (await _until_kernel(client, kernel_id, {"running", "dead"}, 40))[
        "kernel_state"
    ] == "running"
    assert await _run(km, "print(5 * 5)") == "25\n"
    assert not _problems(caplog, mark)
    assert_no_secret(sim_profile, client, caplog)


# -------------------------------------------------------------------------- the cluster


async def test_cluster_terminated_during_install_ends_terminated_and_a_start_recovers(
    gated_index, client, sim_profile, caplog
):
    """The cluster terminates while pip runs on its driver: the start ends (no hang) with a
    sentence, the status is ``terminated``; one start later the library is installed."""
    sim = sim_profile.simulator
    cid = sim_profile.cluster_id
    code, body = await client.call("POST", "clusters", "demo", cid, "start")
    assert code == 202, body
    asked = await asyncio.to_thread(gated_index.asked.wait, 90)
    assert asked, "pip never asked the index"
    status = await client.status(sim_profile)
    assert status["state"] == "installing", status["message"]
    mark = len(caplog.records)

    await asyncio.to_thread(sim.terminate, cid)
    seen = await _status_until(
        client, sim_profile, lambda s: s["operation"] is None, 60, "the install hung"
    )
    final = await _status_until(
        client, sim_profile, lambda s: s["state"] == "terminated", 60, "not terminated"
    )
    states = [s["state"] for s in seen + final]
    errors = [e["message"] for e in final[-1]["events"] if e["state"] == "error"]
    assert errors, states
    assert "its driver went away while it was being prepared" in errors[-1], errors
    assert "start the cluster again" in errors[-1] and "TERMINAT" in errors[-1], errors
    assert "terminated" in final[-1]["message"]
    assert not _problems(caplog, mark)

    gated_index.open()
    await _connected(client, sim_profile)
    status = await client.status(sim_profile)
    installed = [e for e in status["events"] if e["message"].startswith("Installed on the driver")]
    assert installed and PROBE in installed[-1]["message"], status["events"]
    assert sim.calls().get("POST /api/2.1/clusters/start") == 2
    assert not _problems(caplog, mark)
    assert_no_secret(sim_profile, client, caplog)


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
    # Jupyter's restarter says so once it saw the kernel dead (the board said "dead" first);
    # "running" after that is the new kernel's, whatever states passed between two reads.
    deadline = time.monotonic() + 40
    while not _messages(caplog, mark, "restarting kernel (1/"):
        assert time.monotonic() < deadline, "the restarter did not notice the killed kernel"
        await asyncio.sleep(0.1)
    body = await _until_kernel(client, kernel_id, {"running"}, 40)
    assert km.provisioner.pid != old_pid
    said = [e["message"] for e in body["cluster"]["events"] if kernel_id in e["message"]]
    assert any("is dead" in m and "(status -9)" in m for m in said), said
    assert await _run(km, "print('kept' in dir())") == "False\n"
    assert len(_messages(caplog, mark, "restarting kernel (1/")) == 1
    assert not _problems(caplog, mark)
    assert (await client.status(sim_profile))["state"] == "connected"
    assert_no_secret(sim_profile, client, caplog)
