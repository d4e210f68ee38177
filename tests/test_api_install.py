"""A start whose driver lacks a required library installs it (the ``installing`` step for real),
and a reconfigure of the prepared driver installs nothing."""

from __future__ import annotations

import asyncio
import subprocess
import uuid

import pytest

from tests.fixtures.wheels import build_wheel
from tests.test_api import Client, assert_no_secret, check, server_config

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")

PROBE = f"dbjl-probe-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def jp_server_config(sim_profile, tmp_path):
    wheels = build_wheel(tmp_path / "wheels", PROBE, "1.2.3").parent
    return server_config(
        sim_profile,
        driver_requirements=["ipykernel>=6.0", f"{PROBE}>=1.2"],
        pip_args=["--no-index", "--find-links", str(wheels)],
    )


@pytest.fixture
def client(jp_fetch):
    return Client(jp_fetch)


async def test_start_installs_missing_driver_library_once(client, sim_profile, caplog):
    cid = sim_profile.cluster_id
    code, body = await client.call("POST", "clusters", "demo", cid, "start")
    assert code == 202, body
    seen = await client.until(sim_profile, {"connected", "error"}, timeout=90)
    final = check("ClusterStatus", seen[-1])
    assert final["state"] == "connected", final["message"]
    installed = [e for e in final["events"] if e["message"].startswith("Installed on the driver")]
    assert len(installed) == 1 and PROBE in installed[0]["message"], final["events"]
    assert any(s["state"] == "installing" for s in seen) or any(
        e["state"] == "installing" for e in final["events"]
    )

    # the probe is really in the driver's Python now
    sim = sim_profile.simulator
    probe = await asyncio.to_thread(
        subprocess.run,
        [sim.driver_python, "-c", f"import {PROBE.replace('-', '_')} as m; print(m.VERSION)"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.stdout.strip() == "1.2.3", probe.stderr

    # a second preparation of the same driver installs nothing
    events_before = len(final["events"])
    code, body = await client.call("POST", "clusters", "demo", cid, "reconfigure")
    assert code == 202 and body["operation"]["kind"] == "reconfigure"
    status = body
    while status["operation"] is None or status["operation"]["step"] != "done":
        status = await client.status(sim_profile, wait=5, since=status["version"])
        assert status["state"] != "error", status["message"]
    later = status["events"][events_before:]
    assert not [e for e in later if e["message"].startswith("Installed on the driver")], later
    assert_no_secret(sim_profile, client, caplog)
