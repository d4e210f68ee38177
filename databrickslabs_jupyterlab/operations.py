"""The one lifecycle of a cluster: start and wait, add the SSH key, log in, prepare the driver,
restart kernels.

The server's :class:`~.clusters.ClusterConnection` runs :meth:`Lifecycle.run` as a background
task and shows each step in the status; the CLI awaits the same method and prints the steps.
Nothing else starts clusters or installs driver libraries, so ``dj -r`` and the server's
reconfigure do the same thing step for step.

Kernels are a user's state. An operation restarts a kernel only when it has nothing to lose
(its remote process is gone: ``disconnected``), when it was named by the request, or when the
request chose so explicitly (:data:`.vocabulary.RESTART_CHOICES`): ``if-installed`` restarts
the running kernels only when a library was installed that they must load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import ssh, transport
from .driver import DriverAccess, DriverLink
from .settings import DriverSettings
from .vocabulary import COMING_UP, OPERATIONS, RESTART_CHOICES, RUNNING
from .workspace import ClusterInfo, WorkspaceError, key_installed, public_key_for

log = logging.getLogger(__name__)

#: ``(profile, cluster_id, kernel_ids)``: restart those kernels (the server's kernel manager).
RestartKernels = Callable[[str, str, list[str]], Awaitable[None]]


#: The restarting-kernels detail of a process without kernels (the CLI).
NO_KERNELS_HERE = "This process runs no kernels."


class OperationFailed(Exception):
    """A step cannot go on; the message is a sentence for the person."""


class TransportRefused(OperationFailed):
    """The transport asked for cannot work on this cluster (CLI exit 2, API 409)."""


class Conflict(Exception):
    """The operation cannot be asked for now (HTTP 409); ``code`` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Progress:
    """Where a lifecycle reports. The server maps these calls onto the cluster's status, the
    CLI onto lines on stderr; the base class ignores them."""

    def step(self, step: str, message: str) -> None:
        """A new step of :data:`.vocabulary.STEPS` begins."""

    def detail(self, line: str) -> None:
        """The latest progress line within the step (a pip line, a state change)."""

    def note(self, message: str) -> None:
        """Something worth keeping in the history (installed libraries, restarted kernels)."""

    def started(self) -> None:
        """The cluster start was requested from Databricks."""

    def restarting(self, kernel_ids: list[str]) -> None:
        """These kernels are about to restart."""


@dataclass
class KernelInfo:
    kernel_id: str
    state: str


@dataclass
class Outcome:
    """What an operation did."""

    info: ClusterInfo
    link_user: str
    installed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)


def check_request(kind: str, restart_kernels: str) -> None:
    if kind not in OPERATIONS:
        raise ValueError(f"unknown operation {kind!r}")
    if restart_kernels not in RESTART_CHOICES:
        raise ValueError(f"restart_kernels must be one of {', '.join(RESTART_CHOICES)}")


def admit(
    kind: str, state: str, cluster_state: str | None, cluster_id: str, waiting: bool = False
) -> bool:
    """Whether an operation asked for now has work to do (the API's rules).

    ``start`` on a ``connected`` cluster has none, unless a kernel of it waits for a restart
    (``waiting``: a kernel ``disconnected`` by a driver restart is told to start the cluster,
    and the driver may be back before the person asks): the answer is then the current status
    and no kernel is touched. ``reconfigure`` of a cluster that does not run is a
    :class:`Conflict`.
    """
    if kind == "reconfigure" and cluster_state not in RUNNING:
        raise Conflict(
            "cluster_not_running",
            f"Cluster {cluster_id} is not running ({cluster_state or 'state unknown'}); "
            "start it instead.",
        )
    return not (kind == "start" and state == "connected" and not waiting)


def kernels_to_restart(
    kernels: Iterable[KernelInfo], choice: str, installed: bool, named: Iterable[str] = ()
) -> list[str]:
    """The kernels an operation restarts (see the module docstring)."""
    chosen = set(named)
    for kernel in kernels:
        if kernel.state == "disconnected":
            chosen.add(kernel.kernel_id)
        elif kernel.state in ("starting", "running", "running-spark"):
            if choice == "always" or (choice == "if-installed" and installed):
                chosen.add(kernel.kernel_id)
    return sorted(chosen)


class Lifecycle:
    """The steps of one cluster's operations, reported to a :class:`Progress`.

    ``read`` reads the cluster (the server passes its own reader, which also updates the
    status); ``kernels`` lists the cluster's kernels and ``restart`` restarts some of them
    (both absent in the CLI, which runs no kernels).
    """

    def __init__(
        self,
        profile: str,
        cluster_id: str,
        workspace: Any,
        settings: DriverSettings,
        progress: Progress,
        *,
        access: DriverAccess | None = None,
        read: Callable[[], Awaitable[ClusterInfo]] | None = None,
        poll_interval: float = 1.0,
        ready_timeout: float = 60.0,
        start_timeout: float | None = None,
        kernels: Callable[[], list[KernelInfo]] | None = None,
        restart: RestartKernels | None = None,
        transport: str | None = None,
    ) -> None:
        self.profile = profile
        self.cluster_id = cluster_id
        self.workspace = workspace
        self.settings = settings
        self.progress = progress
        self.access = access or DriverAccess(settings, settings.connect_timeout)
        self._read = read
        self.poll_interval = poll_interval
        self.ready_timeout = ready_timeout
        self.start_timeout = start_timeout
        self._kernels = kernels
        self._restart = restart
        #: The transport asked for (None: the first that applies, see :mod:`.transport`).
        self.transport = transport
        #: The route of the last login.
        self.last_route: transport.Route | None = None

    # ------------------------------------------------------------------ steps
    async def read(self) -> ClusterInfo:
        if self._read is not None:
            return await self._read()
        return await self.workspace.get_cluster(self.cluster_id)

    async def route(self, info: ClusterInfo) -> transport.Route:
        """How the cluster is reached; ``OperationFailed`` with the sentence when the transport
        asked for cannot work there."""
        try:
            return await asyncio.to_thread(transport.choose, info, self.settings, self.transport)
        except transport.TransportImpossible as exc:
            raise TransportRefused(str(exc)) from None

    async def public_key(self) -> tuple[str | None, str]:
        """The cluster's public key (``None`` when the ``.pub`` file is missing) and its path."""
        identity = await asyncio.to_thread(
            ssh.cluster_identity_file, self.cluster_id, self.profile, self.settings
        )
        return await asyncio.to_thread(public_key_for, identity), f"{identity}.pub"

    async def start_and_wait(self, info: ClusterInfo, public_key: str | None) -> ClusterInfo:
        """Start a terminated cluster (adding the key first: an edit of a terminated cluster
        restarts nothing) and wait until Databricks says RUNNING."""
        cid = self.cluster_id
        requested = False
        began = time.monotonic()
        last: str | None = None
        while True:
            state = info.state
            if state in RUNNING:
                return info
            if state == "TERMINATED":
                if requested:
                    raise OperationFailed(
                        f"Cluster {cid} terminated while starting"
                        + (f": {info.state_message}" if info.state_message else ".")
                    )
                if public_key and not key_installed(public_key, info.ssh_public_keys):
                    self.progress.detail("Adding the SSH key to the cluster.")
                    await self._set_keys(info, public_key)
                self.progress.detail("Asking Databricks to start the cluster.")
                try:
                    await self.workspace.start_cluster(cid)
                except WorkspaceError as err:
                    if err.code != "invalid_state":
                        raise
                requested = True
                self.progress.started()
            elif state == "TERMINATING":
                self._state_detail(
                    last, state, "Waiting for the cluster to finish terminating before starting it."
                )
            elif state in COMING_UP:
                why = f": {info.state_message}" if info.state_message else ""
                self._state_detail(last, state, f"Waiting for the cluster to run ({state}{why}).")
            else:
                raise OperationFailed(
                    f"Cluster {cid} cannot be started from state {state}"
                    + (f": {info.state_message}" if info.state_message else ".")
                )
            last = state
            if self.start_timeout is not None and time.monotonic() - began > self.start_timeout:
                raise OperationFailed(
                    f"Cluster {cid} did not reach RUNNING within {self.start_timeout:.0f} s "
                    f"(state {state})."
                )
            await asyncio.sleep(self.poll_interval)
            info = await self.read()

    def _state_detail(self, last: str | None, state: str, text: str) -> None:
        if last != state:
            self.progress.detail(text)

    async def put_key(self, info: ClusterInfo, public_key: str) -> bool:
        """Add the key to the cluster's ``ssh_public_keys`` if missing (no waiting); True when
        it was added. On a running cluster Databricks restarts it: :meth:`add_key` waits."""
        if key_installed(public_key, info.ssh_public_keys):
            return False
        await self._set_keys(info, public_key)
        return True

    async def _set_keys(self, info: ClusterInfo, public_key: str) -> None:
        """The key added to the cluster's ``ssh_public_keys``; a cluster policy that forbids it
        is said in one sentence with the ways that need no key."""
        try:
            await self.workspace.set_ssh_public_keys(
                self.cluster_id, [*info.ssh_public_keys, public_key]
            )
        except WorkspaceError as err:
            if "ssh_public_keys" not in err.message:
                raise
            raise OperationFailed(
                f"The policy of cluster {self.cluster_id} does not allow adding an SSH key "
                f"(Databricks: {err.message.rstrip('.')}): use the Databricks SSH tunnel "
                f"(dj {self.profile} -s -i {self.cluster_id} --tunnel) or the Command "
                "Execution API (--transport command-api)."
            ) from None

    async def add_key(self, info: ClusterInfo, public_key: str) -> ClusterInfo:
        """Put the key on a running cluster and wait until it runs again (Databricks restarts
        a running cluster whose keys change), within ``start_timeout`` when one is set."""
        if key_installed(public_key, info.ssh_public_keys):
            return info
        self.progress.detail(
            "Adding the SSH key to the cluster (Databricks restarts a running cluster)."
        )
        await self.put_key(info, public_key)
        began = time.monotonic()
        await asyncio.sleep(self.poll_interval)
        info = await self.read()
        while info.state not in RUNNING:
            if info.state not in COMING_UP:
                raise OperationFailed(
                    f"Cluster {self.cluster_id} stopped ({info.state}) while applying the SSH key."
                )
            if self.start_timeout is not None and time.monotonic() - began > self.start_timeout:
                raise OperationFailed(
                    f"Cluster {self.cluster_id} did not reach RUNNING within "
                    f"{self.start_timeout:.0f} s after the SSH key was added (state {info.state})."
                )
            await asyncio.sleep(self.poll_interval)
            info = await self.read()
        return info

    async def connect(self, info: ClusterInfo) -> DriverLink:
        self.progress.detail("Logging in to the driver over SSH.")
        return await self.access.connect(self.profile, info, self.ready_timeout)

    async def prepare(self, link: DriverLink, info: ClusterInfo, *, force: bool) -> list[str]:
        installed = await self.access.prepare(link, info, self.progress.detail, force=force)
        if installed:
            self.progress.note(f"Installed on the driver: {', '.join(installed)}.")
        return installed

    async def restart_kernels(
        self, choice: str, installed: bool, named: Iterable[str] = ()
    ) -> list[str]:
        if self._restart is None:
            self.progress.detail(NO_KERNELS_HERE)
            return []
        kernels = self._kernels() if self._kernels is not None else []
        ids = kernels_to_restart(kernels, choice, installed, named)
        if not ids:
            self.progress.detail("No kernel to restart.")
            return []
        self.progress.restarting(ids)
        self.progress.detail(f"Restarting {len(ids)} kernel(s).")
        await self._restart(self.profile, self.cluster_id, ids)
        self.progress.note(f"Restarted {len(ids)} kernel(s): {', '.join(ids)}.")
        return ids

    # ------------------------------------------------------- groups of steps
    async def login(
        self, info: ClusterInfo, *, start: bool
    ) -> tuple[ClusterInfo, DriverLink | None]:
        """The steps ``starting`` (when ``start``: start and wait) and ``configuring`` (the key
        on the cluster, a login to its driver). Close the returned link; there is none when the
        cluster is reached through the Command Execution API."""
        cid = self.cluster_id
        before = await self.route(info)  # an impossible transport is said before any change
        public_key, pub_path = await self.public_key()
        if start:
            self.progress.step("starting", f"Starting cluster {cid}.")
            # only classic SSH needs the key in the cluster (the tunnel brings its own)
            key = public_key if before.transport == transport.SSH else None
            info = await self.start_and_wait(info, key)
        elif info.state not in RUNNING:
            raise OperationFailed(f"Cluster {cid} is not running ({info.state}); start it instead.")
        route = self.last_route = await self.route(info)
        if not route.uses_ssh:
            self.progress.step(
                "configuring", f"Cluster {cid} is reached through the Command Execution API."
            )
            self.progress.detail(route.why)
            return info, None
        if route.transport == transport.TUNNEL:
            self.progress.step(
                "configuring", f"Logging in through the Databricks SSH tunnel (Host {route.alias})."
            )
            return info, await self.connect(info)
        self.progress.step("configuring", f"Preparing SSH to the driver of cluster {cid}.")
        if public_key is None:
            raise OperationFailed(
                f"There is no SSH public key at {pub_path} for profile {self.profile}; "
                f"create the key pair with 'databrickslabs-jupyterlab {self.profile} -s "
                f"-i {cid}' first."
            )
        info = await self.add_key(info, public_key)
        return info, await self.connect(info)

    async def prepare_running(
        self, link: DriverLink, info: ClusterInfo, *, force: bool
    ) -> list[str]:
        """The step ``installing``: the driver's libraries, what was installed."""
        self.progress.step(
            "installing", f"Checking the libraries on the driver of cluster {self.cluster_id}."
        )
        return await self.prepare(link, info, force=force)

    def _through(self, info: ClusterInfo) -> str:
        route = self.last_route
        if route is None or route.transport == transport.SSH and route.alias is None:
            return f"over SSH ({info.public_dns})"
        if route.transport == transport.COMMAND_API:
            return "through the Command Execution API"
        return f"over SSH (Host {route.alias})"

    async def _driver_lost(self, err: ssh.SshError, before: ClusterInfo) -> Exception:
        """What a failed preparation says: a cluster that stopped or restarted meanwhile (the
        link went with its driver) is a sentence naming what happened and the way out; else
        the SSH error itself."""
        try:
            info = await self.read()
        except WorkspaceError:
            return err
        cid = self.cluster_id
        if info.state not in RUNNING:
            return OperationFailed(
                f"Cluster {cid} is {info.state} now: its driver went away while it was being "
                "prepared; start the cluster again."
            )
        if info.driver_start != before.driver_start:
            return OperationFailed(
                f"The driver of cluster {cid} restarted while it was being prepared; "
                "reconfigure the cluster."
            )
        return err

    # -------------------------------------------------------------- the whole
    async def run(
        self,
        kind: str,
        *,
        restart_kernels: str = "never",
        named_kernels: Iterable[str] = (),
        check_libraries: bool = False,
    ) -> Outcome:
        """Walk the steps of ``start`` (from any state) or ``reconfigure`` (a running cluster).

        A reconfigure, or ``check_libraries`` (the caller saw a library missing), checks the
        driver's libraries even on a driver start remembered as prepared."""
        check_request(kind, restart_kernels)
        cid = self.cluster_id
        info, link = await self.login(await self.read(), start=kind == "start")
        if link is None:
            self.progress.step("installing", "Nothing to install: no kernel library on the driver.")
            outcome = Outcome(info=info, link_user="")
        else:
            try:
                installed = await self.prepare_running(
                    link, info, force=kind == "reconfigure" or check_libraries
                )
            except ssh.SshError as err:
                raise await self._driver_lost(err, info) from None
            finally:
                await link.close()
            outcome = Outcome(info=info, link_user=link.user, installed=installed)
        installed = outcome.installed

        self.progress.step("restarting-kernels", f"Restarting the kernels of cluster {cid}.")
        outcome.restarted = await self.restart_kernels(
            restart_kernels, bool(installed), named_kernels
        )
        self.progress.step("done", f"Connected to cluster {cid} {self._through(info)}.")
        return outcome
