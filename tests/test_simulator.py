"""The workspace simulator, exercised the way the product uses it: the unmodified databricks-sdk
over real HTTP, and a real SSH client (asyncssh) against the simulated drivers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.config import Config
from databricks.sdk.errors import DatabricksError
from databricks.sdk.service.compute import EventType, State

from databrickslabs_jupyterlab.simulator import SimulatorThread
from tests.fixtures.simulator import SimProfile, make_keypair


def client(sim: SimulatorThread, token: str | None = None) -> WorkspaceClient:
    cfg = Config(
        host=sim.url, token=token or sim.token, retry_timeout_seconds=10, http_timeout_seconds=5
    )
    return WorkspaceClient(config=cfg)


def http(
    sim: SimulatorThread, method: str, path: str, body: Any = None, token: str | None = ""
) -> tuple[int, Any]:
    """Plain HTTP (for status codes and bodies the SDK turns into exceptions)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(sim.url + path, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token or sim.token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


async def ssh_connect(
    port: int, identity: Path | str, **kwargs: Any
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        port,
        username="ubuntu",
        client_keys=[str(identity)],
        known_hosts=None,
        agent_path=None,
        config=[],
        connect_timeout=kwargs.pop("connect_timeout", 5),
        **kwargs,
    )


def running_cluster(sim: SimulatorThread, tmp_path: Path, **kwargs: Any) -> tuple[str, Path]:
    identity = tmp_path / "id_test"
    public = make_keypair(identity)
    cid = sim.add_cluster("running", state="RUNNING", ssh_public_keys=[public], **kwargs)
    return cid, identity


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


# -- REST API through the SDK -------------------------------------------------------------------


def test_every_transition_through_the_sdk(sim_profile: SimProfile) -> None:
    sim = sim_profile.simulator
    cid = sim_profile.cluster_id
    w = client(sim)

    details = w.clusters.get(cid)
    assert details.state == State.TERMINATED
    assert details.cluster_name == "sim-cluster"
    assert details.ssh_public_keys == [sim_profile.public_key]
    assert details.driver is None and details.termination_reason is not None
    assert [c.cluster_id for c in w.clusters.list()] == [cid]

    w.clusters.start(cid)  # returns a waiter; not waited for, like the product
    assert w.clusters.get(cid).state == State.PENDING
    with pytest.raises(DatabricksError) as err:
        w.clusters.start(cid)
    assert err.value.error_code == "INVALID_STATE"
    sim.wait_state(cid, "RUNNING", timeout=5)
    running = w.clusters.get(cid)
    assert running.driver.public_dns == "127.0.0.1"
    assert running.driver.start_timestamp >= running.start_time
    first_key = sim.cluster(cid).host_key
    assert first_key.startswith("ssh-ed25519 ")

    w.clusters.restart(cid)
    assert w.clusters.get(cid).state == State.RESTARTING
    sim.wait_state(cid, "RUNNING", timeout=5)
    restarted = w.clusters.get(cid)
    assert restarted.driver.start_timestamp > running.driver.start_timestamp
    assert sim.cluster(cid).host_key != first_key

    # edit on RUNNING restarts the cluster with the new spec
    other = make_keypair(sim_profile.identity_file.parent / "id_other")
    w.clusters.edit(
        cid,
        spark_version=restarted.spark_version,
        cluster_name="renamed",
        ssh_public_keys=[sim_profile.public_key, other],
        autotermination_minutes=30,
    )
    assert w.clusters.get(cid).state == State.RESTARTING
    sim.wait_state(cid, "RUNNING", timeout=5)
    edited = w.clusters.get(cid)
    assert edited.cluster_name == "renamed" and edited.autotermination_minutes == 30
    assert edited.ssh_public_keys == [sim_profile.public_key, other]

    sim.terminate(cid, "USER_REQUEST")
    terminating = w.clusters.get(cid)
    assert terminating.state == State.TERMINATING
    assert terminating.termination_reason.code.value == "USER_REQUEST"
    sim.wait_state(cid, "TERMINATED", timeout=5)
    terminated = w.clusters.get(cid)
    assert terminated.terminated_time >= terminating.start_time and terminated.driver is None

    # edit on TERMINATED only edits
    w.clusters.edit(cid, spark_version=terminated.spark_version, cluster_name="again")
    assert w.clusters.get(cid).state == State.TERMINATED
    assert w.clusters.get(cid).cluster_name == "again"

    types = [e.type for e in w.clusters.events(cid, order=None)]
    newest_first = [
        EventType.EDITED,
        EventType.TERMINATING,
        EventType.DRIVER_HEALTHY,
        EventType.RUNNING,
        EventType.RESTARTING,
        EventType.EDITED,
    ]
    assert types[: len(newest_first)] == newest_first
    for kind in (EventType.CREATING, EventType.STARTING, EventType.RESTARTING):
        assert kind in types
    # the SDK follows the pagination of the events API
    paged = list(w.clusters.events(cid, limit=2))
    assert [e.timestamp for e in paged] == [e.timestamp for e in w.clusters.events(cid)]
    assert len(paged) == len(types) > 2


def test_errors_like_databricks(simulator: SimulatorThread) -> None:
    cid = simulator.add_cluster("c")
    w = client(simulator)
    with pytest.raises(DatabricksError) as err:
        w.clusters.get("0000-000000-nothere")
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "0000-000000-nothere does not exist" in str(err.value)
    with pytest.raises(DatabricksError) as err:
        w.clusters.restart(cid)
    assert err.value.error_code == "INVALID_STATE"

    status, body = http(simulator, "POST", "/api/2.1/clusters/start", {"cluster_id": "nope"})
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    status, body = http(simulator, "GET", "/api/2.1/clusters/nothing")
    assert (status, body["error_code"]) == (404, "ENDPOINT_NOT_FOUND")

    # no token, wrong token: 401 with the same JSON shape, and the token is never echoed
    status, body = http(simulator, "GET", f"/api/2.1/clusters/get?cluster_id={cid}", token=None)
    assert (status, body["error_code"]) == (401, "UNAUTHENTICATED")
    status, body = http(
        simulator, "GET", f"/api/2.1/clusters/get?cluster_id={cid}", token="dapiwrong"
    )
    assert (status, body["error_code"]) == (401, "UNAUTHENTICATED")
    assert "dapiwrong" not in json.dumps(body)
    with pytest.raises(DatabricksError) as err:
        client(simulator, token="dapiwrong").clusters.get(cid)
    assert err.value.error_code == "UNAUTHENTICATED"

    # the discovery endpoint answers without auth
    with urllib.request.urlopen(simulator.url + "/.well-known/databricks-config") as resp:
        meta = json.loads(resp.read())
    assert meta["cloud"] == "aws" and meta["workspace_id"]


def test_injected_failures_are_retried_by_the_sdk(simulator: SimulatorThread) -> None:
    cid = simulator.add_cluster("c")
    w = client(simulator)
    simulator.fail_next(1, 503, path="/api/2.1/clusters/get")
    simulator.fail_next(1, 429, path="/api/2.1/clusters/get")
    before = simulator.calls().get("GET /api/2.1/clusters/get", 0)
    assert w.clusters.get(cid).cluster_id == cid
    assert simulator.calls()["GET /api/2.1/clusters/get"] == before + 3

    # a path filter leaves other calls alone; 500 is not retried
    simulator.fail_next(1, 500, path="/api/2.0/libraries")
    assert [c.cluster_id for c in w.clusters.list()] == [cid]
    with pytest.raises(DatabricksError) as err:
        list(w.libraries.cluster_status(cid))
    assert err.value.error_code == "INTERNAL_ERROR"
    assert list(w.libraries.cluster_status(cid)) == []


def test_latency_and_libraries(simulator: SimulatorThread) -> None:
    from databricks.sdk.service.compute import Library, PythonPyPiLibrary

    cid = simulator.add_cluster("c", state="RUNNING")
    w = client(simulator)
    w.libraries.install(cid, [Library(pypi=PythonPyPiLibrary(package="ipykernel"))])
    statuses = list(w.libraries.cluster_status(cid))
    assert statuses[0].library.pypi.package == "ipykernel"
    deadline = time.monotonic() + 30
    while list(w.libraries.cluster_status(cid))[0].status.value != "INSTALLED":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    simulator.set_latency(0.4)
    t0 = time.monotonic()
    w.clusters.get(cid)
    assert time.monotonic() - t0 >= 0.4
    simulator.set_latency(0)


@pytest.mark.simulator(time_scale=0.02)
def test_auto_termination_waits_for_ssh_sessions(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    # 1 minute x 0.02 = 1.2 s of inactivity
    cid, identity = running_cluster(simulator, tmp_path, autotermination_minutes=1)

    async def hold_session() -> None:
        async with await ssh_connect(simulator.cluster(cid).ssh_port, identity):
            await asyncio.sleep(2.0)
            assert simulator.cluster(cid).state == "RUNNING"

    asyncio.run(hold_session())
    simulator.wait_state(cid, "TERMINATING", timeout=5)
    simulator.wait_state(cid, "TERMINATED", timeout=5)
    details = client(simulator).clusters.get(cid)
    assert details.termination_reason.code.value == "INACTIVITY"
    assert "Inactive cluster terminated" in details.state_message


# -- SSH driver ---------------------------------------------------------------------------------


def test_ssh_login_commands_sudo_and_sftp(simulator: SimulatorThread, tmp_path: Path) -> None:
    cid, identity = running_cluster(simulator, tmp_path)
    port = simulator.cluster(cid).ssh_port
    wrong = tmp_path / "id_wrong"
    make_keypair(wrong)

    async def scenario() -> None:
        async with await ssh_connect(port, identity) as conn:
            result = await conn.run("echo out; echo err >&2; exit 7")
            assert (result.stdout, result.stderr, result.exit_status) == ("out\n", "err\n", 7)
            result = await conn.run("cat | tr a-z A-Z", input="hello")
            assert result.stdout == "HELLO"
            result = await conn.run("sudo -n -E -- GREETING=hi sh -c 'echo $GREETING $USER'")
            assert result.stdout == "hi ubuntu\n"
            result = await conn.run(
                f"{simulator.driver_python} -c 'import sys, ipykernel; print(sys.prefix)'"
            )
            assert result.exit_status == 0, result.stderr
            assert Path(result.stdout.strip()) == Path(simulator.driver_python).parent.parent
            async with conn.start_sftp_client() as sftp:
                async with sftp.open(str(tmp_path / "uploaded.txt"), "w") as f:
                    await f.write("via sftp")
            assert (tmp_path / "uploaded.txt").read_text() == "via sftp"
            # a signal reaches the remote process
            proc = await conn.create_process("sleep 30")
            await asyncio.sleep(0.2)
            proc.send_signal("TERM")
            await asyncio.wait_for(proc.wait_closed(), 5)
            assert proc.exit_signal is not None and proc.exit_signal[0] == "TERM"

        with pytest.raises(asyncssh.PermissionDenied):
            await ssh_connect(port, wrong)

    asyncio.run(scenario())


def test_new_host_key_on_restart_and_no_ssh_when_not_running(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    cid, identity = running_cluster(simulator, tmp_path)
    port = simulator.cluster(cid).ssh_port

    async def server_key() -> str:
        async with await ssh_connect(port, identity) as conn:
            return conn.get_server_host_key().export_public_key().decode().strip()

    first = asyncio.run(server_key())
    assert first == simulator.cluster(cid).host_key
    client(simulator).clusters.restart(cid)
    with pytest.raises(OSError):
        asyncio.run(server_key())
    simulator.wait_state(cid, "RUNNING", timeout=5)
    assert simulator.cluster(cid).ssh_port == port
    second = asyncio.run(server_key())
    assert second != first and second == simulator.cluster(cid).host_key

    simulator.terminate(cid)
    with pytest.raises(OSError):
        asyncio.run(server_key())


def test_forwarding_only_to_loopback(simulator: SimulatorThread, tmp_path: Path) -> None:
    cid, identity = running_cluster(simulator, tmp_path)

    async def scenario() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        target = server.sockets[0].getsockname()[1]
        async with server, await ssh_connect(simulator.cluster(cid).ssh_port, identity) as conn:
            reader, writer = await conn.open_connection("127.0.0.1", target)
            writer.write(b"ping")
            assert await reader.read(100) == b"ping"
            writer.close()
            listener = await conn.forward_local_port("127.0.0.1", 0, "localhost", target)
            r2, w2 = await asyncio.open_connection("127.0.0.1", listener.get_port())
            w2.write(b"pong")
            assert await r2.read(100) == b"pong"
            w2.close()
            listener.close()
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("192.0.2.1", 80)
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("example.com", 80)

    asyncio.run(scenario())


def test_refuse_hang_and_drop(simulator: SimulatorThread, tmp_path: Path) -> None:
    cid, identity = running_cluster(simulator, tmp_path)
    port = simulator.cluster(cid).ssh_port

    async def scenario() -> None:
        simulator.set_ssh_mode(cid, "refuse")
        with pytest.raises((asyncssh.Error, OSError)):
            await ssh_connect(port, identity)
        simulator.set_ssh_mode(cid, "hang")
        t0 = time.monotonic()
        with pytest.raises((asyncio.TimeoutError, asyncssh.Error, OSError)):
            await ssh_connect(port, identity, connect_timeout=0.5)
        assert time.monotonic() - t0 < 3
        simulator.set_ssh_mode(cid, "ok")

        conn = await ssh_connect(port, identity)
        result = await conn.run("nohup sleep 60 >/dev/null 2>&1 & echo $!")
        pid = int(result.stdout)
        assert await asyncio.to_thread(simulator.drop_ssh, cid) == 1
        await asyncio.wait_for(conn.wait_closed(), 5)
        with pytest.raises((asyncssh.Error, OSError)):
            await conn.run("true")
        assert pid_alive(pid)  # a dropped link does not kill the driver's processes
        async with await ssh_connect(port, identity) as again:
            assert (await again.run("true")).exit_status == 0

    asyncio.run(scenario())


def test_processes_survive_close_but_not_terminate(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    cid, identity = running_cluster(simulator, tmp_path)

    async def start_detached() -> list[int]:
        async with await ssh_connect(simulator.cluster(cid).ssh_port, identity) as conn:
            # one detached process, one in a new process group (a shell job), and a daemon in
            # a session of its own (like a remote kernel)
            r1 = await conn.run("nohup sleep 120 >/dev/null 2>&1 & echo $!")
            r2 = await conn.run("set -m; sleep 120 >/dev/null 2>&1 & echo $!")
            r3 = await conn.run(
                "python3 -c 'import os, subprocess; print(subprocess.Popen([\"sleep\", "
                "\"120\"], start_new_session=True, stdout=subprocess.DEVNULL, "
                "stderr=subprocess.DEVNULL).pid)'"
            )
            return [int(r1.stdout), int(r2.stdout), int(r3.stdout)]

    async def start_with_pty() -> int:
        async with await ssh_connect(simulator.cluster(cid).ssh_port, identity) as conn:
            proc = await conn.create_process("sleep 120 & echo $!; wait", term_type="xterm")
            return int(await asyncio.wait_for(proc.stdout.readline(), 30))

    pids = asyncio.run(start_detached())
    pty_pid = asyncio.run(start_with_pty())
    deadline = time.monotonic() + 30
    while pid_alive(pty_pid):  # like sshd: the end of a PTY session hangs its processes up
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert all(pid_alive(p) for p in pids)
    simulator.terminate(cid)
    assert not any(pid_alive(p) for p in pids)

    # stop() kills as well
    cid2, identity2 = running_cluster(simulator, tmp_path / "two")

    async def one() -> int:
        async with await ssh_connect(simulator.cluster(cid2).ssh_port, identity2) as conn:
            return int((await conn.run("nohup sleep 120 >/dev/null 2>&1 & echo $!")).stdout)

    pid = asyncio.run(one())
    assert pid_alive(pid)
    simulator.stop()
    assert not pid_alive(pid)


# -- controls over HTTP and the CLI -------------------------------------------------------------


def test_control_endpoints(simulator: SimulatorThread) -> None:
    cid = simulator.add_cluster("c", state="RUNNING")
    status, _ = http(simulator, "GET", "/_sim/calls", token="wrong")
    assert status == 401
    assert (
        http(
            simulator,
            "POST",
            "/_sim/fail",
            {"n": 1, "status": 500, "path": "/api/2.1/clusters/get"},
        )[0]
        == 200
    )
    assert http(simulator, "GET", f"/api/2.1/clusters/get?cluster_id={cid}")[0] == 500
    assert http(simulator, "GET", "/_sim/calls")[1]["GET /api/2.1/clusters/get"] == 1
    simulator.fail_next(3, 503)
    assert http(simulator, "DELETE", "/_sim/fail")[1] == {"cleared": 3}
    assert http(simulator, "GET", f"/api/2.1/clusters/get?cluster_id={cid}")[0] == 200
    assert http(simulator, "POST", "/_sim/latency", {"seconds": 0.01})[0] == 200
    assert simulator.sim.latency == 0.01
    assert http(simulator, "POST", f"/_sim/clusters/{cid}/ssh", {"mode": "hang"})[0] == 200
    assert simulator.cluster(cid).ssh_mode == "hang"
    assert http(simulator, "POST", f"/_sim/clusters/{cid}/ssh", {"mode": "bogus"})[0] == 400
    assert http(simulator, "POST", f"/_sim/clusters/{cid}/drop-ssh")[1]["dropped"] == 0
    clusters = http(simulator, "GET", "/_sim/clusters")[1]["clusters"]
    assert clusters[0]["cluster_id"] == cid and clusters[0]["ssh_port"] > 0
    status, body = http(simulator, "POST", f"/_sim/clusters/{cid}/terminate", {"reason": "x y"})
    assert status == 400
    status, body = http(simulator, "POST", f"/_sim/clusters/{cid}/terminate", {})
    assert status == 200 and body["state"] == "TERMINATING"
    assert http(simulator, "POST", "/_sim/clusters/nope/terminate", {})[0] == 404


def test_cli_prints_and_writes_a_profile_and_stops_on_sigterm(
    tmp_path: Path, simulator_state_dir: Path
) -> None:
    config_file = tmp_path / "databrickscfg"
    config_file.write_text("[other]\nhost = https://example.invalid\ntoken = x\n")
    ssh_dir = tmp_path / "ssh"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "databrickslabs_jupyterlab.simulator",
            "--time-scale=0.1",
            f"--state-dir={simulator_state_dir}",
            "--write-profile=demo",
            f"--config-file={config_file}",
            f"--ssh-dir={ssh_dir}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == "# simulator ready":
                break
        out = "".join(lines)
        assert "# simulator ready" in out, (
            out + proc.stderr.read() if proc.poll() is not None else out
        )
        assert "[demo]" in out and "export DBJL_DRIVER_PYTHON=" in out
        written = config_file.read_text()
        assert "[other]" in written and "[demo]" in written
        assert (ssh_dir / "id_demo").exists() and (ssh_dir / "id_demo.pub").exists()
        ssh_config = (ssh_dir / "config").read_text()
        assert "HostName 127.0.0.1" in ssh_config and str(ssh_dir / "id_demo") in ssh_config

        w = WorkspaceClient(
            config=Config(
                profile="demo",
                config_file=str(config_file),
                retry_timeout_seconds=10,
                http_timeout_seconds=5,
            )
        )
        (cluster,) = list(w.clusters.list())
        assert cluster.ssh_public_keys == [(ssh_dir / "id_demo.pub").read_text().strip()]
        # the cluster ids are printed, also for clusters without an SSH entry
        assert f"{cluster.cluster_id}  SINGLE_USER  " in out
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        proc.stdout.close()
        proc.stderr.close()
