"""The panel's REST operations (terminate, kernelspec) and the listing's extra fields, through
a real Jupyter server against the simulator over real HTTP; answers validated against the
OpenAPI document."""

from __future__ import annotations

import json

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from databrickslabs_jupyterlab import kernelspecs
from tests.test_api import Client, assert_no_secret, check, server_config

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")


@pytest.fixture
def jp_server_config(sim_profile):
    return server_config(sim_profile)


@pytest.fixture
def client(jp_fetch):
    return Client(jp_fetch)


async def test_listing_has_runtime_access_mode_transport_and_auto_termination(client, sim_profile):
    code, clusters = await client.call("GET", "clusters", params={"profile": "demo"})
    assert code == 200
    check("Clusters", clusters)
    (row,) = clusters["clusters"]
    assert row["spark_version"] and row["spark_version"][0].isdigit()
    assert row["transport"] in {"ssh", "ssh-tunnel", "command-api"}
    assert isinstance(row["autotermination_minutes"], int)
    assert "data_security_mode" in row


async def test_terminate_a_running_cluster_then_again_is_a_no_op(client, sim_profile, caplog):
    sim = sim_profile.simulator
    cid = sim_profile.cluster_id
    code, started = await client.call("POST", "clusters", "demo", cid, "start")
    assert code == 202
    # while the start runs, terminate is refused: the operation would fail half-way
    code, busy = await client.call("POST", "clusters", "demo", cid, "terminate")
    assert (code, busy["error"]) == (409, "operation_running"), busy
    seen = await client.until(sim_profile, {"connected", "error"})
    assert seen[-1]["state"] == "connected", seen[-1]["message"]
    status = seen[-1]
    while status["operation"] is not None:  # the finished operation lingers a moment
        status = await client.status(sim_profile, wait=5, since=status["version"])

    code, answer = await client.call("POST", "clusters", "demo", cid, "terminate")
    assert code == 202, answer
    check("ClusterStatus", answer)
    assert answer["cluster_state"] in {"TERMINATING", "TERMINATED"}
    assert sim.calls().get("POST /api/2.1/clusters/delete") == 1
    seen = await client.until(sim_profile, {"terminated"})
    assert seen[-1]["cluster_state"] == "TERMINATED"

    code, again = await client.call("POST", "clusters", "demo", cid, "terminate", body="{}")
    assert code == 200 and again["state"] == "terminated"
    assert sim.calls().get("POST /api/2.1/clusters/delete") == 1  # nothing asked the second time
    assert_no_secret(sim_profile, client, caplog)


async def test_terminate_and_kernelspec_refuse_bad_input_and_unknown_clusters(client, sim_profile):
    cid = sim_profile.cluster_id
    for op in ("terminate", "kernelspec"):
        code, err = await client.call("POST", "clusters", "nope", cid, op)
        assert (code, err["error"]) == (404, "no_such_profile")
        code, err = await client.call("POST", "clusters", "demo", "0000-000000-nothere", op)
        assert (code, err["error"]) == (404, "no_such_cluster")
        code, err = await client.call("POST", "clusters", "demo", "bad_id!", op)
        assert (code, err["error"]) == (400, "invalid_cluster_id")
        code, err = await client.call("POST", "clusters", "demo", cid, op, body="[1]")
        assert (code, err["error"]) == (400, "invalid_body")
    code, err = await client.call(
        "POST", "clusters", "demo", cid, "kernelspec", body=json.dumps({"transport": "telnet"})
    )
    assert (code, err["error"]) == (400, "invalid_body")
    code, err = await client.call(
        "POST", "clusters", "demo", cid, "kernelspec", body=json.dumps({"spark": "yes"})
    )
    assert (code, err["error"]) == (400, "invalid_body")


async def test_kernelspec_is_created_with_the_chosen_transport(
    client, sim_profile, jp_serverapp, caplog
):
    cid = sim_profile.cluster_id
    code, made = await client.call("POST", "clusters", "demo", cid, "kernelspec")
    assert code == 201, made
    check("Kernelspec", made)
    assert made["transport"] == "ssh" and made["spark"] is True
    ksm: KernelSpecManager = jp_serverapp.kernel_spec_manager
    spec = ksm.get_kernel_spec(made["kernel_name"])
    assert spec.display_name == made["display_name"]
    assert spec.metadata["databricks"]["cluster_id"] == cid
    assert spec.metadata["databricks"]["profile"] == "demo"
    # the server lists it (what JupyterLab's launcher and notebook:create-new read)
    assert made["kernel_name"] in ksm.get_all_specs()

    # asked for the Command Execution API, without spark: the same cluster's spec is replaced
    code, other = await client.call(
        "POST",
        "clusters",
        "demo",
        cid,
        "kernelspec",
        body=json.dumps({"transport": "command-api", "spark": False}),
    )
    assert code == 201, other
    assert other["transport"] == "command-api" and other["spark"] is False
    mine = [s for s in kernelspecs.list_kernelspecs(ksm) if s.cluster_id == cid]
    assert [s.name for s in mine] == [other["kernel_name"]]
    assert sim_profile.simulator.token not in json.dumps(ksm.get_all_specs())
    assert_no_secret(sim_profile, client, caplog)
