"""The transport of a cluster: which route is chosen, and the sentence for an impossible one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from databrickslabs_jupyterlab import transport
from databrickslabs_jupyterlab.settings import DriverSettings
from databrickslabs_jupyterlab.transport import COMMAND_API, SSH, TUNNEL, TransportImpossible
from databrickslabs_jupyterlab.workspace import ClusterInfo

CID = "1201-101010-abcd1234"
TUNNEL_BLOCK = f"""
Host my-box
    User root
    StrictHostKeyChecking accept-new
    ProxyCommand "/usr/local/bin/databricks" ssh connect --proxy --cluster={CID} --profile=dev
"""


def info(**cluster: Any) -> ClusterInfo:
    data: dict[str, Any] = {
        "cluster_id": CID,
        "state": "RUNNING",
        "spark_version": "17.3.x-scala2.13",
        "data_security_mode": "SINGLE_USER",
        "driver": {"public_dns": "1.2.3.4", "start_timestamp": 1},
    }
    data.update(cluster)
    return ClusterInfo.from_dict(data)


@pytest.fixture
def settings(tmp_path: Path) -> DriverSettings:
    return DriverSettings(ssh_config_file=str(tmp_path / "config"))


def write(settings: DriverSettings, text: str) -> None:
    Path(settings.ssh_config_file).write_text(text)


def test_public_dns_gives_classic_ssh(settings: DriverSettings) -> None:
    route = transport.choose(info(), settings)
    assert (route.transport, route.alias) == (SSH, None)


def test_own_host_entry_comes_first(settings: DriverSettings) -> None:
    write(settings, f"Host {CID}\n    HostName 10.0.0.5\n" + TUNNEL_BLOCK)
    route = transport.choose(info(), settings)
    assert (route.transport, route.alias) == (SSH, CID)


def test_tunnel_entry_is_found_by_the_cluster_its_proxy_names(settings: DriverSettings) -> None:
    write(settings, "Host *\n    ServerAliveInterval 30\n" + TUNNEL_BLOCK)
    route = transport.choose(info(driver={"start_timestamp": 1}), settings)
    assert (route.transport, route.alias) == (TUNNEL, "my-box")
    assert "my-box" in route.why


@pytest.mark.parametrize(
    "command, cluster",
    [
        (f"databricks ssh connect --proxy --cluster {CID}", CID),
        (f"databricks ssh connect --cluster={CID} --proxy", CID),
        (f"databricks ssh connect --cluster={CID}", None),  # not a proxy
        (f"nc {CID} 22", None),
        (f"databricks ssh setup --proxy --cluster={CID}", None),
        (None, None),
    ],
)
def test_tunnel_cluster(command: str | None, cluster: str | None) -> None:
    assert transport.tunnel_cluster(command) == cluster


def test_no_public_ip_and_no_tunnel_gives_the_command_api(settings: DriverSettings) -> None:
    route = transport.choose(info(driver={"start_timestamp": 1}), settings)
    assert route.transport == COMMAND_API
    assert "no public IP" in route.why


def test_standard_access_mode_gives_the_command_api_even_with_a_tunnel_entry(
    settings: DriverSettings,
) -> None:
    write(settings, TUNNEL_BLOCK)
    route = transport.choose(info(data_security_mode="USER_ISOLATION"), settings)
    assert route.transport == COMMAND_API
    assert "standard access mode" in route.why


def test_a_stopped_cluster_without_address_is_not_judged_yet(settings: DriverSettings) -> None:
    route = transport.choose(info(state="TERMINATED", driver=None), settings)
    assert route.transport == SSH


@pytest.mark.parametrize(
    "wanted, cluster, needle",
    [
        (SSH, {"data_security_mode": "USER_ISOLATION"}, "standard access mode"),
        (SSH, {"driver": {"start_timestamp": 1}}, "no public IP"),
        (TUNNEL, {"data_security_mode": "USER_ISOLATION"}, "dedicated to one user"),
        (TUNNEL, {"data_security_mode": "NONE"}, "no isolation"),
        (TUNNEL, {"spark_version": "15.4.x-scala2.12"}, "Runtime 17.0 or newer"),
        (TUNNEL, {}, "--tunnel"),
        ("telnet", {}, "not a transport"),
    ],
)
def test_impossible_requests_give_one_sentence(
    settings: DriverSettings, wanted: str, cluster: dict[str, Any], needle: str
) -> None:
    if wanted == TUNNEL and cluster:
        write(settings, TUNNEL_BLOCK)  # the entry is there: the cluster is what refuses
    with pytest.raises(TransportImpossible) as refused:
        transport.choose(info(**cluster), settings, wanted)
    sentence = str(refused.value)
    assert needle in sentence
    assert sentence.endswith(".") and "\n" not in sentence


def test_asked_transports_that_apply(settings: DriverSettings) -> None:
    assert transport.choose(info(), settings, COMMAND_API).transport == COMMAND_API
    write(settings, TUNNEL_BLOCK)
    assert transport.choose(info(), settings, TUNNEL).alias == "my-box"
    # asking for SSH with only a tunnel entry: the tunnel is SSH
    no_ip = info(driver={"start_timestamp": 1})
    assert transport.choose(no_ip, settings, SSH).transport == TUNNEL


def test_an_unusable_tunnel_entry_is_said_and_the_next_route_taken(
    settings: DriverSettings,
) -> None:
    write(settings, TUNNEL_BLOCK)
    old = info(spark_version="15.4.x-scala2.12", driver={"start_timestamp": 1})
    route = transport.choose(old, settings)
    assert route.transport == COMMAND_API
    assert route.why.startswith("The tunnel entry Host my-box cannot work: ")
    assert "Runtime 17.0" in route.why
    with pytest.raises(TransportImpossible, match="Runtime 17.0"):
        transport.choose(old, settings, SSH)


def test_a_tunnel_target_never_starts_the_cluster(settings: DriverSettings) -> None:
    write(settings, TUNNEL_BLOCK.replace("--profile=dev", "--auto-start-cluster=true"))
    target = transport.ssh_target(info(driver={"start_timestamp": 1}), "dev", settings)
    assert target.host == "my-box" and target.user == "root"
    assert target.proxy_command.endswith(" --auto-start-cluster=true --auto-start-cluster=false")
