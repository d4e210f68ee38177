"""The Command Execution API (REST 1.2) of one cluster, through databricks-sdk (blocking: every
call here runs in a worker thread of its caller).

A failure is sorted into two kinds, because the kernel answers them differently:

* :class:`ContextLost`: the workspace answered, and the context is gone for good (the cluster
  terminated or restarted, the context was destroyed or ended in ``Error``). The kernel reports
  itself ``disconnected`` on the board, like an SSH kernel whose link dropped;
* :class:`Unavailable`: no definite answer (connection error, timeout, 5xx, 429 after the SDK's
  own retries). The context may well still be there: the cell fails, the kernel stays up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..sparkattach import short
from ..vocabulary import RUNNING

#: Seconds a new context may stay ``Pending`` (a real driver answers in a few seconds; a
#: simulated driver with Spark waits for its Spark first).
CONTEXT_TIMEOUT = 180.0
#: What a lost context's message advises (the same words as for a lost SSH link).
START_ADVICE = "start the cluster (status bar or `databrickslabs-jupyterlab`) to restart it"
RESTART_ADVICE = "restart the kernel"


class CommandApiError(RuntimeError):
    """A REST 1.2 call failed; the message is a sentence for a person."""


class ContextLost(CommandApiError):
    """The execution context is gone for good; ``str()`` says why and what to do."""


class Unavailable(CommandApiError):
    """The workspace gave no definite answer; the context may still be there."""


def _status_code(err: BaseException) -> int | None:
    from ..workspace import _status_of

    code = getattr(err, "status_code", None)
    return code if isinstance(code, int) else _status_of(err)


def definite(err: BaseException) -> bool:
    """Whether ``err`` is the workspace's own answer about the request (400, 404, 409, or the
    error codes of a missing context or a cluster that does not run)."""
    from databricks.sdk import errors

    if not isinstance(err, errors.DatabricksError):
        return False
    code = getattr(err, "error_code", "") or ""
    if code in ("INVALID_STATE", "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
        return True
    status = _status_code(err)
    return status in (400, 404, 409)


class CommandApi:
    """One cluster's REST 1.2 endpoints, for one Python context at a time."""

    def __init__(self, client: Any, cluster_id: str) -> None:
        self.client = client
        self.cluster_id = cluster_id
        self.api = client.command_execution

    # ------------------------------------------------------------------ context life
    def create_context(
        self, timeout: float = CONTEXT_TIMEOUT, stopped: Callable[[], bool] = lambda: False
    ) -> str:
        """A new Python context, once it left ``Pending``; raises CommandApiError."""
        from databricks.sdk.service.compute import ContextStatus, Language

        cid = self.cluster_id
        try:
            context_id = self.api.create(cluster_id=cid, language=Language.PYTHON).response.id
        except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence
            raise self._failure(exc, "create an execution context") from None
        if not context_id:
            raise CommandApiError(f"Cluster {cid} gave no execution context id.")
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                status = self.api.context_status(cid, context_id).status
            except Exception as exc:  # noqa: BLE001
                self.destroy_quietly(context_id)
                raise self._failure(exc, "wait for the new execution context") from None
            if status == ContextStatus.RUNNING:
                return context_id
            if status != ContextStatus.PENDING or stopped() or time.monotonic() > deadline:
                self.destroy_quietly(context_id)
                if status != ContextStatus.PENDING:
                    state = getattr(status, "value", status)
                    raise CommandApiError(f"The execution context on cluster {cid} is {state}.")
                raise CommandApiError(
                    f"The execution context on cluster {cid} was not ready within {timeout:g} "
                    "seconds."
                )
            time.sleep(delay)  # a worker thread, polling a remote state
            delay = min(delay * 1.5, 1.0)

    def check_context(self, context_id: str) -> None:
        """Raises ContextLost or Unavailable unless the context runs."""
        from databricks.sdk.service.compute import ContextStatus

        try:
            status = self.api.context_status(self.cluster_id, context_id).status
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc, "read the execution context", context_id) from None
        if status in (ContextStatus.RUNNING, ContextStatus.PENDING):
            return
        raise self.lost(f"the execution context is {getattr(status, 'value', status)}")

    def destroy(self, context_id: str) -> None:
        try:
            self.api.destroy(cluster_id=self.cluster_id, context_id=context_id)
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc, "destroy the execution context") from None

    def destroy_quietly(self, context_id: str) -> str | None:
        """Destroy; the reason it failed (a gone cluster takes its contexts along), or None."""
        try:
            self.destroy(context_id)
        except CommandApiError as exc:
            return str(exc)
        return None

    # ------------------------------------------------------------------ commands
    def execute(self, context_id: str, code: str) -> str:
        from databricks.sdk.service.compute import Language

        try:
            return self.api.execute(
                cluster_id=self.cluster_id,
                context_id=context_id,
                language=Language.PYTHON,
                command=code,
            ).response.id
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc, "run the cell", context_id) from None

    def status(self, context_id: str, command_id: str) -> Any:
        """The ``CommandStatusResponse`` (``status``, and ``results`` once it ended)."""
        try:
            return self.api.command_status(
                cluster_id=self.cluster_id, context_id=context_id, command_id=command_id
            )
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc, "read the cell's status", context_id) from None

    def cancel(self, context_id: str, command_id: str) -> None:
        try:
            self.api.cancel(
                cluster_id=self.cluster_id, context_id=context_id, command_id=command_id
            )
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc, "cancel the cell", context_id) from None

    def run(self, context_id: str, code: str, timeout: float) -> Any:
        """Execute and wait for the end (for short internal commands); the final status."""
        from databricks.sdk.service.compute import CommandStatus

        command_id = self.execute(context_id, code)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            answer = self.status(context_id, command_id)
            if answer.status not in (
                CommandStatus.QUEUED,
                CommandStatus.RUNNING,
                CommandStatus.CANCELLING,
            ):
                return answer
            if time.monotonic() > deadline:
                self.cancel(context_id, command_id)
                raise CommandApiError(f"A command took longer than {timeout:g} seconds.")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # ------------------------------------------------------------------ failures
    def cluster_state(self) -> str | None:
        """The cluster's state (``RUNNING`` ...), or None when it cannot be read."""
        try:
            state = self.client.clusters.get(cluster_id=self.cluster_id).state
        except Exception:  # noqa: BLE001 - only for the wording of a message
            return None
        return str(getattr(state, "value", state) or "") or None

    def lost(self, detail: str) -> ContextLost:
        """A ContextLost whose sentence names the cluster's state and the way back."""
        cid = self.cluster_id
        state = self.cluster_state()
        if state is not None and state not in RUNNING:
            reason, advice = f"cluster {cid} is {state}", START_ADVICE
        elif state is not None:
            reason, advice = f"{detail} (cluster {cid} runs)", RESTART_ADVICE
        else:
            reason, advice = f"{detail} on cluster {cid}", RESTART_ADVICE
        return ContextLost(short(f"The execution context was lost: {reason}; {advice}."))

    def _failure(self, exc: BaseException, what: str, context_id: str | None = None) -> Exception:
        """ContextLost when the workspace says the context (or its cluster) is gone, else a
        sentence without a traceback."""
        from ..workspace import _translate

        message = str(exc).strip() or type(exc).__name__
        if context_id is not None and definite(exc):
            return self.lost(short(message.rstrip(".")))
        if definite(exc):
            return CommandApiError(
                short(f"Could not {what} on cluster {self.cluster_id}: {message}")
            )
        return Unavailable(str(_translate(exc, f"{what} on cluster {self.cluster_id}", None)))
