"""Stopping a remote kernel, bounded, and keeping it controlled until then.

Why a module of its own: a stop must finish whatever the driver or the network do (a Jupyter
server's stop waits for it), and what a stop cannot reach must still end on the driver. So every
step a shutdown sends to the driver (the interrupt jupyter_client sends first, the stop, the
clean-up) shares one budget (``SHUTDOWN_BUDGET``), is bounded from the caller's side
(``remotekernel.on_ssh_loop(timeout=)``), and is not tried again once the driver did not answer.
What is left behind then is the driver-side watchdog's (``remote/bootstrap.py``): the kernel
exits once its controlling connection has shown no sign of life for ``watchdog_grace`` seconds.
The signs of life are the heartbeat this module keeps up (``remotekernel.keep_alive``) on the
bootstrap's stdin, or on ``hold`` after a re-attach.

:class:`KernelStop` is a mixin of ``provisioner.DatabricksSshProvisioner``, whose state it reads
and sets (the attributes declared below).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import remotekernel, ssh
from .remotekernel import on_ssh_loop
from .settings import DriverSettings

#: Upper bound for stopping or cleaning up a kernel whose driver may be gone.
CLEANUP_TIMEOUT = 8.0
#: Upper bound for everything one shutdown (or restart) sends to the driver. A server's stop
#: must end within 15 s whatever the driver or the network do.
SHUTDOWN_BUDGET = 6.0
#: The interrupt before a shutdown request is a courtesy: it gets at most this long.
SHUTDOWN_INTERRUPT_TIMEOUT = 1.0


class ProvisionerError(RuntimeError):
    """A kernel could not be started or reached on the driver; the message is for a person."""


class KernelStop:
    """The provisioner's stop, clean-up and heartbeat (see the module docstring)."""

    pid: int | None
    run_dir: str | None
    remote_ports: dict[str, int] | None
    use_sudo: bool
    settings: DriverSettings | None
    cluster_id: str | None
    parent: Any
    log: Any
    _conn: Any
    _listeners: list[Any]
    _launched: bool
    _stopping: bool
    _unreachable: bool
    _link_lost: bool
    _driver_gone: bool
    _exit_status: int | None
    _driver_start: int | None
    _stale: tuple[int, str | None, bool, int | None] | None
    _shutdown_deadline: float | None
    _heartbeat: asyncio.Future[Any] | None
    _controller: Any
    _record: Callable[..., None]
    _cancel_spark_attach: Callable[[], None]
    _cancel_link_check: Callable[[], None]
    _connect: Callable[[], Awaitable[Any]]
    _remote: Callable[..., Awaitable[Any]]

    # ---------------------------------------------------------------- KernelProvisionerBase

    async def kill(self, restart: bool = False) -> None:
        await self._stop("KILL")

    async def terminate(self, restart: bool = False) -> None:
        await self._stop("TERM")

    async def shutdown_requested(self, restart: bool = False) -> None:
        self._stopping = True
        self._remaining(0)  # the shutdown's clock runs from here at the latest
        self._cancel_spark_attach()
        self._cancel_link_check()

    async def cleanup(self, restart: bool = False) -> None:
        self._cancel_spark_attach()
        self._cancel_link_check()
        pid, run_dir, sudo = self.pid, self.run_dir, self.use_sudo
        gone = self._exit_status is not None or self._driver_gone
        if self._driver_gone or not ssh.is_run_dir(run_dir):
            run_dir = None  # it went with the driver, or it is no run folder of ours
        try:
            if self._unreachable:
                # Stopping already failed to reach the driver: do not wait for it again.
                raise ProvisionerError("the driver did not answer the stop request")
            timeout = self._remaining(CLEANUP_TIMEOUT)
            if timeout <= 0:
                raise ProvisionerError("the shutdown's time for the driver ran out")
            work = self._cleanup_remote(None if gone else pid, run_dir, sudo, close=not restart)
            await on_ssh_loop(work, timeout)
        except Exception as exc:  # the link may be gone: remember what to remove next time
            try:
                await on_ssh_loop(self._close_link(), 1.0)
            except TimeoutError:
                pass
            self.log.warning("Could not clean up the kernel on the driver: %s", exc)
            if pid is not None and not gone:
                self._stale = (pid, run_dir, sudo, self._driver_start)
        self.pid = self.run_dir = self.remote_ports = None
        self._launched = False
        self._shutdown_deadline = None
        if not restart:
            self._record("dead", "Kernel shut down")

    # ---------------------------------------------------------------- the budget

    def _shutting_down(self) -> bool:
        """A shutdown or restart of this kernel is under way (ours or its manager's)."""
        return self._stopping or bool(getattr(self.parent, "shutting_down", False))

    def _remaining(self, step: float) -> float:
        """Seconds a remote step may take: ``step``, and during a shutdown no more than what is
        left of its budget (the clock starts with the shutdown's first step)."""
        if not self._shutting_down():
            return step
        now = time.monotonic()
        if self._shutdown_deadline is None:
            self._shutdown_deadline = now + SHUTDOWN_BUDGET
        return max(0.0, min(step, self._shutdown_deadline - now))

    async def _stop(self, signal_name: str) -> None:
        self._cancel_spark_attach()
        self._cancel_link_check()
        if not self._launched or self.pid is None or self._exit_status is not None:
            return
        if self._driver_gone or self._unreachable:
            return  # nothing to stop there, or it did not answer already during this stop
        self._stopping = True
        try:
            timeout = self._remaining(CLEANUP_TIMEOUT)
            await on_ssh_loop(self._stop_remote(signal_name), timeout)
        except Exception as exc:
            self.log.warning("Could not stop the kernel on cluster %s: %s", self.cluster_id, exc)
            self._link_lost = self._unreachable = True

    # ---------------------------------------------------------------- SSH loop side

    async def _stop_remote(self, signal_name: str) -> None:
        pid = self.pid
        assert pid is not None
        if self._link_lost:
            self._conn = None  # one new connection
        conn = await self._connect()
        exited = lambda: self._exit_status is not None  # noqa: E731
        gone = await ssh.stop_process(conn, pid, signal_name, sudo=self.use_sudo, exited=exited)
        if gone and self._exit_status is None:
            self._exit_status = -int(getattr(signal, f"SIG{signal_name}"))

    async def _cleanup_remote(
        self, pid: int | None, run_dir: str | None, sudo: bool, close: bool
    ) -> None:
        self._stop_control()
        await self._close_listeners()
        try:
            if pid is not None or run_dir:
                if self._link_lost:
                    self._conn = None
                await self._remote(ssh.remove_process, pid, run_dir, sudo=sudo)
        finally:
            if close:
                await self._close_link()

    async def _give_up_started(self, pid: int, run_dir: str | None) -> None:
        """A start that failed after the kernel came up: remove it now, boundedly (else the
        watchdog does, once the closed channel's grace is over)."""
        self._stop_control()
        try:
            work = self._remote(
                ssh.remove_process, pid, run_dir if ssh.is_run_dir(run_dir) else None
            )
            await asyncio.wait_for(work, CLEANUP_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the start's own error is the one to report
            self.log.warning("Could not remove the kernel of a failed start: %s", exc)

    def _control(self, process: Any, *, hold: bool = False) -> None:
        """Keep ``process`` (the bootstrap, or ``hold`` after a re-attach, which is ours to
        close) fed with the watchdog's heartbeat."""
        self._stop_control()
        grace = self.settings.watchdog_grace if self.settings is not None else 0.0
        self._controller = process if hold else None
        self._heartbeat = asyncio.ensure_future(remotekernel.keep_alive(process, grace))

    def _stop_control(self) -> None:
        """No more heartbeats: from now on the driver's watchdog counts (on the SSH loop)."""
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.cancel()
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.close()

    async def _close_listeners(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners = []

    async def _close_link(self) -> None:
        self._stop_control()
        await self._close_listeners()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
