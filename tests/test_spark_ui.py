"""The link to the cluster's Spark UI in the workspace (issue 11): one rule
(``connect.spark_ui_url``) behind the cluster status's ``spark_ui_url`` and ``sc``'s HTML repr
in the remote kernel. The kernel learns the workspace from the hand-off file the provisioner
passes (host and workspace id, never a token). The real kernel on the simulated driver is
checked in test_spark_strategies.py's proof test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from databrickslabs_jupyterlab import connect
from tests.test_api import Client, server_config

pytestmark = pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning")


def test_the_url_rule() -> None:
    url = connect.spark_ui_url("https://adb-12.3.azuredatabricks.net/", "0101-000000-abc", 12)
    assert (
        url == "https://adb-12.3.azuredatabricks.net/?o=12#setting/clusters/0101-000000-abc/sparkUi"
    )
    # a host without a scheme (as DBR's spark.databricks.workspaceUrl), no workspace id
    assert (
        connect.spark_ui_url("dbc-1.cloud.databricks.com", "c-1", None)
        == "https://dbc-1.cloud.databricks.com/#setting/clusters/c-1/sparkUi"
    )
    assert connect.spark_ui_url("http://127.0.0.1:8080", "c-1", "not-a-number") == (
        "http://127.0.0.1:8080/#setting/clusters/c-1/sparkUi"
    )
    for host, cluster in [
        (None, "c-1"),
        ("https://h", None),
        ("https://h", "c 1/../x"),
        ("javascript:alert(1)", "c-1"),
        ("ftp://h", "c-1"),
    ]:
        assert connect.spark_ui_url(host, cluster, 1) is None


class _FakeSc:
    version = "4.3.0"
    master = "local[2]"
    appName = "<app>"
    applicationId = "local-1"

    def _repr_html_(self) -> str:
        return '<a href="http://10.0.0.1:4040">Spark UI</a>'


def test_sc_repr_links_the_workspace_not_the_driver() -> None:
    sc = _FakeSc()
    url = "https://h/?o=1#setting/clusters/c-1/sparkUi"
    connect._link_spark_ui(sc, url)
    markup = sc._repr_html_()
    assert f'href="{url}"' in markup and "10.0.0.1" not in markup
    assert 'target="_blank"' in markup and 'rel="noopener noreferrer"' in markup
    assert "&lt;app&gt;" in markup and "<app>" not in markup  # escaped
    assert "local-1" in markup
    other = _FakeSc()
    connect._link_spark_ui(other, None)  # no workspace known: pyspark's own repr stays
    assert "10.0.0.1" in other._repr_html_()


def _link_in_fresh_python(tmp_path: Path, handoff: dict, env: dict[str, str]) -> str:
    """``connect._workspace_link`` in a fresh Python with the given hand-off file."""
    path = tmp_path / "spark-gateway.json"
    path.write_text(json.dumps(handoff))
    code = textwrap.dedent(
        f"""
        from databrickslabs_jupyterlab import connect
        connect.DATABRICKS_ROOT = {str(tmp_path / "no-databricks")!r}
        print(connect._workspace_link(None))
        """
    )
    environ = {"PATH": "/usr/bin:/bin", connect.GATEWAY_FILE_ENV: str(path), **env}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True
    )
    return out.stdout.strip()


def test_the_kernel_learns_the_workspace_from_the_handoff(tmp_path: Path) -> None:
    workspace = {"host": "https://h.example", "workspace_id": "77"}
    # also when the gateway itself could not be had
    link = _link_in_fresh_python(
        tmp_path,
        {"error": "no Spark on the cluster", "workspace": workspace},
        {"DBJL_CLUSTER_ID": "0101-000000-abc"},
    )
    assert link == "https://h.example/?o=77#setting/clusters/0101-000000-abc/sparkUi"
    # without the cluster id (not a kernel of ours) there is no link
    assert _link_in_fresh_python(tmp_path, {"workspace": workspace}, {}) == "None"


@pytest.fixture
def jp_server_config(sim_profile):
    return server_config(sim_profile)


async def test_the_cluster_status_names_the_spark_ui(jp_fetch, sim_profile) -> None:
    client = Client(jp_fetch)
    status = (await client.until(sim_profile, {"terminated"}))[-1]
    workspace_id = sim_profile.simulator.sim.workspace_id
    assert status["spark_ui_url"] == (
        f"{sim_profile.host}/?o={workspace_id}#setting/clusters/{sim_profile.cluster_id}/sparkUi"
    )
