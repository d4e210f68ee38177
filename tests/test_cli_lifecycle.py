"""The CLI's cluster flags go through the one lifecycle (operations.Lifecycle) and the one
configuration (config.for_consumer): the simulator over real HTTP and SSH, a temporary HOME.

The CLI runs in-process through ``main([...])`` (the ``dj`` fixture of test_cli); the notebook
run goes through ``jupyter nbconvert`` in a subprocess, as a user would run it, on a driver
whose Python starts bare (the ``bare_driver_python`` fixture of tests/fixtures/driverpython.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from databrickslabs_jupyterlab import cli, kernelspecs
from databrickslabs_jupyterlab.cli.errors import translate
from databrickslabs_jupyterlab.vocabulary import STEPS
from databrickslabs_jupyterlab.workspace import key_installed
from tests import test_cli
from tests.fixtures.cli import one_sentence_error
from tests.fixtures.wheels import build_wheel

# The fixture of test_cli: a private Jupyter folder for every test (``dj`` is a shared fixture).
private_jupyter = test_cli.private_jupyter

STEP_LINE = re.compile(r"^=> ([a-z-]+) \(\d/\d\): ", re.MULTILINE)


def steps(err: str) -> list[str]:
    """The lifecycle steps the CLI printed, in order."""
    return STEP_LINE.findall(err)


def probe_wheel(tmp_path: Path) -> tuple[str, Path]:
    module = f"dbjl_cli_lc_{os.getpid()}_{id(tmp_path) % 100000}"
    return module, build_wheel(tmp_path / "wheels", module).parent


# --------------------------------------------------------------------------------------------
# -r: the server's operations, step for step


def test_reconfigure_walks_the_lifecycle_steps_with_jupyter_config(
    dj, sim_profile, isolated_home, tmp_path
) -> None:
    """A terminated cluster: -r is the server's start, every step of vocabulary.STEPS in order;
    the driver requirements come from c.DatabricksLabsDriver in jupyter_server_config.py."""
    cid = sim_profile.cluster_id
    module, wheels = probe_wheel(tmp_path)
    config_dir = Path(os.environ["JUPYTER_CONFIG_DIR"])
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "jupyter_server_config.py").write_text(
        f"c.DatabricksLabsDriver.driver_requirements = ['ipykernel>=6', '{module}==1.0']\n"
        f"c.DatabricksLabsDriver.pip_args = ['--no-index', '--find-links', {str(wheels)!r}]\n"
    )
    assert sim_profile.simulator.cluster(cid).state == "TERMINATED"

    run = dj("demo", "-r", "-i", cid)
    assert run.code == 0, run
    assert steps(run.err) == list(STEPS)
    assert "Asking Databricks to start the cluster." in run.err
    assert "pip: " in run.err  # pip's progress lines, within the installing step
    assert "Nothing to restart: this command runs no kernels" in run.err
    assert f"installed {module}==1.0" in run.out

    # A running cluster: the reconfigure, from "configuring" on; it checks again, installs nothing.
    again = dj("demo", "-r", "-i", cid, "--json")
    assert again.code == 0, again
    assert steps(again.err) == list(STEPS[1:])
    assert again.json()["installed"] == []

    # The environment wins over the Jupyter config.
    missing = f"{module}-absent==9"
    os.environ["DBJL_DRIVER_REQUIREMENTS"] = missing
    try:
        failed = dj("demo", "-r", "-i", cid)
    finally:
        del os.environ["DBJL_DRIVER_REQUIREMENTS"]
    assert failed.code == cli.EXIT_SSH, failed
    assert missing.split("==")[0] in one_sentence_error(failed)


def test_reconfigure_adds_a_missing_key_after_asking(dj, sim_profile) -> None:
    """The old CLI refused a cluster without the key; the lifecycle adds it, as the server does.
    On a running cluster that restarts it, so the CLI asks first."""
    sim = sim_profile.simulator
    cid = sim.add_cluster("keyless", state="RUNNING")
    with open(sim_profile.ssh_config, "a") as f:
        f.write(sim.ssh_config_entry(cid, str(sim_profile.identity_file)))

    declined = dj("demo", "-r", "-i", cid, stdin="n\n")
    assert declined.code == cli.EXIT_SSH, declined
    assert "does not carry the public key" in one_sentence_error(declined)
    assert "RESTARTS" in declined.err
    assert sim.cluster(cid).ssh_public_keys == []
    assert sim.cluster(cid).state == "RUNNING"

    run = dj("demo", "-r", "-i", cid, "--yes")
    assert run.code == 0, run
    assert key_installed(sim_profile.public_key, sim.cluster(cid).ssh_public_keys)
    assert "Adding the SSH key to the cluster" in run.err
    assert steps(run.err) == list(STEPS[1:])
    assert "SSH login works" in run.err


def test_reconfigure_adds_the_key_to_a_terminated_cluster_before_starting(dj, sim_profile) -> None:
    sim = sim_profile.simulator
    cid = sim.add_cluster("keyless-stopped")
    with open(sim_profile.ssh_config, "a") as f:
        f.write(sim.ssh_config_entry(cid, str(sim_profile.identity_file)))
    run = dj("demo", "-r", "-i", cid, "--json")  # no question: nothing runs on it
    assert run.code == 0, run
    assert key_installed(sim_profile.public_key, sim.cluster(cid).ssh_public_keys)
    assert steps(run.err) == list(STEPS)
    assert run.json()["state"] == "RUNNING"


def test_bad_names_are_usage_errors(dj, sim_profile) -> None:
    run = dj("demo", "-r", "-i", "bad id;rm")
    assert run.code == cli.EXIT_USAGE
    assert "is not a cluster id" in one_sentence_error(run)
    run = dj("a/b", "-r", "-i", sim_profile.cluster_id)
    assert run.code == cli.EXIT_USAGE
    assert "is not a Databricks CLI profile name" in one_sentence_error(run)


def test_wrong_setting_in_jupyter_config_is_a_usage_error(dj, sim_profile) -> None:
    config_dir = Path(os.environ["JUPYTER_CONFIG_DIR"])
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "jupyter_server_config.py").write_text(
        "c.DatabricksLabsDriver.driver_python = 'relative/python'\n"
    )
    os.environ.pop("DBJL_DRIVER_PYTHON", None)  # monkeypatched by sim_profile; restored after
    run = dj("demo", "-r", "-i", sim_profile.cluster_id)
    assert run.code == cli.EXIT_USAGE, run
    assert "c.DatabricksLabsDriver" in one_sentence_error(run)


def test_failures_map_to_the_exit_statuses() -> None:
    from databrickslabs_jupyterlab import ssh
    from databrickslabs_jupyterlab.driver import DriverError
    from databrickslabs_jupyterlab.operations import OperationFailed
    from databrickslabs_jupyterlab.workspace import (
        NoSuchCluster,
        WorkspaceError,
        WorkspaceUnavailable,
    )

    cases = [
        (OperationFailed("Cluster x terminated while starting: quota"), cli.EXIT_FAILURE),
        (ssh.SshAuthFailed("The driver refused the login"), cli.EXIT_SSH),
        (DriverError("Installing a on the driver failed.\nLast pip output:\nERROR"), cli.EXIT_SSH),
        (WorkspaceUnavailable("The workspace cannot be reached"), cli.EXIT_WORKSPACE),
        (WorkspaceError("Refused", code="workspace_auth"), cli.EXIT_WORKSPACE),
        (WorkspaceError("Bad request", code="invalid_state"), cli.EXIT_FAILURE),
        (NoSuchCluster("Cluster x does not exist"), cli.EXIT_NOT_FOUND),
    ]
    for err, code in cases:
        translated = translate(err)
        assert isinstance(translated, cli.CliError), err
        assert translated.code == code, err
        assert "\n" not in translated.message and translated.message.endswith(".")
    other = ValueError("x")
    assert translate(other) is other


# --------------------------------------------------------------------------------------------
# -k: a running cluster's driver is prepared; a terminated one's when it runs


def _has_ipykernel(python: str) -> bool:
    return subprocess.run([python, "-c", "import ipykernel"], capture_output=True).returncode == 0


NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "c1",
            "metadata": {},
            "outputs": [],
            "source": "import sys\nprint(sum(range(10)) * 6 // 45 * 7, sys.executable)",
        }
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.mark.timeout(600)
def test_kernelspec_on_a_running_cluster_prepares_the_driver_and_runs_a_notebook(
    dj, sim_profile, bare_driver_python, monkeypatch, tmp_path
) -> None:
    sim = sim_profile.simulator
    monkeypatch.setenv("DBJL_DRIVER_PYTHON", bare_driver_python)
    assert not _has_ipykernel(bare_driver_python)

    # Terminated: the spec only, and what happens to the driver later.
    stopped = dj("demo", "-k", "-i", sim_profile.cluster_id, "--yes")
    assert stopped.code == 0, stopped
    assert "the driver is prepared (missing libraries installed) once it runs" in stopped.out
    assert steps(stopped.err) == []
    assert not _has_ipykernel(bare_driver_python)

    # Running: log in, install what the driver lacks (ipykernel and its dependencies), then the spec.
    cid = sim.add_cluster("running", state="RUNNING", ssh_public_keys=[sim_profile.public_key])
    with open(sim_profile.ssh_config, "a") as f:
        f.write(sim.ssh_config_entry(cid, str(sim_profile.identity_file)))
    run = dj("demo", "-k", "-i", cid, "--yes", "--json")
    assert run.code == 0, run
    assert steps(run.err) == ["configuring", "installing"]
    assert "SSH login works" in run.err
    assert "pip: Successfully installed" in run.err and "ipykernel-" in run.err
    data = run.json()
    assert data["driver_prepared"] is True
    assert data["installed"] == ["ipykernel>=6.0"]
    assert _has_ipykernel(bare_driver_python)
    assert {s.name for s in kernelspecs.list_kernelspecs() if s.cluster_id == cid} == {
        data["kernel_name"]
    }

    # A notebook with that kernel, executed by nbconvert in its own process.
    source = tmp_path / "check.ipynb"
    source.write_text(json.dumps(NOTEBOOK))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            f"--ExecutePreprocessor.kernel_name={data['kernel_name']}",
            "--ExecutePreprocessor.timeout=240",
            "--output",
            "executed.ipynb",
            str(source),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        timeout=480,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    executed = json.loads((tmp_path / "executed.ipynb").read_text())
    text = "".join(
        "".join(o.get("text", "")) for o in executed["cells"][0]["outputs"] if o.get("name")
    )
    # The answer, computed by a kernel running in the driver's (formerly bare) Python.
    assert text.split() == ["42", bare_driver_python], executed["cells"][0]["outputs"]


def test_a_new_driver_address_reaches_the_ssh_config_before_the_login(
    dj, sim_profile, isolated_home
) -> None:
    """A driver gets a new address on every start and the Host entry's HostName wins for SSH:
    the CLI's reader puts the running driver's address into the entry, so the login works."""
    sim = sim_profile.simulator
    cid = sim.add_cluster("moved", state="RUNNING", ssh_public_keys=[sim_profile.public_key])
    entry = sim.ssh_config_entry(cid, str(sim_profile.identity_file))
    with open(sim_profile.ssh_config, "a") as f:
        f.write(entry.replace("HostName 127.0.0.1", "HostName old-driver.invalid"))
    run = dj("demo", "-r", "-i", cid)
    assert run.code == 0, run
    assert f"Updated HostName of Host {cid}" in run.err
    text = sim_profile.ssh_config.read_text()
    block = text[text.index(f"Host {cid}\n") :]
    assert "HostName 127.0.0.1" in block and "old-driver.invalid" not in text
    backups = isolated_home / ".databrickslabs_jupyterlab" / "ssh_config_backup"
    assert any("old-driver.invalid" in b.read_text() for b in backups.iterdir())
