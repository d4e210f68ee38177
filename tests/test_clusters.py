"""Unit tests of the cluster state machine with a fake workspace and a fake driver (no server).

The integration tests in test_api.py run the same paths against the simulator over HTTP and SSH.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from databrickslabs_jupyterlab import kernelstate
from databrickslabs_jupyterlab.clusters import STATES, ServiceSettings
from databrickslabs_jupyterlab.driver import DriverLink, Probe
from databrickslabs_jupyterlab.operations import Conflict
from databrickslabs_jupyterlab.registry import ClusterRegistry
from databrickslabs_jupyterlab.settings import DriverSettings
from databrickslabs_jupyterlab.workspace import (
    ClusterInfo,
    NoSuchCluster,
    WorkspaceError,
    WorkspaceUnavailable,
)

PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests"


class FakeWorkspace:
    """Databricks as a dict; ``advance`` moves PENDING -> RUNNING etc. on each read."""

    def __init__(self, state: str = "TERMINATED") -> None:
        self.state = state
        self.keys = [PUBLIC_KEY]
        self.calls: list[str] = []
        self.fail: Exception | None = None
        self.steps_to_run = 2
        self.driver_start = 1
        self.starts = 0

    async def get_cluster(self, cluster_id: str) -> ClusterInfo:
        self.calls.append("get")
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        if cluster_id == "missing":
            raise NoSuchCluster(f"Cluster {cluster_id} does not exist.")
        if self.state in ("PENDING", "RESTARTING"):
            self.steps_to_run -= 1
            if self.steps_to_run <= 0:
                self.state = "RUNNING"
                self.driver_start += 1
        elif self.state == "TERMINATING":
            self.state = "TERMINATED"
        return ClusterInfo(
            cluster_id=cluster_id,
            cluster_name="sim",
            state=self.state,
            state_message=None,
            public_dns="127.0.0.1",
            ssh_public_keys=list(self.keys),
            start_time=1,
            terminated_time=None,
            spark_version="15.4.x-scala2.12",
            autotermination_minutes=120,
            driver_start=self.driver_start,
        )

    async def start_cluster(self, cluster_id: str) -> None:
        self.calls.append("start")
        self.starts += 1
        if self.state != "TERMINATED":
            raise WorkspaceError("not terminated", status=409, code="invalid_state")
        self.state = "PENDING"
        self.steps_to_run = 2

    async def set_ssh_public_keys(self, cluster_id: str, keys: list[str]) -> None:
        self.calls.append("edit")
        self.keys = list(keys)
        if self.state == "RUNNING":
            self.state = "RESTARTING"
            self.steps_to_run = 1


class FakeDriver:
    def __init__(self) -> None:
        self.reachable = True
        self.missing: list[str] = []
        self.prepare_error: Exception | None = None
        self.prepared = 0
        self.gate: asyncio.Event | None = None

    async def probe(self, profile: str, info: ClusterInfo, *, libraries: bool) -> Probe:
        if not self.reachable:
            return Probe(False, "Connection refused by the driver.")
        return Probe(True, None, list(self.missing) if libraries else None)

    async def connect(self, profile: str, info: ClusterInfo, ready_timeout: float) -> DriverLink:
        if not self.reachable:
            from databrickslabs_jupyterlab.ssh import SshUnreachable

            raise SshUnreachable("The driver refused the SSH connection.")
        return DriverLink(object(), "ubuntu")

    async def prepare(
        self,
        link: DriverLink,
        info: ClusterInfo,
        on_progress: Callable[[str], None],
        *,
        force: bool = False,
    ) -> list[str]:
        if self.gate is not None:
            await self.gate.wait()
        on_progress("pip: Installing ipykernel")
        if self.prepare_error is not None:
            raise self.prepare_error
        self.prepared += 1
        installed, self.missing = list(self.missing), []
        return installed


def make(
    tmp_path: Any, state: str = "TERMINATED", **overrides: Any
) -> tuple[ClusterRegistry, FakeWorkspace, FakeDriver, list[tuple[str, str, list[str]]]]:
    workspace = FakeWorkspace(state)
    fake_driver = FakeDriver()
    restarted: list[tuple[str, str, list[str]]] = []
    identity = tmp_path / "id_demo"
    identity.write_text("private")
    (tmp_path / "id_demo.pub").write_text(PUBLIC_KEY + " test\n")

    async def factory(profile: str) -> FakeWorkspace:
        return workspace

    async def restart(profile: str, cluster_id: str, kernel_ids: list[str]) -> None:
        restarted.append((profile, cluster_id, kernel_ids))

    values: dict[str, Any] = dict(
        driver=DriverSettings(identity_file=str(identity), state_dir=str(tmp_path)),
        refresh_interval=0.01,
        steady_refresh_interval=0.05,
        unknown_read_interval=0.05,
        fast_window=0.05,
        idle_pause=5.0,
        first_read_wait=1.0,
        done_linger=0.05,
    )
    values.update(overrides)
    registry = ClusterRegistry(
        ServiceSettings(**values),
        restart_kernels=restart,
        driver_access=fake_driver,
        workspace_factory=factory,
        board=kernelstate.KernelBoard(),
    )
    return registry, workspace, fake_driver, restarted


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def test_start_from_terminated_walks_every_step(tmp_path):
    async def main() -> None:
        registry, workspace, _, restarted = make(tmp_path)
        # k1 lost its driver with the cluster; k3 claims to run: a start leaves it alone
        registry.board.set("k1", "demo", "c1", "disconnected")
        registry.board.set("k3", "demo", "c1", "running")
        conn = await registry.connection("demo", "c1")
        assert conn.state == "terminated"
        seen_states: list[str] = []
        seen_steps: list[str] = []

        publish = conn._publish

        def record() -> None:  # see every published snapshot, not only those a poll catches
            publish()
            snap = conn.snapshot()
            seen_states.append(snap["state"])
            if snap["operation"]:
                seen_steps.append(snap["operation"]["step"])

        conn._publish = record
        assert conn.start_operation("start", "k2") is True
        await until(lambda: conn.state == "connected" and not conn.op_running())
        await until(lambda: conn.operation is None)
        assert workspace.starts == 1
        assert restarted == [("demo", "c1", ["k1", "k2"])]
        for state in ("starting", "configuring", "installing", "connected"):
            assert state in seen_states
        assert seen_steps.index("starting") < seen_steps.index("configuring")
        assert seen_steps[-1] == "done"
        assert {s for s in seen_states} <= set(STATES)
        events = [e["message"] for e in conn.snapshot()["events"]]
        assert "Cluster start requested." in events
        await registry.stop()

    asyncio.run(main())


def test_double_start_is_one_operation(tmp_path):
    async def main() -> None:
        registry, workspace, fake_driver, _ = make(tmp_path)
        fake_driver.gate = asyncio.Event()
        conn = await registry.connection("demo", "c1")
        assert conn.start_operation("start") is True
        task = conn._op_task
        assert conn.start_operation("start") is False
        assert conn.start_operation("reconfigure") is False
        assert conn._op_task is task
        assert conn.snapshot()["operation"]["kind"] == "start"
        await until(lambda: conn.state == "installing")
        fake_driver.gate.set()
        await until(lambda: conn.state == "connected" and not conn.op_running())
        assert workspace.starts == 1
        await registry.stop()

    asyncio.run(main())


def test_failure_ends_in_error_and_a_later_start_works(tmp_path):
    async def main() -> None:
        registry, _, fake_driver, _ = make(tmp_path, state="RUNNING")
        fake_driver.prepare_error = WorkspaceError("pip could not reach its index.")
        conn = await registry.connection("demo", "c1")
        assert conn.state == "connected"
        conn.start_operation("reconfigure")
        await until(lambda: conn.state == "error")
        assert conn.message == "pip could not reach its index."
        assert conn.operation is None
        # a steady refresh does not hide the failure
        await asyncio.sleep(0.1)
        assert conn.state == "error"
        fake_driver.prepare_error = None
        assert conn.start_operation("start") is True
        await until(lambda: conn.state == "connected" and not conn.op_running())
        await registry.stop()

    asyncio.run(main())


def test_unexpected_exception_becomes_a_sentence(tmp_path):
    async def main() -> None:
        registry, _, fake_driver, _ = make(tmp_path, state="RUNNING")
        fake_driver.prepare_error = KeyError("secret-ish internal detail")
        conn = await registry.connection("demo", "c1")
        conn.start_operation("reconfigure")
        await until(lambda: conn.state == "error")
        assert "unexpectedly (KeyError)" in conn.message
        assert "secret-ish" not in conn.snapshot_json()
        await registry.stop()

    asyncio.run(main())


def test_terminating_waits_then_starts(tmp_path):
    async def main() -> None:
        registry, workspace, _, _ = make(tmp_path, state="TERMINATING")
        workspace.state = "TERMINATING"
        conn = registry.watch("demo", "c1")
        conn.start_operation("start")
        await until(lambda: conn.state == "connected" and not conn.op_running())
        assert workspace.starts == 1
        await registry.stop()

    asyncio.run(main())


def test_missing_key_is_added_before_the_start(tmp_path):
    async def main() -> None:
        registry, workspace, _, _ = make(tmp_path)
        workspace.keys = []
        conn = await registry.connection("demo", "c1")
        conn.start_operation("start")
        await until(lambda: conn.state == "connected" and not conn.op_running())
        assert workspace.calls.index("edit") < workspace.calls.index("start")
        assert any(k.startswith(PUBLIC_KEY) for k in workspace.keys)
        await registry.stop()

    asyncio.run(main())


def test_unreachable_and_missing_libraries(tmp_path):
    async def main() -> None:
        registry, _, fake_driver, _ = make(tmp_path, state="RUNNING")
        fake_driver.reachable = False
        conn = await registry.connection("demo", "c1")
        assert conn.state == "unreachable"
        assert conn.snapshot()["ssh"]["error"] == "Connection refused by the driver."
        fake_driver.reachable = True
        fake_driver.missing = ["ipykernel>=6.0"]
        await until(lambda: conn.state != "unreachable")
        assert conn.state == "error" and "ipykernel>=6.0" in conn.message
        conn.start_operation("reconfigure")
        await until(lambda: conn.state == "connected" and not conn.op_running())
        assert fake_driver.prepared == 1
        await registry.stop()

    asyncio.run(main())


def test_workspace_errors_and_recovery(tmp_path):
    async def main() -> None:
        registry, workspace, _, _ = make(tmp_path, state="RUNNING")
        workspace.fail = WorkspaceUnavailable("The Databricks workspace did not answer in time.")
        conn = await registry.connection("demo", "c1")
        assert conn.state == "error"
        assert "did not answer" in conn.message
        workspace.fail = None
        await until(lambda: conn.state == "connected")
        await registry.stop()

    asyncio.run(main())


def test_unknown_cluster_raises_and_is_forgotten(tmp_path):
    async def main() -> None:
        registry, _, _, _ = make(tmp_path)
        with pytest.raises(NoSuchCluster):
            await registry.connection("demo", "missing")
        assert registry.get("demo", "missing") is None
        await registry.stop()

    asyncio.run(main())


def test_long_poll_returns_on_change_and_after_wait(tmp_path):
    async def main() -> None:
        registry, workspace, _, _ = make(tmp_path, state="TERMINATED", steady_refresh_interval=0.05)
        conn = await registry.connection("demo", "c1")
        await until(lambda: conn.state == "terminated")
        version = conn.version
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await conn.wait_for_change(version, 0.3) is False
        assert loop.time() - t0 >= 0.29
        assert conn.version == version

        async def later() -> None:
            await asyncio.sleep(0.05)
            workspace.state = "PENDING"

        t0 = loop.time()
        asyncio.ensure_future(later())
        assert await conn.wait_for_change(version, 5) is True
        assert loop.time() - t0 < 2
        await registry.stop()

    asyncio.run(main())


def test_polls_do_not_call_upstream_and_idle_pauses(tmp_path):
    async def main() -> None:
        registry, workspace, _, _ = make(
            tmp_path, state="TERMINATED", steady_refresh_interval=0.2, fast_window=0, idle_pause=0.3
        )
        conn = await registry.connection("demo", "c1")
        before = len(workspace.calls)
        for _ in range(200):
            await registry.connection("demo", "c1")
        assert len(workspace.calls) - before <= 1
        await until(lambda: conn.paused)  # idle_pause after the last request
        paused_calls = len(workspace.calls)
        await asyncio.sleep(0.5)  # more than two steady intervals: none of them reads
        assert len(workspace.calls) == paused_calls
        workspace.state = "PENDING"
        await registry.connection("demo", "c1")  # wakes the refresh and waits for it
        assert not conn.paused
        await until(lambda: conn.state == "starting")
        await registry.stop()

    asyncio.run(main())


def test_disconnected_kernel_bumps_version(tmp_path):
    async def main() -> None:
        registry, _, _, _ = make(tmp_path, state="RUNNING")
        registry.start()
        registry.board.set("k1", "demo", "c1", "running")
        conn = await registry.connection("demo", "c1")
        version = conn.version
        registry.board.set("k1", "demo", "c1", "disconnected", "keepalive lost")
        assert conn.version > version
        snap = conn.snapshot()
        assert snap["kernels"] == [{"kernel_id": "k1", "kernel_state": "disconnected"}]
        assert "k1 is disconnected" in snap["events"][-1]["message"]
        await registry.stop()

    asyncio.run(main())


def test_reconfigure_needs_a_running_cluster_and_stop_cancels(tmp_path):
    async def main() -> None:
        registry, _, fake_driver, _ = make(tmp_path, state="TERMINATED")
        conn = await registry.connection("demo", "c1")
        conn.start_operation("reconfigure")
        await until(lambda: conn.state == "error")
        assert "not running" in conn.message
        fake_driver.gate = asyncio.Event()
        conn.start_operation("start")
        await until(lambda: conn.state == "installing")
        task = conn._op_task
        await registry.stop()
        assert task is not None and task.cancelled()

    asyncio.run(main())


def test_events_are_bounded(tmp_path):
    async def main() -> None:
        registry, _, _, _ = make(tmp_path, state="RUNNING", event_history=5)
        conn = await registry.connection("demo", "c1")
        for i in range(20):
            conn.note(f"note {i}")
        events = conn.snapshot()["events"]
        assert len(events) == 5 and events[-1]["message"] == "note 19"
        await registry.stop()

    asyncio.run(main())


def test_alternating_messages_of_one_state_are_recorded_once(tmp_path):
    async def main() -> None:
        registry, _, fake_driver, _ = make(tmp_path, state="RUNNING")
        conn = await registry.connection("demo", "c1")
        await until(lambda: conn.state == "connected")
        calls = [0]

        async def flaky(profile: str, info: ClusterInfo, *, libraries: bool) -> Probe:
            calls[0] += 1
            return Probe(False, ("Connection reset.", "Connection lost.")[calls[0] % 2])

        fake_driver.probe = flaky  # type: ignore[method-assign]
        await until(lambda: calls[0] >= 10)
        messages = [e["message"] for e in conn.snapshot()["events"] if e["state"] == "unreachable"]
        assert len(messages) == 2 and messages[0] != messages[1]
        assert {m.rsplit(": ", 1)[1] for m in messages} == {"Connection reset.", "Connection lost."}
        await registry.stop()

    asyncio.run(main())


def test_start_of_a_connected_cluster_is_a_no_op(tmp_path):
    async def main() -> None:
        registry, workspace, fake_driver, restarted = make(tmp_path, state="RUNNING")
        registry.board.set("k1", "demo", "c1", "running")
        conn = await registry.connection("demo", "c1")
        assert conn.state == "connected"
        version = conn.version
        assert conn.request("start", "k1") is False
        assert conn.operation is None and not conn.op_running()
        assert conn.version == version
        assert fake_driver.prepared == 0 and restarted == [] and workspace.starts == 0
        await registry.stop()

    asyncio.run(main())


def test_reconfigure_of_a_cluster_that_does_not_run_is_a_conflict(tmp_path):
    async def main() -> None:
        registry, _, _, _ = make(tmp_path, state="TERMINATED")
        conn = await registry.connection("demo", "c1")
        with pytest.raises(Conflict) as info:
            conn.request("reconfigure")
        assert info.value.code == "cluster_not_running"
        assert conn.operation is None
        with pytest.raises(ValueError):
            conn.request("reconfigure", restart_kernels="sometimes")
        await registry.stop()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("choice", "missing", "expected"),
    [
        ("never", ["ipykernel>=6.0"], ["k2"]),
        ("if-installed", [], ["k2"]),
        ("if-installed", ["ipykernel>=6.0"], ["k1", "k2"]),
        ("always", [], ["k1", "k2"]),
    ],
)
def test_reconfigure_restarts_running_kernels_only_as_chosen(tmp_path, choice, missing, expected):
    async def main() -> None:
        registry, _, fake_driver, restarted = make(tmp_path, state="RUNNING")
        registry.board.set("k1", "demo", "c1", "running")
        registry.board.set("k2", "demo", "c1", "disconnected")  # nothing left to lose
        registry.board.set("k3", "demo", "c1", "dead")
        conn = await registry.connection("demo", "c1")
        fake_driver.missing = list(missing)
        kernels_seen: list[list[str]] = []
        publish = conn._publish

        def record() -> None:
            publish()
            operation = conn.snapshot()["operation"]
            if operation and "kernels" in operation:
                kernels_seen.append(operation["kernels"])

        conn._publish = record
        assert conn.request("reconfigure", restart_kernels=choice) is True
        assert conn.snapshot()["operation"]["restart_kernels"] == choice
        await until(lambda: not conn.op_running())
        assert conn.state == "connected", conn.message
        assert restarted == [("demo", "c1", expected)]
        assert kernels_seen and kernels_seen[-1] == expected
        await registry.stop()

    asyncio.run(main())
