"""SSH to a cluster driver: where to connect and whom to trust.

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
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from .. import vocabulary
from ..hostkeys import HostKeyPin, HostKeyStore
from ..settings import DriverSettings
from ..sshconfig import (
    HostEntry,
    expand_path,
    expand_tokens,
    host_entry,
    local_user,
    parse_jump,
)

log = logging.getLogger(__name__)


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
    cluster_id: str,
    public_dns: str | None,
    profile: str,
    settings: DriverSettings,
    alias: str | None = None,
) -> SshTarget:
    """Where and how to log in to the driver of ``cluster_id``.

    Defaults come from the settings and the cluster's ``public_dns``; what the SSH config says
    for the cluster id (or for ``alias``, the Host of a Databricks SSH tunnel entry) wins for
    HostName, Port, User, IdentityFile, ProxyCommand and ProxyJump, because that is how users
    route to drivers we cannot reach directly. Reads the SSH config: call it in a thread from
    async code."""
    _check_cluster_id(cluster_id)
    if alias is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", alias):
        raise SshError(f"{alias!r} is not a Host name this product connects through.")
    name = alias or cluster_id
    entry = _host_entry(settings, name)
    user = entry.user or settings.ssh_user
    host = entry.hostname or (None if alias else public_dns)
    if not host and (entry.proxy_command or entry.proxy_jump):
        host = name  # the proxy knows how to find it (%h)
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

    def __init__(self, pin: HostKeyPin, lazy_identity: _Hop | None = None) -> None:
        self._pin = pin
        self.refusal: SshError | None = None
        self._lazy = lazy_identity

    async def public_key_auth_requested(self) -> list[asyncssh.SSHKeyPair] | None:
        """The key of a hop whose ProxyCommand writes it (the Databricks SSH tunnel saves its
        client key when it connects), read at authentication time as OpenSSH does."""
        hop, self._lazy = self._lazy, None
        if hop is None:
            return None
        try:
            return await asyncio.to_thread(_load_identity, hop)
        except SshError as exc:
            self.refusal = exc
        if not await asyncio.to_thread(_identity_exists, hop):
            self.refusal = SshAuthFailed(
                f"The ProxyCommand for the {hop.label} left no key at {hop.identity_file} "
                "(the Databricks SSH tunnel writes it there when it connects)."
            )
        return None

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


def _identity_exists(hop: _Hop) -> bool:
    return os.path.isfile(os.path.expanduser(hop.identity_file))


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
    """ProxyCommand with OpenSSH's tokens expanded, run by /bin/sh like OpenSSH does.

    The tokens are put in unquoted (as OpenSSH does), so host, user and cluster id must be
    plain words: anything else is refused rather than handed to the shell."""
    if not (
        vocabulary.is_hostname(target.host)
        and vocabulary.is_ssh_user(target.user)
        and vocabulary.is_cluster_id(target.cluster_id)
    ):
        raise SshError(
            f"The ProxyCommand for cluster {target.cluster_id!r} was not run: its host "
            f"{target.host!r} or user {target.user!r} is not a plain host or user name."
        )
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
    lazy = proxy_command is not None and not await asyncio.to_thread(_identity_exists, hop)
    keys = [] if lazy else await asyncio.to_thread(_load_identity, hop)
    pin = await host_keys.pin(hop.key_name, hop.driver_start, hop.label)
    client = _Client(pin, hop if lazy else None)
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
