"""Behind a real JupyterHub: a hub under ``/hub-prefix/`` with configurable-http-proxy,
``SimpleLocalProcessSpawner`` and ``DummyAuthenticator``; two users, each with a workspace of
their own (one simulator each, over real HTTP and SSH), their own Databricks profile, config file,
state folder, SSH config, key and HOME, set through the spawner's environment.

Everything goes through the proxy's URL with each user's hub API token: the extension's API
answers under ``/user/<name>/``, a start reaches ``connected``, and one user never sees the
other's profiles, clusters, operations or kernels; the hub refuses one user's token at the
other's server.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.hub import API, PREFIX, World, proxy_command, two_user_hub, wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, simulator_state_dir: Path) -> Iterator[World]:
    if os.environ.get("SKIP_HUB"):
        pytest.skip("SKIP_HUB is set")
    if importlib.util.find_spec("jupyterhub") is None:
        pytest.skip("JupyterHub is not installed (pip install jupyterhub; scripts/test.sh does)")
    chp = proxy_command()
    if chp is None:
        pytest.skip(
            "configurable-http-proxy is not installed (scripts/test.sh installs it from npm)"
        )
    with two_user_hub(tmp_path_factory.mktemp("hub"), simulator_state_dir, chp) as world:
        yield world


def test_each_user_has_the_extension_under_the_hub_prefix(world: World) -> None:
    for who, person in world.people.items():
        profiles = world.call(who, "GET", who, "profiles")
        assert profiles.status_code == 200, profiles.text
        assert [p["name"] for p in profiles.json()["profiles"]] == [person.profile]
        assert world.hub.tokens[who] not in profiles.text
        clusters = world.call(who, "GET", who, "clusters", params={"profile": person.profile})
        assert clusters.status_code == 200, clusters.text
        assert [c["cluster_id"] for c in clusters.json()["clusters"]] == [person.cluster_id]
        status = world.status(who)
        assert (status["profile"], status["cluster_id"]) == (person.profile, person.cluster_id)
        # JupyterLab's page gives the frontend (the status bar's requests) the user's base URL
        page = world.hub.as_user(who, "GET", who, "lab")
        assert page.status_code == 200, page.text[:500]
        base = re.search(r'"baseUrl":\s*"([^"]*)"', page.text)
        assert base is not None and base.group(1) == f"{PREFIX}user/{who}/"
        # the OpenAPI document is served under the prefix too
        spec = world.call(who, "GET", who, "openapi.json")
        assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")


def test_a_start_through_the_hub_reaches_connected_for_each_user(world: World) -> None:
    for who, person in world.people.items():
        if world.status(who)["state"] == "connected":
            continue
        started = world.call(
            who, "POST", who, "clusters", person.profile, person.cluster_id, "start"
        )
        assert started.status_code == 202, started.text
        assert started.json()["operation"]["kind"] == "start"
    for who, person in world.people.items():
        seen = world.until(who, {"connected", "error"})
        assert seen[-1]["state"] == "connected", seen[-1]["message"]
        # each start went to that user's own workspace, once
        assert person.simulator.calls().get("POST /api/2.1/clusters/start") == 1
        assert person.simulator.cluster(person.cluster_id).state == "RUNNING"


def test_one_user_never_sees_the_others_clusters_operations_or_kernels(world: World) -> None:
    alice, bob = world.people["alice"], world.people["bob"]
    world.connected("alice")
    xsrf_free = {"json": {"name": world.kernel_name}}
    made = world.hub.as_user("alice", "POST", "alice", "api/kernels", **xsrf_free)
    assert made.status_code == 201, made.text
    kernel_id = made.json()["id"]
    try:

        def alice_kernel_status() -> dict[str, Any] | None:
            got = world.call("alice", "GET", "alice", "kernels", kernel_id)
            assert got.status_code == 200, got.text
            body = got.json()
            return body if body["kernel_state"] in ("running", "running-spark") else None

        status = wait_for("alice's Databricks kernel", alice_kernel_status, 150, poll=0.5)
        assert (status["profile"], status["cluster_id"]) == (alice.profile, alice.cluster_id)

        # bob's server knows nothing of alice's profile, cluster, operation or kernel
        profiles = world.call("bob", "GET", "bob", "profiles").json()["profiles"]
        assert [p["name"] for p in profiles] == [bob.profile]
        for path in (
            ("clusters", alice.profile, alice.cluster_id),
            ("clusters", alice.profile, alice.cluster_id, "start"),
        ):
            method = "POST" if path[-1] == "start" else "GET"
            refused = world.call("bob", method, "bob", *path)
            assert refused.status_code == 404, refused.text
            assert refused.json()["error"] == "no_such_profile"
        listed = world.call("bob", "GET", "bob", "clusters", params={"profile": alice.profile})
        assert listed.status_code == 404 and listed.json()["error"] == "no_such_profile"
        unknown = world.call("bob", "GET", "bob", "kernels", kernel_id)
        assert unknown.status_code == 404 and unknown.json()["error"] == "no_such_kernel"
        kernels = world.hub.as_user("bob", "GET", "bob", "api/kernels")
        assert kernels.status_code == 200
        assert kernel_id not in {k["id"] for k in kernels.json()}
        specs = world.hub.as_user("bob", "GET", "bob", "api/kernelspecs").json()["kernelspecs"]
        assert world.kernel_name not in specs
        # alice's workspace never saw bob's start, nor bob's hers
        assert [c.cluster_id for c in alice.simulator.clusters()] == [alice.cluster_id]
        assert [c.cluster_id for c in bob.simulator.clusters()] == [bob.cluster_id]

        # the hub refuses bob's token at alice's server: her API, her kernels, her extension
        for path in ("api/kernels", f"{API}/profiles", f"{API}/kernels/{kernel_id}"):
            denied = world.hub.as_user("bob", "GET", "alice", path)
            assert denied.status_code == 403, (path, denied.status_code, denied.text[:300])
            assert alice.profile not in denied.text and kernel_id not in denied.text
        start = f"{API}/clusters/{alice.profile}/{alice.cluster_id}/start"
        denied = world.hub.as_user("bob", "POST", "alice", start)
        assert denied.status_code == 403, denied.text[:300]
        # alice's server still answers alice
        assert world.status("alice")["state"] == "connected"
    finally:
        gone = world.hub.as_user("alice", "DELETE", "alice", f"api/kernels/{kernel_id}")
        assert gone.status_code in (204, 404), gone.text
