"""Behind a real kernel gateway: Jupyter Kernel Gateway 3 runs the kernel (and in it our
provisioner) in its own process; a Jupyter server started with ``--gateway-url`` lists the
gateway's kernelspecs, starts the kernel through it and shows its status.

Both are real subprocesses with the test's private HOME, profile, key and state folder; the kernel
runs on the simulated driver over real SSH. The status of the gateway's kernel reaches the
server's API through the state files in the shared state folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from databrickslabs_jupyterlab import kernelspecs
from tests.fixtures.gateway import Gateway, gateway_and_server
from tests.fixtures.hub import API, wait_for
from tests.test_provisioner import _alive, running_cluster  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(420)


@dataclass
class Setup:
    kernel: str  # the Databricks kernelspec's name
    profile: Any  # tests.fixtures.simulator.SimProfile
    processes: Gateway

    @property
    def token(self) -> str:
        return self.processes.token

    @property
    def server_url(self) -> str:
        return self.processes.server_url

    def server(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"token {self.processes.token}"}
        return requests.request(
            method, f"{self.processes.server_url}/{path}", headers=headers, timeout=60, **kwargs
        )

    def gateway(self, method: str, path: str) -> requests.Response:
        headers = {"Authorization": f"token {self.processes.gateway_token}"}
        url = f"{self.processes.gateway_url}/{path}"
        return requests.request(method, url, headers=headers, timeout=60)

    def log_tail(self) -> str:
        return self.processes.log_tail()


@pytest.fixture
def setup(
    running_cluster: Any,  # noqa: F811 - the fixture
    jupyter_dirs: Path,
    tmp_path: Path,
) -> Iterator[Setup]:
    if importlib.util.find_spec("kernel_gateway") is None:
        pytest.skip("Jupyter Kernel Gateway is not installed (the test extra installs it)")
    kernel = kernelspecs.create_kernelspec(
        running_cluster.name, running_cluster.cluster_id, "sim-cluster", env="gw", spark=False
    )
    root = tmp_path / "root"
    root.mkdir()
    with gateway_and_server(tmp_path, root) as processes:
        yield Setup(kernel, running_cluster, processes)


def _execute(setup: Setup, kernel_id: str, code: str, timeout: float = 120) -> str:
    """Run ``code`` through the server's websocket (and so through the gateway); its stdout."""
    url = setup.server_url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(
        url, header=[f"Authorization: token {setup.token}"], timeout=timeout
    )
    try:
        msg_id = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                        "session": uuid.uuid4().hex, "version": "5.3",
                    },
                    "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                    "content": {"code": code, "silent": False, "store_history": True,
                                "user_expressions": {}, "allow_stdin": False},
                }  # fmt: skip
            )
        )
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                raise AssertionError("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)
        raise AssertionError(f"no idle within {timeout:.0f} s; output so far: {out}")
    finally:
        ws.close()


def test_a_notebook_kernel_runs_behind_the_gateway_and_its_status_reaches_the_server(
    setup: Setup,
) -> None:
    profile = setup.profile
    # the server lists the gateway's kernelspecs, with the Databricks metadata
    specs = setup.server("GET", "api/kernelspecs")
    assert specs.status_code == 200, specs.text
    spec = specs.json()["kernelspecs"][setup.kernel]["spec"]
    databricks = spec["metadata"]["databricks"]
    assert (databricks["profile"], databricks["cluster_id"]) == (profile.name, profile.cluster_id)

    made = setup.server("POST", "api/kernels", json={"name": setup.kernel})
    assert made.status_code == 201, made.text + setup.log_tail()
    kernel_id = made.json()["id"]
    remote_pid = None
    try:
        # the gateway runs it, under the same id
        listed = setup.gateway("GET", "api/kernels")
        assert listed.status_code == 200, listed.text
        assert kernel_id in {k["id"] for k in listed.json()}

        # a cell runs on the simulated driver, through the server and the gateway
        printed = _execute(setup, kernel_id, "import os, sys\nprint(sys.prefix, os.getpid())")
        prefix, pid = printed.split()
        remote_pid = int(pid)
        assert Path(prefix) == Path(profile.driver_python).parent.parent, printed
        assert _execute(setup, kernel_id, "a = 21\nprint(a * 2)") == "42\n"

        # the server's status API knows the gateway's kernel, and its cluster lists it
        def kernel_status() -> dict[str, Any] | None:
            got = setup.server("GET", f"{API}/kernels/{kernel_id}")
            assert got.status_code == 200, got.text + setup.log_tail()
            body = got.json()
            return body if body["kernel_state"] == "running" else None

        status = wait_for("the kernel's status on the server", kernel_status, 60)
        assert (status["profile"], status["cluster_id"]) == (profile.name, profile.cluster_id)

        def listed_on_cluster() -> dict[str, Any] | None:
            cluster = setup.server("GET", f"{API}/clusters/{profile.name}/{profile.cluster_id}")
            assert cluster.status_code == 200, cluster.text
            kernels = {k["kernel_id"]: k["kernel_state"] for k in cluster.json()["kernels"]}
            return cluster.json() if kernels.get(kernel_id) == "running" else None

        wait_for("the kernel in its cluster's status", listed_on_cluster, 60)

        # the state files the gateway left hold no secret
        files = list((Path(os.environ["DBJL_STATE_DIR"]) / "kernels").glob("*.json"))
        assert files, "no kernel state file"
        for path in files:
            text = path.read_text()
            assert profile.simulator.token not in text
            assert setup.processes.gateway_token not in text and setup.token not in text
            assert path.stat().st_mode & 0o077 == 0
    finally:
        gone = setup.server("DELETE", f"api/kernels/{kernel_id}")
        assert gone.status_code in (204, 404), gone.text

    # shut down through the server: the gateway stops the remote kernel, the server forgets it
    if remote_pid is not None:
        wait_for("the remote kernel to end", lambda: not _alive(remote_pid), 60)

    def forgotten() -> bool:
        got = setup.server("GET", f"{API}/kernels/{kernel_id}")
        return got.status_code == 404 and got.json()["error"] == "no_such_kernel"

    wait_for("the server to forget the kernel", forgotten, 30)
    specs_on_gateway = setup.gateway("GET", "api/kernels").json()
    assert kernel_id not in {k["id"] for k in specs_on_gateway}
