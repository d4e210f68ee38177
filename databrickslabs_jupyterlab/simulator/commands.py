"""What runs on a simulated driver besides SSH: its file layout, its Spark application and the
REST 1.2 execution contexts (one persistent Python REPL process per context).

Every process started here is a driver process: its own session, the driver's mark in its
environment (see ``driver.DRIVER_MARK``), so the cluster's termination kills it with the rest.
Spark runs only when the simulator was given pyspark (``Simulator(pyspark_path=...)`` or
``spark=True``): one application per cluster start, started in the background when the cluster
becomes RUNNING; the contexts wrap that same application.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .driver import driver_path, spark_conf_env

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
REPL_SCRIPT = _HERE / "repl.py"
SPARK_HOST_SCRIPT = _HERE / "sparkhost.py"
SPARK_START_SECONDS = 300.0

#: Languages a context runs; ``sql`` needs the driver's Spark.
LANGUAGES = ("python", "sql")
ALL_LANGUAGES = ("python", "sql", "scala", "r")


class CommandError(Exception):
    """A request the driver refuses: the API answers ``status`` with ``error_code``."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def now_ms() -> int:
    return int(time.time() * 1000)


class Command:
    def __init__(self, command_id: str, language: str, code: str) -> None:
        self.id = command_id
        self.language = language
        self.code = code
        self.status = "Queued"
        self.results: dict[str, Any] | None = None
        self.done = asyncio.Event()

    def finish(self, status: str, results: dict[str, Any] | None) -> None:
        self.status = status
        self.results = results
        self.done.set()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.results is not None:
            data["results"] = self.results
        return data


class ExecutionContext:
    """One REPL process; commands run one at a time, in order, in one namespace."""

    def __init__(self, runtime: DriverRuntime, context_id: str, language: str) -> None:
        self.runtime = runtime
        self.id = context_id
        self.language = language
        self.status = "Pending"
        self.spark_application_id: str | None = None
        self.spark_error: str | None = None
        self.commands: dict[str, Command] = {}
        self._queue: asyncio.Queue[Command] = asyncio.Queue()
        self._proc: asyncio.subprocess.Process | None = None
        self._running: Command | None = None
        self._task = asyncio.get_running_loop().create_task(self._serve())

    @property
    def running(self) -> Command | None:
        return self._running

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def execute(self, language: str, code: str) -> Command:
        command = Command(uuid.uuid4().hex, language, code)
        self.commands[command.id] = command
        self._queue.put_nowait(command)
        return command

    def cancel(self, command: Command) -> None:
        if command.status == "Queued":
            command.finish("Cancelled", _cancelled("Command cancelled before it started"))
        elif command.status == "Running" and command is self._running:
            command.status = "Cancelling"
            if self._proc is not None and self._proc.stdin is not None:
                with contextlib.suppress(Exception):
                    self._proc.stdin.write((json.dumps({"cancel": command.id}) + "\n").encode())

    def close(self, reason: str = "the execution context was destroyed") -> None:
        """Forget the REPL (its process is killed here, or with the driver)."""
        self.status = "Error"
        for command in self.commands.values():
            if not command.done.is_set():
                command.finish("Error", {"resultType": "error", "summary": reason, "cause": reason})
        self._task.cancel()
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    async def _serve(self) -> None:
        try:
            await self._start()
            assert self._proc is not None and self._proc.stdin and self._proc.stdout
            while True:
                command = await self._queue.get()
                if command.status != "Queued":  # cancelled while queued
                    continue
                command.status = "Running"
                self._running = command
                self.runtime.touch()
                request = {"id": command.id, "language": command.language, "command": command.code}
                self._proc.stdin.write((json.dumps(request) + "\n").encode())
                await self._proc.stdin.drain()
                line = await self._proc.stdout.readline()
                self._running = None
                self.runtime.touch()
                if not line:
                    raise ConnectionError("the REPL process exited")
                reply = json.loads(line)
                status = "Cancelled" if reply.get("cancelled") else "Finished"
                command.finish(status, reply.get("results"))
        except asyncio.CancelledError:
            # destroyed (or the driver went down) while starting or between commands
            if self._proc is not None and self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
            raise
        except Exception as exc:
            reason = f"The execution context's REPL ended: {exc}"
            log.debug("context %s: %s", self.id, reason)
            self.close(reason)

    async def _start(self) -> None:
        runtime = self.runtime
        layout = await asyncio.to_thread(runtime.ensure_layout)
        argv = [
            str(runtime.python),
            "-u",
            str(REPL_SCRIPT),
            str(layout.log_dir / f"repl-{self.id}.log"),
        ]
        if runtime.spark_enabled:
            argv.append(str(layout.gateway_file))
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=runtime.environment(),
            cwd=str(layout.root / "databricks" / "driver"),
            start_new_session=True,
            limit=64 * 1024 * 1024,
        )
        assert self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            raise ConnectionError("the REPL process did not start")
        ready = json.loads(line)
        self.spark_application_id = ready.get("spark")
        self.spark_error = ready.get("sparkError")
        self.status = "Running"


class Layout:
    """The classic driver's documented paths, under a private root (DATABRICKS-2026.md, 4)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.databricks = root / "databricks"
        #: Simulator-only: the Spark gateway file and the REPL logs (not a Databricks path).
        self.private = self.databricks / ".simulator"
        self.gateway_file = self.private / "spark-gateway.json"
        self.log_dir = self.private / "logs"


class DriverRuntime:
    """The non-SSH side of one cluster's driver. Lives on the simulator's loop."""

    def __init__(
        self,
        cluster_id: str,
        *,
        root: Path,
        bin_dir: Callable[[], Path | None],
        mark: tuple[str, str],
        spark_version: Callable[[], str],
        touch: Callable[[], None] = lambda: None,
    ) -> None:
        self.cluster_id = cluster_id
        self.layout = Layout(root)
        self._bin_dir = bin_dir
        self._mark = mark
        self._spark_version = spark_version
        self.touch = touch
        #: A folder holding pyspark (put on the driver's PYTHONPATH), set by the Simulator.
        self.pyspark_path: str | None = None
        #: Run Spark on this driver (the Simulator sets it when it was given pyspark).
        self.spark_enabled = False
        self.contexts: dict[str, ExecutionContext] = {}
        self._ids = itertools.count(1)
        self._id_base = int.from_bytes(os.urandom(6), "big") * 10**6
        self.up = False
        self.spark_started: float | None = None
        self.spark_ready_time: float | None = None
        self.spark_application_id: str | None = None
        self.spark_error: str | None = None
        self.spark_pid: int | None = None
        self.spark_ready = asyncio.Event()
        self._spark_task: asyncio.Task[None] | None = None
        self._spark_proc: asyncio.subprocess.Process | None = None

    # -- driver paths and environment --------------------------------------------------------
    @property
    def python(self) -> Path:
        bin_dir = self._bin_dir()
        assert bin_dir is not None, "the simulator is not started"
        return bin_dir.parent / "python" / "bin" / "python"

    def ensure_layout(self) -> Layout:
        """Blocking (file system): call it in a thread."""
        layout = self.layout
        (layout.databricks / "driver").mkdir(parents=True, exist_ok=True)
        (layout.root / "root").mkdir(exist_ok=True)
        layout.private.mkdir(mode=0o700, exist_ok=True)
        layout.log_dir.mkdir(mode=0o700, exist_ok=True)
        python_link = layout.databricks / "python"
        if not python_link.is_symlink():
            python_link.symlink_to(self.python.parent.parent, target_is_directory=True)
        spark_home = self._spark_home()
        spark_link = layout.databricks / "spark"
        if spark_home is not None and not spark_link.is_symlink():
            spark_link.symlink_to(spark_home, target_is_directory=True)
        return layout

    def _spark_home(self) -> Path | None:
        if self.pyspark_path and (Path(self.pyspark_path) / "pyspark").is_dir():
            return Path(self.pyspark_path) / "pyspark"
        return None

    def environment(self) -> dict[str, str]:
        bin_dir = self._bin_dir()
        env = {
            "PATH": driver_path(bin_dir),
            "HOME": str(self.layout.root / "root"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "DATABRICKS_RUNTIME_VERSION": _runtime_version(self._spark_version()),
            "PYSPARK_PYTHON": str(self.python),
            self._mark[0]: self._mark[1],
        }
        env.update(spark_conf_env(bin_dir))
        if self.pyspark_path:
            env["PYTHONPATH"] = self.pyspark_path
        spark_home = self._spark_home()
        if spark_home is not None:
            env["SPARK_HOME"] = str(spark_home)
        if os.environ.get("JAVA_HOME"):
            env["JAVA_HOME"] = os.environ["JAVA_HOME"]
        return env

    # -- up and down with the driver ---------------------------------------------------------
    def driver_up(self) -> None:
        self.up = True
        self.spark_ready = asyncio.Event()
        self.spark_started = self.spark_ready_time = None
        self.spark_application_id = self.spark_error = None
        self.spark_pid = None
        if self.spark_enabled:
            self.spark_started = time.time()
            self._spark_task = asyncio.get_running_loop().create_task(self._run_spark())

    def driver_down(self) -> None:
        """The driver VM is gone: every context and the Spark application with it (the processes
        themselves are killed by the driver's mark)."""
        self.up = False
        for context in list(self.contexts.values()):
            context.close("The cluster's driver terminated")
        self.contexts.clear()
        if self._spark_task is not None:
            self._spark_task.cancel()
            self._spark_task = None
        if self._spark_proc is not None and self._spark_proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._spark_proc.pid, signal.SIGTERM)
        self._spark_proc = None
        with contextlib.suppress(OSError):
            self.layout.gateway_file.unlink()

    async def _run_spark(self) -> None:
        layout = await asyncio.to_thread(self.ensure_layout)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(layout.gateway_file.unlink)
        log_file = layout.log_dir / "spark-host.log"
        fd = await asyncio.to_thread(
            os.open, log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                str(self.python),
                str(SPARK_HOST_SCRIPT),
                str(layout.gateway_file),
                stdin=asyncio.subprocess.PIPE,
                stdout=fd,
                stderr=fd,
                env=self.environment(),
                cwd=str(layout.databricks / "driver"),
                start_new_session=True,
            )
        finally:
            os.close(fd)
        self._spark_proc = proc
        self.spark_pid = proc.pid
        deadline = time.monotonic() + SPARK_START_SECONDS
        while time.monotonic() < deadline:
            info = await asyncio.to_thread(_read_json, layout.gateway_file)
            if info is not None:
                if info.get("error"):
                    self.spark_error = str(info["error"])
                else:
                    self.spark_application_id = info.get("applicationId")
                    self.spark_ready_time = time.time()
                self.spark_ready.set()
                return
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        self.spark_error = (
            self.spark_error or "Spark did not start (see the driver's spark-host.log)"
        )
        # The contexts waiting for the gateway file stop waiting, and run without Spark.
        await asyncio.to_thread(
            _write_private_json, layout.gateway_file, {"error": self.spark_error}
        )
        self.spark_ready.set()

    # -- contexts ----------------------------------------------------------------------------
    def create_context(self, language: str) -> ExecutionContext:
        context_id = str(self._id_base + next(self._ids))
        context = ExecutionContext(self, context_id, language)
        self.contexts[context_id] = context
        self.touch()
        return context

    def context(self, context_id: str) -> ExecutionContext:
        context = self.contexts.get(context_id)
        if context is None:
            raise CommandError(
                404, "RESOURCE_DOES_NOT_EXIST", f"Execution context {context_id} does not exist."
            )
        return context

    def destroy_context(self, context_id: str) -> None:
        self.context(context_id).close()
        del self.contexts[context_id]

    @property
    def busy(self) -> bool:
        """A command runs in some context (activity, for auto-termination)."""
        return any(c.running is not None for c in self.contexts.values())

    def describe(self) -> dict[str, Any]:
        return {
            "enabled": self.spark_enabled,
            "application_id": self.spark_application_id,
            "started": self.spark_started,
            "ready_time": self.spark_ready_time,
            "error": self.spark_error,
            "pid": self.spark_pid,
            "contexts": sorted(self.contexts),
        }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _runtime_version(spark_version: str) -> str:
    """``15.4.x-scala2.12`` -> ``15.4`` (the REPL's DATABRICKS_RUNTIME_VERSION)."""
    match = re.match(r"(\d+\.\d+)", spark_version)
    return match.group(1) if match else spark_version


def _cancelled(cause: str) -> dict[str, Any]:
    return {"resultType": "error", "summary": "Command cancelled", "cause": cause}
