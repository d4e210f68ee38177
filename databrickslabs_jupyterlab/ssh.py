"""SSH to a cluster driver: where to connect, whom to trust, and how to run commands there.

Everything goes through asyncssh with settings we choose ourselves: asyncssh never reads
``~/.ssh/config``, ``~/.ssh/known_hosts`` or an agent on its own, so the same inputs always lead to
the same connection. The user's ``~/.ssh/config`` is read here by a small reader that only looks
at a ``Host`` entry naming the cluster (that is how bastions, reverse tunnels and the Databricks CLI
tunnel are plugged in), and host keys are pinned per cluster in the product's state folder.

A host key may only change together with the driver: Databricks gives a restarted driver a new
VM and thus a new key, and reports the driver's start time. A changed key without a newer start
is refused, because that is what a man in the middle looks like.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import getpass
import glob
import json
import logging
import os
import re
import shlex
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from .settings import DriverSettings

log = logging.getLogger(__name__)

__all__ = [
    "HostKeyChanged",
    "HostKeyStore",
    "RunResult",
    "SshAuthFailed",
    "SshError",
    "SshTarget",
    "SshUnreachable",
    "build_command",
    "check_reachable",
    "connect",
    "forward_local",
    "resolve_target",
    "run",
    "stream",
    "upload",
]


class SshError(Exception):
    """An SSH problem, described in a sentence a person understands (never holds a secret)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SshUnreachable(SshError):
    """The driver could not be reached: refused, timed out, unknown name, connection lost."""


class SshAuthFailed(SshError):
    """The driver refused the login, or the key to log in with is missing or unreadable."""


class HostKeyChanged(SshError):
    """The driver presented a different host key although it was not restarted."""


_CLUSTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_cluster_id(cluster_id: str) -> str:
    if not isinstance(cluster_id, str) or not _CLUSTER_ID.match(cluster_id):
        raise SshError(f"{cluster_id!r} is not a valid cluster id.")
    return cluster_id


# --------------------------------------------------------------------------------------------
# Target and ~/.ssh/config


@dataclass(frozen=True)
class SshTarget:
    cluster_id: str
    host: str
    port: int
    user: str
    identity_file: str
    proxy_command: str | None = None
    proxy_jump: str | None = None


#: Options of a ``Host`` entry that we honour, lower-cased.
_CONFIG_KEYS = ("hostname", "port", "user", "identityfile", "proxycommand", "proxyjump")
_MAX_INCLUDE_DEPTH = 16
_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(?:\s*=\s*|\s+)(.*)$")


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _host_matches(patterns: list[str], name: str) -> bool:
    """OpenSSH rules (any positive pattern matches, no negated one does), except that a bare
    ``*`` is ignored: a catch-all entry written for the user's own hosts (``User me``,
    ``IdentityFile ~/.ssh/id_rsa``) must not replace the driver defaults."""
    name = name.lower()
    positive = False
    for raw in patterns:
        pattern = _unquote(raw).lower()
        negated = pattern.startswith("!")
        if negated:
            pattern = pattern[1:]
        if not pattern:
            continue
        if fnmatch.fnmatchcase(name, pattern):
            if negated:
                return False
            if pattern != "*":
                positive = True
    return positive


def _scan_config(
    path: Path, name: str, found: dict[str, str], active: bool, base: Path, depth: int
) -> None:
    """Collect the first value of each wanted option from the ``Host`` entries matching
    ``name``. Options outside a matching entry (including global ones before the first ``Host``)
    are ignored; ``Include`` is followed where it applies; ``Match`` blocks are skipped; lines we
    do not understand are skipped rather than fatal."""
    if depth > _MAX_INCLUDE_DEPTH:
        log.warning("ssh config: Include nesting deeper than %d at %s", _MAX_INCLUDE_DEPTH, path)
        return
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.debug("ssh config %s not read: %s", path, exc)
        return
    top_level = depth == 0
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            log.debug("ssh config %s:%d: line ignored", path, lineno)
            continue
        key, value = m.group(1).lower(), m.group(2).strip()
        if key == "host":
            top_level = False
            patterns = []
            for token in value.split():
                if token.startswith("#"):
                    break
                patterns.append(token)
            active = _host_matches(patterns, name)
            continue
        if key == "match":
            top_level = False
            active = False
            continue
        if key == "include":
            if not active and not top_level:
                continue
            for item in value.split():
                pattern = os.path.expanduser(_unquote(item))
                if not os.path.isabs(pattern):
                    pattern = str(base / pattern)
                for included in sorted(glob.glob(pattern)):
                    _scan_config(Path(included), name, found, active, base, depth + 1)
            continue
        if not active or key not in _CONFIG_KEYS or key in found:
            continue
        # ProxyCommand and ProxyJump exclude each other: the first one given wins (as in OpenSSH).
        if key in ("proxycommand", "proxyjump") and (
            "proxycommand" in found or "proxyjump" in found
        ):
            continue
        found[key] = value if key == "proxycommand" else _unquote(value)


def read_host_entry(config_file: str | os.PathLike[str], name: str) -> dict[str, str]:
    """The options (lower-cased keys) of the ``Host`` entries in ``config_file`` matching ``name``."""
    path = Path(config_file).expanduser()
    found: dict[str, str] = {}
    _scan_config(path, name, found, active=False, base=path.parent, depth=0)
    return found


def _expand_percent(value: str, tokens: Mapping[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        char = m.group(1)
        if char == "%":
            return "%"
        if char in tokens:
            return tokens[char]
        return m.group(0)

    return re.sub(r"%(.)", repl, value)


def resolve_target(
    cluster_id: str, public_dns: str | None, profile: str, settings: DriverSettings
) -> SshTarget:
    """Where and how to log in to the driver of ``cluster_id``.

    Defaults come from the settings and the cluster's ``public_dns``; a ``Host <cluster_id>``
    entry in the SSH config wins for HostName, Port, User, IdentityFile, ProxyCommand and
    ProxyJump."""
    _check_cluster_id(cluster_id)
    entry = read_host_entry(settings.ssh_config_file, cluster_id)

    port = settings.ssh_port
    if "port" in entry:
        try:
            port = int(entry["port"])
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise SshError(
                f"The Port {entry['port']!r} of the Host {cluster_id} entry in "
                f"{settings.ssh_config_file} is not a TCP port."
            ) from None
    user = entry.get("user") or settings.ssh_user

    proxy_command = entry.get("proxycommand")
    if proxy_command and proxy_command.strip().lower() == "none":
        proxy_command = None
    proxy_jump = entry.get("proxyjump")
    if proxy_jump and proxy_jump.strip().lower() == "none":
        proxy_jump = None

    host = None
    if entry.get("hostname"):
        host = _expand_percent(entry["hostname"], {"h": cluster_id})
    elif public_dns:
        host = public_dns
    elif proxy_command or proxy_jump:
        host = cluster_id  # the proxy knows how to find it (%h)
    if not host:
        raise SshError(
            f"Cluster {cluster_id} has no public DNS name for its driver and "
            f"{settings.ssh_config_file} has no Host {cluster_id} entry with a HostName."
        )

    identity = _identity_from_entry(entry, cluster_id, profile, settings, host, user)
    return SshTarget(
        cluster_id=cluster_id,
        host=host,
        port=port,
        user=user,
        identity_file=identity,
        proxy_command=proxy_command,
        proxy_jump=proxy_jump,
    )


def _identity_from_entry(
    entry: Mapping[str, str],
    cluster_id: str,
    profile: str,
    settings: DriverSettings,
    host: str,
    user: str,
) -> str:
    if not entry.get("identityfile"):
        return str(settings.identity_file_for(profile))
    home = str(Path("~").expanduser())
    tokens = {"d": home, "u": _local_user(), "h": host, "r": user, "n": cluster_id}
    identity = os.path.expanduser(_expand_percent(entry["identityfile"], tokens))
    return identity if os.path.isabs(identity) else str(Path(home) / identity)


def cluster_identity_file(cluster_id: str, profile: str, settings: DriverSettings) -> Path:
    """The private key used for ``cluster_id``: the IdentityFile of its ``Host`` entry in the
    SSH config when there is one, else the profile's key (``~/.ssh/id_<profile>``)."""
    _check_cluster_id(cluster_id)
    entry = read_host_entry(settings.ssh_config_file, cluster_id)
    host = entry.get("hostname") or cluster_id
    user = entry.get("user") or settings.ssh_user
    return Path(_identity_from_entry(entry, cluster_id, profile, settings, host, user))


def _local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry and no LOGNAME/USER
        return "root" if os.geteuid() == 0 else "user"


# --------------------------------------------------------------------------------------------
# Host keys


def _key_text(key: asyncssh.SSHKey) -> str:
    """``<algorithm> <base64>`` without the comment."""
    return " ".join(key.export_public_key("openssh").decode("ascii").split()[:2])


def _fingerprint(text: str) -> str:
    try:
        return asyncssh.import_public_key(text).get_fingerprint()
    except Exception:
        return "an unreadable key"


class HostKeyStore:
    """Pinned host keys, one JSON file per cluster: ``{key, driver_start, recorded_at}``.

    ``driver_start`` and ``recorded_at`` are milliseconds since the epoch, like the cluster
    times of the Databricks API."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.folder = Path(state_dir).expanduser() / "known_hosts"

    def _path(self, name: str) -> Path:
        return self.folder / f"{_check_cluster_id(name)}.json"

    def recorded(self, cluster_id: str) -> dict[str, object] | None:
        """The record for ``cluster_id``, or None when there is none (or it is unreadable)."""
        path = self._path(cluster_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("Ignoring unreadable host key record %s: %s", path, exc)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            log.warning("Ignoring malformed host key record %s", path)
            return None
        return data

    def _write(self, name: str, key_text: str, driver_start: int | None) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        record = {
            "key": key_text,
            "driver_start": driver_start,
            "recorded_at": int(time.time() * 1000),
        }
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._path(name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def check(self, cluster_id: str, key: asyncssh.SSHKey, driver_start: int | None) -> None:
        """Accept and remember ``key`` for ``cluster_id`` or raise HostKeyChanged.

        First contact records the key (trust on first use). A different key is accepted only
        when the workspace reports a driver start later than the one recorded (or, when none
        was known then, later than the moment the old key was recorded)."""
        self._check(cluster_id, key, driver_start, f"the driver of cluster {cluster_id}")

    def _check(self, name: str, key: asyncssh.SSHKey, driver_start: int | None, what: str) -> None:
        text = _key_text(key)
        record = self.recorded(name)
        if record is None:
            log.info("Recording the host key of %s (%s)", what, key.get_fingerprint())
            self._write(name, text, driver_start)
            return
        old_start = record.get("driver_start")
        old_start = old_start if isinstance(old_start, int) else None
        if record["key"] == text:
            if driver_start is not None and (old_start is None or driver_start > old_start):
                self._write(name, text, driver_start)
            return
        reference = old_start
        if reference is None:
            recorded_at = record.get("recorded_at")
            reference = recorded_at if isinstance(recorded_at, int) else None
        if driver_start is not None and reference is not None and driver_start > reference:
            log.info(
                "Host key of %s changed with a new driver start; recording %s",
                what,
                key.get_fingerprint(),
            )
            self._write(name, text, driver_start)
            return
        if name.startswith("jump-"):
            why = "changed"
        else:
            since = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reference / 1000))
                if reference is not None
                else "the key was recorded"
            )
            why = f"changed although the driver was not restarted since {since}"
        raise HostKeyChanged(
            f"Connection refused: the host key of {what} {why} (recorded "
            f"{_fingerprint(record['key'])}, offered {key.get_fingerprint()}). If you trust the "
            f"change, forget the recorded key (delete {self._path(name)}) and connect again."
        )

    def forget(self, cluster_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(cluster_id).unlink()


# --------------------------------------------------------------------------------------------
# Connecting


class _Client(asyncssh.SSHClient):
    """Hands the server's host key to our check during key exchange, before authentication."""

    def __init__(self, check: Callable[[asyncssh.SSHKey], None]) -> None:
        self._check = check
        self.refusal: SshError | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        try:
            self._check(key)
        except SshError as exc:
            self.refusal = exc
            return False
        except Exception as exc:  # e.g. the state folder cannot be written
            self.refusal = SshError(f"The host key of {host} could not be checked: {exc}.")
            return False
        return True


@dataclass(frozen=True)
class _Hop:
    host: str
    port: int
    user: str
    identity_file: str
    label: str
    key_name: str
    driver_start: int | None


def _parse_jump(spec: str, settings: DriverSettings, default_identity: str) -> _Hop:
    """One ``[user@]host[:port]`` (or ``ssh://`` URL) of a ProxyJump list."""
    spec = spec.strip()
    if spec.startswith("ssh://"):
        spec = spec[len("ssh://") :].rstrip("/")
    user = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
    port: int | None = None
    if spec.startswith("["):  # [ipv6]:port
        end = spec.find("]")
        host, rest = spec[1:end], spec[end + 1 :]
        if rest.startswith(":"):
            port = _parse_port(rest[1:], spec)
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = _parse_port(port_text, spec)
    else:
        host = spec
    if not host:
        raise SshError(f"The ProxyJump host {spec!r} is not a valid [user@]host[:port].")
    entry = read_host_entry(settings.ssh_config_file, host)
    if port is None and entry.get("port"):
        port = _parse_port(entry["port"], host)
    hostname = _expand_percent(entry["hostname"], {"h": host}) if entry.get("hostname") else host
    user = user or entry.get("user") or _local_user()
    identity = default_identity
    if entry.get("identityfile"):
        identity = os.path.expanduser(entry["identityfile"])
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{hostname}-{port or 22}")
    return _Hop(
        host=hostname,
        port=port or 22,
        user=user,
        identity_file=identity,
        label=f"jump host {hostname}:{port or 22}",
        key_name=f"jump-{safe}",
        driver_start=None,
    )


def _parse_port(text: str, spec: str) -> int:
    try:
        port = int(text)
        if 0 < port < 65536:
            return port
    except ValueError:
        pass
    raise SshError(f"The port in {spec!r} is not a TCP port.")


def _connect_error(exc: BaseException, hop: _Hop, timeout: float) -> SshError:
    where = f"{hop.label} at {hop.host}:{hop.port}"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return SshUnreachable(f"The {where} did not complete the SSH login within {timeout:g} s.")
    if isinstance(exc, asyncssh.PermissionDenied):
        return SshAuthFailed(
            f"The {where} refused the SSH login of user {hop.user} with the key "
            f"{hop.identity_file}: the matching public key is probably not among the "
            f"cluster's SSH public keys."
        )
    if isinstance(exc, asyncssh.KeyImportError):
        if "passphrase" in str(exc).lower():
            return SshAuthFailed(
                f"The SSH key {hop.identity_file} is protected by a passphrase; use a key "
                f"without one for the cluster (no SSH agent is consulted)."
            )
        return SshAuthFailed(f"The SSH key {hop.identity_file} could not be read: {exc}.")
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return SshError(f"The host key of the {where} could not be verified: {exc.reason}.")
    if isinstance(exc, asyncssh.DisconnectError):
        return SshUnreachable(f"The {where} closed the SSH connection: {exc.reason}.")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return SshUnreachable(f"Cannot reach the {where}: {reason}.")
    return SshError(f"SSH to the {where} failed: {exc}.")


def _identity_path(hop: _Hop) -> str:
    identity = os.path.expanduser(hop.identity_file)
    if not os.path.isfile(identity):
        raise SshAuthFailed(
            f"The SSH key {identity} for the {hop.label} does not exist; create it and add its "
            f"public key to the cluster's SSH public keys."
        )
    return identity


def _proxy_argv(target: SshTarget) -> list[str]:
    """ProxyCommand with OpenSSH's tokens expanded, run by /bin/sh like OpenSSH does."""
    tokens = {
        "h": target.host,
        "p": str(target.port),
        "r": target.user,
        "n": target.cluster_id,
        "u": _local_user(),
        "d": os.path.expanduser("~"),
    }
    return ["/bin/sh", "-c", "exec " + _expand_percent(target.proxy_command or "", tokens)]


async def _connect_hop(
    hop: _Hop,
    settings: DriverSettings,
    host_keys: HostKeyStore,
    *,
    tunnel: asyncssh.SSHClientConnection | None = None,
    proxy_command: list[str] | None = None,
) -> asyncssh.SSHClientConnection:
    identity = _identity_path(hop)
    client = _Client(lambda key: host_keys._check(hop.key_name, key, hop.driver_start, hop.label))
    options: dict[str, object] = {}
    if tunnel is not None:
        options["tunnel"] = tunnel
    if proxy_command is not None:
        options["proxy_command"] = proxy_command
    timeout = float(settings.connect_timeout)
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: client,
            hop.host,
            hop.port,
            username=hop.user,
            client_keys=[identity],
            passphrase=None,
            agent_path=None,
            agent_forwarding=False,
            config=[],
            known_hosts=([], [], []),  # nothing trusted in advance: every key goes to _Client
            preferred_auth="publickey",
            password_auth=False,
            kbdint_auth=False,
            host_based_auth=False,
            gss_auth=False,
            gss_kex=False,
            connect_timeout=timeout,
            keepalive_interval=settings.keepalive_interval,
            keepalive_count_max=settings.keepalive_count_max,
            **options,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        if client.refusal is not None:
            raise client.refusal from None
        raise _connect_error(exc, hop, timeout) from None
    except (OSError, asyncio.TimeoutError, TimeoutError, asyncssh.Error) as exc:
        if client.refusal is not None:
            raise client.refusal from None
        raise _connect_error(exc, hop, timeout) from None
    except asyncssh.KeyImportError as exc:
        raise _connect_error(exc, hop, timeout) from None
    except ValueError as exc:  # asyncssh raises it for bad options
        raise SshError(f"SSH to the {hop.label} could not start: {exc}.") from None
    return conn


_background: set[asyncio.Task[None]] = set()


def _close_with(
    conn: asyncssh.SSHClientConnection, jumps: list[asyncssh.SSHClientConnection]
) -> None:
    """Close the jump connections once the final connection is gone."""

    async def watch() -> None:
        try:
            await conn.wait_closed()
        finally:
            for jump in reversed(jumps):
                jump.close()

    task = asyncio.ensure_future(watch())
    _background.add(task)
    task.add_done_callback(_background.discard)


async def connect(
    target: SshTarget,
    settings: DriverSettings,
    *,
    host_keys: HostKeyStore,
    driver_start: int | None = None,
) -> asyncssh.SSHClientConnection:
    """A logged-in connection to the driver, its host key checked against ``host_keys``.

    Raises SshUnreachable, SshAuthFailed, HostKeyChanged or SshError."""
    hop = _Hop(
        host=target.host,
        port=target.port,
        user=target.user,
        identity_file=target.identity_file,
        label=f"driver of cluster {target.cluster_id}",
        key_name=_check_cluster_id(target.cluster_id),
        driver_start=driver_start,
    )
    if target.proxy_command:
        command = _proxy_argv(target)
        log.debug("SSH to %s through ProxyCommand", target.cluster_id)
        return await _connect_hop(hop, settings, host_keys, proxy_command=command)

    if not target.proxy_jump:
        return await _connect_hop(hop, settings, host_keys)

    jumps: list[asyncssh.SSHClientConnection] = []
    try:
        tunnel = None
        for spec in target.proxy_jump.split(","):
            jump_hop = _parse_jump(spec, settings, target.identity_file)
            tunnel = await _connect_hop(jump_hop, settings, host_keys, tunnel=tunnel)
            jumps.append(tunnel)
        conn = await _connect_hop(hop, settings, host_keys, tunnel=tunnel)
    except BaseException:
        for jump in reversed(jumps):
            jump.close()
        raise
    _close_with(conn, jumps)
    return conn


async def check_reachable(
    target: SshTarget,
    settings: DriverSettings,
    *,
    host_keys: HostKeyStore,
    driver_start: int | None = None,
) -> str | None:
    """None when a real login and a trivial command succeed, else the reason as a sentence."""
    try:
        conn = await connect(target, settings, host_keys=host_keys, driver_start=driver_start)
    except SshError as exc:
        return exc.message
    try:
        result = await run(conn, ["true"], timeout=max(float(settings.connect_timeout), 5.0))
        if result.exit_status != 0:
            return (
                f"The driver of cluster {target.cluster_id} accepted the SSH login but could "
                f"not run a command (exit status {result.exit_status})."
            )
        return None
    except SshError as exc:
        return exc.message
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()


# --------------------------------------------------------------------------------------------
# Running commands


@dataclass
class RunResult:
    exit_status: int
    stdout: str
    stderr: str


def build_command(
    argv: Sequence[str], *, sudo: bool = False, env: Mapping[str, str] | None = None
) -> str:
    """The remote shell command line for ``argv``: every word quoted, ``env K=V`` for the
    environment (names validated), ``sudo -n --`` in front when asked."""
    if isinstance(argv, str) or not argv:
        raise ValueError("argv must be a non-empty sequence of strings")
    words = list(argv)
    for word in words:
        if not isinstance(word, str) or "\0" in word:
            raise ValueError("every argument must be a string without NUL characters")
    if env:
        assignments = []
        for name, value in env.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
            if not isinstance(value, str) or "\0" in value:
                raise ValueError(f"the value of {name} must be a string without NUL characters")
            assignments.append(f"{name}={value}")
        words = ["env", *assignments, *words]
    if sudo:
        words = ["sudo", "-n", "--", *words]
    return shlex.join(words)


def _describe(argv: Sequence[str]) -> str:
    text = shlex.join(list(argv))
    return text if len(text) <= 120 else text[:117] + "..."


async def _execute(
    conn: asyncssh.SSHClientConnection,
    argv: Sequence[str],
    *,
    sudo: bool,
    input: str | bytes | None,
    timeout: float,
    env: Mapping[str, str] | None,
    on_line: Callable[[str], None] | None,
) -> RunResult:
    command = build_command(argv, sudo=sudo, env=env)
    data = input.encode("utf-8") if isinstance(input, str) else input
    # The command line is not secret by contract; stdin may be, and is never logged.
    log.debug("ssh run: %s", command)
    try:
        process = await conn.create_process(command, encoding=None)
    except (asyncssh.Error, OSError) as exc:
        raise SshUnreachable(
            f"Could not start {_describe(argv)!s} on the driver: the SSH connection failed ({exc})."
        ) from None

    async def collect(reader: asyncssh.SSHReader[bytes]) -> str:
        if on_line is None:
            return (await reader.read()).decode("utf-8", errors="replace")
        lines = []
        while True:
            raw = await reader.readline()
            if not raw:
                break
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            lines.append(line)
            try:
                on_line(line)
            except Exception:
                log.exception("on_line callback failed")
        return "\n".join(lines) + ("\n" if lines else "")

    async def body() -> RunResult:
        if data:
            process.stdin.write(data)
        process.stdin.write_eof()
        out, err = await asyncio.gather(collect(process.stdout), collect(process.stderr))
        await process.wait_closed()
        status = process.returncode
        if status is None:
            status = 255
        elif status < 0:  # killed by a signal
            status = 128 - status
        return RunResult(status, out, err)

    try:
        return await asyncio.wait_for(body(), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        with contextlib.suppress(Exception):
            process.send_signal("TERM")
        process.close()
        raise SshError(
            f"{_describe(argv)} did not finish within {timeout:g} s on the driver; "
            f"its SSH session was closed."
        ) from None
    except (asyncssh.Error, OSError) as exc:
        process.close()
        raise SshUnreachable(
            f"The SSH connection to the driver failed while running {_describe(argv)} ({exc})."
        ) from None
    except BaseException:
        process.close()
        raise


async def run(
    conn: asyncssh.SSHClientConnection,
    argv: Sequence[str],
    *,
    sudo: bool = False,
    input: str | bytes | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> RunResult:
    """Run ``argv`` on the driver and collect its output. A non-zero exit is not an error."""
    return await _execute(
        conn, argv, sudo=sudo, input=input, timeout=timeout, env=env, on_line=None
    )


async def stream(
    conn: asyncssh.SSHClientConnection,
    argv: Sequence[str],
    *,
    sudo: bool = False,
    on_line: Callable[[str], None],
    timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
) -> RunResult:
    """Like ``run``, calling ``on_line`` for each line of stdout and stderr as it arrives."""
    return await _execute(
        conn, argv, sudo=sudo, input=input, timeout=timeout, env=env, on_line=on_line
    )


async def forward_local(
    conn: asyncssh.SSHClientConnection, remote_port: int, local_port: int = 0
) -> asyncssh.SSHListener:
    """Listen on 127.0.0.1:``local_port`` (0: any free port, see ``listener.get_port()``) and
    forward each connection to 127.0.0.1:``remote_port`` on the driver."""
    try:
        return await conn.forward_local_port("127.0.0.1", local_port, "127.0.0.1", remote_port)
    except OSError as exc:
        raise SshError(
            f"Cannot listen on 127.0.0.1:{local_port} to forward to the driver's port "
            f"{remote_port}: {exc.strerror or exc}."
        ) from None
    except asyncssh.Error as exc:
        raise SshUnreachable(
            f"Forwarding to the driver's port {remote_port} failed: {exc.reason}."
        ) from None


async def upload(
    conn: asyncssh.SSHClientConnection,
    local_path_or_bytes: str | os.PathLike[str] | bytes,
    remote_path: str,
    mode: int = 0o600,
    *,
    sudo: bool = False,
    timeout: float = 60.0,
) -> None:
    """Write a file on the driver through stdin (never a command line), created with ``mode``
    and readable by nobody else while it is being written."""
    if (
        not isinstance(remote_path, str)
        or not remote_path.startswith("/")
        or any(c in remote_path for c in "\0\n")
    ):
        raise ValueError(f"{remote_path!r} is not an absolute POSIX path")
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"{mode!r} is not a file mode")
    if isinstance(local_path_or_bytes, bytes):
        data = local_path_or_bytes
    else:
        data = await asyncio.to_thread(Path(local_path_or_bytes).read_bytes)
    script = 'umask 077 && rm -f -- "$1" && cat > "$1" && chmod "$2" "$1"'
    result = await run(
        conn,
        ["sh", "-c", script, "sh", remote_path, format(mode, "o")],
        sudo=sudo,
        input=data,
        timeout=timeout,
    )
    if result.exit_status != 0:
        raise SshError(
            f"Writing {remote_path} on the driver failed: {result.stderr.strip() or f'exit status {result.exit_status}'}."
        )
