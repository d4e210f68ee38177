"""The CLI and the transports: ``-s --tunnel`` through the (stand-in) Databricks CLI, a
``-k`` that picks the Command Execution API by itself where SSH cannot work, and one sentence
with exit code 2 for each impossible combination, before anything is changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from databrickslabs_jupyterlab import kernelspecs
from tests.fixtures.cli import one_sentence_error

RUNTIME = "17.3.x-scala2.13"


def test_tunnel_setup_then_a_kernelspec_over_it(
    dj, sim_profile, isolated_home: Path, databricks_cli: Path, jupyter_dirs: Path
) -> None:
    sim = sim_profile.simulator
    cid = sim.add_cluster("box", spark_version=RUNTIME, public_ip=False, state="RUNNING")
    before = sim.cluster(cid).ssh_public_keys

    run = dj("demo", "-s", "-i", cid, "--tunnel", "--json")
    assert run.code == 0, run
    data = json.loads(run.out)
    assert data == {
        "cluster_id": cid,
        "transport": "ssh-tunnel",
        "host": cid,
        "ssh_config": str(isolated_home / ".ssh" / "config"),
    }
    assert "Setting up the Databricks SSH tunnel" in run.err
    assert sim.cluster(cid).ssh_public_keys == before  # nothing added: nothing restarted
    tunnel_dir = isolated_home / ".databricks" / "ssh-tunnel-configs"
    assert f"--cluster={cid}" in (tunnel_dir / cid).read_text()

    # -k prepares the driver through the tunnel and writes an SSH kernelspec
    run = dj("demo", "-k", "-i", cid, "--json")
    assert run.code == 0, run
    made = json.loads(run.out)
    assert made["transport"] == "ssh" and made["driver_prepared"] is True
    assert "Databricks SSH tunnel" in run.err


def test_tunnel_refusals_name_what_to_do(
    dj, sim_profile, isolated_home: Path, databricks_cli: Path, monkeypatch
) -> None:
    sim = sim_profile.simulator
    shared = sim.add_cluster("shared", data_security_mode="USER_ISOLATION", spark_version=RUNTIME)
    old = sim.add_cluster("old", spark_version="15.4.x-scala2.12")
    config = isolated_home / ".ssh" / "config"
    before = config.read_text()

    run = dj("demo", "-s", "-i", shared, "--tunnel")
    assert run.code == 2
    assert "dedicated to one user" in one_sentence_error(run)
    run = dj("demo", "-s", "-i", old, "--tunnel")
    assert run.code == 2
    assert "Runtime 17.0 or newer" in one_sentence_error(run)
    assert config.read_text() == before

    monkeypatch.setenv("PATH", os.defpath.replace(str(databricks_cli.parent), ""))
    fine = sim.add_cluster("fine", spark_version=RUNTIME)
    run = dj("demo", "-s", "-i", fine, "--tunnel")
    assert run.code == 2
    assert "install the Databricks CLI" in one_sentence_error(run)
    assert config.read_text() == before

    run = dj("demo", "-r", "-i", fine, "--tunnel")
    assert run.code == 2 and "--tunnel only applies to -s" in one_sentence_error(run)


def test_a_kernelspec_for_a_standard_cluster_uses_the_command_api_by_itself(
    dj, sim_profile, jupyter_dirs: Path
) -> None:
    sim = sim_profile.simulator
    shared = sim.add_cluster("shared", data_security_mode="USER_ISOLATION", state="RUNNING")
    run = dj("demo", "-k", "-i", shared, "--json")
    assert run.code == 0, run
    assert json.loads(run.out)["transport"] == kernelspecs.COMMAND_API
    assert "standard access mode" in run.err

    run = dj("demo", "-k", "-i", shared, "--transport", "ssh")
    assert run.code == 2
    assert "allows no SSH" in one_sentence_error(run)


@pytest.mark.parametrize("state", ["RUNNING"])
def test_no_public_ip_and_no_tunnel_is_said_for_ssh(
    dj, sim_profile, jupyter_dirs: Path, state: str
) -> None:
    sim = sim_profile.simulator
    private = sim.add_cluster("private", public_ip=False, state=state)
    run = dj("demo", "-k", "-i", private, "--transport", "ssh")
    assert run.code == 2
    sentence = one_sentence_error(run)
    assert "no public IP" in sentence and "--tunnel" in sentence
    run = dj("demo", "-k", "-i", private, "--json")
    assert run.code == 0, run
    assert json.loads(run.out)["transport"] == kernelspecs.COMMAND_API


def test_a_policy_that_forbids_ssh_keys_is_one_sentence(dj, sim_profile) -> None:
    from databrickslabs_jupyterlab.simulator import NO_SSH_KEYS

    sim = sim_profile.simulator
    governed = sim.add_cluster("governed", policy=NO_SSH_KEYS)
    run = dj("demo", "-r", "-i", governed)
    assert run.code == 1
    sentence = one_sentence_error(run)
    assert "does not allow adding an SSH key" in sentence
    assert "must not be present" in sentence and "--tunnel" in sentence
    assert sim.cluster(governed).state == "TERMINATED"  # refused before the start
