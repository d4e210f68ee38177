"""Ids through the REST API are matched whole (issue 13, finding 5): a trailing newline (``%0A``)
or other control character never creates a registry entry, a host-key file or a kernel lookup."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from databrickslabs_jupyterlab import vocabulary
from tests.test_api import Client, server_config

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")


@pytest.fixture
def jp_server_config(sim_profile):
    return server_config(sim_profile)


@pytest.mark.parametrize("suffix", ["\n", "\r", "\r\n", "\x00", " ", "\t"])
async def test_ids_with_a_trailing_control_character_are_refused(
    jp_fetch, jp_serverapp, sim_profile, suffix: str
) -> None:
    client = Client(jp_fetch)
    cid = sim_profile.cluster_id
    for method, path in [
        ("GET", ("clusters", "demo", cid + suffix)),
        ("POST", ("clusters", "demo", cid + suffix, "start")),
        ("POST", ("clusters", "demo", cid + suffix, "reconfigure")),
        ("GET", ("clusters", "demo" + suffix, cid)),
        ("GET", ("kernels", "0123abcd-0000-4000-8000-000000000000" + suffix)),
    ]:
        code, body = await client.call(method, *path)
        assert code in (400, 404), (path, code, body)
        assert body["error"] in ("invalid_cluster_id", "invalid_profile", "no_such_kernel"), body
    code, body = await client.call("GET", "clusters", params={"profile": "demo" + suffix})
    assert code in (400, 404), body
    registry = jp_serverapp.web_app.settings["databrickslabs_jupyterlab_registry"]
    assert all(
        vocabulary.is_cluster_id(c.cluster_id) and vocabulary.is_profile(c.profile)
        for c in registry.connections()
    )
    known_hosts = Path(os.environ["DBJL_STATE_DIR"]) / "known_hosts"
    names = [p.name for p in known_hosts.rglob("*")] if known_hosts.exists() else []
    assert not any(set(n) & set(suffix) for n in names), names


def test_vocabulary_matches_whole_strings() -> None:
    for check, good in [
        (vocabulary.is_cluster_id, "0101-abc"),
        (vocabulary.is_profile, "demo"),
        (vocabulary.is_kernel_id, "0123abcd-0000"),
        (vocabulary.is_env_name, "MY_VAR"),
        (vocabulary.is_hostname, "h.example.com"),
        (vocabulary.is_ssh_user, "ubuntu"),
    ]:
        assert check(good)
        for bad in (good + "\n", good + "\r\n", "\n" + good, good + "\x00"):
            assert not check(bad), (check.__name__, bad)


class TestWatchedClustersAreBounded:
    """Issue 13, finding 3, through the server: at most max_clusters entries, an unknown id
    costs one upstream read per interval however often it is asked for."""

    @pytest.fixture
    def jp_server_config(self, sim_profile):
        config = server_config(sim_profile)
        config["DatabricksLabsJupyterLab"].update(max_clusters=1, unknown_read_interval=60.0)
        return config

    async def test_cap_and_unknown_ids(self, jp_fetch, jp_serverapp, sim_profile) -> None:
        client = Client(jp_fetch)
        sim = sim_profile.simulator
        registry = jp_serverapp.web_app.settings["databrickslabs_jupyterlab_registry"]

        def reads() -> int:
            return sum(n for call, n in sim.calls().items() if "clusters/get" in call)

        before = reads()
        unknown = ("GET", "clusters", "demo", "0101-000000-unknown01")
        deadline = time.monotonic() + 60
        code, body = await client.call(*unknown)
        while code == 200:  # the first read may outlast first_read_wait on a loaded machine
            assert body["state"] == "unknown" and time.monotonic() < deadline, body
            await asyncio.sleep(0.2)
            code, body = await client.call(*unknown)
        assert code == 404 and body["error"] == "no_such_cluster", body
        for _ in range(20):
            code, body = await client.call(*unknown)
            assert code == 404 and body["error"] == "no_such_cluster", body
        assert reads() - before == 1

        code, _ = await client.call("GET", "clusters", "demo", sim_profile.cluster_id)
        assert code == 200
        other = sim.add_cluster("second-cluster")
        code, body = await client.call("GET", "clusters", "demo", other)
        assert code == 200, body  # the idle first entry made room
        assert [c.cluster_id for c in registry.connections()] == [other]
