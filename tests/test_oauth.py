"""OAuth against the simulator over real HTTP: machine-to-machine (a service principal's client id
and secret) and user-to-machine (databricks-sdk's token cache after a browser login), through
databricks-sdk's unified auth, the CLI, the Jupyter server's API and a Command Execution API
kernelspec. Short token lifetimes make the SDK refresh during a run; no secret is ever shown.
"""

from __future__ import annotations

import asyncio
import configparser
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from databrickslabs_jupyterlab.workspace import Workspace, list_profiles
from tests.test_api import Client, check, server_config

# Access tokens are JWTs ({"alg"... -> eyJhbGci...); refresh tokens and secrets have prefixes.
_LEAKS = re.compile(r"eyJhbGci[\w-]*\.[\w-]+\.[\w-]+|doau[0-9a-f]{16,}|dose[0-9a-f]{16,}")
#: The SDK renews a token 40 s before it expires: a 41 s token is renewed after 1 s, so a run
#: whose API calls each take 0.4 s (the simulator's latency) renews it by its fourth call.
SHORT = 41


def leaks(text: str, *secrets: str) -> list[str]:
    found = [s for s in secrets if s and s in text]
    return found + _LEAKS.findall(text)


def _m2m(profile: Any) -> dict[str, str]:
    """Make ``demo`` an OAuth M2M profile of a new service principal (same host, same key)."""
    text = profile.simulator.m2m_profile_text("demo")
    profile.config_file.write_text(text)
    parser = configparser.ConfigParser()
    parser.read_string(text)
    Workspace.forget()
    return dict(parser["demo"])


@pytest.fixture
def m2m(sim_profile: Any) -> dict[str, str]:
    return _m2m(sim_profile)


# --------------------------------------------------------------------------------------------
# The simulator's OIDC


@pytest.mark.simulator(oauth_token_lifetime=2)
def test_discovery_grants_and_expiry(simulator: Any) -> None:
    url = simulator.url
    meta = requests.get(f"{url}/.well-known/databricks-config", timeout=10).json()
    assert meta["oidc_endpoint"] == f"{url}/oidc"
    doc = requests.get(f"{url}/oidc/.well-known/oauth-authorization-server", timeout=10).json()
    assert doc["issuer"] == f"{url}/oidc"
    assert doc["token_endpoint"] == f"{url}/oidc/v1/token"
    assert doc["authorization_endpoint"] == f"{url}/oidc/v1/authorize"
    assert "client_credentials" in doc["grant_types_supported"]
    openid = f"{url}/oidc/.well-known/openid-configuration"
    assert requests.get(openid, timeout=10).json() == doc

    client_id, secret = simulator.add_service_principal()
    token_url = doc["token_endpoint"]
    form = {"grant_type": "client_credentials", "scope": "all-apis"}
    wrong = requests.post(token_url, form, auth=(client_id, "dose" + "0" * 64), timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    odd = requests.post(token_url, {"grant_type": "password"}, auth=(client_id, secret), timeout=10)
    assert odd.status_code == 400 and odd.json()["error"] == "unsupported_grant_type"
    bad_scope = requests.post(
        token_url, {**form, "scope": "everything"}, auth=(client_id, secret), timeout=10
    )
    assert bad_scope.status_code == 400 and bad_scope.json()["error"] == "invalid_scope"
    stranger = requests.post(
        token_url,
        {"grant_type": "refresh_token", "refresh_token": "doau" + "1" * 64},
        timeout=10,
    )
    assert stranger.status_code == 400 and stranger.json()["error"] == "invalid_grant"

    granted = requests.post(token_url, form, auth=(client_id, secret), timeout=10)
    assert granted.status_code == 200, granted.text
    body = granted.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 2
    assert granted.headers["Cache-Control"] == "no-store"
    listing = f"{url}/api/2.1/clusters/list"
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert requests.get(listing, headers=bearer, timeout=10).status_code == 200
    forged = body["access_token"][:-4] + (
        "AAAA" if not body["access_token"].endswith("AAAA") else "BBBB"
    )
    refused = requests.get(listing, headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    assert refused.status_code == 401 and refused.json()["message"] == "Invalid access token."

    deadline = time.monotonic() + 30
    while True:
        answer = requests.get(listing, headers=bearer, timeout=10)
        if answer.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling for the expiry, which is the point of this loop
    assert answer.status_code == 401
    assert answer.json() == {"error_code": "UNAUTHENTICATED", "message": "Token expired."}
    pat = {"Authorization": f"Bearer {simulator.token}"}
    assert requests.get(listing, headers=pat, timeout=10).status_code == 200
    assert simulator.oauth_issued() == {"client_credentials": 1, "refresh_token": 0}


# --------------------------------------------------------------------------------------------
# The profile list


def test_profile_list_shows_each_auth_type(dj, isolated_home: Path) -> None:
    Path(isolated_home / ".databrickscfg").write_text(
        "[pat]\nhost = https://a.example.com\ntoken = dapi0123456789abcdef0123456789abcdef\n"
        "[m2m]\nhost = https://a.example.com\nclient_id = abc\nclient_secret = dose-s3cret\n"
        "[u2m]\nhost = https://a.example.com\nauth_type = external-browser\n"
        "[cli]\nhost = https://a.example.com\nauth_type = databricks-cli\n"
        "[bare]\nhost = https://a.example.com\n"
        "[azcli]\nhost = https://adb-1.2.azuredatabricks.net\nauth_type = azure-cli\n"
        "[azsp]\nhost = https://adb-1.2.azuredatabricks.net\nazure_client_id = x\n"
        "azure_client_secret = az-s3cret\nazure_tenant_id = t\n"
        "[gcp]\nhost = https://1.gcp.databricks.com\ngoogle_service_account = sa@p.iam\n"
        "[basic]\nhost = https://a.example.com\nusername = u\npassword = pw-s3cret\n"
    )
    expected = {
        "pat": "pat",
        "m2m": "oauth-m2m",
        "u2m": "external-browser",
        "cli": "databricks-cli",
        "bare": "databricks-cli",
        "azcli": "azure-cli",
        "azsp": "azure-client-secret",
        "gcp": "google-id",
        "basic": "basic",
    }
    assert {p.name: p.auth_type for p in list_profiles()} == expected
    listed = dj("-p", "--json")
    assert {r["profile"]: r["auth_type"] for r in listed.json()} == expected
    table = dj("-D", "-p")
    assert table.code == 0, table
    rows = {line.split()[0]: line.split() for line in table.out.splitlines()[1:] if line.strip()}
    assert rows["m2m"][2] == "oauth-m2m" and rows["u2m"][2] == "external-browser"
    shown = dj("m2m")
    assert "auth          oauth-m2m" in shown.out
    for run in (listed, table, shown):
        text = run.out + run.err
        assert not leaks(text, "dose-s3cret", "az-s3cret", "pw-s3cret", "dapi0123456789abcdef")


# --------------------------------------------------------------------------------------------
# M2M through the CLI


@pytest.mark.simulator(oauth_token_lifetime=SHORT)
def test_cli_m2m_starts_a_cluster_refreshes_and_hides_secrets(
    dj, sim_profile: Any, m2m: dict[str, str], jupyter_dirs: Path, monkeypatch: Any
) -> None:
    sim = sim_profile.simulator
    cid = sim_profile.cluster_id
    monkeypatch.setenv("DATABRICKS_DEBUG_HEADERS", "true")  # the SDK must still log no header
    listed = dj("-D", "-p", "--json")
    assert [r["auth_type"] for r in listed.json()] == ["oauth-m2m"]

    # Every API call waits a little, so that the run outlives a token's first second.
    sim.set_latency(0.4)
    run = dj("-D", "demo", "-r", "-i", cid)
    assert run.code == 0, run
    assert sim.cluster(cid).state == "RUNNING"
    issued = sim.oauth_issued()["client_credentials"]
    assert issued >= 2, run.err
    assert "POST /oidc/v1/token" in sim.calls()
    assert "/oidc/v1/token -> 200" in run.err  # the debug log shows the grant, not its answer

    sim.set_latency(0)
    spec = dj("-D", "demo", "-k", "-i", cid, "--transport", "command-api", "--yes", "--json")
    assert spec.code == 0, spec
    kernel_files = [p.read_text() for p in (jupyter_dirs / "jupyter-data").rglob("*.json")]
    assert kernel_files
    for text in (listed.out, listed.err, run.out, run.err, spec.out, spec.err, *kernel_files):
        assert not leaks(text, m2m["client_secret"], sim.token)
        assert "Bearer" not in text and "Basic " not in text
    assert m2m["client_id"] not in "".join(kernel_files)

    # The kernel's REST 1.2 calls (context, commands, status polls) with the profile's OAuth:
    # the kernel's process buys its own token; the driver's environment holds no secret.
    before = sim.oauth_issued()["client_credentials"]
    sim.set_latency(0.4)
    reply, text = asyncio.run(_cell(spec.json()["kernel_name"], "import os\nsorted(os.environ)"))
    assert reply["status"] == "ok", reply
    assert "'PATH'" in text  # the remote environment's names, where no secret may be
    assert sim.oauth_issued()["client_credentials"] > before
    assert not leaks(text, m2m["client_secret"], sim.token)
    assert "DATABRICKS_CLIENT_SECRET" not in text and m2m["client_secret"] not in text


async def _cell(kernel_name: str, code: str) -> tuple[dict[str, Any], str]:
    """Run one cell on a kernel of ``kernel_name``: its reply and its printed output."""
    from tests.test_command_kernel import _run, _stdout
    from tests.test_provisioner import _start

    km, kc = await _start(kernel_name)
    try:
        reply, messages = await _run(kc, code, timeout=60)
        return reply, _stdout(messages) + "".join(
            str(m.get("data", "")) for m in messages if m["type"] == "execute_result"
        )
    finally:
        kc.stop_channels()
        await km.shutdown_kernel()


# --------------------------------------------------------------------------------------------
# M2M through the Jupyter server


@pytest.fixture
def jp_server_config(sim_profile: Any) -> dict[str, Any]:
    # The M2M profile is written before the server starts; the key stays the profile's.
    sim_profile.oauth = _m2m(sim_profile)
    return server_config(sim_profile)


@pytest.fixture
def client(jp_fetch: Any) -> Client:
    return Client(jp_fetch)


@pytest.mark.simulator(oauth_token_lifetime=SHORT)
async def test_server_m2m_lists_and_starts_with_refreshes(
    client: Client, sim_profile: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = sim_profile.simulator
    code, profiles = await client.call("GET", "profiles")
    (listed,) = check("Profiles", profiles)["profiles"]
    assert (code, listed["name"], listed["auth_type"]) == (200, "demo", "oauth-m2m")
    code, clusters = await client.call("GET", "clusters", params={"profile": "demo"})
    ids = [c["cluster_id"] for c in check("Clusters", clusters)["clusters"]]
    assert (code, ids) == (200, [sim_profile.cluster_id])
    await asyncio.to_thread(sim.set_latency, 0.4)
    code, started = await client.call("POST", "clusters", "demo", sim_profile.cluster_id, "start")
    assert code == 202, started
    final = (await client.until(sim_profile, {"connected", "error"}, timeout=90))[-1]
    assert final["state"] == "connected", final["message"]
    issued = (await asyncio.to_thread(sim.oauth_issued))["client_credentials"]
    assert issued >= 2
    secret = sim_profile.oauth["client_secret"]
    for body in client.bodies:
        assert not leaks(body, secret, sim.token)
    for record in caplog.records:
        assert not leaks(record.getMessage(), secret, sim.token)


# --------------------------------------------------------------------------------------------
# U2M: a browser login's token cache


@pytest.mark.simulator(oauth_token_lifetime=SHORT)
def test_u2m_profile_refreshes_from_the_token_cache(dj, sim_profile: Any) -> None:
    sim = sim_profile.simulator
    with open(sim_profile.config_file, "a") as f:
        f.write(sim.u2m_profile_text("u2m"))
    caches = list(Path("~/.config/databricks-sdk-py/oauth").expanduser().glob("*.json"))
    assert len(caches) == 1 and caches[0].stat().st_mode & 0o077 == 0
    listed = {r["profile"]: r["auth_type"] for r in dj("-p", "--json").json()}
    assert listed == {"demo": "pat", "u2m": "external-browser"}

    async def read() -> list[str]:
        ws = await Workspace.for_profile("u2m")
        return [c.cluster_id for c in await ws.list_clusters()]

    assert asyncio.run(read()) == [sim_profile.cluster_id]
    # The cached access token had expired: the refresh token bought a new one.
    assert sim.oauth_issued()["refresh_token"] >= 1
    run = dj("-D", "u2m", "-i", sim_profile.cluster_id)
    assert run.code == 0, run
    assert "auth          external-browser" in run.out
    assert not leaks(run.out + run.err, sim.token)
