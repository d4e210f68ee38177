"""Start ipykernel on a driver through the bootstrap (``remote/bootstrap.py``) and reach it.

The bootstrap is a file of this package, sent as ``<driver python> -c <its text>`` (it holds no
secret); the request with the kernel's HMAC key (and the cluster's py4j gateway secret, when
handed over) travels as the first line of the SSH channel's stdin. Its JSON lines
tell the kernel's PID and run folder, then its ports (or an early exit with the kernel's log),
and, much later, the kernel's exit status. The kernel's five channels are then forwarded from
local loopback ports, preferably the ones the kernel manager chose.

The channel's stdin stays open: ``keep_alive`` writes a line on it every few seconds, the sign
of life the driver-side watchdog waits for (see the bootstrap); a provisioner that re-attached
from another process keeps the kernel with ``hold``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import ssh

log = logging.getLogger(__name__)

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
#: Seconds the kernel may take to open its ports on the driver.
READY_TIMEOUT = 60.0
#: A kernel that lost a port race (another process took one) is started again this often.
LAUNCH_ATTEMPTS = 3
#: Signs of life per watchdog grace: a few may be late without the kernel being stopped.
HEARTBEATS_PER_GRACE = 4
_HERE = Path(__file__).parent
T = TypeVar("T")
_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def ssh_loop() -> asyncio.AbstractEventLoop:
    """The event loop, in a daemon thread, where every kernel's SSH connection lives.

    Why one loop of its own: the forwarded channels must keep flowing when the caller's loop is
    idle (a synchronous ``KernelManager`` runs its loop only inside calls), and the byte
    shuffling stays off the Jupyter server's loop."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            name = "databricks-ssh-kernels"
            threading.Thread(target=_loop.run_forever, name=name, daemon=True).start()
        return _loop


async def on_ssh_loop(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the SSH loop and await its result from the caller's loop.

    With ``timeout``, the caller waits at most that long (``TimeoutError``): the work is then
    cancelled on the SSH loop without waiting for the cancellation to finish there, so no SSH
    call that swallows or delays a cancellation can hold the caller (a shutdown) any longer."""
    loop = ssh_loop()
    if asyncio.get_running_loop() is loop:
        return await (coro if timeout is None else asyncio.wait_for(coro, timeout))
    future = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
    if timeout is None:
        return await future
    done, _ = await asyncio.wait({future}, timeout=max(timeout, 0))
    if not done:
        future.cancel()  # reaches the task on the SSH loop; nothing waits for it
        raise TimeoutError(f"the driver did not answer within {timeout:g} s")
    return future.result()


class LaunchError(RuntimeError):
    """The kernel did not start on the driver; the message is the driver's reason."""


@functools.cache
def bootstrap_source() -> str:
    """The driver-side script (blocking file read: call it in a thread)."""
    return (_HERE / "remote" / "bootstrap.py").read_text()


@functools.cache
def helper_files() -> dict[str, str]:
    """The kernel-side helpers (``dbcontext``, the notebook idioms), for drivers without this
    package (blocking)."""
    try:
        files = {"__init__.py": ""}
        for name in ("connect.py", "idioms.py", "sparkjobs.py"):
            files[name] = (_HERE / name).read_text()
        return files
    except OSError:
        return {}


async def prepare_driver(
    settings: Any, conn: Any, user: str, cluster: Any, on_progress: Callable[[str], None]
) -> list[str]:
    """Install what the driver's Python lacks (ipykernel) before a kernel starts there: a driver
    this state folder saw prepared (same driver start, same requirements) costs no check at all
    (``driver.PreparedDrivers``). Returns what was installed; LaunchError with pip's reason."""
    from . import driver

    access = driver.DriverAccess(settings, settings.connect_timeout)
    try:
        installed = await access.prepare(driver.DriverLink(conn, user), cluster, on_progress)
    except driver.DriverError as exc:
        raise LaunchError(str(exc)) from None
    if installed:
        log.info("Installed %s on the driver of %s", ", ".join(installed), cluster.cluster_id)
    return installed


@dataclass
class Started:
    """A kernel that opened its ports; ``process`` is the bootstrap, still its parent."""

    pid: int
    run_dir: str | None
    ports: dict[str, int]
    process: Any


async def launch(
    conn: Any,
    python: str,
    conn_info: dict[str, Any],
    env: dict[str, str],
    *,
    sudo: bool,
    on_pid: Callable[[int | None, str | None], None] | None = None,
    spark_gateway: dict[str, Any] | None = None,
    grace: float = 0.0,
) -> Started:
    """Run the bootstrap with ``python`` until the kernel has its ports; retry a port race.

    ``on_pid(pid, run_dir)`` is called as soon as the kernel process exists, so that a caller
    interrupted meanwhile can still remove it. ``spark_gateway`` (the cluster's py4j gateway port
    and secret, or ``{"error": reason}``) travels in the same stdin request as the HMAC key; the
    bootstrap keeps it in a 0600 file for ``dbcontext()``. ``grace``: the driver-side watchdog's
    (the caller then sends ``keep_alive`` on the process). Raises LaunchError with the kernel's
    last words; a start that fails or is cancelled closes its channel, and the bootstrap then
    gives the kernel up at once."""
    source, helper = await asyncio.to_thread(lambda: (bootstrap_source(), helper_files()))
    body: dict[str, Any] = {
        "conn": conn_info,
        "env": env,
        "helper": helper,
        "ready_timeout": READY_TIMEOUT,
        "grace": float(grace),
    }
    if spark_gateway is not None:
        body["spark_gateway"] = spark_gateway
    request = json.dumps(body) + "\n"
    last_error = "the kernel did not start"
    for _attempt in range(LAUNCH_ATTEMPTS):
        process = await ssh.start_process(conn, [python, "-c", source], sudo=sudo)
        try:
            started = await _read_start(process, request, on_pid)
        except BaseException:
            process.close()
            raise
        if isinstance(started, Started):
            return started
        last_error = started
        process.close()
        if on_pid is not None:
            on_pid(None, None)
        log.warning("Kernel start with %s failed: %s", python, last_error)
        if "Address already in use" not in last_error:
            break
    raise LaunchError("\n".join(last_error.splitlines()[-5:]))


async def _read_start(
    process: Any, request: str, on_pid: Callable[[int | None, str | None], None] | None
) -> Started | str:
    """The bootstrap's answer to ``request``: the started kernel, or why it did not start."""
    process.stdin.write(request)
    started = time.monotonic()
    pid: int | None = None
    run_dir: str | None = None
    exit_message: dict[str, Any] | None = None
    while True:
        remaining = READY_TIMEOUT + 10 - (time.monotonic() - started)
        try:
            line = await asyncio.wait_for(process.stdout.readline(), max(remaining, 0.1))
        except asyncio.TimeoutError:
            raise LaunchError("the kernel did not start in time") from None
        if not line:
            break
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "pid" in message:
            pid, run_dir = int(message["pid"]), str(message.get("run_dir") or "") or None
            if on_pid is not None:
                on_pid(pid, run_dir)
        elif "ports" in message and pid is not None:
            ports = {n: int(message["ports"][n]) for n in PORT_NAMES}
            return Started(pid, run_dir, ports, process)
        elif "exit" in message:
            exit_message = message
            break
    # The bootstrap ended before the kernel was ready.
    stderr = ""
    try:
        stderr = (await asyncio.wait_for(process.stderr.read(), 2)) or ""
    except Exception:  # noqa: BLE001 - only for the error text
        pass
    if exit_message is not None:
        return (exit_message.get("log") or "").strip() or f"exit {exit_message['exit']}"
    return stderr.strip() or "the bootstrap on the driver ended early"


def heartbeat_interval(grace: float) -> float:
    """Seconds between two signs of life for a watchdog ``grace``."""
    return min(max(grace / HEARTBEATS_PER_GRACE, 0.1), 30.0)


async def keep_alive(process: Any, grace: float) -> None:
    """Write a line on ``process``'s stdin (the bootstrap's or ``hold``'s) every
    ``heartbeat_interval(grace)`` seconds until the channel closes or the task is cancelled."""
    interval = heartbeat_interval(grace)
    try:
        while not process.stdin.is_closing():
            process.stdin.write("\n")
            await asyncio.sleep(interval)
    except Exception:  # noqa: BLE001 - a closed channel ends the heartbeat
        return


async def hold(conn: Any, python: str, run_dir: str, *, sudo: bool) -> Any:
    """Keep a kernel started by another process controlled: ``hold`` on the driver touches the
    kernel's lease for every ``keep_alive`` line. Returns the process (close it to let go)."""
    if not ssh.is_run_dir(run_dir):
        raise LaunchError(f"{run_dir!r} is not a kernel run folder")
    source = await asyncio.to_thread(bootstrap_source)
    return await ssh.start_process(conn, [python, "-c", source, "hold", run_dir], sudo=sudo)


async def forward(
    conn: Any, ports: dict[str, int], preferred: dict[str, int]
) -> tuple[dict[str, int], list[Any]]:
    """Local ports for the kernel's channels (the preferred ones when free) and the listeners."""
    listeners: list[Any] = []
    local: dict[str, int] = {}
    try:
        for name in PORT_NAMES:
            listener = None
            for want in (preferred.get(name) or 0, 0):
                try:
                    listener = await ssh.forward_local(conn, ports[name], want)
                    break
                except ssh.SshError:
                    if want == 0:
                        raise
            assert listener is not None
            listeners.append(listener)
            local[name] = listener.get_port()
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return local, listeners


async def exit_status(process: Any) -> int | None:
    """The kernel's exit status as the bootstrap reports it; None when the link dropped first."""
    status: int | None = None
    try:
        async for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "exit" in message:
                status = int(message["exit"])
    except Exception:  # noqa: BLE001 - a dropped link ends the stream; the caller sees None
        pass
    return status
