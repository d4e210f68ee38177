"""Attach Spark to a new remote kernel, silently and ahead of the user's first cell.

A kernel started over SSH is a process of its own: it does not have the notebook REPL's Spark
(shared/DATABRICKS-2026.md, section 3). ``dbcontext()`` (``connect.py``) finds it; this module
runs ``dbcontext(quiet=True)`` in every new kernel whose spec enables Spark.

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
import logging
import math
import os
import queue
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

#: Runs silently in the new kernel. ``dbcontext`` stays in the namespace so that the user can
#: run it again.
ATTACH_CODE = "from databrickslabs_jupyterlab.connect import dbcontext\ndbcontext(quiet=True)\n"
#: Default bound (seconds) for the attach after a start; env ``DBJL_SPARK_ATTACH_TIMEOUT``.
DEFAULT_TIMEOUT = 120.0
TIMEOUT_ENV = "DBJL_SPARK_ATTACH_TIMEOUT"
#: Longest error text from the kernel that goes into the board's message.
MESSAGE_LIMIT = 600
#: How long an iopub subscription may take to reach the kernel before a probe is sent again.
_IOPUB_PROBE_WAIT = 1.0


class AttachNotQueued(RuntimeError):
    """The kernel did not take the attach request; the message says why (for a person)."""


def attach_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds the attach may take after the start (``DBJL_SPARK_ATTACH_TIMEOUT``, default 120).

    Raises ``ValueError`` with a sentence for a value that is not a positive number."""
    raw = (os.environ if environ is None else environ).get(TIMEOUT_ENV, "")
    if not raw.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, not {raw!r}.")
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
        return "running-spark", f"Kernel running on {where} with {spark}"
    ename = str(content.get("ename") or "")
    evalue = str(content.get("evalue") or "")
    if ename == "KeyboardInterrupt":
        return "running", "Attaching Spark was interrupted; run dbcontext() in a cell to attach it."
    detail = evalue if ename == "DbContextError" else f"{ename}: {evalue}"
    return "running", short(f"Spark is not available on this driver: {detail.strip()}")


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
            user_expressions={"version": "spark.version"},
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
