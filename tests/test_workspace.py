"""The databricks-sdk facade against the simulator over real HTTP (plus config-file units)."""

from __future__ import annotations

import asyncio
import time

import pytest

from databrickslabs_jupyterlab.simulator import make_keypair
from databrickslabs_jupyterlab.workspace import (
    NoSuchCluster,
    NoSuchProfile,
    Workspace,
    WorkspaceError,
    WorkspaceUnavailable,
    key_installed,
    list_profiles,
    profile_exists,
)

CONFIG = """\
[DEFAULT]
host = https://default.example.com
token = dapi-default-secret

[pat]
host = https://pat.example.com
token = dapi-pat-secret

[m2m]
host = https://m2m.example.com
client_id = abc
client_secret = very-secret

[cli]
host = https://cli.example.com

[explicit]
host = https://x.example.com
auth_type = external-browser
token = dapi-ignored-secret

[azure]
host = https://adb-1.azuredatabricks.net
azure_workspace_resource_id = /subscriptions/x
"""


def test_list_profiles_never_returns_tokens(tmp_path):
    path = tmp_path / "cfg"
    path.write_text(CONFIG)
    profiles = {p.name: p for p in list_profiles(str(path))}
    assert {n: p.auth_type for n, p in profiles.items()} == {
        "DEFAULT": "pat",
        "pat": "pat",
        "m2m": "oauth-m2m",
        "cli": "databricks-cli",
        "explicit": "external-browser",
        "azure": "azure-cli",
    }
    assert profiles["pat"].host == "https://pat.example.com"
    assert "secret" not in repr(profiles)
    assert profile_exists("m2m", str(path)) and not profile_exists("nope", str(path))
    assert list_profiles(str(tmp_path / "missing")) == []


def test_default_config_file_from_environment(isolated_home):
    (isolated_home / ".databrickscfg").write_text("[only]\nhost = https://h\ntoken = t\n")
    assert [p.name for p in list_profiles()] == ["only"]


def test_key_installed_ignores_comments():
    key = "ssh-ed25519 AAAAkey"
    assert key_installed(key, ["ssh-ed25519 AAAAkey someone@laptop"])
    assert not key_installed(key, ["ssh-ed25519 AAAAother"])
    assert not key_installed(None, ["ssh-ed25519 AAAAkey"])


def _workspace(retry_timeout: int = 5) -> Workspace:
    return asyncio.run(Workspace.for_profile("demo", retry_timeout=retry_timeout, http_timeout=5))


def test_read_list_and_start_a_cluster(sim_profile):
    sim = sim_profile.simulator

    async def main() -> None:
        ws = await Workspace.for_profile("demo", retry_timeout=5, http_timeout=5)
        again = await Workspace.for_profile("demo", retry_timeout=5, http_timeout=5)
        assert ws is again  # cached per profile
        info = await ws.get_cluster(sim_profile.cluster_id)
        assert info.state == "TERMINATED" and info.cluster_name == "sim-cluster"
        assert key_installed(sim_profile.public_key.strip(), info.ssh_public_keys)
        listed = await ws.list_clusters()
        assert [c.cluster_id for c in listed] == [sim_profile.cluster_id]
        await ws.start_cluster(sim_profile.cluster_id)
        assert (await ws.get_cluster(sim_profile.cluster_id)).state == "PENDING"
        with pytest.raises(WorkspaceError) as failure:
            await ws.start_cluster(sim_profile.cluster_id)
        assert failure.value.code == "invalid_state"
        await asyncio.to_thread(sim.wait_state, sim_profile.cluster_id, "RUNNING")
        info = await ws.get_cluster(sim_profile.cluster_id)
        assert info.public_dns and info.driver_start
        with pytest.raises(NoSuchCluster) as missing:
            await ws.get_cluster("0000-000000-nothere")
        assert "does not exist" in missing.value.message and missing.value.status == 404

    asyncio.run(main())


def test_set_ssh_public_keys_keeps_the_spec(sim_profile, tmp_path):
    extra = make_keypair(tmp_path / "id_extra").strip()

    async def main() -> None:
        ws = await Workspace.for_profile("demo", retry_timeout=5, http_timeout=5)
        before = await ws.get_cluster(sim_profile.cluster_id)
        await ws.set_ssh_public_keys(sim_profile.cluster_id, [*before.ssh_public_keys, extra])
        after = await ws.get_cluster(sim_profile.cluster_id)
        assert key_installed(extra, after.ssh_public_keys)
        assert key_installed(sim_profile.public_key, after.ssh_public_keys)
        assert after.spark_version == before.spark_version
        assert after.autotermination_minutes == before.autotermination_minutes
        assert after.state == "TERMINATED"

    asyncio.run(main())


def test_bursts_of_429_and_503_are_survived(sim_profile):
    sim = sim_profile.simulator
    ws = _workspace(retry_timeout=20)
    sim.fail_next(2, 429)
    sim.fail_next(2, 503)
    info = asyncio.run(ws.get_cluster(sim_profile.cluster_id))
    assert info.state == "TERMINATED"


def test_workspace_that_keeps_failing_is_unavailable_quickly(sim_profile):
    sim = sim_profile.simulator
    ws = _workspace(retry_timeout=2)
    sim.fail_next(1000, 503)
    t0 = time.monotonic()
    with pytest.raises(WorkspaceUnavailable) as failure:
        asyncio.run(ws.get_cluster(sim_profile.cluster_id))
    assert time.monotonic() - t0 < 15
    assert failure.value.status == 503
    assert sim.token not in failure.value.message
    # A sentence for the person: the details dialog shows it as it is.
    assert failure.value.message.startswith(f"The Databricks workspace at {sim_profile.host} ")


def test_internal_error_is_one_sentence(sim_profile):
    sim = sim_profile.simulator
    ws = _workspace(retry_timeout=2)
    sim.fail_next(1, 500)
    with pytest.raises(WorkspaceUnavailable) as failure:
        asyncio.run(ws.get_cluster(sim_profile.cluster_id))
    assert failure.value.message == (
        f"The Databricks workspace at {sim_profile.host} keeps failing (500) "
        f"when asked to read cluster {sim_profile.cluster_id}."
    )


def test_wrong_token_and_missing_profile(sim_profile, isolated_home):
    cfg = sim_profile.config_file
    cfg.write_text(cfg.read_text() + f"\n[wrong]\nhost = {sim_profile.host}\ntoken = dapi-wrong\n")

    async def main() -> None:
        ws = await Workspace.for_profile("wrong", retry_timeout=5, http_timeout=5)
        with pytest.raises(WorkspaceError) as failure:
            await ws.get_cluster(sim_profile.cluster_id)
        assert failure.value.code == "workspace_auth_failed"
        assert "dapi" not in failure.value.message
        with pytest.raises(NoSuchProfile):
            await Workspace.for_profile("absent", retry_timeout=5, http_timeout=5)

    asyncio.run(main())


def test_dead_host_is_unavailable_within_the_retry_timeout(isolated_home):
    (isolated_home / ".databrickscfg").write_text(
        "[dead]\nhost = http://127.0.0.1:9\ntoken = dapi-dead-secret\n"
    )

    async def main() -> None:
        t0 = time.monotonic()
        with pytest.raises(WorkspaceUnavailable) as failure:
            ws = await Workspace.for_profile("dead", retry_timeout=2, http_timeout=1)
            await ws.get_cluster("0000-000000-abc")
        assert time.monotonic() - t0 < 20
        assert "dapi" not in failure.value.message

    asyncio.run(main())


def test_client_cache_is_bounded_and_drops_stale_clients(sim_profile, monkeypatch):
    """Every edit of the config file makes a new cache key: the stale client of the same
    profile goes, and at most CACHE_SIZE clients (and no build lock) stay (issue 13, 9)."""
    monkeypatch.setattr(Workspace, "_cache", type(Workspace._cache)())
    monkeypatch.setattr(Workspace, "_locks", {})
    monkeypatch.setattr(Workspace, "CACHE_SIZE", 2)
    config = sim_profile.config_file
    with open(config, "a") as f:
        for name in ("two", "three"):
            f.write(sim_profile.simulator.profile_text(name))

    def edit(n: int) -> None:
        with open(config, "a") as f:
            f.write(f"# edit {n}\n")  # a new size and time: a new key

    async def main() -> None:
        for n in range(3):
            edit(n)
            first = await Workspace.for_profile("demo", retry_timeout=5, http_timeout=5)
            assert await Workspace.for_profile("demo", retry_timeout=5, http_timeout=5) is first
            assert [k[0] for k in Workspace._cache] == ["demo"]
        for name in ("two", "three", "demo"):
            await Workspace.for_profile(name, retry_timeout=5, http_timeout=5)
        assert [k[0] for k in Workspace._cache] == ["three", "demo"]  # least recently used out
        assert Workspace._locks == {}

    asyncio.run(main())
