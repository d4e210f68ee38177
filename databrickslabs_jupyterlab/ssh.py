"""SSH to a cluster driver: where to connect, whom to trust, and how to run commands there.

Everything goes through asyncssh with settings we choose ourselves: asyncssh never reads
``~/.ssh/config``, ``~/.ssh/known_hosts`` or an agent on its own, so the same inputs always lead to
the same connection. What the user's ``~/.ssh/config`` says about a cluster (that is how bastions,
reverse tunnels and the Databricks CLI tunnel are plugged in) comes from ``sshconfig``, the one
reader of that file, with OpenSSH's matching; the host keys we trust come from ``hostkeys``, which
pins one key per driver and lets it change only with a driver restart.

The errors are sentences for people: every failure leaves as one of the ``SshError`` classes
below, never as an asyncssh or OS exception, so callers can show it as it is.

``connect`` reads and writes files (keys, host-key records, a jump host's config entry) only in
worker threads, since it runs on the server's event loop; ``resolve_target`` and
``cluster_identity_file`` read the SSH config and are for a thread (or a CLI without a loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from . import vocabulary
from .hostkeys import HostKeyPin, HostKeyStore
from .settings import DriverSettings
from .sshconfig import (
    HostEntry,
    expand_path,
    expand_tokens,
    host_entry,
    local_user,
    parse_jump,
    read_host_entry,
)

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
    "cluster_identity_file",
    "connect",
    "forward_local",
    "read_host_entry",
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


def _check_cluster_id(cluster_id: str) -> str:
    """The id itself; a malformed one never reaches a file name, a config lookup or a log."""
    if not vocabulary.is_cluster_id(cluster_id):
        raise SshError(f"{cluster_id!r} is not a valid cluster id.")
    return cluster_id


# --------------------------------------------------------------------------------------------
# Target


@dataclass(frozen=True)
class SshTarget:
    """Everything a connection to one driver needs, resolved once so that a check and the real
    connection go to the same place with the same key."""

    cluster_id: str
    host: str
    port: int
    user: str
    identity_file: str
    proxy_command: str | None = None
    proxy_jump: str | None = None


def _host_entry(settings: DriverSettings, name: str) -> HostEntry:
    try:
        return host_entry(settings.ssh_config_file, name)
    except ValueError as exc:
        raise SshError(f"{exc}.") from None


def resolve_target(
    cluster_id: str, public_dns: str | None, profile: str, settings: DriverSettings
) -> SshTarget:
    """Where and how to log in to the driver of ``cluster_id``.

    Defaults come from the settings and the cluster's ``public_dns``; what the SSH config says
    for the cluster id wins for HostName, Port, User, IdentityFile, ProxyCommand and ProxyJump,
    because that is how users route to drivers we cannot reach directly. Reads the SSH config:
    call it in a thread from async code."""
    entry = _host_entry(settings, _check_cluster_id(cluster_id))
    user = entry.user or settings.ssh_user
    host = entry.hostname or public_dns
    if not host and (entry.proxy_command or entry.proxy_jump):
        host = cluster_id  # the proxy knows how to find it (%h)
    if not host:
        raise SshError(
            f"Cluster {cluster_id} has no public DNS name for its driver and "
            f"{settings.ssh_config_file} has no Host {cluster_id} entry with a HostName."
        )
    return SshTarget(
        cluster_id=cluster_id,
        host=host,
        port=entry.port or settings.ssh_port,
        user=user,
        identity_file=_identity(entry, cluster_id, profile, settings, host, user),
        proxy_command=entry.proxy_command,
        proxy_jump=entry.proxy_jump,
    )


def _identity(
    entry: HostEntry, cluster_id: str, profile: str, settings: DriverSettings, host: str, user: str
) -> str:
    if not entry.identity_file:
        return str(settings.identity_file_for(profile))
    return expand_path(entry.identity_file, {"h": host, "r": user, "n": cluster_id})


def cluster_identity_file(cluster_id: str, profile: str, settings: DriverSettings) -> Path:
    """The private key used for ``cluster_id``: the IdentityFile the SSH config gives it when
    there is one, else the profile's key (``~/.ssh/id_<profile>``). The CLI and the server add
    its public half to the cluster, so it must be the key the connection will offer."""
    entry = _host_entry(settings, _check_cluster_id(cluster_id))
    host = entry.hostname or cluster_id
    user = entry.user or settings.ssh_user
    return Path(_identity(entry, cluster_id, profile, settings, host, user))


# --------------------------------------------------------------------------------------------
# Connecting


class _Client(asyncssh.SSHClient):
    """Hands the server's host key to our pin during key exchange, before authentication, so a
    refused key never sees our login. asyncssh calls this synchronously on the event loop: the
    pin judges in memory; its record was read before and is written after, in a thread."""

    def __init__(self, pin: HostKeyPin) -> None:
        self._pin = pin
        self.refusal: SshError | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        try:
            self._pin.verify(key)
        except SshError as exc:
            self.refusal = exc
            return False
        except Exception as exc:  # a key asyncssh cannot export, a record we cannot read
            self.refusal = SshError(f"The host key of {host} could not be checked: {exc}.")
            return False
        return True


@dataclass(frozen=True)
class _Hop:
    """One login on the way to the driver: the driver itself or a ProxyJump host. Each has its
    own pinned key (``key_name``); only the driver has a start time that excuses a new key."""

    host: str
    port: int
    user: str
    identity_file: str
    label: str
    key_name: str
    driver_start: int | None


def _parse_jump(spec: str, settings: DriverSettings, default_identity: str) -> _Hop:
    """One hop of a ProxyJump list, completed from its own ``Host`` entry like OpenSSH does;
    without an IdentityFile there, the driver's key is used (one key for the whole path).
    Reads the SSH config: call it in a thread from async code."""
    try:
        user, host, port = parse_jump(spec)
        entry = host_entry(settings.ssh_config_file, host)
    except ValueError as exc:
        raise SshError(f"The ProxyJump host {spec.strip()!r} is not usable: {exc}.") from None
    hostname = entry.hostname or host
    port = port or entry.port or 22
    user = user or entry.user or local_user()
    identity = default_identity
    if entry.identity_file:
        identity = expand_path(entry.identity_file, {"h": hostname, "r": user, "n": host})
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{hostname}-{port}")
    return _Hop(
        host=hostname,
        port=port,
        user=user,
        identity_file=identity,
        label=f"jump host {hostname}:{port}",
        key_name=f"jump-{safe}",
        driver_start=None,
    )


def _connect_error(exc: BaseException, hop: _Hop, timeout: float) -> SshError:
    """asyncssh's and the OS's exceptions as a sentence saying which hop failed and what the
    person can do about it (add the key, remove a passphrase, check the network)."""
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


def _load_identity(hop: _Hop) -> list[asyncssh.SSHKeyPair]:
    """The hop's private key (with its ``-cert.pub`` when there is one), read here because
    asyncssh would read a key given by path on the event loop: call it in a thread."""
    identity = os.path.expanduser(hop.identity_file)
    if not os.path.isfile(identity):
        raise SshAuthFailed(
            f"The SSH key {identity} for the {hop.label} does not exist; create it and add its "
            f"public key to the cluster's SSH public keys."
        )
    try:
        return asyncssh.load_keypairs([identity], passphrase=None)
    except asyncssh.KeyImportError as exc:
        raise _connect_error(exc, hop, 0) from None
    except OSError as exc:
        raise SshAuthFailed(f"The SSH key {identity} could not be read: {exc.strerror}.") from None


def _proxy_argv(target: SshTarget) -> list[str]:
    """ProxyCommand with OpenSSH's tokens expanded, run by /bin/sh like OpenSSH does."""
    tokens = {
        "h": target.host,
        "p": str(target.port),
        "r": target.user,
        "n": target.cluster_id,
        "u": local_user(),
        "d": os.path.expanduser("~"),
    }
    return ["/bin/sh", "-c", "exec " + expand_tokens(target.proxy_command or "", tokens)]


async def _connect_hop(
    hop: _Hop,
    settings: DriverSettings,
    host_keys: HostKeyStore,
    *,
    tunnel: asyncssh.SSHClientConnection | None = None,
    proxy_command: list[str] | None = None,
) -> asyncssh.SSHClientConnection:
    """Log in to one hop. The host key record is read before and written after the handshake
    in a thread (see ``hostkeys``); a key accepted during key exchange is recorded even when the
    login then fails, as OpenSSH records it before authenticating."""
    keys = await asyncio.to_thread(_load_identity, hop)
    pin = await host_keys.pin(hop.key_name, hop.driver_start, hop.label)
    client = _Client(pin)
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
            client_keys=keys,
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
    except (OSError, asyncio.TimeoutError, asyncssh.Error, asyncssh.KeyImportError) as exc:
        conn, error = None, client.refusal or _connect_error(exc, hop, timeout)
    except ValueError as exc:  # asyncssh raises it for bad options
        conn, error = None, SshError(f"SSH to the {hop.label} could not start: {exc}.")
    else:
        error = None
    try:
        await pin.save()
    except OSError as exc:
        if conn is not None:
            conn.close()
        log.warning("Host key of the %s not recorded: %s", hop.label, exc)
        raise error or SshError(
            f"The host key of the {hop.label} could not be recorded in "
            f"{host_keys.folder}: {exc.strerror or exc}."
        ) from None
    if error is not None:
        raise error
    assert conn is not None
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
            jump_hop = await asyncio.to_thread(_parse_jump, spec, settings, target.identity_file)
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
    """A finished remote command. A non-zero status is a result, not an exception: callers
    decide (``pip`` failing is news for the user, ``test -e`` failing is an answer)."""

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
            if not vocabulary.is_env_name(name):
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


# --------------------------------------------------------------------------------------------
# Remote processes
#
# The kernel provisioner's processes on the driver (the bootstrap and the ipykernel it leads)
# are started, signalled, looked at and removed only here, so that every such command line is
# built the same way: inputs validated, words quoted by ``build_command``, ``sudo -n`` when asked,
# nothing secret (what is secret travels on stdin).

#: Signals a remote kernel may get (those of a local kernel manager).
SIGNAL_NAMES = frozenset({"INT", "TERM", "KILL", "HUP", "QUIT", "USR1", "USR2"})
#: A kernel's private run folder as the bootstrap creates it (``tempfile.mkdtemp``).
_RUN_DIR = re.compile(r"(/[^\0\n/]+)*/dbjl-kernel-[A-Za-z0-9_]+")


def is_run_dir(path: object) -> bool:
    """Whether ``path`` is a kernel run folder, the only kind of folder removed remotely."""
    return (
        isinstance(path, str)
        and _RUN_DIR.fullmatch(path) is not None
        and ".." not in path.split("/")
    )


def _pid_word(pid: int) -> str:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
        raise ValueError(f"{pid!r} is not the PID of a kernel")
    return str(pid)


async def start_process(
    conn: asyncssh.SSHClientConnection, argv: Sequence[str], *, sudo: bool = False
) -> asyncssh.SSHClientProcess[str]:
    """Start a long-lived process in text mode; the caller owns its stdin and stdout."""
    command = build_command(argv, sudo=sudo)
    try:
        return await conn.create_process(command, encoding="utf-8")
    except (asyncssh.Error, OSError) as exc:
        raise SshUnreachable(
            f"Could not start {_describe(argv)} on the driver: the SSH connection failed ({exc})."
        ) from None


async def signal_process(
    conn: asyncssh.SSHClientConnection,
    pid: int,
    name: str,
    *,
    sudo: bool = False,
    timeout: float = 20.0,
) -> None:
    """Send SIG``name`` to the process group led by ``pid`` (a kernel leads its own session,
    and its children must go with it, as with a local kernel), else to ``pid`` alone."""
    if name not in SIGNAL_NAMES:
        raise ValueError(f"{name!r} is not a signal a remote kernel may get")
    word = _pid_word(pid)
    result = await run(conn, ["kill", "-s", name, "--", f"-{word}"], sudo=sudo, timeout=timeout)
    if result.exit_status != 0:
        await run(conn, ["kill", "-s", name, word], sudo=sudo, timeout=timeout)


async def process_alive(
    conn: asyncssh.SSHClientConnection, pid: int, *, sudo: bool = False, timeout: float = 20.0
) -> bool:
    """Whether ``pid`` still exists on the driver (``kill -0``)."""
    result = await run(conn, ["kill", "-0", _pid_word(pid)], sudo=sudo, timeout=timeout)
    return result.exit_status == 0


async def stop_process(
    conn: asyncssh.SSHClientConnection,
    pid: int,
    name: str,
    *,
    sudo: bool = False,
    exited: Callable[[], bool] = lambda: False,
    within: float = 5.0,
) -> bool:
    """Signal ``pid`` and wait up to ``within`` seconds until it is gone (``exited`` may tell
    earlier, e.g. the bootstrap reported the exit). True when it went."""
    await signal_process(conn, pid, name, sudo=sudo)
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if exited() or not await process_alive(conn, pid, sudo=sudo):
            return True
        await asyncio.sleep(0.1)
    return exited()


async def remove_run_dir(
    conn: asyncssh.SSHClientConnection, path: str, *, sudo: bool = False
) -> None:
    """Remove a kernel's run folder (refuses any other path)."""
    if not is_run_dir(path):
        raise ValueError(f"{path!r} is not a kernel run folder")
    await run(conn, ["rm", "-rf", "--", path], sudo=sudo, timeout=20.0)


async def remove_process(
    conn: asyncssh.SSHClientConnection,
    pid: int | None,
    run_dir: str | None,
    *,
    sudo: bool = False,
) -> None:
    """Make sure a kernel is gone and its run folder removed: after a lost link, or for a
    kernel whose removal failed earlier (the caller checks that the driver is still the same:
    a new driver's process with that PID is someone else)."""
    if pid is not None and await process_alive(conn, pid, sudo=sudo):
        await signal_process(conn, pid, "KILL", sudo=sudo)
    if run_dir:
        await remove_run_dir(conn, run_dir, sudo=sudo)
