"""Driver libraries over real SSH (OpenSSH sshd) with a throw-away venv as the driver Python."""

from __future__ import annotations

import asyncio
import functools
import http.server
import logging
import platform
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from databrickslabs_jupyterlab import ssh
from databrickslabs_jupyterlab.driver import (
    DriverError,
    _split_pip_args,
    check_libraries,
    install_libraries,
    parse_requirements,
    prepare_driver,
    remote_packages,
    remote_python_version,
)
from databrickslabs_jupyterlab.settings import DriverSettings
from databrickslabs_jupyterlab.ssh import HostKeyStore, SshError
from tests.fixtures import wheels as wheels_fixture
from tests.fixtures.sshd import Sshd

CLUSTER = "0123-456789-driver01"
PROBE = "dbjl-probe"


def build_wheel(folder: Path, name: str = PROBE, version: str = "1.0") -> Path:
    return wheels_fixture.build_wheel(folder, name, version)


@pytest.fixture(scope="module")
def driver_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv that sees the system packages (ipykernel, pip) and takes installs itself."""
    venv = tmp_path_factory.mktemp("driver") / "python"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    return str(venv / "bin" / "python")


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    build_wheel(folder)
    return folder


def driver_settings(
    home: Path, sshd: Sshd, driver_python: str, **overrides: object
) -> DriverSettings:
    values: dict[str, object] = {
        "ssh_port": sshd.port,
        "ssh_user": sshd.user,
        "identity_file": sshd.identity_file,
        "ssh_config_file": str(home / ".ssh" / "config"),
        "state_dir": str(home / ".databrickslabs_jupyterlab"),
        "driver_python": driver_python,
        "sudo": "never",
    }
    values.update(overrides)
    return DriverSettings(**values)  # type: ignore[arg-type]


def on_driver(
    settings: DriverSettings, body: Callable[[asyncssh.SSHClientConnection], Awaitable[Any]]
) -> Any:
    async def main() -> Any:
        target = ssh.resolve_target(CLUSTER, "127.0.0.1", "demo", settings)
        conn = await ssh.connect(target, settings, host_keys=HostKeyStore(settings.state_path))
        try:
            return await body(conn)
        finally:
            conn.close()
            await conn.wait_closed()

    return asyncio.run(main())


def probe_version(driver_python: str) -> str:
    """The version of the probe package as the driver Python imports it."""
    probe = subprocess.run(
        [driver_python, "-c", "import dbjl_probe; print(dbjl_probe.VERSION)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return probe.stdout.strip()


def test_check_libraries(isolated_home: Path, sshd: Sshd, driver_python: str) -> None:
    settings = driver_settings(
        isolated_home,
        sshd,
        driver_python,
        driver_requirements=(
            "ipykernel>=6.0",
            "IPyKernel",
            "ipykernel<1",
            'ipykernel<1; python_version < "3.0"',
            "dbjl-not-there>=1",
        ),
    )
    import ipykernel

    check = on_driver(settings, lambda conn: check_libraries(conn, settings, sshd.user))
    assert check.installed["ipykernel"] == ipykernel.__version__
    assert check.installed["IPyKernel"] == ipykernel.__version__
    assert check.installed["dbjl-not-there"] is None
    assert check.missing == ["ipykernel<1", "dbjl-not-there>=1"]


def test_prepare_installs_once(
    isolated_home: Path, sshd: Sshd, driver_python: str, wheels: Path
) -> None:
    settings = driver_settings(
        isolated_home,
        sshd,
        driver_python,
        pip_args=("--no-index", "--find-links", str(wheels)),
        driver_requirements=("ipykernel>=6.0", f"{PROBE}==1.0"),
    )
    progress: list[str] = []

    installed = on_driver(
        settings, lambda conn: prepare_driver(conn, settings, sshd.user, progress.append)
    )
    assert installed == [f"{PROBE}==1.0"]
    assert progress and all(line.startswith("pip: ") for line in progress)
    assert any(line.startswith("pip: Successfully installed dbjl-probe-1.0") for line in progress)
    assert not any("WARNING" in line for line in progress)
    assert probe_version(driver_python) == "1.0"

    progress.clear()
    again = on_driver(
        settings, lambda conn: prepare_driver(conn, settings, sshd.user, progress.append)
    )
    assert again == [] and progress == []  # nothing to do: pip did not even run


def test_install_failure_reports_pip_lines(
    isolated_home: Path,
    sshd: Sshd,
    driver_python: str,
    wheels: Path,
) -> None:
    settings = driver_settings(
        isolated_home, sshd, driver_python, pip_args=("--no-index", "--find-links", str(wheels))
    )
    progress: list[str] = []
    with pytest.raises(DriverError) as caught:
        on_driver(
            settings,
            lambda conn: install_libraries(
                conn, settings, sshd.user, ["dbjl-absent==9.9"], progress.append
            ),
        )
    message = caught.value.message
    assert message.startswith("Installing dbjl-absent==9.9 on the driver failed (pip exit status")
    assert "No matching distribution found for dbjl-absent==9.9" in message
    assert any(line.startswith("pip: ERROR") for line in progress)


@pytest.mark.parametrize(
    "bad",
    [
        "ipykernel; rm -rf /",
        "-e git+https://example.com/x.git",
        "--index-url=https://evil.example.com",
        "ipykernel >= 6 $(id)",
        "",
        "pkg==1.0 && echo",
    ],
)
def test_bad_requirements_are_rejected_before_any_remote_call(bad: str) -> None:
    settings = DriverSettings(driver_requirements=(bad,))
    # conn=None: any attempt to reach the driver would fail differently.
    with pytest.raises(DriverError, match="is not a Python requirement"):
        asyncio.run(install_libraries(None, settings, "ubuntu", [bad], lambda line: None))  # type: ignore[arg-type]
    with pytest.raises(DriverError, match="is not a Python requirement"):
        asyncio.run(check_libraries(None, settings, "ubuntu"))  # type: ignore[arg-type]
    with pytest.raises(DriverError):
        asyncio.run(prepare_driver(None, settings, "ubuntu", lambda line: None))  # type: ignore[arg-type]


def test_parse_requirements_accepts_pep508() -> None:
    parsed = parse_requirements(
        ["ipykernel>=6,<8", "a[b]==1; python_version>'3'", "x @ https://e/x.whl"]
    )
    assert [r.name for r in parsed] == ["ipykernel", "a", "x"]


def test_remote_packages_and_python_version(
    isolated_home: Path, sshd: Sshd, driver_python: str
) -> None:
    settings = driver_settings(isolated_home, sshd, driver_python)

    async def body(conn: asyncssh.SSHClientConnection) -> object:
        return (
            await remote_packages(conn, settings, sshd.user),
            await remote_python_version(conn, settings, sshd.user),
        )

    packages, version = on_driver(settings, body)
    import ipykernel

    assert packages["ipykernel"] == ipykernel.__version__
    assert version == platform.python_version()


def test_missing_driver_python_is_a_clear_error(isolated_home: Path, sshd: Sshd) -> None:
    settings = driver_settings(isolated_home, sshd, "/nonexistent/python/bin/python")
    with pytest.raises(DriverError, match="does not exist on the driver") as caught:
        on_driver(settings, lambda conn: check_libraries(conn, settings, sshd.user))
    assert isinstance(caught.value, SshError)


def test_install_uses_sudo_when_settings_say_so(
    isolated_home: Path,
    sshd: Sshd,
    driver_python: str,
    wheels: Path,
) -> None:
    settings = driver_settings(
        isolated_home,
        sshd,
        driver_python,
        sudo="always",
        pip_args=(
            "--no-index",
            "--find-links",
            str(wheels),
            # never contacted (--no-index), but its credentials must not reach the command line
            "--extra-index-url=https://reader:s3cr3t-pw@index.invalid/simple",
            "--no-cache-dir",
        ),
    )
    on_driver(
        settings,
        lambda conn: install_libraries(
            conn, settings, sshd.user, [f"{PROBE}==1.0"], lambda line: None
        ),
    )
    (logged,) = sshd.sudo_log.read_text().splitlines()
    assert logged.startswith(f"-n -- {driver_python} -m pip install --disable-pip-version-check")
    # Index options and requirements travel in a requirements file on stdin; the driver's
    # process list (readable by every user) shows neither credentials nor paths.
    assert logged.endswith("--no-cache-dir --requirement /dev/stdin")
    assert "s3cr3t" not in logged and str(wheels) not in logged and PROBE not in logged
    assert probe_version(driver_python) == "1.0"


@pytest.mark.parametrize(
    ("args", "lines", "rest"),
    [
        (["-i", "https://u:p@h/simple", "--no-deps"], ["-i https://u:p@h/simple"], ["--no-deps"]),
        (["--index-url=https://h/s", "--pre"], ["--index-url https://h/s", "--pre"], []),
        (
            ["--find-links", "/w", "--trusted-host", "h"],
            ["--find-links /w", "--trusted-host h"],
            [],
        ),
        (["--user", "--no-index"], ["--no-index"], ["--user"]),
    ],
)
def test_pip_index_options_go_to_the_requirements_file(
    args: list[str], lines: list[str], rest: list[str]
) -> None:
    assert _split_pip_args(args) == (lines, rest)


def test_pip_option_without_value_is_refused() -> None:
    with pytest.raises(DriverError, match="needs a value"):
        _split_pip_args(["--no-deps", "--index-url"])


def test_prepared_drivers_are_remembered_per_driver_start(tmp_path: Path) -> None:
    from databrickslabs_jupyterlab.driver import PreparedDrivers
    from databrickslabs_jupyterlab.workspace import ClusterInfo

    def info(start: int | None) -> ClusterInfo:
        return ClusterInfo.from_dict(
            {"cluster_id": CLUSTER, "state": "RUNNING", "driver": {"start_timestamp": start}}
        )

    settings = DriverSettings(state_dir=str(tmp_path))
    memo = PreparedDrivers(settings)
    assert not memo.seen(info(1))
    memo.remember(info(1))
    assert PreparedDrivers(settings).seen(info(1))  # kept on disk for other processes
    assert not memo.seen(info(2))  # a new driver start is a new machine
    memo.remember(info(2))
    assert not memo.seen(info(1))  # one entry per cluster
    # other requirements or another driver Python: a check is due again
    assert not PreparedDrivers(
        DriverSettings(state_dir=str(tmp_path), driver_requirements=("ipykernel>=7",))
    ).seen(info(2))
    # no driver start known: never remembered
    memo.remember(info(None))
    assert not memo.seen(info(None))
    memo.forget(info(2))
    assert not memo.seen(info(2))


# --------------------------------------------------------------------------------------------
# Credentials in pip arguments and requirement URLs (issue 13, finding 6)


@pytest.mark.parametrize(
    "args",
    [
        ("--proxy", "http://user:s3cr3t@proxy.example:3128"),
        ("--proxy=http://user:s3cr3t@proxy.example:3128",),
        ("--proxy", "http://s3cr3t@proxy.example:3128"),
        ("--cert", "/x", "--client-cert=https://s3cr3t@h/c"),
    ],
)
def test_pip_arguments_with_credentials_never_reach_the_command_line(
    args: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = DriverSettings(pip_args=args)
    # conn=None: the refusal comes before any remote call
    with pytest.raises(DriverError, match="credentials") as caught:
        asyncio.run(install_libraries(None, settings, "ubuntu", ["x==1"], lambda line: None))  # type: ignore[arg-type]
    assert "s3cr3t" not in caught.value.message and "s3cr3t" not in caplog.text


def test_requirement_url_credentials_are_masked(
    isolated_home: Path, sshd: Sshd, driver_python: str, tmp_path: Path, caplog
) -> None:
    """A requirement downloaded from a URL with a token: installed for real (a local HTTP
    server), and the token is in no log line, progress line, error or returned list."""
    caplog.set_level(logging.DEBUG)
    site = tmp_path / "site"
    wheel = wheels_fixture.build_wheel(site, "dbjl-urlprobe", "1.0")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=site)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        good = f"dbjl-urlprobe @ http://tok3n:s3cr3t@127.0.0.1:{port}/{wheel.name}"
        bad = f"dbjl-urlgone @ http://s3cr3t@127.0.0.1:{port}/missing-1.0-py3-none-any.whl"
        settings = driver_settings(
            isolated_home,
            sshd,
            driver_python,
            pip_args=("--no-index",),
            driver_requirements=(good,),
        )
        progress: list[str] = []
        installed = on_driver(
            settings, lambda conn: prepare_driver(conn, settings, sshd.user, progress.append)
        )
        assert installed == [good.replace("tok3n:s3cr3t", "***")]
        with pytest.raises(DriverError) as caught:
            on_driver(
                settings,
                lambda conn: install_libraries(conn, settings, sshd.user, [bad], progress.append),
            )
    finally:
        server.shutdown()
        server.server_close()
    assert "http://***@127.0.0.1" in caught.value.message
    for text in (caught.value.message, caplog.text, *progress):
        assert "s3cr3t" not in text and "tok3n" not in text, text
