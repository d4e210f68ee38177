"""After the SSH link to a kernel's driver is lost: may Jupyter restart the kernel?

Why a policy: Jupyter's restarter (a jupyter_server kernel manager has one) restarts a kernel
that is not alive at once, and with the cluster terminated every attempt would fail with a
traceback, or worse, a restart would go to a new driver while the user believes their state is
still there. So the provisioner holds the restarter back before it reports the kernel gone, lets
:func:`judge` look at the cluster and its driver, and releases the restarter only when the
cluster still runs on the same driver and SSH answers. Otherwise the kernel stays
``disconnected`` with one warning until a start or reconfigure of the cluster restarts it, and
nothing is sent to a driver that is gone. Whoever has no restarter (nbclient, ``jupyter
console``) just sees ``is_alive()`` turn false.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import ssh, vocabulary
from .remotekernel import ssh_loop
from .settings import DriverSettings
from .sparkattach import short

#: Upper bound for finding out, after a lost link, whether the cluster and its driver still run.
LINK_CHECK_TIMEOUT = 20.0


@dataclass(frozen=True)
class Verdict:
    #: Jupyter may restart the kernel (the same driver runs and answers).
    restart: bool
    #: The driver the kernel ran on is gone: nothing is left to stop or clean up on it.
    driver_gone: bool
    reason: str
    advice: str

    def sentence(self) -> str:
        """The board's message for a kernel that is not restarted."""
        return f"{self.reason[:1].upper()}{self.reason[1:]}; {self.advice}."

    def warning(self, kernel_id: str | None, km: Any) -> str:
        """The one log warning about the lost link."""
        if self.restart:
            then = "Jupyter restarts it" if auto_restarts(km) else "it can be restarted"
            return f"Kernel {kernel_id} lost its SSH connection to the driver; {self.reason}, so {then}."
        return (
            f"Kernel {kernel_id} lost its SSH connection to the driver: {self.reason}. It is not "
            f"restarted automatically; {self.advice}."
        )


async def judge(
    target: ssh.SshTarget,
    settings: DriverSettings,
    driver_start: int | None,
    read_cluster: Callable[[], Awaitable[Any]],
    timeout: float = LINK_CHECK_TIMEOUT,
    profile: str | None = None,
) -> Verdict:
    """Look at the cluster (``read_cluster`` returns a ``workspace.ClusterInfo``) and, when it
    runs on the same driver, log in to ``target`` again."""
    cluster_id = target.cluster_id
    advice = "start the cluster (status bar or `databrickslabs-jupyterlab`) to restart it"
    try:
        info = await asyncio.wait_for(read_cluster(), timeout)
    except Exception as exc:  # noqa: BLE001 - WorkspaceError, timeout: the state is unknown
        reason = f"the state of cluster {cluster_id} could not be read ({exc or 'timed out'})"
        return Verdict(False, False, reason, "restart the kernel once the workspace answers")
    state = (info.state or "").upper() or "in an unknown state"
    if state not in vocabulary.RUNNING:
        return Verdict(False, True, f"cluster {cluster_id} is {state}", advice)
    if info.driver_start and driver_start and info.driver_start != driver_start:
        return Verdict(
            False,
            True,
            f"the driver of cluster {cluster_id} was replaced",
            "reconfigure the cluster (status bar) to restart it",
        )
    try:
        host_keys = ssh.HostKeyStore.for_profile(settings, profile)
        check = ssh.check_reachable(
            target, settings, host_keys=host_keys, driver_start=driver_start
        )
        problem = await asyncio.wait_for(check, timeout)
    except Exception as exc:  # noqa: BLE001
        problem = str(exc) or "the SSH login timed out"
    if problem is None:
        return Verdict(True, False, f"cluster {cluster_id} still runs", "")
    return Verdict(
        False,
        False,
        f"cluster {cluster_id} runs but its driver does not answer: {problem}",
        "restart the kernel once the driver answers",
    )


def auto_restarts(km: Any) -> bool:
    """Whether the kernel's manager restarts a kernel that died (jupyter_server's does)."""
    from jupyter_client.ioloop import AsyncIOLoopKernelManager, IOLoopKernelManager

    return isinstance(km, (AsyncIOLoopKernelManager, IOLoopKernelManager)) and bool(km.autorestart)


def hold_restarter(km: Any) -> None:
    stop = getattr(km, "stop_restarter", None)
    if callable(stop):
        stop()


def release_restarter(km: Any) -> None:
    start = getattr(km, "start_restarter", None)
    if callable(start):
        start()


class LinkWatch:
    """The provisioner's side of the policy (a mixin of ``DatabricksSshProvisioner``, whose
    state it reads and sets: ``_conn``, ``_launched``, ``_stopping``, ``_exit_status``,
    ``_generation``, ``_link_down``, ``_link_lost``, ``_driver_gone``, ``_check_future``,
    ``_target``, ``settings``, ``_driver_start``, ``_record``, ``_on_owner_loop``,
    ``_read_cluster``). Kept apart so that the order of events after a lost link can be read in
    one place: SSH loop notices, owner's loop holds the restarter, :func:`judge` decides."""

    _conn: Any
    _launched: bool
    _stopping: bool
    _exit_status: int | None
    _generation: int
    _link_down: bool
    _link_lost: bool
    _driver_gone: bool
    _check_future: Any
    _target: Any
    _driver_start: int | None
    settings: DriverSettings | None
    kernel_id: Any
    parent: Any
    log: Any
    _record: Callable[..., None]
    _on_owner_loop: Callable[..., None]
    _read_cluster: Callable[[], Awaitable[Any]]

    async def _watch_link(self, conn: Any) -> None:
        try:
            await conn.wait_closed()
        except Exception:
            pass
        if conn is not self._conn:
            return
        self._conn = None
        if self._launched and self._exit_status is None and not self._stopping:
            # poll() reports the kernel gone only once the owner's loop has held Jupyter's
            # restarter back, so that no restart starts before the cluster has been looked at.
            self._link_down = True
            self._on_owner_loop(self._link_lost_noticed, self._generation)
        elif self._launched and self._exit_status is None:
            self._link_lost = True

    def _link_lost_noticed(self, generation: int) -> None:
        """On the owner's loop: the kernel is gone for now; ``linkpolicy`` decides its future."""
        if generation != self._generation or not self._link_down:
            return
        hold_restarter(self.parent)
        self._link_down = False
        self._link_lost = True
        if self._stopping or self._exit_status is not None:
            return
        self._record("disconnected", "The SSH connection to the driver was lost")
        self._cancel_link_check()
        self._check_future = asyncio.run_coroutine_threadsafe(
            self._check_lost_link(generation), ssh_loop()
        )

    def _link_check_current(self, generation: int) -> bool:
        return (
            generation == self._generation
            and self._link_lost
            and not self._stopping
            and self._exit_status is None
        )

    async def _check_lost_link(self, generation: int) -> None:
        assert self.settings is not None
        verdict = await judge(
            self._target,
            self.settings,
            self._driver_start,
            self._read_cluster,
            profile=getattr(self, "profile", None),
        )
        if not self._link_check_current(generation):
            return
        self._driver_gone = verdict.driver_gone
        self.log.warning(verdict.warning(self.kernel_id, self.parent))
        stale = lambda: not self._link_check_current(generation)  # noqa: E731
        if verdict.restart:
            message = "The SSH connection to the driver was lost; restarting the kernel"
            self._record("disconnected", message, unless=stale)
            self._on_owner_loop(self._release_restarter, generation)
        else:
            self._record("disconnected", short(verdict.sentence()), unless=stale)

    def _release_restarter(self, generation: int) -> None:
        if self._link_check_current(generation):
            release_restarter(self.parent)

    def _cancel_link_check(self) -> None:
        future, self._check_future = self._check_future, None
        if future is not None and not future.done():
            future.cancel()
