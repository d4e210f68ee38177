"""Start and reconfigure of a watched cluster, as its status shows them.

The operations part of :class:`~.clusters.ClusterConnection`: the REST API's rules for a
request (``operations.admit``), one single-flight task per cluster that runs the shared lifecycle
(``operations.Lifecycle``, the same steps as ``dj -r``), and the lifecycle's progress written
into the cluster's snapshot (step, step index, pip's last line, the kernels it restarts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import operations, transport
from .operations import OperationFailed
from .ssh import SshError
from .vocabulary import STEPS
from .workspace import ClusterInfo, WorkspaceError, WorkspaceUnavailable

log = logging.getLogger("databrickslabs_jupyterlab.clusters")


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error_sentence(err: BaseException, kind: str) -> str:
    if isinstance(err, WorkspaceError):
        return err.message
    if isinstance(err, OperationFailed):
        return str(err)
    text = str(err).strip()
    module = type(err).__module__ or ""
    if module.startswith("databrickslabs_jupyterlab") and text:
        return text
    if isinstance(err, TimeoutError):
        return f"The {kind} took too long and was given up."
    return f"The {kind} failed unexpectedly ({type(err).__name__}); the server log has details."


class ClusterOperations:
    """Mixed into :class:`~.clusters.ClusterConnection`, whose state it reads and publishes."""

    # Provided by ClusterConnection.
    registry: Any
    profile: str
    cluster_id: str
    settings: Any
    info: ClusterInfo | None
    state: str
    operation: dict[str, Any] | None
    route: Any
    ssh: dict[str, Any]
    _op_task: asyncio.Task[None] | None
    _op_kernels: set[str]
    _op_transport: str | None
    _op_error: str | None
    _op_error_cluster_state: str | None
    _op_finished_at: float | None
    _missing: list[str]
    _libraries_ok_for: Any
    _probe_for: Any
    _wake: asyncio.Event

    if TYPE_CHECKING:

        def touch(self) -> None: ...
        def _publish(self) -> None: ...
        def note(self, message: str) -> None: ...
        async def _read(self, workspace: Any) -> ClusterInfo: ...

    def op_running(self) -> bool:
        return self._op_task is not None and not self._op_task.done()

    async def check_transport(self, wanted: str | None) -> None:
        """:class:`~.operations.Conflict` (``transport_impossible``) when the transport asked
        for cannot work on this cluster as last read; nothing when none was asked for."""
        if wanted is None or self.info is None:
            return
        try:
            await asyncio.to_thread(transport.choose, self.info, self.settings.driver, wanted)
        except transport.TransportImpossible as exc:
            raise operations.Conflict("transport_impossible", str(exc)) from None

    def request(
        self,
        kind: str,
        kernel_id: str | None = None,
        restart_kernels: str = "never",
        transport_asked: str | None = None,
    ) -> bool:
        """Ask for ``start`` or ``reconfigure`` the way the REST API does.

        Returns True when an operation runs afterwards (a new one, or the one already running,
        which takes the named kernel along), False when there was nothing to do (a start of a
        connected cluster without disconnected kernels). Raises
        :class:`~.operations.Conflict` for a reconfigure of a cluster that does not run.
        """
        operations.check_request(kind, restart_kernels)
        if self.op_running():
            if kernel_id:
                self._op_kernels.add(kernel_id)
            return True
        cluster_state = self.info.state if self.info else None
        waiting = any(k.state == "disconnected" for k in self._kernel_infos())
        if not operations.admit(kind, self.state, cluster_state, self.cluster_id, waiting):
            return False
        self._op_transport = transport_asked
        self.start_operation(kind, kernel_id, restart_kernels)
        return True

    def start_operation(
        self, kind: str, kernel_id: str | None = None, restart_kernels: str = "never"
    ) -> bool:
        """Begin ``start`` or ``reconfigure``; False when one already runs (nothing new starts)."""
        operations.check_request(kind, restart_kernels)
        if kernel_id:
            self._op_kernels.add(kernel_id)
        if self.op_running():
            return False
        self._op_error = None
        first = "starting" if kind == "start" else "configuring"
        self.operation = {
            "kind": kind,
            "step": first,
            "step_index": STEPS.index(first) + 1,
            "step_count": len(STEPS),
            "detail": None,
            "started_at": utcnow(),
            "restart_kernels": restart_kernels,
            "message": "Cluster start requested."
            if kind == "start"
            else "Reconfiguring the driver.",
        }
        self._op_finished_at = None
        self.touch()
        self._publish()
        self._op_task = asyncio.create_task(
            self._operate(kind, restart_kernels), name=f"dbjl-{kind}-{self.cluster_id}"
        )
        return True

    async def _operate(self, kind: str, restart_kernels: str) -> None:
        try:
            await asyncio.wait_for(
                self._operation_steps(kind, restart_kernels), self.settings.operation_timeout
            )
        except asyncio.CancelledError:
            self.operation = None
            self._publish()
            raise
        except Exception as err:  # noqa: BLE001 - every failure ends as a sentence
            message = _error_sentence(err, kind)
            log.warning("The %s of cluster %s failed: %s", kind, self.cluster_id, message)
            if not isinstance(err, WorkspaceError | OperationFailed | SshError):
                log.debug("Details of the failure", exc_info=err)
            self._op_error = message
            # A workspace that failed for a while is no lasting state of the cluster: the next
            # good read ends the error; other errors stay until the cluster's state changes.
            transient = isinstance(err, WorkspaceUnavailable)
            self._op_error_cluster_state = None if transient or not self.info else self.info.state
            self.operation = None
            self._op_kernels.clear()
            self._publish()
            self._wake.set()
        else:
            self._op_finished_at = time.monotonic()
            self._op_kernels.clear()
            asyncio.get_running_loop().call_later(self.settings.done_linger, self._clear_done)
            self._wake.set()

    def _clear_done(self) -> None:
        if (
            not self.op_running()
            and self.operation is not None
            and self.operation["step"] == "done"
        ):
            self.operation = None
            self._publish()

    def _kernel_infos(self) -> list[operations.KernelInfo]:
        return [
            operations.KernelInfo(r.kernel_id, r.state)
            for r in self.registry.board.for_cluster(self.profile, self.cluster_id)
        ]

    async def _operation_steps(self, kind: str, restart_kernels: str) -> None:
        workspace = await self.registry.workspace(self.profile)
        lifecycle = operations.Lifecycle(
            self.profile,
            self.cluster_id,
            workspace,
            self.settings.driver,
            _StatusProgress(self),
            access=self.registry.driver_access,
            read=lambda: self._read(workspace),
            poll_interval=self.settings.refresh_interval,
            ready_timeout=self.settings.ssh_ready_timeout,
            kernels=self._kernel_infos,
            restart=self.registry.restart_kernels,
            transport=self._op_transport,
        )
        self._op_transport = None  # asked for this operation only
        # The set itself: a kernel named by a second request during the operation comes along.
        await lifecycle.run(
            kind,
            restart_kernels=restart_kernels,
            named_kernels=self._op_kernels,
            check_libraries=bool(self._missing),
        )

    def _logged_in(self, info: ClusterInfo) -> None:
        key = (info.driver_start, info.public_dns)
        self.ssh = {"reachable": True, "checked_at": utcnow(), "error": None}
        self._probe_for = key

    def _prepared(self) -> None:
        if self.info is not None:
            self._missing = []
            self._libraries_ok_for = (self.info.driver_start, self.info.public_dns)


class _StatusProgress(operations.Progress):
    """A lifecycle's progress, shown in the cluster's status."""

    def __init__(self, conn: ClusterOperations) -> None:
        self.conn = conn

    def step(self, step: str, message: str) -> None:
        conn = self.conn
        if conn.operation is None:
            return
        if step == "installing" and conn.info is not None:
            if conn.route is None or conn.route.uses_ssh:
                conn._logged_in(conn.info)  # the lifecycle logged in before this step
        elif step == "restarting-kernels":
            conn._prepared()
        conn.operation.update(
            step=step, step_index=STEPS.index(step) + 1, detail=None, message=message
        )
        conn._publish()

    def detail(self, line: str) -> None:
        if self.conn.operation is not None:
            self.conn.operation["detail"] = line[:500]
            self.conn._publish()

    def note(self, message: str) -> None:
        self.conn.note(message)

    def started(self) -> None:
        conn = self.conn
        conn.events.append(
            {"at": utcnow(), "state": "starting", "message": "Cluster start requested."}
        )
        conn._view = {}
        conn._publish()

    def restarting(self, kernel_ids: list[str]) -> None:
        if self.conn.operation is not None:
            self.conn.operation["kernels"] = list(kernel_ids)
            self.conn._publish()
