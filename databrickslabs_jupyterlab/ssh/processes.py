"""The kernel provisioner's processes on the driver, started, signalled, looked at and removed
only here."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence

import asyncssh

from .commands import _describe, build_command, run
from .connection import SshUnreachable

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
_RUN_DIR = re.compile(r"(/[^\x00-\x1f\x7f/]+)*/dbjl-kernel-[A-Za-z0-9_]+")


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
    a new driver's process with that PID is someone else). A ``run_dir`` that is no kernel run
    folder is refused before anything is signalled or removed, whichever path calls this."""
    if run_dir and not is_run_dir(run_dir):
        raise ValueError(f"{run_dir!r} is not a kernel run folder")
    if pid is not None and await process_alive(conn, pid, sudo=sudo):
        await signal_process(conn, pid, "KILL", sudo=sudo)
    if run_dir:
        await remove_run_dir(conn, run_dir, sudo=sudo)
