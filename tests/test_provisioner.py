"""The SSH kernel provisioner against real SSH servers.

Two drivers: the workspace simulator's (asyncssh, real processes, host key renewed per start)
and Debian's OpenSSH sshd reached through a ``Host <cluster_id>`` entry in ``~/.ssh/config``.
In both cases the cluster itself is looked up in the simulator over HTTP. Both run on this
machine, so the tests can look at the remote processes and files through /proc.

Spark: the simulator's driver normally has no pyspark. The tests that need a known answer put a
small ``pyspark`` package on the remote kernel's PYTHONPATH (through the kernelspec's ``env``)
that fails, sleeps or hangs. The real-Spark test runs when pyspark is importable here, or when
``DBJL_TEST_PYSPARK_PATH`` names a folder holding it (``pip install --target DIR pyspark``); it
also needs Java.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager, KernelManager
from nbclient import NotebookClient
from traitlets.config import Config

from databrickslabs_jupyterlab import kernelspecs, sparkattach
from databrickslabs_jupyterlab.kernelstate import KernelRecord, board
from databrickslabs_jupyterlab.provisioner import DatabricksSshProvisioner
from databrickslabs_jupyterlab.remotekernel import ssh_loop
from databrickslabs_jupyterlab.workspace import Workspace

pytestmark = pytest.mark.timeout(120)

# Read before the autouse fixture clears DBJL_* variables.
PYSPARK_PATH = os.environ.get("DBJL_TEST_PYSPARK_PATH") or None
HAVE_PYSPARK = importlib.util.find_spec("pyspark") is not None or bool(
    PYSPARK_PATH and Path(PYSPARK_PATH, "pyspark", "__init__.py").is_file()
)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def running_cluster(simulator: Any, sim_profile: Any) -> Any:
    """The simulator's cluster, started through the workspace API and RUNNING."""

    async def start() -> None:
        ws = await Workspace.for_profile(sim_profile.name)
        await ws.start_cluster(sim_profile.cluster_id)

    asyncio.run(start())
    simulator.wait_state(sim_profile.cluster_id, "RUNNING", timeout=30)
    return sim_profile


@pytest.fixture
def sim_kernel(running_cluster: Any, jupyter_dirs: Path) -> str:
    """A kernelspec for the simulator's driver (with Spark, the default)."""
    return kernelspecs.create_kernelspec(
        running_cluster.name, running_cluster.cluster_id, "sim-cluster", env="test"
    )


@pytest.fixture
def sim_kernel_no_spark(running_cluster: Any, jupyter_dirs: Path) -> str:
    """A kernelspec for the simulator's driver without Spark (the CLI's -N)."""
    return kernelspecs.create_kernelspec(
        running_cluster.name, running_cluster.cluster_id, "sim-cluster", env="test", spark=False
    )


@pytest.fixture
def sshd_kernel(
    running_cluster: Any,
    sshd: Any,
    isolated_home: Path,
    jupyter_dirs: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """A kernelspec whose cluster id is routed to OpenSSH sshd by ~/.ssh/config."""
    config = isolated_home / ".ssh" / "config"
    config.write_text(
        f"Host {running_cluster.cluster_id}\n"
        "  HostName 127.0.0.1\n"
        f"  Port {sshd.port}\n"
        f"  User {sshd.user}\n"
        f"  IdentityFile {sshd.identity_file}\n"
    )
    monkeypatch.setenv("DBJL_DRIVER_PYTHON", sys.executable)
    monkeypatch.setenv("DBJL_SUDO", "never")
    return kernelspecs.create_kernelspec(
        running_cluster.name, running_cluster.cluster_id, "sim-cluster", env="sshd"
    )


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def _exists(*parts: str) -> bool:
    return Path(*parts).exists()


def _read(*parts: str) -> str:
    return Path(*parts).read_bytes().decode(errors="replace")


def _mode(*parts: str) -> int:
    return Path(*parts).stat().st_mode & 0o777


async def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def _start(kernel_name: str) -> tuple[AsyncKernelManager, Any]:
    km = AsyncKernelManager(kernel_name=kernel_name)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=90)
    return km, kc


def _set_spec_env(kernel_name: str, env: dict[str, str]) -> None:
    """Give an installed spec an ``env`` (passed on to the remote kernel)."""
    path = Path(KernelSpecManager().get_kernel_spec(kernel_name).resource_dir, "kernel.json")
    spec = json.loads(path.read_text())
    spec["env"] = env
    path.write_text(json.dumps(spec))


def _set_spec_databricks(kernel_name: str, **values: Any) -> None:
    """Set ``metadata.databricks`` values of an installed spec (its per-kernel overrides)."""
    path = Path(KernelSpecManager().get_kernel_spec(kernel_name).resource_dir, "kernel.json")
    spec = json.loads(path.read_text())
    spec["metadata"]["databricks"].update(values)
    path.write_text(json.dumps(spec))


def _fake_pyspark(folder: Path, body: str) -> str:
    """A folder with a ``pyspark`` package whose import runs ``body``; for PYTHONPATH."""
    package = folder / "pyspark"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body)
    return str(folder)


async def _wait_record(
    kernel_id: str, ready: Any, timeout: float = 20, what: str = "board state"
) -> KernelRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = board.get(kernel_id)
        if record is not None and ready(record):
            return record
        assert time.monotonic() < deadline, f"{what} not reached: {record}"
        await asyncio.sleep(0.05)


LOOPING = "print('looping', flush=True)\n"


async def _wait_looping(kc: Any, msg_id: str, timeout: float = 20) -> None:
    """Until the cell (which starts with ``LOOPING``) says it runs. Its ``execute_input`` is
    not enough: an interrupt before the user's code runs hits IPython's own machinery."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
        if msg["parent_header"].get("msg_id") != msg_id or msg["msg_type"] != "stream":
            continue
        if "looping" in msg["content"]["text"]:
            return


async def _run(kc: Any, code: str, timeout: float = 20) -> tuple[dict, list[str]]:
    """Run ``code``; its stdout and results. stderr is left out: ipykernel echoes what the
    kernel's process (or a JVM it started) writes on file descriptor 2, which is not the cell's
    answer."""
    outputs: list[str] = []

    def hook(msg: dict) -> None:
        if msg["msg_type"] == "stream" and msg["content"].get("name") == "stdout":
            outputs.append(msg["content"]["text"])
        elif msg["msg_type"] == "execute_result":
            outputs.append(msg["content"]["data"]["text/plain"])

    reply = await kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return reply, outputs


# ------------------------------------------------------------------------------ tests


def test_notebook_runs_on_the_remote_kernel_via_sshd(sshd_kernel: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os\nos.environ.get('DBJL_REMOTE_KERNEL'), os.getpid()"),
        nbformat.v4.new_code_cell("a = 42"),
        nbformat.v4.new_code_cell("print(a * 2)"),
        nbformat.v4.new_code_cell("open(f'/proc/{os.getppid()}/cmdline').read()"),
    ]
    NotebookClient(nb, kernel_name=sshd_kernel, timeout=30, startup_timeout=60).execute()
    marker, pid = eval(nb.cells[0].outputs[0]["data"]["text/plain"])  # noqa: S307 - own output
    assert marker == "1"  # set only in the remote kernel's environment
    assert pid != os.getpid()
    assert "DBJL_REMOTE_KERNEL" not in os.environ
    assert nb.cells[2].outputs[0]["text"] == "84\n"
    # the kernel's parent is the bootstrap that sshd started, not this process
    parent_cmdline = nb.cells[3].outputs[0]["data"]["text/plain"]
    assert "dbjl-kernel-" in parent_cmdline and "ipykernel_launcher" in parent_cmdline
    assert not _alive(pid)  # nbclient shut the kernel down: nothing left on the "driver"


def test_interrupt_restart_shutdown_via_sshd(sshd_kernel: str, sshd: Any) -> None:
    async def scenario() -> None:
        km, kc = await _start(sshd_kernel)
        prov = km.provisioner
        pid, run_dir = prov.pid, prov.run_dir
        assert _alive(pid) and _exists(run_dir, "kernel.json")
        assert _mode(run_dir, "kernel.json") == 0o600
        # the HMAC key is in the file, never on a command line
        key = km.session.key.decode()
        cmdline = _read(f"/proc/{pid}/cmdline")
        assert key not in cmdline and key in _read(run_dir, "kernel.json")

        msg_id = kc.execute(LOOPING + "while True: pass")
        await _wait_looping(kc, msg_id)
        started = time.monotonic()
        await km.interrupt_kernel()
        while True:
            reply = await kc.get_shell_msg(timeout=10)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - started < 5
        reply, out = await _run(kc, "1 + 1")
        assert out == ["2"]

        await _run(kc, "x = 'before restart'")
        await km.restart_kernel()
        await kc.wait_for_ready(timeout=90)
        assert await _wait_gone(pid), "the old kernel survived the restart"
        new_pid = km.provisioner.pid
        assert new_pid != pid and _alive(new_pid)
        reply, out = await _run(kc, "'x' in dir()")
        assert out == ["False"]
        record = board.get(km.kernel_id)
        assert record is not None and record.state == "running"

        new_run_dir = km.provisioner.run_dir
        kc.stop_channels()
        await km.shutdown_kernel()
        assert await _wait_gone(new_pid), "the kernel survived the shutdown"
        assert not _exists(new_run_dir)
        assert not _exists(run_dir)
        assert board.get(km.kernel_id).state == "dead"

    asyncio.run(scenario())


def test_kill_leaves_no_remote_process(sim_kernel: str) -> None:
    async def scenario() -> None:
        km, kc = await _start(sim_kernel)
        pid = km.provisioner.pid
        await _wait_looping(kc, kc.execute(LOOPING + "import time\nwhile True: time.sleep(1)"))
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
        assert await _wait_gone(pid, 5)

    asyncio.run(scenario())


def test_changed_host_key_without_driver_restart_is_refused(sshd_kernel: str, sshd: Any) -> None:
    async def scenario() -> None:
        km, kc = await _start(sshd_kernel)  # records the host key
        kc.stop_channels()
        await km.shutdown_kernel()

        sshd.restart_with_new_host_key()  # same address, new key, no new driver start
        km2 = AsyncKernelManager(kernel_name=sshd_kernel)
        with pytest.raises(Exception, match="(?i)host key") as info:
            await km2.start_kernel()
        assert "refused" in str(info.value)
        assert board.get(km2.kernel_id).state == "dead"

    asyncio.run(scenario())


def test_dropped_link_is_reported_disconnected(sim_kernel: str, simulator: Any) -> None:
    async def scenario() -> None:
        km, kc = await _start(sim_kernel)
        pid = km.provisioner.pid
        assert board.get(km.kernel_id).state == "running"
        assert await km.is_alive()

        dropped = simulator.drop_ssh(km.provisioner.cluster_id)
        assert dropped >= 1
        started = time.monotonic()
        while board.get(km.kernel_id).state != "disconnected":
            assert time.monotonic() - started < 15, "the lost link went unnoticed"
            await asyncio.sleep(0.1)
        assert not await km.is_alive()  # what Jupyter's restarter looks at

        # Shutting down reaches the driver again and removes the orphan.
        kc.stop_channels()
        await km.shutdown_kernel()
        assert await _wait_gone(pid)
        assert board.get(km.kernel_id).state == "dead"

    asyncio.run(scenario())


def test_terminated_cluster_ends_a_notebook_run_with_a_dead_kernel(
    sim_kernel_no_spark: str,
    running_cluster: Any,
    simulator: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """nbclient (no Jupyter server, no auto-restart) learns that the kernel is gone."""
    from nbclient.exceptions import DeadKernelError

    caplog.set_level(logging.INFO)
    cluster_id = running_cluster.cluster_id
    flag = tmp_path / "running"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"import os, time\nopen({str(flag)!r}, 'w').write(str(os.getpid()))\ntime.sleep(90)"
        )
    ]

    def terminate_when_running() -> None:
        deadline = time.monotonic() + 60
        while not flag.exists() or not flag.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        simulator.terminate(cluster_id)

    terminator = threading.Thread(target=terminate_when_running, daemon=True)
    terminator.start()
    client = NotebookClient(nb, kernel_name=sim_kernel_no_spark, timeout=100, startup_timeout=60)
    started = time.monotonic()
    with pytest.raises(DeadKernelError):
        client.execute()
    assert time.monotonic() - started < 60, "the dead kernel went unnoticed for too long"
    terminator.join(5)
    pid = int(flag.read_text())
    assert not _alive(pid)  # gone with the driver
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    lost = [w for w in warnings if "lost its SSH connection" in w]
    assert len(lost) == 1 and "TERMINAT" in lost[0], warnings
    # Shutting down did not try to reach a driver that is gone.
    assert not [w for w in warnings if w.startswith("Could not")], warnings


def test_stale_kernel_of_an_earlier_driver_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that could not be removed is removed on the next start only on the same driver
    (a new driver's process with the same PID is someone else)."""
    from databrickslabs_jupyterlab import ssh

    provisioner = DatabricksSshProvisioner(kernel_id="k")
    removed: list[tuple[int, str | None, bool]] = []

    async def remove_process(conn: Any, pid: int, run_dir: str | None, *, sudo: bool) -> None:
        removed.append((pid, run_dir, sudo))

    async def connect() -> Any:
        return object()

    monkeypatch.setattr(ssh, "remove_process", remove_process)
    provisioner._connect = connect  # type: ignore[method-assign]

    provisioner._driver_start = 2000
    provisioner._stale = (4242, "/tmp/dbjl-kernel-abc", True, 1000)
    asyncio.run(provisioner._kill_stale())
    assert removed == [] and provisioner._stale is None

    provisioner._stale = (4242, "/tmp/dbjl-kernel-abc", True, 2000)
    asyncio.run(provisioner._kill_stale())
    assert removed == [(4242, "/tmp/dbjl-kernel-abc", True)]


def test_remote_process_inputs_are_checked_before_anything_is_sent() -> None:
    """ssh's remote-process functions refuse what is not a kernel's PID, signal or run folder
    before they touch the connection (here None)."""
    from databrickslabs_jupyterlab import ssh

    assert ssh.is_run_dir("/tmp/dbjl-kernel-a1_B")
    for bad in ("/", "/tmp", "tmp/dbjl-kernel-a", "/tmp/../dbjl-kernel-a", "/tmp/dbjl-kernel-a\n"):
        assert not ssh.is_run_dir(bad), bad
        with pytest.raises(ValueError):
            asyncio.run(ssh.remove_run_dir(None, bad))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        asyncio.run(ssh.signal_process(None, 4242, "STOP"))  # type: ignore[arg-type]
    for pid in (0, 1, -5, True):
        with pytest.raises(ValueError):
            asyncio.run(ssh.process_alive(None, pid))  # type: ignore[arg-type]


def _sshd_sessions(master: int) -> list[int]:
    """The per-connection sshd processes under the sshd master (not the master itself)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        names[pid] = stat[stat.index("(") + 1 : stat.rindex(")")]
        parents[pid] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found = []
    for pid, name in names.items():
        if not name.startswith("sshd") or pid == master:
            continue
        p = parents.get(pid)
        while p and p != master:
            p = parents.get(p)
        if p == master:
            found.append(pid)
    return found


def test_frozen_link_is_noticed_by_keepalives(
    sshd_kernel: str, sshd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network that silently stops answering (no TCP reset): only keepalives can tell."""
    monkeypatch.setenv("DBJL_KEEPALIVE_INTERVAL", "1")
    monkeypatch.setenv("DBJL_KEEPALIVE_COUNT_MAX", "2")

    async def scenario() -> None:
        km, kc = await _start(sshd_kernel)
        pid = km.provisioner.pid
        sessions = _sshd_sessions(sshd.process.pid)
        assert sessions
        for session in sessions:
            os.kill(session, signal.SIGSTOP)
        try:
            started = time.monotonic()
            while board.get(km.kernel_id).state != "disconnected":
                assert time.monotonic() - started < 10, "the frozen link went unnoticed"
                await asyncio.sleep(0.1)
            assert not await km.is_alive()
        finally:
            for session in sessions:
                os.kill(session, signal.SIGCONT)
        kc.stop_channels()
        await km.shutdown_kernel()
        assert await _wait_gone(pid)

    asyncio.run(scenario())


def test_remote_environment_holds_no_token(
    sim_kernel: str, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABRICKS_TOKEN", simulator.token)
    monkeypatch.setenv("DBJL_LOCAL_ONLY", "local")

    async def scenario() -> None:
        km, kc = await _start(sim_kernel)
        try:
            _, out = await _run(
                kc, "import os\nprint(sorted(os.environ.items()))\nprint(os.environ['HOME'])"
            )
            text = "".join(out)
            assert simulator.token not in text
            assert "DATABRICKS_TOKEN" not in text and "DBJL_LOCAL_ONLY" not in text
            assert "DBJL_CLUSTER_ID" in text
        finally:
            kc.stop_channels()
            await km.shutdown_kernel()

    asyncio.run(scenario())


def test_blocking_kernel_manager_like_jupyter_console(sim_kernel: str) -> None:
    """The synchronous API runs no event loop between calls; the channels must still flow."""
    km = KernelManager(kernel_name=sim_kernel)
    km.start_kernel()
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=90)
        time.sleep(0.5)  # idle time without any jupyter_client call
        outputs: list[str] = []
        reply = kc.execute_interactive(
            "import sys; print(sys.executable)",
            timeout=20,
            output_hook=lambda m: outputs.append(m["content"].get("text", "")),
        )
        assert reply["content"]["status"] == "ok"
        assert "driver" in "".join(outputs)  # the simulator's driver venv
        kc.stop_channels()
    finally:
        pid = km.provisioner.pid
        km.shutdown_kernel()
    assert asyncio.run(_wait_gone(pid))


async def test_kernel_in_jupyter_server(
    jp_fetch: Any, jp_serverapp: Any, jp_data_dir: Path, running_cluster: Any
) -> None:
    """The server's own kernel manager (with its restarter) runs the remote kernel."""
    ksm = KernelSpecManager(data_dir=str(jp_data_dir))
    name = kernelspecs.create_kernelspec(
        running_cluster.name, running_cluster.cluster_id, "sim-cluster", env="lab", manager=ksm
    )
    specs = json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
    assert (
        specs[name]["spec"]["display_name"]
        == f"SSH {running_cluster.cluster_id} demo:sim-cluster (lab/Spark)"
    )

    reply = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    kernel_id = json.loads(reply.body)["id"]
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=90)
        assert board.get(kernel_id).state == "running"
        _, out = await _run(kc, "import os\nprint(os.environ['DBJL_CLUSTER_ID'])")
        assert out == [running_cluster.cluster_id + "\n"]
        pid = km.provisioner.pid
    finally:
        kc.stop_channels()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert await _wait_gone(pid)
    assert board.get(kernel_id).state == "dead"


def test_terminated_cluster_gives_a_clear_error(
    simulator: Any, sim_profile: Any, jupyter_dirs: Path
) -> None:
    name = kernelspecs.create_kernelspec(sim_profile.name, sim_profile.cluster_id, "sim-cluster")

    async def scenario() -> None:
        km = AsyncKernelManager(kernel_name=name)
        with pytest.raises(Exception, match="TERMINATED"):
            await km.start_kernel()

    asyncio.run(scenario())


# ------------------------------------------------------------------------------ Spark


def test_spark_attach_timeout_setting() -> None:
    attach_timeout = sparkattach.attach_timeout
    assert attach_timeout({}) == 120
    assert attach_timeout({"DBJL_SPARK_ATTACH_TIMEOUT": " "}) == 120
    assert attach_timeout({"DBJL_SPARK_ATTACH_TIMEOUT": "2.5"}) == 2.5
    for bad in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(ValueError, match="DBJL_SPARK_ATTACH_TIMEOUT"):
            attach_timeout({"DBJL_SPARK_ATTACH_TIMEOUT": bad})


def test_spark_attach_outcome_sentences() -> None:
    outcome = sparkattach.outcome_of
    ok = {
        "status": "ok",
        "user_expressions": {"version": {"status": "ok", "data": {"text/plain": "'4.3.0'"}}},
    }
    assert outcome(ok, "u@h:22") == ("running-spark", "Kernel running on u@h:22 with Spark 4.3.0")
    state, message = outcome(
        {"status": "error", "ename": "DbContextError", "evalue": "pyspark is not installed."}, "x"
    )
    assert (state, message) == (
        "running",
        "Spark is not available on this driver: pyspark is not installed.",
    )
    _, message = outcome(
        {"status": "error", "ename": "ModuleNotFoundError", "evalue": "No module named 'x'"}, "x"
    )
    assert (
        message == "Spark is not available on this driver: ModuleNotFoundError: No module named 'x'"
    )
    _, message = outcome({"status": "error", "ename": "OSError", "evalue": "y" * 5000}, "x")
    assert len(message) <= 600
    _, message = outcome({"status": "error", "ename": "KeyboardInterrupt", "evalue": ""}, "x")
    assert "interrupted" in message and "dbcontext()" in message


def test_without_spark_the_kernel_is_just_running(sim_kernel_no_spark: str) -> None:
    spec = KernelSpecManager().get_kernel_spec(sim_kernel_no_spark)
    assert spec.metadata["databricks"]["spark"] is False
    assert "Spark" not in spec.display_name

    async def scenario() -> None:
        km, kc = await _start(sim_kernel_no_spark)
        try:
            assert km.provisioner._spark_future is None
            record = board.get(km.kernel_id)
            assert record is not None and record.state == "running"
            assert "Spark" not in (record.message or "")
            reply, out = await _run(kc, "print('spark' in dir(), 'dbcontext' in dir())")
            assert out == ["False False\n"]
            assert reply["content"]["execution_count"] == 1
            assert board.get(km.kernel_id).state == "running"
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    asyncio.run(scenario())


def test_spark_without_pyspark_stays_running_with_a_reason(sim_kernel: str, tmp_path: Path) -> None:
    """The attach runs first (the user's cell queues behind it), fails, and says why."""
    fake = _fake_pyspark(
        tmp_path, "import time\ntime.sleep(1.5)\nraise ImportError('no pyspark on this driver')\n"
    )
    _set_spec_env(sim_kernel, {"PYTHONPATH": fake})

    async def scenario() -> None:
        km = AsyncKernelManager(kernel_name=sim_kernel)
        started = time.monotonic()
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            record = board.get(km.kernel_id)
            assert record.state == "running" and "attaching Spark" in (record.message or "")
            # launch_kernel did not wait for the attach (the fake pyspark import takes 1.5 s)
            assert not km.provisioner._spark_future.done()
            # The first cell waits behind the attach: dbcontext was imported, 1.5 s went by.
            reply, out = await _run(kc, "print('dbcontext' in dir(), 'spark' in dir())", 30)
            assert out == ["True False\n"]
            assert time.monotonic() - started >= 1.5
            # the attach was silent: no history entry, no execution count of its own
            assert reply["content"]["execution_count"] == 1
            record = await _wait_record(
                km.kernel_id,
                lambda r: "Spark" in (r.message or "") and "attaching" not in (r.message or ""),
            )
            assert record.state == "running"
            assert record.message.startswith("Spark is not available on this driver: ")
            assert "pyspark" in record.message
            reply, out = await _run(kc, "21 * 2")
            assert out == ["42"]
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
        assert board.get(km.kernel_id).state == "dead"

    asyncio.run(scenario())


def test_spark_attach_that_hangs_is_interrupted_after_the_timeout(
    sim_kernel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBJL_SPARK_ATTACH_TIMEOUT", "2")
    fake = _fake_pyspark(tmp_path, "import time\ntime.sleep(600)\n")
    _set_spec_env(sim_kernel, {"PYTHONPATH": fake})

    async def scenario() -> None:
        km, kc = await _start(sim_kernel)  # kernel_info waits behind the attach
        try:
            record = await _wait_record(
                km.kernel_id, lambda r: "within" in (r.message or ""), timeout=15
            )
            assert record.state == "running"
            assert record.message.startswith("Spark did not attach within 2 seconds")
            started = time.monotonic()
            _, out = await _run(kc, "1 + 1")
            assert out == ["2"]
            assert time.monotonic() - started < 5
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    asyncio.run(scenario())


def test_restart_and_shutdown_cancel_a_pending_attach(sim_kernel: str, tmp_path: Path) -> None:
    fake = _fake_pyspark(tmp_path, "import time\ntime.sleep(600)\n")
    _set_spec_env(sim_kernel, {"PYTHONPATH": fake})

    async def scenario() -> None:
        km = AsyncKernelManager(kernel_name=sim_kernel)
        await km.start_kernel()  # returns once the kernel works on the attach
        prov = km.provisioner
        first = prov._spark_future
        first_pid = prov.pid
        assert first is not None and not first.done()

        await km.restart_kernel(now=True)
        assert first.cancelled()
        assert await _wait_gone(first_pid)
        second = km.provisioner._spark_future
        assert second is not None and second is not first and not second.done()
        record = board.get(km.kernel_id)
        assert record.state == "running" and "attaching Spark" in record.message

        await km.shutdown_kernel(now=True)
        assert second.cancelled()
        assert board.get(km.kernel_id).state == "dead"
        # Everything the SSH loop had queued (the attach's cancellation) has run by now.
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(asyncio.sleep(0), ssh_loop()))
        assert board.get(km.kernel_id).state == "dead"

    asyncio.run(scenario())


@pytest.mark.slow
@pytest.mark.timeout(360)
@pytest.mark.skipif(not HAVE_PYSPARK, reason="pyspark is not importable here")
@pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java")
def test_spark_attaches_for_real(sim_kernel: str) -> None:
    if PYSPARK_PATH:
        _set_spec_env(sim_kernel, {"PYTHONPATH": PYSPARK_PATH})

    async def scenario() -> None:
        km, kc = await _start(sim_kernel)
        pid = km.provisioner.pid
        try:
            record = await _wait_record(
                km.kernel_id, lambda r: r.state == "running-spark", timeout=90, what="running-spark"
            )
            assert record.message.startswith("Kernel running on ")
            assert "with Spark " in record.message
            reply, out = await _run(kc, "spark.range(10).count()", timeout=60)
            assert out == ["10"]
            assert reply["content"]["execution_count"] == 1
            _, out = await _run(kc, "print(type(dbutils).__name__, sc is spark.sparkContext)")
            assert out == ["LocalDbUtils True\n"]
        finally:
            kc.stop_channels()
            await km.shutdown_kernel()
        assert await _wait_gone(pid)
        assert board.get(km.kernel_id).state == "dead"

    asyncio.run(scenario())


# ------------------------------------------------------------------------------ configuration


def _python_wrapper(folder: Path, label: str, python: str) -> str:
    """A driver Python that marks the kernel's environment with ``label``."""
    path = folder / f"python-{label}"
    path.write_text(f'#!/bin/sh\nDBJL_TEST_PYTHON_VIA={label} exec {shlex.quote(python)} "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("case", ["config-file", "parent-config", "env", "kernelspec"])
def test_driver_settings_reach_the_kernel_with_one_precedence(
    case: str,
    sim_kernel_no_spark: str,
    running_cluster: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kernelspec metadata > environment > Jupyter config (the manager's, then the files on
    Jupyter's config path) > defaults, seen from a plain jupyter_client KernelManager."""
    wrappers = {
        label: _python_wrapper(tmp_path, label, running_cluster.driver_python)
        for label in ("config-file", "parent-config", "env", "kernelspec")
    }
    monkeypatch.delenv("DBJL_DRIVER_PYTHON")
    config_dir = tmp_path / "jupyter-config"
    config_dir.mkdir()
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))
    (config_dir / "jupyter_server_config.py").write_text(
        f"c.DatabricksLabsDriver.driver_python = {wrappers['config-file']!r}\n"
    )
    kwargs: dict[str, Any] = {}
    if case == "parent-config":
        kwargs["config"] = Config({"DatabricksLabsDriver": {"driver_python": wrappers[case]}})
    if case in ("env", "kernelspec"):
        monkeypatch.setenv("DBJL_DRIVER_PYTHON", wrappers["env"])
    if case == "kernelspec":
        _set_spec_databricks(sim_kernel_no_spark, driver_python=wrappers[case])

    km = KernelManager(kernel_name=sim_kernel_no_spark, **kwargs)
    km.start_kernel()
    pid = km.provisioner.pid
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=90)
        outputs: list[str] = []
        reply = kc.execute_interactive(
            "import os\nprint(os.environ.get('DBJL_TEST_PYTHON_VIA'), os.environ['PYSPARK_PYTHON'])",
            timeout=20,
            output_hook=lambda m: outputs.append(m["content"].get("text", "")),
        )
        kc.stop_channels()
    finally:
        km.shutdown_kernel()
    assert reply["content"]["status"] == "ok"
    assert "".join(outputs) == f"{case} {wrappers[case]}\n"
    assert asyncio.run(_wait_gone(pid))


# ------------------------------------------------------------------------------ driver preparation


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_driver_without_ipykernel_is_prepared_once(
    sim_kernel_no_spark: str, bare_driver_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver Python has only pip: the first start installs ipykernel (progress on the
    board), the kernel runs on that Python; the second start installs nothing."""
    monkeypatch.setenv("DBJL_DRIVER_PYTHON", bare_driver_python)
    seen: dict[str, list[tuple[str, str]]] = {}
    unsubscribe = board.subscribe(
        lambda r: seen.setdefault(r.kernel_id, []).append((r.state, r.message or ""))
    )

    async def start_and_run() -> list[tuple[str, str]]:
        km, kc = await _start(sim_kernel_no_spark)
        try:
            _, out = await _run(kc, "import sys\nprint(sys.executable)\n1 + 1", timeout=30)
            assert out == [bare_driver_python + "\n", "2"]
        finally:
            kc.stop_channels()
            await km.shutdown_kernel()
        return [(state, m) for state, m in seen[km.kernel_id] if m.startswith("Installing ")]

    try:
        first = asyncio.run(start_and_run())
        assert first, "no installation progress on the board"
        assert {state for state, _ in first} == {"starting"}
        assert any("ipykernel" in m and ": pip: " in m for _, m in first), first
        assert asyncio.run(start_and_run()) == []
    finally:
        unsubscribe()


def test_failing_pip_fails_the_start_with_its_reason(
    sim_kernel_no_spark: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBJL_DRIVER_REQUIREMENTS", "dbjl-no-such-package>=1")
    monkeypatch.setenv("DBJL_PIP_ARGS", "--no-index")

    async def scenario() -> None:
        km = AsyncKernelManager(kernel_name=sim_kernel_no_spark)
        with pytest.raises(Exception, match="could not be prepared for kernels") as info:
            await km.start_kernel()
        assert "Installing dbjl-no-such-package>=1 on the driver failed" in str(info.value)
        record = board.get(km.kernel_id)
        assert record.state == "dead" and "dbjl-no-such-package" in record.message

    asyncio.run(scenario())
