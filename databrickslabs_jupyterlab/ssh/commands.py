"""Running commands on a driver over a logged-in connection: one command line builder (every
word quoted, ``sudo -n`` when asked, environment through ``env``), run and stream with a time
limit, local port forwards and file upload through stdin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from .. import vocabulary
from ..hostkeys import HostKeyStore
from ..settings import DriverSettings
from .connection import SshError, SshTarget, SshUnreachable, connect

log = logging.getLogger(__name__)

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
