"""REST API v1 through a real Jupyter server, against the simulator over real HTTP and SSH.

Every JSON answer is validated against the OpenAPI document the server itself serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from tornado.httpclient import HTTPClientError

from databrickslabs_jupyterlab import kernelstate
from databrickslabs_jupyterlab.openapi import build_openapi

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")

API = ("databrickslabs-jupyterlab", "api", "v1")
SPEC = build_openapi()
_REGISTRY = Registry().with_resource(
    "spec", Resource.from_contents(SPEC, default_specification=DRAFT4)
)


def check(name: str, body: Any) -> Any:
    """Validate ``body`` against components/schemas/<name> of the OpenAPI document."""
    schema = {"$ref": f"spec#/components/schemas/{name}"}
    OAS30Validator(schema, registry=_REGISTRY).validate(body)
    return body


def server_config(sim_profile: Any, **driver: Any) -> dict[str, Any]:
    """The Jupyter server config of these tests, with fast cadences and short timeouts;
    ``driver`` adds driver settings (``c.DatabricksLabsDriver``).

    pytest-jupyter points HOME elsewhere, so the key is named explicitly."""
    return {
        "ServerApp": {
            "jpserver_extensions": {"databrickslabs_jupyterlab": True},
            "allow_unauthenticated_access": False,
        },
        "DatabricksLabsJupyterLab": {
            "refresh_interval": 0.2,
            "steady_refresh_interval": 1.0,
            "ssh_check_timeout": 3,
            "first_read_wait": 3,
            "ssh_ready_timeout": 20,
        },
        "DatabricksLabsDriver": {
            "workspace_retry_timeout": 2,
            "workspace_http_timeout": 2,
            "identity_file": str(sim_profile.identity_file),
            **driver,
        },
    }


@pytest.fixture
def jp_server_config(sim_profile):
    # sim_profile first: it sets DBJL_DRIVER_PYTHON, which the extension reads at start.
    return server_config(sim_profile)


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


class Client:
    """jp_fetch with JSON decoding, schema checks, and a record of every body seen."""

    def __init__(self, fetch: Any) -> None:
        self.fetch = fetch
        self.bodies: list[str] = []

    async def call(
        self, method: str, *path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        if method == "POST" and body is None:
            body = ""
        try:
            response = await self.fetch(
                *API, *path, method=method, body=body, allow_nonstandard_methods=True, **kwargs
            )
        except HTTPClientError as err:
            assert err.response is not None
            text = err.response.body.decode()
            self.bodies.append(text)
            error = json.loads(text)
            check("Error", error)
            return err.code, error
        text = response.body.decode()
        self.bodies.append(text)
        return response.code, json.loads(text)

    async def status(self, sim_profile: Any, **params: Any) -> dict[str, Any]:
        code, body = await self.call(
            "GET", "clusters", "demo", sim_profile.cluster_id, params=params, request_timeout=70
        )
        assert code == 200, body
        return check("ClusterStatus", body)

    async def until(self, sim_profile: Any, states: set[str], timeout: float = 40) -> list[dict]:
        """Long-poll until the state is one of ``states``; return every snapshot seen."""
        seen = [await self.status(sim_profile)]
        deadline = time.monotonic() + timeout
        while seen[-1]["state"] not in states:
            assert time.monotonic() < deadline, [s["state"] for s in seen]
            seen.append(await self.status(sim_profile, wait=5, since=seen[-1]["version"]))
        return seen


@pytest.fixture
def client(jp_fetch):
    return Client(jp_fetch)


def assert_no_secret(sim_profile: Any, client: Client, logs: Any) -> None:
    token = sim_profile.simulator.token
    for body in client.bodies:
        assert token not in body
    for record in logs.records:
        assert token not in record.getMessage()


async def test_openapi_profiles_and_clusters(client, sim_profile, logs):
    code, spec = await client.call("GET", "openapi.json")
    assert code == 200
    validate_spec(spec)
    assert (
        spec["components"]["schemas"]["ClusterStatus"]["properties"]["state"]["enum"][0]
        == "unknown"
    )

    code, profiles = await client.call("GET", "profiles")
    assert code == 200
    check("Profiles", profiles)
    assert profiles["profiles"] == [
        {"name": "demo", "host": sim_profile.host, "auth_type": "pat", "ssh_key": "ok"}
    ]
    code, clusters = await client.call("GET", "clusters", params={"profile": "demo"})
    assert code == 200
    check("Clusters", clusters)
    panel_fields = ("spark_version", "data_security_mode", "autotermination_minutes", "transport")
    for row in clusters["clusters"]:  # the panel's fields: tests/test_panel_api.py
        for name in panel_fields:
            row.pop(name)
    assert clusters["clusters"] == [
        {
            "cluster_id": sim_profile.cluster_id,
            "cluster_name": "sim-cluster",
            "state": "TERMINATED",
            "ssh_key_installed": True,
        }
    ]
    assert_no_secret(sim_profile, client, logs)


async def test_start_from_terminated_to_connected_and_auto_termination(client, sim_profile, logs):
    sim = sim_profile.simulator
    first = await client.status(sim_profile)
    assert first["state"] == "terminated" and first["cluster_state"] == "TERMINATED"
    assert first["events"][0]["state"] == "unknown"  # the snapshot before the first read

    code, started = await client.call("POST", "clusters", "demo", sim_profile.cluster_id, "start")
    assert code == 202
    check("ClusterStatus", started)
    assert started["operation"]["kind"] == "start" and started["operation"]["step_count"] == 5
    # a second start while the first runs: same operation, nothing new
    code, again = await client.call("POST", "clusters", "demo", sim_profile.cluster_id, "start")
    assert code == 202 and again["operation"]["started_at"] == started["operation"]["started_at"]

    seen = await client.until(sim_profile, {"connected", "error"})
    final = seen[-1]
    assert final["state"] == "connected", final["message"]
    assert final["ssh"]["reachable"] is True and final["cluster_state"] == "RUNNING"
    history = [e["state"] for e in final["events"]]
    for state in ("terminated", "starting", "configuring", "installing", "connected"):
        assert state in history
    assert history.index("starting") < history.index("configuring") < history.index("installing")
    versions = [s["version"] for s in seen]
    assert versions == sorted(versions)
    assert sim.calls().get("POST /api/2.1/clusters/start") == 1

    # the operation finishes with the step "done" and then disappears
    status = await client.status(sim_profile)
    while status["operation"] is not None:
        assert status["operation"]["step"] == "done"
        status = await client.status(sim_profile, wait=5, since=status["version"])

    await asyncio.to_thread(sim.terminate, sim_profile.cluster_id)
    seen = await client.until(sim_profile, {"terminated"})
    states = [e["state"] for e in seen[-1]["events"]]
    assert "terminating" in states and states[-1] == "terminated"
    assert "INACTIVITY" in seen[-1]["message"] or "terminated" in seen[-1]["message"]
    assert_no_secret(sim_profile, client, logs)


async def test_ssh_refused_is_unreachable_and_a_later_start_works(client, sim_profile, logs):
    sim = sim_profile.simulator
    await client.call("POST", "clusters", "demo", sim_profile.cluster_id, "start")
    assert (await client.until(sim_profile, {"connected", "error"}))[-1]["state"] == "connected"
    sim.set_ssh_mode(sim_profile.cluster_id, "refuse")
    final = (await client.until(sim_profile, {"unreachable"}))[-1]
    assert final["ssh"]["reachable"] is False and final["ssh"]["error"]

    code, body = await client.call(
        "POST", "clusters", "demo", sim_profile.cluster_id, "reconfigure"
    )
    assert code == 202 and body["operation"]["kind"] == "reconfigure"
    failed = (await client.until(sim_profile, {"error"}))[-1]
    assert failed["operation"] is None and failed["message"]

    sim.set_ssh_mode(sim_profile.cluster_id, "ok")
    code, body = await client.call("POST", "clusters", "demo", sim_profile.cluster_id, "start")
    assert code == 202
    assert (await client.until(sim_profile, {"connected"}))[-1]["state"] == "connected"
    assert sim.calls().get("POST /api/2.1/clusters/start") == 1
    assert_no_secret(sim_profile, client, logs)


async def test_workspace_down_gives_503_and_error_then_recovers(client, sim_profile, logs):
    sim = sim_profile.simulator
    assert (await client.status(sim_profile))["state"] == "terminated"
    sim.fail_next(100000, 503)
    code, body = await client.call("GET", "clusters", params={"profile": "demo"})
    assert code == 503 and body["error"] == "workspace_unavailable"
    failed = (await client.until(sim_profile, {"error"}))[-1]
    assert "did not answer" in failed["message"] or "failing" in failed["message"]
    assert sim.clear_failures() > 0
    assert (await client.until(sim_profile, {"terminated"}))[-1]["cluster_state"] == "TERMINATED"
    code, body = await client.call("GET", "clusters", params={"profile": "demo"})
    assert code == 200
    # a burst of 429/503 shorter than the retry budget is invisible
    sim.fail_next(2, 429)
    sim.fail_next(1, 503)
    code, body = await client.call("GET", "clusters", params={"profile": "demo"})
    assert code == 200
    assert_no_secret(sim_profile, client, logs)


async def test_bad_input_gives_documented_4xx(client, sim_profile):
    cid = sim_profile.cluster_id
    cases = [
        (("GET", "clusters", "nobody", cid), 404, "no_such_profile"),
        (("GET", "clusters", "bad\x01name", cid), 400, "invalid_profile"),
        (("GET", "clusters", "demo", "bad_id!"), 400, "invalid_cluster_id"),
        (("GET", "clusters", "demo", "0000-000000-nothere"), 404, "no_such_cluster"),
        (("POST", "clusters", "demo", "-starts-with-dash", "start"), 400, "invalid_cluster_id"),
        (("POST", "clusters", "nobody", cid, "start"), 404, "no_such_profile"),
        (("POST", "clusters", "demo", cid, "reconfigure"), 409, "cluster_not_running"),
        (("GET", "kernels", "not-a-kernel"), 404, "no_such_kernel"),
    ]
    for args, status, error in cases:
        code, body = await client.call(*args)
        assert (code, body["error"]) == (status, error), (args, body)
    code, body = await client.call("GET", "clusters")
    assert (code, body["error"]) == (400, "invalid_profile")
    for bad in ("{not json", "[1, 2]", '{"kernel_id": 5}', '{"other": 1}'):
        code, body = await client.call("POST", "clusters", "demo", cid, "start", body=bad)
        assert (code, body["error"]) == (400, "invalid_body"), bad
    code, body = await client.call(
        "POST", "clusters", "demo", cid, "start", body='{"kernel_id": "0d4e1d7c-none"}'
    )
    assert (code, body["error"]) == (404, "no_such_kernel")
    code, body = await client.call(
        "GET", "clusters", "demo", cid, params={"wait": 1000, "since": 1}
    )
    assert code == 400
    # nothing was started by any of these
    assert not sim_profile.simulator.calls().get("POST /api/2.1/clusters/start")


async def test_unauthenticated_requests_are_refused(client, sim_profile):
    cid = sim_profile.cluster_id
    no_token = {"Authorization": ""}
    for method, path in [
        ("GET", ("profiles",)),
        ("GET", ("clusters",)),
        ("GET", ("clusters", "demo", cid)),
        ("POST", ("clusters", "demo", cid, "start")),
        ("POST", ("clusters", "demo", cid, "reconfigure")),
        ("GET", ("kernels", "abc")),
        ("GET", ("openapi.json",)),
    ]:
        code, body = await client.call(method, *path, headers=no_token)
        assert code in (401, 403), (method, path, code)
    code, _ = await client.call(
        "GET", "clusters", "demo", cid, headers={"Authorization": "token wrong"}
    )
    assert code in (401, 403)
    assert not sim_profile.simulator.calls().get("POST /api/2.1/clusters/start")


async def test_long_poll_returns_on_change_or_after_wait(client, sim_profile):
    status = await client.status(sim_profile)
    t0 = time.monotonic()
    same = await client.status(sim_profile, wait=1.5, since=status["version"])
    elapsed = time.monotonic() - t0
    assert 1.3 <= elapsed < 5 and same["version"] == status["version"]

    async def start_soon() -> None:
        await asyncio.sleep(0.5)
        await client.call("POST", "clusters", "demo", sim_profile.cluster_id, "start")

    task = asyncio.ensure_future(start_soon())
    t0 = time.monotonic()
    changed = await client.status(sim_profile, wait=30, since=status["version"])
    assert time.monotonic() - t0 < 10
    assert changed["version"] > status["version"]
    await task
    await client.until(sim_profile, {"connected", "error"})


async def test_ssh_checks_alone_wake_no_long_poll(client, sim_profile):
    """A connected cluster is checked over SSH every refresh; the time of the check is served,
    but a steady long-poll client is answered only when its wait ends (issue: one answer per
    check kept every client busy)."""
    await client.call("POST", "clusters", "demo", sim_profile.cluster_id, "start")
    status = (await client.until(sim_profile, {"connected"}))[-1]
    t0 = time.monotonic()
    same = await client.status(sim_profile, wait=4, since=status["version"])
    assert time.monotonic() - t0 >= 3.5
    assert same["version"] == status["version"] and same["state"] == "connected"
    assert same["ssh"]["checked_at"] > status["ssh"]["checked_at"], "no SSH check ran meanwhile"


async def test_long_poll_ends_when_its_client_goes_away(client, sim_profile, jp_serverapp):
    registry = jp_serverapp.web_app.settings["databrickslabs_jupyterlab_registry"]
    status = await client.status(sim_profile)
    conn = await registry.connection("demo", sim_profile.cluster_id)
    with pytest.raises(HTTPClientError) as gave_up:  # the client stops waiting after 1 s
        await client.fetch(
            *API,
            "clusters",
            "demo",
            sim_profile.cluster_id,
            params={"wait": 50, "since": status["version"]},
            request_timeout=1,
        )
    assert gave_up.value.code == 599
    deadline = time.monotonic() + 15
    while conn.waiters:
        assert time.monotonic() < deadline, "the server still waits for a client that is gone"
        await asyncio.sleep(0.05)


async def test_kernel_endpoint(client, sim_profile, jp_fetch, jp_data_dir):
    spec_dir = jp_data_dir / "kernels" / "dbtest"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "SSH test",
                "language": "python",
                "metadata": {
                    "databricks": {"profile": "demo", "cluster_id": sim_profile.cluster_id}
                },
            }
        )
    )
    ours = json.loads(
        (await jp_fetch("api", "kernels", method="POST", body='{"name": "dbtest"}')).body
    )
    plain = json.loads(
        (await jp_fetch("api", "kernels", method="POST", body='{"name": "python3"}')).body
    )
    try:
        code, body = await client.call("GET", "kernels", plain["id"])
        assert (code, body["error"]) == (404, "not_a_databricks_kernel")
        code, body = await client.call("GET", "kernels", ours["id"])
        assert code == 200
        check("KernelStatus", body)
        assert body["kernel_state"] == "starting" and body["cluster"]["state"] == "terminated"
        kernelstate.board.set(ours["id"], "demo", sim_profile.cluster_id, "running-spark")
        code, body = await client.call("GET", "kernels", ours["id"])
        assert body["kernel_state"] == "running-spark"
        assert {"kernel_id": ours["id"], "kernel_state": "running-spark"} in body["cluster"][
            "kernels"
        ]
    finally:
        kernelstate.board.remove(ours["id"])
        for kernel in (ours, plain):
            await jp_fetch("api", "kernels", kernel["id"], method="DELETE")
