"""The local kernel process: an ipykernel ``Kernel`` whose cells run in one REST 1.2 context.

Started by the provisioner as ``python -m databrickslabs_jupyterlab.commandkernel -f
CONNECTION_FILE`` with, in its environment, the profile, cluster and context id (never a token:
the SDK reads the profile's credentials here, as the CLI does). Each cell is one
``commands/execute``; its ``commands/status`` is polled until it ends, because Databricks gives a
command's output only at its end.

Polling: the first poll comes after ``DBJL_COMMAND_POLL_MIN`` seconds (0.05), each next one
after 1.5 times the previous wait, up to ``DBJL_COMMAND_POLL_MAX`` (1.0). A quick cell is thus
seen done within about a twentieth of a second of its end (on the simulator a trivial command
takes a few milliseconds), the extra wait stays below half of the time a cell has run, and a long
cell costs one status request a second (REST 1.2 has per-workspace rate limits). While a cell
runs for more than a second, one line says so and counts the seconds (updated in place, removed
at the end): REST 1.2 has no partial output to show instead.

Interrupt (both interrupt modes end in a SIGINT of this process): the running command is
cancelled (``commands/cancel``) and the cell ends with ``KeyboardInterrupt`` once Databricks
says it is cancelled. A lost context (the cluster terminated or restarted, the context destroyed)
is noticed by the cell that meets it and, while idle, by a status check every
``DBJL_COMMAND_CHECK_INTERVAL`` seconds (5); it is written to the provisioner (``state`` lines on
the file descriptor ``DBJL_COMMAND_STATE_FD``), which puts it on the kernel board. The kernel
then answers every cell with that sentence: a restart (a new context) is the user's choice, so
that no state is silently lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

from ipykernel.kernelbase import Kernel

from .. import __version__
from . import remote, render

POLL_MIN = 0.05
POLL_MAX = 1.0
POLL_FACTOR = 1.5
CHECK_INTERVAL = 5.0
#: A cell running longer than this gets the "running" line.
SHOW_RUNNING_AFTER = 1.0


def _seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


class CommandApiKernel(Kernel):
    implementation = "databrickslabs-command-api"
    implementation_version = __version__
    language = "python"
    language_info = {
        "name": "python",
        "mimetype": "text/x-python",
        "file_extension": ".py",
        "pygments_lexer": "ipython3",
        "codemirror_mode": {"name": "ipython", "version": 3},
        "nbconvert_exporter": "python",
    }
    banner = "Python on a Databricks cluster, through the Command Execution API"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        env = os.environ
        self.profile = env.get("DBJL_PROFILE", "")
        self.cluster_id = env.get("DBJL_CLUSTER_ID", "")
        self.context_id = env.get("DBJL_COMMAND_CONTEXT", "")
        self.config_file = env.get("DBJL_COMMAND_CONFIG_FILE") or None
        self.poll_min = _seconds("DBJL_COMMAND_POLL_MIN", POLL_MIN)
        self.poll_max = max(_seconds("DBJL_COMMAND_POLL_MAX", POLL_MAX), self.poll_min)
        self.check_interval = _seconds("DBJL_COMMAND_CHECK_INTERVAL", CHECK_INTERVAL)
        self._state_fd = _state_fd(env.get("DBJL_COMMAND_STATE_FD"))
        self._api: remote.CommandApi | None = None
        self._lost: str | None = None
        self._busy = False
        self._interrupted: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: asyncio.Task[None] | None = None
        self._displays = 0

    # ------------------------------------------------------------------ set-up
    def start(self) -> None:
        super().start()
        self.io_loop.add_callback(self._start_watch)

    def _start_watch(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._interrupted = asyncio.Event()
        self._watch = self._loop.create_task(self._watch_context())

    async def _client(self) -> remote.CommandApi:
        if self._api is None:
            from ..workspace import Workspace

            ws = await Workspace.for_profile(
                self.profile,
                config_file=self.config_file,
                retry_timeout=int(_seconds("DBJL_WORKSPACE_RETRY_TIMEOUT", 20)),
                http_timeout=_seconds("DBJL_WORKSPACE_HTTP_TIMEOUT", 10),
            )
            self._api = remote.CommandApi(ws.client, self.cluster_id)
        return self._api

    # SIGINT: ours while a cell runs (ipykernel's default would raise KeyboardInterrupt into the
    # event loop), a plain "cancel now" for the polling loop.
    def pre_handler_hook(self) -> None:
        self.saved_sigint_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def post_handler_hook(self) -> None:
        signal.signal(signal.SIGINT, self.saved_sigint_handler)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        loop, event = self._loop, self._interrupted
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    # ------------------------------------------------------------------ the board
    def _report(self, state: str, message: str) -> None:
        if self._state_fd is None:
            return
        line = json.dumps({"state": state, "message": message}) + "\n"
        try:
            os.write(self._state_fd, line.encode())
        except OSError:
            self._state_fd = None  # the provisioner is gone; nobody to tell

    def _context_lost(self, message: str) -> None:
        if self._lost is None:
            self._lost = message
            self.log.warning("Kernel: %s", message)
            self._report("disconnected", message)

    async def _watch_context(self) -> None:
        """While idle, notice a lost context within ``check_interval`` seconds."""
        while self._lost is None:
            await asyncio.sleep(self.check_interval)
            if self._busy or self._lost is not None:
                continue
            try:
                api = await self._client()
                await asyncio.to_thread(api.check_context, self.context_id)
            except remote.ContextLost as exc:
                if not self._busy:
                    self._context_lost(str(exc))
            except Exception as exc:  # noqa: BLE001 - no definite answer: look again later
                self.log.info("Execution context check failed: %s", exc)

    # ------------------------------------------------------------------ cells
    async def do_execute(
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        if not code.strip():
            return self._ok()
        if self._lost is not None:
            return self._show(render.error_output("ContextLost", self._lost, [self._lost]), silent)
        cell = render.plan(code)
        if cell.code is None:
            return self._show(cell.local or render.Output(), silent)
        self._busy = True
        try:
            output = await self._run(cell.code, cell.sql_limit, silent)
        finally:
            self._busy = False
        return self._show(output, silent)

    async def _run(self, code: str, sql_limit: int | None, silent: bool) -> render.Output:
        from databricks.sdk.service.compute import CommandStatus

        assert self._interrupted is not None
        self._interrupted.clear()
        try:
            api = await self._client()
            command_id = await asyncio.to_thread(api.execute, self.context_id, code)
        except remote.ContextLost as exc:
            self._context_lost(str(exc))
            return render.error_output("ContextLost", str(exc), [str(exc)])
        except Exception as exc:  # noqa: BLE001 - a sentence, no local traceback
            return render.error_output(type(exc).__name__, str(exc), [str(exc)])
        started = time.monotonic()
        delay = self.poll_min
        cancel_sent = False
        display_id: str | None = None
        pending = (CommandStatus.QUEUED, CommandStatus.RUNNING, CommandStatus.CANCELLING)
        try:
            while True:
                try:
                    await asyncio.wait_for(self._interrupted.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                if self._interrupted.is_set():
                    self._interrupted.clear()
                    try:
                        await asyncio.to_thread(api.cancel, self.context_id, command_id)
                    except remote.CommandApiError as exc:
                        # The command may just have ended: its status says what happened.
                        self.log.info("Cancel of the running command failed: %s", exc)
                    cancel_sent = True
                answer = await asyncio.to_thread(api.status, self.context_id, command_id)
                if answer.status not in pending:
                    break
                elapsed = time.monotonic() - started
                if not silent and elapsed >= SHOW_RUNNING_AFTER:
                    display_id = self._show_running(display_id, answer.status, elapsed, cancel_sent)
                delay = self.poll_min if cancel_sent else min(delay * POLL_FACTOR, self.poll_max)
        except remote.ContextLost as exc:
            self._context_lost(str(exc))
            self._clear_running(display_id)
            return render.error_output("ContextLost", str(exc), [str(exc)])
        except Exception as exc:  # noqa: BLE001
            self._clear_running(display_id)
            return render.error_output(type(exc).__name__, str(exc), [str(exc)])
        self._clear_running(display_id)
        if answer.status == CommandStatus.ERROR:
            # An Error status can mean that the context itself ended: look once.
            try:
                await asyncio.to_thread(api.check_context, self.context_id)
            except remote.ContextLost as exc:
                self._context_lost(str(exc))
            except Exception:  # noqa: BLE001
                pass
        return render.render(answer, sql_limit)

    def _show_running(
        self, display_id: str | None, status: Any, elapsed: float, cancelling: bool
    ) -> str:
        from databricks.sdk.service.compute import CommandStatus

        if cancelling or status == CommandStatus.CANCELLING:
            what = "Cancelling"
        elif status == CommandStatus.QUEUED:
            what = "Queued"
        else:
            what = "Running"
        text = (
            f"{what} on cluster {self.cluster_id}: {int(elapsed)} s "
            "(the output comes when the command ends)"
        )
        content = {"data": {"text/plain": text}, "metadata": {}}
        if display_id is None:
            self._displays += 1
            display_id = f"dbjl-running-{os.getpid()}-{self._displays}"
            content["transient"] = {"display_id": display_id}
            self.send_response(self.iopub_socket, "display_data", content)
        else:
            content["transient"] = {"display_id": display_id}
            self.send_response(self.iopub_socket, "update_display_data", content)
        return display_id

    def _clear_running(self, display_id: str | None) -> None:
        if display_id is not None:
            self.send_response(self.iopub_socket, "clear_output", {"wait": False})

    def _show(self, output: render.Output, silent: bool) -> dict[str, Any]:
        if not silent:
            for msg_type, content in output.messages:
                self.send_response(self.iopub_socket, msg_type, content)
        if output.error is not None:
            return {"status": "error", "execution_count": self.execution_count, **output.error}
        return self._ok()

    def _ok(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "execution_count": self.execution_count,
            "payload": [],
            "user_expressions": {},
        }

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        """The provisioner destroys the context (also when this process is killed)."""
        if self._watch is not None:
            self._watch.cancel()
        return {"status": "ok", "restart": restart}


def _state_fd(value: str | None) -> int | None:
    try:
        fd = int(value or "")
    except ValueError:
        return None
    try:
        os.fstat(fd)
    except OSError:
        return None
    return fd
