"""The one configuration (config.py) and the shared vocabulary (vocabulary.py), as units."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from databrickslabs_jupyterlab import config, operations, vocabulary
from databrickslabs_jupyterlab.operations import Conflict, KernelInfo


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Jupyter config path of its own and no DBJL_* variable."""
    folder = tmp_path / "jupyter-config"
    folder.mkdir()
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(folder))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(folder))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    monkeypatch.setattr("sys.prefix", str(tmp_path / "no-prefix"))
    for name in [*config.DatabricksLabsDriver.class_trait_names(), "DATABRICKS_CONFIG_FILE"]:
        monkeypatch.delenv(name, raising=False)
    from databrickslabs_jupyterlab.settings import ENV_VARS

    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return folder


def test_defaults_are_a_real_driver(config_dir: Path) -> None:
    settings = config.for_consumer().settings()
    assert settings.ssh_port == 2200
    assert settings.ssh_user == "ubuntu"
    assert settings.driver_python == "/databricks/python/bin/python"
    assert str(settings.identity_file_for("demo")).endswith("/.ssh/id_demo")
    assert settings.driver_requirements == ("ipykernel>=6.0",)


def test_precedence_kernelspec_environment_config_defaults(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (config_dir / "jupyter_server_config.py").write_text(
        "c.DatabricksLabsDriver.ssh_port = 2201\n"
        "c.DatabricksLabsDriver.ssh_user = 'from-config'\n"
        "c.DatabricksLabsDriver.driver_python = '/config/python'\n"
        "c.DatabricksLabsDriver.pip_args = ['--index-url', 'https://pypi.example/simple']\n"
    )
    monkeypatch.setenv("DBJL_SSH_USER", "from-env")
    monkeypatch.setenv("DBJL_DRIVER_PYTHON", "/env/python")
    cfg = config.for_consumer()
    settings = cfg.settings()
    assert settings.ssh_port == 2201  # config over default
    assert settings.ssh_user == "from-env"  # environment over config
    assert settings.pip_args == ("--index-url", "https://pypi.example/simple")
    spec = cfg.settings({"driver_python": "/spec/python", "ssh_user": None})
    assert spec.driver_python == "/spec/python"  # kernelspec over environment
    assert spec.ssh_user == "from-env"  # an absent kernelspec value changes nothing


def test_the_parent_application_config_wins_over_files(config_dir: Path) -> None:
    (config_dir / "jupyter_server_config.json").write_text(
        '{"DatabricksLabsDriver": {"ssh_port": 2201, "sudo": "never"}}'
    )
    parent = Config()
    parent.DatabricksLabsDriver.ssh_port = 2300
    settings = config.for_consumer(parent).settings()
    assert (settings.ssh_port, settings.sudo) == (2300, "never")


def test_first_wave_section_still_counts_below_the_new_one(config_dir: Path) -> None:
    cfg = Config()
    cfg.DatabricksLabsJupyterLab.ssh_port = 2201
    cfg.DatabricksLabsJupyterLab.driver_python = "/legacy/python"
    cfg.DatabricksLabsJupyterLab.refresh_interval = 0.5  # not a driver setting: ignored here
    cfg.DatabricksLabsDriver.driver_python = "/new/python"
    settings = config.driver_config(cfg).settings()
    assert settings.ssh_port == 2201
    assert settings.driver_python == "/new/python"


def test_bad_values_are_sentences(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBJL_SSH_PORT", "twenty-two")
    with pytest.raises(ValueError, match="DBJL_SSH_PORT"):
        config.for_consumer().settings()
    monkeypatch.delenv("DBJL_SSH_PORT")
    with pytest.raises(ValueError, match="absolute path"):
        config.for_consumer().settings({"driver_python": "python3"})
    with pytest.raises(ValueError, match="sudo"):
        config.for_consumer().settings({"sudo": "sometimes"})


def test_a_broken_config_file_is_skipped(config_dir: Path) -> None:
    (config_dir / "jupyter_server_config.py").write_text("c.DatabricksLabsDriver.ssh_port = (\n")
    assert config.for_consumer().settings().ssh_port == 2200


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("0806-143104-skirt84", True),
        ("abc", True),
        ("-abc", False),
        ("abc\n", False),  # a trailing newline passes `match` with `$`, never `fullmatch`
        ("a" * 101, False),
        ("a_b", False),
        ("", False),
    ],
)
def test_cluster_id_rule(text: str, ok: bool) -> None:
    assert vocabulary.is_cluster_id(text) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("demo", True),
        ("my profile", True),
        ("a/b", False),
        ("[x]", False),
        (" x", False),
        ("x\n", False),
        ("", False),
    ],
)
def test_profile_rule(text: str, ok: bool) -> None:
    assert vocabulary.is_profile(text) is ok


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("DATABRICKS_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("MY_API_KEY", True),
        ("db_password", True),
        ("KEYBOARD_LAYOUT", False),
        ("PATH", False),
        ("SPARK_HOME", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert vocabulary.secret_like(name) is secret


def test_admit_rules() -> None:
    assert operations.admit("start", "connected", "RUNNING", "c1") is False
    assert operations.admit("start", "unreachable", "RUNNING", "c1") is True
    assert operations.admit("start", "terminated", "TERMINATED", "c1") is True
    assert operations.admit("reconfigure", "connected", "RUNNING", "c1") is True
    with pytest.raises(Conflict):
        operations.admit("reconfigure", "terminated", "TERMINATED", "c1")
    with pytest.raises(Conflict):
        operations.admit("reconfigure", "unknown", None, "c1")


def test_kernels_to_restart() -> None:
    kernels = [
        KernelInfo("run", "running"),
        KernelInfo("spark", "running-spark"),
        KernelInfo("lost", "disconnected"),
        KernelInfo("dead", "dead"),
    ]
    assert operations.kernels_to_restart(kernels, "never", True) == ["lost"]
    assert operations.kernels_to_restart(kernels, "never", False, ["dead"]) == ["dead", "lost"]
    assert operations.kernels_to_restart(kernels, "if-installed", False) == ["lost"]
    assert operations.kernels_to_restart(kernels, "if-installed", True) == [
        "lost",
        "run",
        "spark",
    ]
    assert operations.kernels_to_restart(kernels, "always", False) == ["lost", "run", "spark"]
