"""How current clusters are reached, as the simulator models it: access modes, clusters without
a public IP, runtime versions, a cluster policy forbidding SSH keys (over real HTTP with
databricks-sdk), and the Databricks CLI's SSH tunnel through the stand-in ``databricks``
executable (over real SSH with the system's OpenSSH client)."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import InvalidParameterValue
from databricks.sdk.service.compute import DataSecurityMode

from databrickslabs_jupyterlab.simulator import NO_SSH_KEYS, SimulatorThread, make_keypair

RUNTIME = "17.3.x-scala2.13"
REFUSAL = (
    "Error: cluster '{id}' must be a dedicated single-user cluster. Current access mode: "
    "{label}. Please reconfigure it to Dedicated (single user) access mode"
)


def client(sim: SimulatorThread) -> WorkspaceClient:
    return WorkspaceClient(host=sim.url, token=sim.token)


def write_profile(sim: SimulatorThread, home: Path) -> None:
    with open(home / ".databrickscfg", "a") as f:
        f.write(sim.profile_text("demo"))


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def system_ssh(home: Path, host: str, command: str) -> subprocess.CompletedProcess[str]:
    """OpenSSH reads ~ from the passwd entry, not $HOME: name the private files explicitly."""
    return run(
        "ssh",
        "-F",
        str(home / ".ssh" / "config"),
        "-o",
        f"UserKnownHostsFile={home / '.ssh' / 'known_hosts'}",
        "-o",
        "BatchMode=yes",
        host,
        command,
    )


# -- the cluster JSON ------------------------------------------------------------------------
def test_access_modes_runtime_and_public_dns_round_trip(simulator: SimulatorThread) -> None:
    dedicated = simulator.add_cluster(
        "dedicated", state="RUNNING", spark_version=RUNTIME, public_ip=False
    )
    standard = simulator.add_cluster(
        "standard", data_security_mode="USER_ISOLATION", single_user_name=None
    )
    classic = simulator.add_cluster("classic", state="RUNNING")
    w = client(simulator)

    info = w.clusters.get(dedicated)
    assert info.data_security_mode == DataSecurityMode.SINGLE_USER
    assert info.single_user_name == "simulator@example.com"
    assert info.spark_version == RUNTIME
    assert info.driver is not None and info.driver.private_ip
    assert info.driver.public_dns is None
    assert w.clusters.get(classic).driver.public_dns == "127.0.0.1"

    listed = {c.cluster_id: c for c in w.clusters.list()}
    assert listed[standard].data_security_mode == DataSecurityMode.USER_ISOLATION
    assert listed[standard].single_user_name is None
    assert listed[dedicated].data_security_mode == DataSecurityMode.SINGLE_USER

    # Without a public IP nothing listens on the driver's classic SSH port.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", simulator.cluster(dedicated).ssh_port), 5).close()
    with pytest.raises(ValueError, match="no public IP"):
        simulator.ssh_config_entry(dedicated, "/nonexistent")

    w.clusters.edit(
        standard,
        spark_version="16.4.x-scala2.12",
        data_security_mode=DataSecurityMode.SINGLE_USER,
        single_user_name="someone@example.com",
    )
    info = w.clusters.get(standard)
    assert info.data_security_mode == DataSecurityMode.SINGLE_USER
    assert info.single_user_name == "someone@example.com"
    assert info.spark_version == "16.4.x-scala2.12"

    created = w.clusters.create(
        cluster_name="made",
        spark_version=RUNTIME,
        data_security_mode=DataSecurityMode.USER_ISOLATION,
        num_workers=0,
    ).cluster_id
    simulator.wait_state(created, "RUNNING")
    info = w.clusters.get(created)
    assert info.data_security_mode == DataSecurityMode.USER_ISOLATION
    assert info.driver.public_dns == "127.0.0.1"

    with pytest.raises(InvalidParameterValue, match="Invalid data_security_mode"):
        w.api_client.do(
            "POST",
            "/api/2.1/clusters/edit",
            body={"cluster_id": created, "spark_version": RUNTIME, "data_security_mode": "SHARED"},
        )


@pytest.mark.simulator(public_ip=False)
def test_workspace_without_public_ips(simulator: SimulatorThread) -> None:
    cluster_id = simulator.add_cluster("scc", state="RUNNING")
    assert client(simulator).clusters.get(cluster_id).driver.public_dns is None
    assert simulator.add_cluster("exception", public_ip=True) in {
        c.cluster_id for c in client(simulator).clusters.list() if c.cluster_name == "exception"
    }


def test_policy_refuses_ssh_keys_edit(simulator: SimulatorThread, isolated_home: Path) -> None:
    cluster_id = simulator.add_cluster("governed", spark_version=RUNTIME, policy=NO_SSH_KEYS)
    public = make_keypair(isolated_home / ".ssh" / "id_try")
    w = client(simulator)
    info = w.clusters.get(cluster_id)
    assert info.policy_id

    with pytest.raises(InvalidParameterValue) as caught:
        w.clusters.edit(cluster_id, spark_version=RUNTIME, ssh_public_keys=[public])
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert (
        str(caught.value)
        == "Validation failed for ssh_public_keys.0, the value must not be present"
    )
    assert simulator.cluster(cluster_id).ssh_public_keys == []

    policy = w.cluster_policies.get(info.policy_id)
    assert '"ssh_public_keys.*"' in policy.definition
    # An edit that keeps within the policy goes through.
    w.clusters.edit(cluster_id, spark_version=RUNTIME, autotermination_minutes=30)
    assert simulator.cluster(cluster_id).autotermination_minutes == 30


# -- the Databricks SSH tunnel ---------------------------------------------------------------
def test_stand_in_version(databricks_cli: Path) -> None:
    result = run("databricks", "--version")
    assert result.returncode == 0
    assert result.stdout == "Databricks CLI v0.285.0\n"


def test_tunnel_reaches_a_dedicated_cluster_without_public_ip(
    simulator: SimulatorThread, isolated_home: Path, databricks_cli: Path
) -> None:
    write_profile(simulator, isolated_home)
    cluster_id = simulator.add_cluster(
        "tunnel", state="RUNNING", spark_version=RUNTIME, public_ip=False
    )
    (isolated_home / ".ssh" / "config").write_text("Host other\n  HostName example.invalid\n")

    setup = run("databricks", "ssh", "setup", "--name", "sim-tunnel", "--cluster", cluster_id,
                "--profile", "demo")  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    assert "You can now connect to the cluster using 'ssh sim-tunnel'" in setup.stderr

    main = (isolated_home / ".ssh" / "config").read_text()
    config_dir = isolated_home / ".databricks" / "ssh-tunnel-configs"
    assert main.startswith(f'Include "{config_dir}/*"\n\nHost other\n')
    block = (config_dir / "sim-tunnel").read_text()
    keys = isolated_home / ".databricks" / "ssh-tunnel-keys" / cluster_id
    assert block == (
        "\nHost sim-tunnel\n"
        "    User root\n"
        "    ConnectTimeout 360\n"
        "    StrictHostKeyChecking accept-new\n"
        "    IdentitiesOnly yes\n"
        f'    IdentityFile "{keys}"\n'
        f'    ProxyCommand "{databricks_cli}" ssh connect --proxy --cluster={cluster_id} '
        "--auto-start-cluster=true --shutdown-delay=10m0s --profile=demo\n"
    )

    first = system_ssh(isolated_home, "sim-tunnel", "echo $USER; true")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "root\n"
    assert keys.stat().st_mode & 0o777 == 0o600
    host_key = simulator.cluster(cluster_id).tunnel.host_key_text
    assert host_key.split()[1] in (isolated_home / ".ssh" / "known_hosts").read_text()

    # The host key survives a restart (it lives in the secret scope), and the ProxyCommand
    # starts a terminated cluster by itself.
    simulator.terminate(cluster_id)
    simulator.wait_state(cluster_id, "TERMINATED")
    again = system_ssh(isolated_home, "sim-tunnel", "true")
    assert again.returncode == 0, again.stderr
    assert simulator.cluster(cluster_id).state == "RUNNING"
    assert simulator.cluster(cluster_id).tunnel.host_key_text == host_key

    # Running setup again asks before replacing the entry; --auto-approve replaces it.
    setup_again = ["databricks", "ssh", "setup", "--name=sim-tunnel", f"--cluster={cluster_id}"]
    asked = run(*setup_again, "-p", "demo")
    assert asked.returncode == 1
    assert "Host 'sim-tunnel' already exists." in asked.stderr
    assert asked.stderr.endswith("Error: EOF\n")
    replaced = run(*setup_again, "-p", "demo", "--auto-approve", "--auto-start-cluster=false")
    assert replaced.returncode == 0, replaced.stderr
    assert "--auto-start-cluster=false" in (config_dir / "sim-tunnel").read_text()
    assert main == (isolated_home / ".ssh" / "config").read_text()
    simulator.terminate(cluster_id)
    stopped = system_ssh(isolated_home, "sim-tunnel", "true")
    assert stopped.returncode == 255
    assert re.search(
        rf"Error: cluster {cluster_id} is not running, current state: TERMINAT(ING|ED)\. "
        "Use --auto-start-cluster to start it automatically\n",
        stopped.stderr,
    )


@pytest.mark.parametrize(
    ("mode", "user", "label"),
    [
        ("USER_ISOLATION", None, "Standard"),
        ("SINGLE_USER", None, "Dedicated (group)"),
        ("NONE", None, "No isolation"),
    ],
)
def test_tunnel_refuses_non_dedicated_clusters(
    simulator: SimulatorThread,
    isolated_home: Path,
    databricks_cli: Path,
    mode: str,
    user: str | None,
    label: str,
) -> None:
    write_profile(simulator, isolated_home)
    cluster_id = simulator.add_cluster(
        "shared", state="RUNNING", spark_version=RUNTIME, data_security_mode=mode,
        single_user_name=user, public_ip=False,
    )  # fmt: skip
    expected = REFUSAL.format(id=cluster_id, label=label) + "\n"

    setup = run("databricks", "ssh", "setup", "--name", "x", "--cluster", cluster_id, "-p", "demo")
    assert (setup.returncode, setup.stderr) == (1, expected)
    assert not (isolated_home / ".databricks" / "ssh-tunnel-configs" / "x").exists()

    direct = run(
        "databricks", "ssh", "connect", "--cluster", cluster_id, "-p", "demo", "--", "true"
    )
    assert (direct.returncode, direct.stderr) == (1, f"Connecting to {cluster_id}...\n" + expected)


def test_tunnel_refuses_runtimes_older_than_17(
    simulator: SimulatorThread, isolated_home: Path, databricks_cli: Path
) -> None:
    write_profile(simulator, isolated_home)
    cluster_id = simulator.add_cluster("old", state="RUNNING", spark_version="16.4.x-scala2.12")
    # Like the real CLI, setup does not look at the runtime: the server fails to start later.
    setup = run(
        "databricks", "ssh", "setup", "--name", "old", "--cluster", cluster_id, "-p", "demo"
    )
    assert setup.returncode == 0, setup.stderr
    sentence = (
        "The SSH server cannot run on Databricks Runtime 16.4: the SSH tunnel needs "
        "Databricks Runtime 17.0 or above."
    )

    through_ssh = system_ssh(isolated_home, "old", "true")
    assert through_ssh.returncode == 255
    assert sentence in through_ssh.stderr

    direct = run(
        "databricks", "ssh", "connect", "--cluster", cluster_id, "-p", "demo", "--", "true"
    )
    assert direct.returncode == 1
    assert direct.stderr.endswith(
        "Error: failed to ensure that ssh server is running: failed to submit and start ssh "
        f"server job: ssh server bootstrap job failed:\n  {sentence}\n"
    )


def test_direct_connect_runs_a_command(
    simulator: SimulatorThread, isolated_home: Path, databricks_cli: Path
) -> None:
    write_profile(simulator, isolated_home)
    cluster_id = simulator.add_cluster("direct", state="RUNNING", spark_version=RUNTIME)
    result = run(
        "databricks", "ssh", "connect", "--cluster", cluster_id, "--profile", "demo",
        "--user-known-hosts-file", str(isolated_home / ".ssh" / "known_hosts"),
        "--", "echo", "hello",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"
    assert "Connected!" in result.stderr


def test_stand_in_usage_errors(databricks_cli: Path) -> None:
    missing = run("databricks", "ssh", "setup", "--cluster", "x")
    assert (missing.returncode, missing.stderr) == (1, 'Error: required flag(s) "name" not set\n')
    unknown = run("databricks", "ssh", "setup", "--name", "x", "--bogus")
    assert (unknown.returncode, unknown.stderr) == (1, "Error: unknown flag: --bogus\n")
    bad = run("databricks", "ssh", "connect", "--cluster", "x", "--auto-start-cluster=maybe")
    assert bad.returncode == 1 and "strconv.ParseBool" in bad.stderr


def test_tunnel_user_follows_the_access_mode(
    simulator: SimulatorThread, isolated_home: Path, databricks_cli: Path
) -> None:
    """The real CLI checks the access mode in setup and direct connect, not in proxy mode: a
    hand-written entry reaches a standard cluster's server, which runs as an isolated user
    (a guess), so root is refused and only that user logs in."""
    write_profile(simulator, isolated_home)
    cluster_id = simulator.add_cluster(
        "standard", state="RUNNING", spark_version=RUNTIME,
        data_security_mode="USER_ISOLATION", single_user_name=None,
    )  # fmt: skip
    keys = isolated_home / ".databricks" / "ssh-tunnel-keys" / cluster_id
    proxy = f"{databricks_cli} ssh connect --proxy --cluster={cluster_id} --profile=demo"
    (isolated_home / ".ssh" / "config").write_text(
        f"Host std\n  IdentityFile {keys}\n  IdentitiesOnly yes\n"
        f"  StrictHostKeyChecking accept-new\n  ProxyCommand {proxy}\n"
    )
    as_root = system_ssh(isolated_home, "root@std", "true")
    assert as_root.returncode == 255
    assert "Permission denied (publickey)" in as_root.stderr
    user = simulator.cluster(cluster_id).tunnel.user
    assert user.startswith("spark-")
    as_user = system_ssh(isolated_home, f"{user}@std", "echo $USER")
    assert (as_user.returncode, as_user.stdout) == (0, f"{user}\n")
