"""Attach Spark to a new remote kernel, silently and ahead of the user's first cell.

A kernel started over SSH is a process of its own: it does not have the notebook REPL's Spark
(shared/DATABRICKS-2026.md, section 3). ``dbcontext()`` (``connect.py``) finds it; this module
runs ``dbcontext(quiet=True)`` in every new kernel whose spec enables Spark, and reports which
of ``dbcontext``'s strategies worked. :func:`ask_gateway` is the provisioner's half of the gateway
hand-off: the cluster's py4j port and secret, read in a REST 1.2 context before the kernel starts.

Why the order is a guarantee: :meth:`SparkAttach.queue` sends the silent ``execute_request`` and
returns only once the kernel has published ``busy`` for it, i.e. once the kernel is working on
it. The provisioner awaits that before it reports the kernel started to its manager, so no
request of the manager or of the user exists yet. ipykernel handles shell requests one at a time
in arrival order, so every later request (``kernel_info`` of ``wait_for_ready``, the first cell)
queues behind the attach. Waiting for the attach's *result* is not part of the start: a slow
Spark must not make the start time out. :meth:`SparkAttach.outcome` waits for it afterwards, and
when it takes longer than ``DBJL_SPARK_ATTACH_TIMEOUT`` the kernel is interrupted so that the
queued cells go on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import queue
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

#: Runs silently in the new kernel. ``dbcontext`` stays in the namespace so that the user can
#: run it again.
ATTACH_CODE = "from databrickslabs_jupyterlab.connect import dbcontext\ndbcontext(quiet=True)\n"
#: Default bound (seconds) for the attach after a start; env ``DBJL_SPARK_ATTACH_TIMEOUT``.
DEFAULT_TIMEOUT = 120.0
TIMEOUT_ENV = "DBJL_SPARK_ATTACH_TIMEOUT"
#: Default bound (seconds) for asking the cluster for its gateway; env
#: ``DBJL_SPARK_HANDOFF_TIMEOUT``. The kernel start waits for it (at most this long).
HANDOFF_TIMEOUT = 30.0
HANDOFF_TIMEOUT_ENV = "DBJL_SPARK_HANDOFF_TIMEOUT"
#: The label of the strategy that worked, evaluated in the kernel after the attach.
VIA_EXPRESSION = (
    "__import__('databrickslabs_jupyterlab.connect', fromlist=['attached_via']).attached_via()"
)
#: Runs in a REST 1.2 Python context on the cluster: the py4j gateway of the REPL's Spark.
GATEWAY_COMMAND = (
    "import json as _dbjl_json\n"
    "_dbjl_g = sc._gateway\n"
    "_dbjl_p = getattr(_dbjl_g, 'gateway_parameters', None) or _dbjl_g.java_parameters\n"
    "print(_dbjl_json.dumps({'port': _dbjl_p.port, 'dbjl_gateway_secret': _dbjl_p.auth_token,"
    " 'applicationId': sc.applicationId}))\n"
)
#: Longest error text from the kernel that goes into the board's message.
MESSAGE_LIMIT = 600
#: How long an iopub subscription may take to reach the kernel before a probe is sent again.
_IOPUB_PROBE_WAIT = 1.0


#: The secret in databricks-sdk's DEBUG log of the command's answer (escaped or not).
_SECRET_IN_LOG = re.compile(r'(dbjl_gateway_secret\\*"\s*:\s*\\*")[^"\\]*')


class _RedactGatewaySecret(logging.Filter):
    """databricks-sdk logs response bodies at DEBUG: never the gateway's secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "dbjl_gateway_secret" in record.msg:
            record.msg = _SECRET_IN_LOG.sub(r"\1<redacted>", record.msg)
        return True


_redactor = _RedactGatewaySecret()


class AttachNotQueued(RuntimeError):
    """The kernel did not take the attach request; the message says why (for a person)."""


def attach_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds the attach may take after the start (``DBJL_SPARK_ATTACH_TIMEOUT``, default 120).

    Raises ``ValueError`` with a sentence for a value that is not a positive number."""
    return _seconds(environ, TIMEOUT_ENV, DEFAULT_TIMEOUT)


def handoff_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds the gateway hand-off may add to a start (``DBJL_SPARK_HANDOFF_TIMEOUT``, 30)."""
    return _seconds(environ, HANDOFF_TIMEOUT_ENV, HANDOFF_TIMEOUT)


def _seconds(environ: Mapping[str, str] | None, name: str, default: float) -> float:
    raw = (os.environ if environ is None else environ).get(name, "")
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {raw!r}.")
    return value


def short(text: str) -> str:
    """One line of at most MESSAGE_LIMIT characters (the board shows it in the status bar)."""
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def outcome_of(content: dict[str, Any], where: str) -> tuple[str, str]:
    """Board state and message for the attach's ``execute_reply`` content."""
    if content.get("status") == "ok":
        version = ""
        expression = (content.get("user_expressions") or {}).get("version") or {}
        if expression.get("status") == "ok":
            version = str(expression.get("data", {}).get("text/plain", "")).strip("'\"")
        spark = f"Spark {version}" if version else "Spark"
        via = ""
        expression = (content.get("user_expressions") or {}).get("via") or {}
        if expression.get("status") == "ok":
            via = str(expression.get("data", {}).get("text/plain", "")).strip("'\"")
        suffix = f" ({via})" if via else ""
        return "running-spark", f"Kernel running on {where} with {spark}{suffix}"
    ename = str(content.get("ename") or "")
    evalue = str(content.get("evalue") or "")
    if ename == "KeyboardInterrupt":
        return "running", "Attaching Spark was interrupted; run dbcontext() in a cell to attach it."
    detail = evalue if ename == "DbContextError" else f"{ename}: {evalue}"
    return "running", short(f"Spark is not available on this driver: {detail.strip()}")


def ask_gateway(client: Any, cluster_id: str, timeout: float) -> dict[str, Any]:
    """The cluster's py4j gateway, asked through a REST 1.2 Python context (blocking: run it in
    a thread). Returns ``{port, secret, applicationId}`` or ``{"error": reason}``; never raises.

    Why a context: the provisioner holds the user's credentials here, and only the cluster's own
    REPL knows its gateway. The context is destroyed whatever happens, also after the caller
    stopped waiting. The answer holds the secret: it is never logged or put into a message."""
    from databricks.sdk.service.compute import CommandStatus, ContextStatus, Language, ResultType

    sdk_log = logging.getLogger("databricks.sdk")
    if _redactor not in sdk_log.filters:
        sdk_log.addFilter(_redactor)
    api = client.command_execution
    deadline = time.monotonic() + timeout
    context_id: str | None = None

    def wait(what: str, check: Callable[[], Any]) -> Any:
        delay = 0.1
        while True:
            value = check()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} took longer than {timeout:g} seconds")
            time.sleep(delay)  # a worker thread, polling a remote state
            delay = min(delay * 1.5, 1.0)

    def context_ready() -> Any:
        status = api.context_status(cluster_id, context_id).status
        return None if status == ContextStatus.PENDING else status

    try:
        context_id = api.create(cluster_id=cluster_id, language=Language.PYTHON).response.id
        status = wait("the cluster's Python context", context_ready)
        if status != ContextStatus.RUNNING:
            return {"error": f"the cluster's Python context is {getattr(status, 'value', status)}"}
        command_id = api.execute(
            cluster_id=cluster_id,
            context_id=context_id,
            language=Language.PYTHON,
            command=GATEWAY_COMMAND,
        ).response.id
        done = (CommandStatus.FINISHED, CommandStatus.ERROR, CommandStatus.CANCELLED)

        def finished() -> Any:
            answer = api.command_status(
                cluster_id=cluster_id, context_id=context_id, command_id=command_id
            )
            return answer if answer.status in done else None

        answer = wait("reading the gateway on the cluster", finished)
        results = answer.results
        if answer.status != CommandStatus.FINISHED or results is None:
            return {"error": f"the command on the cluster ended {answer.status.value}"}
        if results.result_type == ResultType.ERROR:
            summary = short(results.summary or results.cause or "an error")
            if "Py4JSecurityException" in summary or "whitelisted" in summary:
                return {"error": "the cluster restricts py4j (py4j security): " + summary}
            return {"error": f"the cluster's Python context has no usable Spark ({summary})"}
        try:
            info = json.loads((results.data or "").strip().splitlines()[-1])
            gateway = {
                "port": int(info["port"]),
                "secret": str(info["dbjl_gateway_secret"]),
                "applicationId": str(info.get("applicationId") or ""),
            }
        except (ValueError, KeyError, IndexError, TypeError):
            return {"error": "the cluster's answer did not name a gateway"}
        if not gateway["secret"]:
            return {"error": "the cluster's gateway has no auth secret"}
        return gateway
    except Exception as exc:  # noqa: BLE001 - any failure is the strategy's reason
        return {"error": short(f"asking the cluster for its gateway failed: {exc}")}
    finally:
        if context_id is not None:
            try:
                api.destroy(cluster_id, context_id)
            except Exception as exc:  # noqa: BLE001
                log.info("Could not destroy the REST 1.2 context %s: %s", context_id, exc)


class SparkAttach:
    """One attach in one kernel process, through a kernel client of its own.

    ``current`` says whether the kernel process is still the one this attach was made for (a
    restart or shutdown makes it false: the result is then dropped); ``interrupt`` sends SIGINT
    to the kernel on the driver. Both are the provisioner's. Runs on the provisioner's SSH loop.
    """

    def __init__(
        self,
        connection_info: dict[str, Any],
        timeout: float,
        *,
        where: str,
        current: Callable[[], bool],
        interrupt: Callable[[], Awaitable[None]],
        interrupt_timeout: float,
    ) -> None:
        self.info = dict(connection_info)
        self.timeout = timeout
        self.where = where
        self.current = current
        self.interrupt = interrupt
        self.interrupt_timeout = interrupt_timeout
        self._kc: Any = None
        self._msg_id: str | None = None
        self._deadline = 0.0

    async def queue(self, ready_timeout: float) -> None:
        """Send the attach and return once the kernel works on it (see the module docstring).

        Raises AttachNotQueued when the kernel does not answer within ``ready_timeout``."""
        from jupyter_client.asynchronous import AsyncKernelClient

        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        kc = self._kc = AsyncKernelClient()
        kc.load_connection_info(self.info)
        kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        # A SUB socket misses what is published before its subscription reaches the kernel:
        # probe with kernel_info until the kernel's status for a probe arrives on iopub.
        while True:
            probe = kc.kernel_info()
            if await self._iopub_status(probe, None, deadline, _IOPUB_PROBE_WAIT):
                break
            if loop.time() >= deadline or not self.current():
                raise AttachNotQueued(f"the kernel did not answer within {ready_timeout:g} s")
        self._msg_id = kc.execute(
            ATTACH_CODE,
            silent=True,
            store_history=False,
            user_expressions={"version": "spark.version", "via": VIA_EXPRESSION},
            allow_stdin=False,
            stop_on_error=False,
        )
        if not await self._iopub_status(self._msg_id, "busy", deadline, None):
            raise AttachNotQueued(f"the kernel did not take the attach within {ready_timeout:g} s")
        self._deadline = loop.time() + self.timeout

    async def _iopub_status(
        self, msg_id: str, state: str | None, deadline: float, within: float | None
    ) -> bool:
        """Whether a status message (``state``, or any) for ``msg_id`` arrives on iopub before
        ``deadline`` (and within ``within`` seconds, when given)."""
        loop = asyncio.get_running_loop()
        until = deadline if within is None else min(deadline, loop.time() + within)
        while self.current():
            remaining = until - loop.time()
            if remaining <= 0:
                return False
            try:
                msg = await self._kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if msg.get("msg_type") != "status":
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if state is None or msg["content"].get("execution_state") == state:
                return True
        return False

    async def outcome(self) -> tuple[str, str] | None:
        """Board state and message once the attach ended, or None when the kernel went away
        meanwhile. After the timeout the kernel is interrupted so that queued cells go on."""
        reply = await self._reply()
        if reply is None:
            if not self.current():
                return None
            try:
                await asyncio.wait_for(self.interrupt(), self.interrupt_timeout)
            except Exception as exc:  # noqa: BLE001 - the outcome sentence says enough
                log.warning("Could not interrupt the Spark attach: %s", exc)
            return (
                "running",
                f"Spark did not attach within {self.timeout:g} seconds and the attempt was "
                "interrupted; run dbcontext() in a cell to try again.",
            )
        return outcome_of(reply["content"], self.where)

    async def _reply(self) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        while self.current():
            remaining = self._deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                msg = await self._kc.get_shell_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if msg.get("parent_header", {}).get("msg_id") == self._msg_id:
                return msg
        return None

    def close(self) -> None:
        if self._kc is not None:
            self._kc.stop_channels()  # also ends the client's own zmq context
            self._kc = None


def start(
    attach: SparkAttach,
    loop: asyncio.AbstractEventLoop,
    ready_timeout: float,
    on_outcome: Callable[[str, str], None],
) -> tuple[concurrent.futures.Future[None], concurrent.futures.Future[None]]:
    """Run ``attach`` on ``loop``: (the whole attach, its queueing). Await the second before the
    kernel is reported started; cancel the first to forget the attach. ``on_outcome(state,
    message)`` is called while ``attach.current()`` holds."""
    queued: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def body() -> None:
        outcome: tuple[str, str] | None
        try:
            try:
                await attach.queue(ready_timeout)
            finally:
                if not queued.done():
                    queued.set_result(None)
            outcome = await attach.outcome()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the client failed: the kernel may be fine
            log.warning("Spark attach failed: %s", exc)
            outcome = "running", short(f"Spark could not be attached: {exc}")
        finally:
            attach.close()
            if not queued.done():  # cancelled before it was queued
                queued.set_result(None)
        if outcome is not None and attach.current():
            on_outcome(*outcome)

    return asyncio.run_coroutine_threadsafe(body(), loop), queued


#: Gateways named by the clusters, per (profile, cluster id, driver start): a driver keeps its
#: py4j gateway for its whole life, so one REST 1.2 context per driver start is enough. Kept in
#: this process's memory only, never on disk.
_GATEWAYS: dict[tuple[str, str, int], dict[str, Any]] = {}


def workspace_of(ws: Any) -> dict[str, Any]:
    """The workspace's host and id, for the kernel's Spark UI link (never a credential); {}
    when the client does not know its host."""
    config = getattr(getattr(ws, "client", None), "config", None)
    host = getattr(ws, "host", None) or getattr(config, "host", None)
    if not host:
        return {}
    workspace_id = getattr(config, "workspace_id", None)
    return {"host": str(host), "workspace_id": str(workspace_id) if workspace_id else None}


async def handoff(
    profile: str, cluster_id: str, driver_start: int | None, settings: Any, timeout: float
) -> dict[str, Any]:
    """The cluster's py4j gateway for ``dbcontext()``'s hand-off strategy, asked through a
    REST 1.2 context with the user's credentials (which stay in this process), or
    ``{"error": reason}``; with the workspace's host and id under ``workspace`` when known (for
    the Spark UI link). Bounded by ``timeout``; never raises: a failure only becomes that
    strategy's reason in the kernel. A gateway already named for this driver start is reused."""
    from . import workspace

    key = (profile, cluster_id, driver_start) if driver_start is not None else None
    try:
        ws = await asyncio.wait_for(
            workspace.Workspace.for_profile(
                profile,
                config_file=settings.databricks_config_file,
                retry_timeout=settings.workspace_retry_timeout,
                http_timeout=settings.workspace_http_timeout,
            ),
            timeout,
        )
    except asyncio.TimeoutError:
        return {"error": f"the cluster did not name its gateway within {timeout:g} s"}
    except Exception as exc:  # noqa: BLE001 - the kernel starts anyway
        return {"error": short(f"the workspace could not be asked: {exc}")}
    where = workspace_of(ws)
    extra = {"workspace": where} if where else {}
    if key is not None and key in _GATEWAYS:
        return dict(_GATEWAYS[key], **extra)
    try:
        ask = asyncio.to_thread(ask_gateway, ws.client, cluster_id, timeout)
        gateway = await asyncio.wait_for(ask, timeout + 5)
    except asyncio.TimeoutError:
        gateway = {"error": f"the cluster did not name its gateway within {timeout:g} s"}
    except Exception as exc:  # noqa: BLE001 - the kernel starts anyway
        gateway = {"error": short(f"the workspace could not be asked: {exc}")}
    if key is not None and "error" not in gateway:
        for old in [k for k in _GATEWAYS if k[:2] == key[:2]]:
            del _GATEWAYS[old]  # an earlier driver of this cluster is gone
        _GATEWAYS[key] = dict(gateway)
    return dict(gateway, **extra)
