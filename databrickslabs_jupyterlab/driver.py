"""The driver: logging in to it, its Python, the required libraries, installing the missing ones.

Requirements are PEP 508 strings, validated here before anything reaches the driver, and
versions are compared locally with ``packaging``: the driver only reports what is installed, so
its answer does not depend on which tools its Python happens to have. pip runs only for what is
missing, so preparing a prepared driver changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncssh
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from . import ssh, transport
from .debuglog import redact
from .settings import DriverSettings
from .ssh import SshError, run, stream
from .workspace import ClusterInfo

log = logging.getLogger(__name__)

__all__ = [
    "DriverAccess",
    "DriverError",
    "DriverLink",
    "LibraryCheck",
    "check_libraries",
    "install_libraries",
    "parse_requirements",
    "prepare_driver",
    "remote_packages",
    "remote_python_version",
]

CHECK_TIMEOUT = 60.0
INSTALL_TIMEOUT = 1800.0
PIP_TAIL = 15

#: pip output lines worth showing as progress; the rest stays in the tail kept for errors.
_PIP_PROGRESS = (
    "Collecting",
    "Downloading",
    "Processing",
    "Using cached",
    "Building wheel",
    "Installing",
    "Attempting uninstall",
    "Successfully",
    "ERROR",
)

# Read by the driver's Python: versions of the named distributions plus the values of PEP 508
# markers, as JSON. Holds no secret, so it travels on the command line.
_CHECK_SCRIPT = """\
import json, os, platform, sys
from importlib import metadata
versions = {}
for name in sys.argv[1:]:
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = None
env = {
    "implementation_name": sys.implementation.name,
    "implementation_version": platform.python_version(),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
print(json.dumps({"versions": versions, "env": env}))
"""

_PACKAGES_SCRIPT = """\
import json
from importlib import metadata
packages = {}
for dist in metadata.distributions():
    name = dist.metadata["Name"]
    if name and name not in packages:
        packages[name] = dist.version
print(json.dumps(packages))
"""

_VERSION_SCRIPT = "import platform; print(platform.python_version())"


class DriverError(SshError):
    """The driver's Python could not be inspected or prepared."""


@dataclass
class LibraryCheck:
    #: requirement name -> installed version, or None when not installed
    installed: dict[str, str | None]
    #: requirement strings that are not satisfied (absent, or a version outside the specifier)
    missing: list[str]


def parse_requirements(requirements: Iterable[str]) -> list[Requirement]:
    """Parse PEP 508 requirement strings; raise DriverError for anything else."""
    parsed = []
    for text in requirements:
        if not isinstance(text, str) or not text.strip() or text.strip().startswith("-"):
            raise DriverError(f"{text!r} is not a Python requirement (PEP 508).")
        try:
            parsed.append(Requirement(text))
        except InvalidRequirement:
            raise DriverError(f"{text!r} is not a Python requirement (PEP 508).") from None
    return parsed


#: pip options that may stand in a requirements file; they (and their values: index URLs with
#: credentials, hosts, paths) travel in the file on stdin instead of the remote command line.
_FILE_OPTIONS_WITH_VALUE = (
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--trusted-host",
)
_FILE_FLAGS = ("--no-index", "--pre", "--prefer-binary")


def _check_pip_args(args: Iterable[str]) -> list[str]:
    out = []
    for arg in args:
        if not isinstance(arg, str) or any(c in arg for c in "\0\r\n"):
            raise DriverError("The extra pip arguments must be plain one-line strings.")
        out.append(arg)
    return out


def _split_pip_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Split the extra pip arguments into requirements-file lines (index and link options)
    and the arguments left for the command line."""
    lines: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in _FILE_OPTIONS_WITH_VALUE and eq and name.startswith("--"):
            lines.append(f"{name} {value}")
        elif arg in _FILE_OPTIONS_WITH_VALUE:
            if i + 1 >= len(args):
                raise DriverError(f"The pip argument {arg} needs a value.")
            lines.append(f"{arg} {args[i + 1]}")
            i += 1
        elif arg in _FILE_FLAGS:
            lines.append(arg)
        else:
            rest.append(arg)
        i += 1
    for arg in rest:
        if _redact(arg) != arg:
            raise DriverError(
                f"The extra pip argument {_redact(arg)} holds credentials, which would be "
                "visible in the driver's process list; give them to pip another way (for a "
                "proxy: one that needs none, or a pip.conf on the driver)."
            )
    return lines, rest


def _redact(line: str) -> str:
    """``line`` with credentials masked: URL user info (``https://user:secret@host``,
    ``https://token@host``) and whatever else the debug log masks."""
    return redact(line)


def shown_requirement(requirement: str) -> str:
    """A requirement as it may be logged, kept in the history and shown in the REST API."""
    return _redact(requirement)


async def _python_json(
    conn: asyncssh.SSHClientConnection, settings: DriverSettings, script: str, args: list[str]
) -> object:
    result = await run(conn, [settings.driver_python, "-c", script, *args], timeout=CHECK_TIMEOUT)
    if result.exit_status != 0:
        if result.exit_status == 127 or "No such file" in result.stderr:
            raise DriverError(
                f"The driver Python {settings.driver_python} does not exist on the driver."
            )
        last = _redact(result.stderr.strip().splitlines()[-1]) if result.stderr.strip() else ""
        raise DriverError(
            f"The driver Python {settings.driver_python} failed (exit status "
            f"{result.exit_status}){': ' + last if last else ''}."
        )
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DriverError(
            f"The driver Python {settings.driver_python} gave an answer that is not JSON."
        ) from None


def _satisfied(req: Requirement, version: str | None) -> bool:
    if version is None:
        return False
    if not req.specifier:
        return True
    specifier: SpecifierSet = req.specifier
    try:
        return specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


async def check_libraries(
    conn: asyncssh.SSHClientConnection,
    settings: DriverSettings,
    user: str,
    requirements: Iterable[str] | None = None,
) -> LibraryCheck:
    """Which of the required libraries (``settings.driver_requirements`` unless given) the
    driver's Python has. Requirements whose markers do not apply to the driver count as met."""
    reqs = parse_requirements(
        settings.driver_requirements if requirements is None else requirements
    )
    if not reqs:
        return LibraryCheck(installed={}, missing=[])
    names = list(dict.fromkeys(req.name for req in reqs))
    answer = await _python_json(conn, settings, _CHECK_SCRIPT, names)
    if not isinstance(answer, dict) or not isinstance(answer.get("versions"), dict):
        raise DriverError("The driver Python gave an unexpected answer about its libraries.")
    versions = {name: answer["versions"].get(name) for name in names}
    env = default_environment()
    if isinstance(answer.get("env"), dict):
        env.update({k: str(v) for k, v in answer["env"].items()})
    missing = []
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        if not _satisfied(req, versions[req.name]):
            missing.append(str(req))
    return LibraryCheck(installed=versions, missing=missing)


async def install_libraries(
    conn: asyncssh.SSHClientConnection,
    settings: DriverSettings,
    user: str,
    requirements: Iterable[str],
    on_progress: Callable[[str], None],
) -> None:
    """pip-install ``requirements`` into the driver's Python (through ``sudo -n`` when the
    settings ask for it for ``user``), reporting pip's progress lines as ``"pip: ..."``."""
    reqs = [str(req) for req in parse_requirements(requirements)]
    if not reqs:
        return
    file_lines, pip_args = _split_pip_args(_check_pip_args(settings.pip_args))
    # The requirements and the index options go through stdin as a requirements file: index
    # URLs may carry credentials, and the driver's process list is readable by every user.
    requirements_file = "".join(f"{line}\n" for line in [*file_lines, *reqs])
    argv = [
        settings.driver_python,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        *pip_args,
        "--requirement",
        "/dev/stdin",
    ]
    tail: deque[str] = deque(maxlen=PIP_TAIL)

    def on_line(line: str) -> None:
        line = _redact(line.rstrip())
        if not line.strip():
            return
        tail.append(line)
        if line.lstrip().startswith(_PIP_PROGRESS):
            on_progress(f"pip: {line.strip()}")

    shown = [shown_requirement(r) for r in reqs]
    log.info("Installing %s on the driver", " ".join(shown))
    result = await stream(
        conn,
        argv,
        sudo=settings.use_sudo(user),
        on_line=on_line,
        timeout=INSTALL_TIMEOUT,
        input=requirements_file,
    )
    if result.exit_status != 0:
        if result.exit_status == 127 and not any("pip" in line for line in tail):
            reason = f"the driver Python {settings.driver_python} (or sudo) was not found"
        elif any("sudo" in line and "password" in line for line in tail):
            reason = "sudo asked for a password (passwordless sudo is needed, or set sudo=never)"
        else:
            reason = f"pip exit status {result.exit_status}"
        details = "\n".join(tail)
        raise DriverError(
            f"Installing {', '.join(shown)} on the driver failed ({reason}). "
            f"Last pip output:\n{details}"
        )


async def prepare_driver(
    conn: asyncssh.SSHClientConnection,
    settings: DriverSettings,
    user: str,
    on_progress: Callable[[str], None],
) -> list[str]:
    """Make sure the driver has ``settings.driver_requirements``; return what was installed
    (empty when nothing was missing)."""
    check = await check_libraries(conn, settings, user)
    if not check.missing:
        return []
    await install_libraries(conn, settings, user, check.missing, on_progress)
    after = await check_libraries(conn, settings, user, check.missing)
    if after.missing:
        lacking = ", ".join(shown_requirement(r) for r in after.missing)
        raise DriverError(f"pip finished, but the driver Python still lacks {lacking}.")
    return [shown_requirement(r) for r in check.missing]


async def remote_packages(
    conn: asyncssh.SSHClientConnection, settings: DriverSettings, user: str
) -> dict[str, str]:
    """Every distribution of the driver's Python, name -> version (first on sys.path wins)."""
    answer = await _python_json(conn, settings, _PACKAGES_SCRIPT, [])
    if not isinstance(answer, dict):
        raise DriverError("The driver Python gave an unexpected list of packages.")
    return {str(k): str(v) for k, v in answer.items()}


async def remote_python_version(
    conn: asyncssh.SSHClientConnection, settings: DriverSettings, user: str
) -> str:
    """The driver Python's version, e.g. ``3.11.2``."""
    result = await run(conn, [settings.driver_python, "-c", _VERSION_SCRIPT], timeout=CHECK_TIMEOUT)
    version = result.stdout.strip()
    if result.exit_status != 0 or not re.fullmatch(r"\d+\.\d+[\w.+-]*", version):
        raise DriverError(
            f"The driver Python {settings.driver_python} did not report its version "
            f"(exit status {result.exit_status})."
        )
    return version


# ------------------------------------------------------------------ access to a driver


@dataclass
class Probe:
    reachable: bool
    error: str | None = None
    #: Requirements the driver lacks; None when they were not checked.
    missing: list[str] | None = None


@dataclass
class DriverLink:
    """A logged-in SSH connection to a driver and the user it logged in as."""

    conn: Any
    user: str

    async def close(self) -> None:
        await _close(self.conn)


class DriverAccess:
    """The SSH side of the service (reachability, driver preparation).

    Kept apart so that unit tests of the state machine can replace it.
    """

    def __init__(self, settings: DriverSettings, ssh_check_timeout: float) -> None:
        self.settings = settings
        self.check_settings = settings.with_overrides(connect_timeout=ssh_check_timeout)
        self._host_keys: dict[str, Any] = {}

    def host_keys(self, profile: str) -> Any:
        """The pinned host keys of the profile's workspace."""
        if profile not in self._host_keys:
            self._host_keys[profile] = ssh.HostKeyStore.for_profile(self.settings, profile)
        return self._host_keys[profile]

    async def _target(self, profile: str, info: ClusterInfo) -> Any:
        return await asyncio.to_thread(transport.ssh_target, info, profile, self.settings)

    async def probe(self, profile: str, info: ClusterInfo, *, libraries: bool) -> Probe:
        """A real SSH handshake and login (and, when asked, a look at the driver libraries)."""
        try:
            target = await self._target(profile, info)
            if not libraries:
                error = await ssh.check_reachable(
                    target,
                    self.check_settings,
                    host_keys=self.host_keys(profile),
                    driver_start=info.driver_start,
                )
                return Probe(error is None, error)
            conn = await ssh.connect(
                target,
                self.check_settings,
                host_keys=self.host_keys(profile),
                driver_start=info.driver_start,
            )
        except ssh.SshError as err:
            return Probe(False, str(err))
        try:
            check = await check_libraries(conn, self.settings, target.user)
            return Probe(True, None, [shown_requirement(r) for r in check.missing])
        except Exception as err:  # noqa: BLE001 - reachable, but the check itself failed
            log.warning("Could not check the driver libraries of %s: %s", info.cluster_id, err)
            return Probe(True, None, None)
        finally:
            await _close(conn)

    async def connect(self, profile: str, info: ClusterInfo, ready_timeout: float) -> DriverLink:
        """Log in to the driver, retrying while its SSH server comes up after a start."""
        target = await self._target(profile, info)
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                conn = await ssh.connect(
                    target,
                    self.settings,
                    host_keys=self.host_keys(profile),
                    driver_start=info.driver_start,
                )
                return DriverLink(conn, target.user)
            except (ssh.SshAuthFailed, ssh.HostKeyChanged):
                raise
            except ssh.SshError:
                if time.monotonic() + 1 > deadline:
                    raise
                await asyncio.sleep(1.0)

    async def prepare(
        self,
        link: DriverLink,
        info: ClusterInfo,
        on_progress: Callable[[str], None],
        *,
        force: bool = False,
    ) -> list[str]:
        """Install what the driver lacks, once per driver start: a driver this state folder saw
        prepared (same driver start, same requirements) costs no check at all unless ``force``
        (a reconfigure always looks)."""
        memo = PreparedDrivers(self.settings)
        if not force and await asyncio.to_thread(memo.seen, info):
            return []
        installed = await prepare_driver(link.conn, self.settings, link.user, on_progress)
        await asyncio.to_thread(memo.remember, info)
        return installed

    async def close(self, link: DriverLink) -> None:
        await _close(link.conn)


async def _close(conn: Any) -> None:
    try:
        conn.close()
        wait = getattr(conn, "wait_closed", None)
        if wait is not None:
            await asyncio.wait_for(wait(), 5)
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


class PreparedDrivers:
    """Which driver starts were seen with every required library, kept in the state folder so
    that the server, kernels started by any kernel manager and the CLI share it."""

    def __init__(self, settings: DriverSettings) -> None:
        self.path = settings.state_path / "prepared.json"
        wanted = "\n".join(sorted(settings.driver_requirements)) + "\n" + settings.driver_python
        self.stamp = hashlib.sha256(wanted.encode()).hexdigest()[:16]

    @staticmethod
    def _key(info: ClusterInfo) -> str | None:
        if info.driver_start is None:
            return None  # nothing tells one driver start from the next
        return f"{info.cluster_id}@{info.driver_start}"

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def seen(self, info: ClusterInfo) -> bool:
        key = self._key(info)
        return key is not None and self._load().get(key) == self.stamp

    def remember(self, info: ClusterInfo) -> None:
        key = self._key(info)
        if key is None:
            return
        data = self._load()
        # One entry per cluster: an older driver start of the same cluster is gone for good.
        prefix = f"{info.cluster_id}@"
        data = {k: v for k, v in data.items() if not k.startswith(prefix)}
        data[key] = self.stamp
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def forget(self, info: ClusterInfo) -> None:
        data = self._load()
        key = self._key(info)
        if key in data:
            del data[key]
            self.path.write_text(json.dumps(data, indent=1, sort_keys=True))
