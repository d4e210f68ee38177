"""Kernelspecs: display-name grammar, folder names, and create/list/delete in a private HOME."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.provisioning import KernelProvisionerFactory

from databrickslabs_jupyterlab import kernelspecs
from databrickslabs_jupyterlab.provisioner import PROVISIONER_NAME


@pytest.fixture
def ksm(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> KernelSpecManager:
    for name in ("JUPYTER_DATA_DIR", "JUPYTER_PATH", "JUPYTER_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(isolated_home / "jupyter-data"))
    return KernelSpecManager()


def test_display_name_with_and_without_env() -> None:
    assert (
        kernelspecs.display_name("0806-143104-skirt84", "demo", "bernhard-5.5-ml", "dj")
        == "SSH 0806-143104-skirt84 demo:bernhard-5.5-ml (dj)"
    )
    # env equal to the cluster name (spaces read as underscores) is left out
    assert kernelspecs.display_name("0806-1", "demo", "ds", "ds") == "SSH 0806-1 demo:ds"
    assert kernelspecs.display_name("0806-1", "demo", "my ds", "my_ds") == "SSH 0806-1 demo:my ds"


def test_display_name_with_spark() -> None:
    assert (
        kernelspecs.display_name("0806-143104-skirt84", "demo", "bernhard-5.5-ml", "dj", spark=True)
        == "SSH 0806-143104-skirt84 demo:bernhard-5.5-ml (dj/Spark)"
    )
    # env left out: only the Spark marker stays in the parentheses
    assert kernelspecs.display_name("0806-1", "demo", "ds", "ds", spark=True) == (
        "SSH 0806-1 demo:ds (Spark)"
    )
    assert kernelspecs.display_name("0806-1", "demo", "my ds", "my_ds", spark=True) == (
        "SSH 0806-1 demo:my ds (Spark)"
    )
    assert kernelspecs.display_name("0806-1", "demo", "ds", "", spark=True) == (
        "SSH 0806-1 demo:ds (Spark)"
    )
    # the spec's display name follows its spark option
    assert kernelspecs.kernel_json("demo", "0806-1", "ds", env="dj")["display_name"] == (
        "SSH 0806-1 demo:ds (dj/Spark)"
    )
    assert kernelspecs.kernel_json("demo", "0806-1", "ds", env="dj", spark=False)[
        "display_name"
    ] == ("SSH 0806-1 demo:ds (dj)")


def test_kernel_name_is_sanitized_and_lowercase() -> None:
    name = kernelspecs.kernel_name("SSH 0419-084056-basal1 AWS-ffm:Standard 7.3 (dj/Spark)")
    assert name == "ssh__ssh0419-084056-basal1aws-ffmstandard7.3djspark"


def test_environment_name_never_fails_outside_conda() -> None:
    assert kernelspecs.environment_name({"VIRTUAL_ENV": "/home/u/venvs/spark-env"}) == "spark-env"
    assert kernelspecs.environment_name({"CONDA_DEFAULT_ENV": "dj"}) == "dj"
    plain = kernelspecs.environment_name({})
    assert plain and " " not in plain
    if sys.prefix == sys.base_prefix:
        assert plain.startswith("python3.") or Path(sys.prefix).name == plain


def test_kernel_json_holds_no_host_or_token() -> None:
    spec = kernelspecs.kernel_json("demo", "0806-143104-skirt84", "ds", env="dj")
    assert spec["metadata"] == {
        "kernel_provisioner": {"provisioner_name": PROVISIONER_NAME, "config": {}},
        "databricks": {"profile": "demo", "cluster_id": "0806-143104-skirt84", "spark": True},
    }
    no_spark = kernelspecs.kernel_json("demo", "0806-1", "ds", env="dj", spark=False)
    assert no_spark["metadata"]["databricks"]["spark"] is False
    # the explicit option wins over an override of the same name
    assert (
        kernelspecs.kernel_json("demo", "0806-1", "ds", overrides={"spark": False})["metadata"][
            "databricks"
        ]["spark"]
        is True
    )
    with pytest.raises(ValueError, match="spark"):
        kernelspecs.kernel_json("demo", "0806-1", "ds", spark="no")  # type: ignore[arg-type]
    assert spec["interrupt_mode"] == "signal"
    assert spec["env"] == {}
    text = json.dumps(spec)
    assert "http" not in text and "token" not in text.lower()
    assert "{connection_file}" in spec["argv"]


@pytest.mark.parametrize(
    ("profile", "cluster_id"),
    [("demo", "bad id"), ("demo", "-x"), ("bad[profile]", "0806-1"), ("demo", "a;rm -rf /")],
)
def test_invalid_names_are_refused(profile: str, cluster_id: str) -> None:
    with pytest.raises(ValueError):
        kernelspecs.kernel_json(profile, cluster_id, "ds")


def test_env_values_survive_jupyters_dollar_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    """jupyter_client expands $NAME in spec env values; a $ is written as $$ to come back."""
    from string import Template

    env = kernelspecs.parse_env(["A=x=1 y", 'B=$HOME "q" ${USER} $$', "C="])
    assert env == {"A": "x=1 y", "B": '$HOME "q" ${USER} $$', "C": ""}
    spec = kernelspecs.kernel_json("demo", "0806-1", "ds", kernel_env=env)
    monkeypatch.setenv("HOME", "/home/local")
    expanded = {k: Template(v).safe_substitute(dict(os.environ)) for k, v in spec["env"].items()}
    assert expanded == env
    assert kernelspecs.kernel_json("demo", "0806-1", "ds")["env"] == {}


@pytest.mark.parametrize(
    "name", ["1A", "A-B", "", "A B", "GITHUB_TOKEN", "db_password", "SSH_KEY", "DBJL_X", "dbjl_y"]
)
def test_env_names_refused(name: str) -> None:
    assert kernelspecs.env_name_problem(name)
    with pytest.raises(ValueError):
        kernelspecs.parse_env([f"{name}=1"])
    with pytest.raises(ValueError):
        kernelspecs.kernel_json("demo", "0806-1", "ds", kernel_env={name: "1"})


def test_env_names_accepted() -> None:
    for name in ("A", "_x", "SPARK_HOME", "MY_VAR_2", "KEYBOARD", "PYTHONPATH"):
        assert kernelspecs.env_name_problem(name) is None, name
    with pytest.raises(ValueError, match="NAME=VALUE"):
        kernelspecs.parse_env(["novalue"])


def test_create_list_delete(ksm: KernelSpecManager, isolated_home: Path) -> None:
    name = kernelspecs.create_kernelspec("demo", "0806-1", "ds", env="dj", manager=ksm)
    assert name == "ssh__ssh0806-1demodsdjspark"
    other = kernelspecs.create_kernelspec(
        "work", "0901-2", "etl", env="etl", manager=ksm, spark=False
    )
    assert other == "ssh__ssh0901-2worketl"

    listed = {s.name: s for s in kernelspecs.list_kernelspecs(ksm)}
    assert set(listed) == {name, other}
    assert listed[name].display_name == "SSH 0806-1 demo:ds (dj/Spark)"
    assert (listed[name].profile, listed[name].cluster_id) == ("demo", "0806-1")
    assert listed[name].spark and not listed[other].spark
    assert Path(listed[name].resource_dir).is_relative_to(isolated_home)

    # jupyter_client sees the provisioner (the spec would be hidden otherwise)
    spec = ksm.get_kernel_spec(name)
    assert KernelProvisionerFactory.instance().is_provisioner_available(spec)
    assert kernelspecs.cluster_of(spec) == ("demo", "0806-1")

    # a new cluster name for the same cluster replaces the old spec
    renamed = kernelspecs.create_kernelspec("demo", "0806-1", "ds2", env="dj", manager=ksm)
    assert {s.name for s in kernelspecs.list_kernelspecs(ksm)} == {renamed, other}

    # so does switching Spark off (-N) or on again: one spec per cluster and profile
    plain = kernelspecs.create_kernelspec("demo", "0806-1", "ds2", "dj", manager=ksm, spark=False)
    assert plain == "ssh__ssh0806-1demods2dj"
    assert {s.name for s in kernelspecs.list_kernelspecs(ksm)} == {plain, other}
    renamed = kernelspecs.create_kernelspec("demo", "0806-1", "ds2", "dj", manager=ksm)
    assert {s.name for s in kernelspecs.list_kernelspecs(ksm)} == {renamed, other}

    assert kernelspecs.delete_kernelspec(renamed, manager=ksm)
    assert not kernelspecs.delete_kernelspec(renamed, manager=ksm)
    assert kernelspecs.delete_kernelspecs(profile="work", manager=ksm) == [other]
    assert kernelspecs.list_kernelspecs(ksm) == []


def test_specs_without_the_spark_option_count_as_spark(
    ksm: KernelSpecManager, tmp_path: Path
) -> None:
    """Specs written before the option existed keep attaching Spark."""
    old = kernelspecs.kernel_json("demo", "0806-1", "ds", env="dj")
    del old["metadata"]["databricks"]["spark"]
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "kernel.json").write_text(json.dumps(old))
    ksm.install_kernel_spec(str(folder), "ssh__old", user=True)
    (listed,) = kernelspecs.list_kernelspecs(ksm)
    assert listed.name == "ssh__old" and listed.spark


def test_list_ignores_other_kernels(ksm: KernelSpecManager, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "kernel.json").write_text(
        json.dumps(
            {
                "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "SSH lookalike",
                "language": "python",
            }
        )
    )
    ksm.install_kernel_spec(str(plain), "ssh_lookalike", user=True)
    assert kernelspecs.list_kernelspecs(ksm) == []
    assert not kernelspecs.delete_kernelspec("ssh_lookalike", manager=ksm)
    assert "ssh_lookalike" in ksm.find_kernel_specs()


def test_command_api_transport(ksm: KernelSpecManager) -> None:
    name = kernelspecs.create_kernelspec(
        "demo", "0806-143104-skirt84", "ds", env="venv", manager=ksm, transport="command-api"
    )
    spec = ksm.get_kernel_spec(name)
    assert name.startswith("dbcmd__")
    assert spec.display_name == "Command API 0806-143104-skirt84 demo:ds (venv/Spark)"
    assert spec.metadata["databricks"]["transport"] == "command-api"
    assert spec.argv[1:3] == ["-m", "databrickslabs_jupyterlab.commandkernel"]
    assert spec.metadata["kernel_provisioner"]["provisioner_name"] == (
        "databricks-command-provisioner"
    )
    assert KernelProvisionerFactory.instance().is_provisioner_available(spec)
    assert "token" not in json.dumps(spec.to_dict()).lower()
    (listed,) = kernelspecs.list_kernelspecs(ksm)
    assert (listed.name, listed.transport) == (name, "command-api")
    assert kernelspecs.cluster_of(spec) == ("demo", "0806-143104-skirt84")
    # one spec per cluster and profile, whatever the transport
    ssh = kernelspecs.create_kernelspec("demo", "0806-143104-skirt84", "ds", "venv", manager=ksm)
    assert [(s.name, s.transport) for s in kernelspecs.list_kernelspecs(ksm)] == [(ssh, "ssh")]
    assert "transport" not in ksm.get_kernel_spec(ssh).metadata["databricks"]
    with pytest.raises(ValueError, match="Unknown kernel transport"):
        kernelspecs.kernel_json("demo", "0806-1", "ds", transport="telnet")
