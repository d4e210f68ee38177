"""The kernel provisioner of Command Execution API kernelspecs (``databricks-command-provisioner``).

A ``LocalProvisioner`` with the cluster's side added, so that the kernel board (and with it the
status bar, the restart dialog, the kernel endpoint and the event history) sees the same states
as for an SSH kernel:

* ``pre_launch``: ``starting``; the cluster must run (otherwise the SSH provisioner's sentence);
  a Python execution context is created and a prelude runs in it (``dbcontext()`` for notebooks
  written for the SSH kernel, the spec's ``env`` in ``os.environ``); a failure ends the start with
  one sentence and the kernel ``dead`` (``disconnected`` when it ran before);
* the local kernel (``python -m databrickslabs_jupyterlab.commandkernel``) gets the profile,
  cluster and context id in its environment and a pipe for its ``state`` lines;
* ``post_launch``: ``running``, or ``running-spark`` when the context has a Spark session and
  the spec wants Spark; later lines from the kernel (a lost context: ``disconnected``) go on the
  board as they come;
* ``cleanup`` destroys the context (a restart creates a new one in the next ``pre_launch``), also
  when the kernel process was killed; then ``dead`` unless it is a restart.

The workspace is reached with the user's profile in this process and in the kernel process; no
token is passed on (the environment carries the profile's name and config file path only).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from .. import vocabulary
from ..provisioner import DatabricksSshProvisioner, ProvisionerError
from ..sparkattach import short
from ..vocabulary import secret_like
from . import KERNEL_MODULE, remote

#: Upper bound for destroying a context whose cluster may be gone.
CLEANUP_TIMEOUT = 8.0
#: Upper bound for the prelude (it waits for nothing but the context's own start).
PRELUDE_TIMEOUT = 60.0
PRELUDE_MARK = "dbjl-prelude:"


def prelude(env: dict[str, str]) -> str:
    """Python run once in a new context: the spec's env, ``dbcontext()`` when the driver lacks
    it (it returns the context's own ``spark``), and one line telling whether Spark is there."""
    return (
        "def __dbjl_prelude(env):\n"
        "    import json, os\n"
        "    os.environ.update(env)\n"
        "    g = globals()\n"
        "    if 'dbcontext' not in g:\n"
        "        def dbcontext(*args, **kwargs):\n"
        "            '''The cluster's SparkSession: this execution context's `spark`.'''\n"
        "            spark = globals().get('spark')\n"
        "            if spark is None:\n"
        "                raise RuntimeError('Spark is not available in this execution context "
        "on the cluster.')\n"
        "            return spark\n"
        "        g['dbcontext'] = dbcontext\n"
        "    spark = g.get('spark')\n"
        "    app = None\n"
        "    if spark is not None:\n"
        "        try:\n"
        "            app = spark.sparkContext.applicationId\n"
        "        except Exception:\n"
        "            app = ''\n"
        f"    print({PRELUDE_MARK!r} + json.dumps({{'spark': spark is not None, 'app': app}}))\n"
        "try:\n"
        f"    __dbjl_prelude({json.dumps(env)})\n"
        "finally:\n"
        "    del __dbjl_prelude\n"
    )


class CommandApiProvisioner(LocalProvisioner):  # type: ignore[misc]
    """Starts the local Command Execution API kernel for a cluster and keeps its context."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.profile: str | None = None
        self.cluster_id: str | None = None
        self.context_id: str | None = None
        self.spark = True
        self.settings: Any = None
        # Set by the SSH provisioner's _configure (read there, unused here).
        self._spark_timeout = self._handoff_timeout = 0.0
        self._spark_there = False
        self._api: remote.CommandApi | None = None
        self._owner_loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Task[None] | None = None
        self._generation = 0
        self._stopping = False
        self._started_before = False

    # ------------------------------------------------------------------ configuration
    # One reading of the spec (profile, cluster, spark) and of the settings, and one way to the
    # board, for both transports: the SSH provisioner's own methods.
    _configure = DatabricksSshProvisioner._configure
    _record = DatabricksSshProvisioner._record
    _on_owner_loop = DatabricksSshProvisioner._on_owner_loop

    def _current(self, generation: int) -> Callable[[], bool]:
        """For ``_record``'s ``unless``: a record of an earlier kernel process is dropped."""
        return lambda: generation != self._generation

    async def _workspace(self) -> Any:
        from ..workspace import Workspace

        settings = self.settings
        return await Workspace.for_profile(
            self.profile or "",
            config_file=settings.databricks_config_file,
            retry_timeout=settings.workspace_retry_timeout,
            http_timeout=settings.workspace_http_timeout,
        )

    async def _open_context(self, env: dict[str, str]) -> None:
        """The cluster must run; a new context with its prelude (``context_id`` set)."""
        from ..workspace import WorkspaceError

        try:
            ws = await self._workspace()
            info = await ws.get_cluster(self.cluster_id or "")
        except WorkspaceError as exc:
            raise ProvisionerError(str(exc)) from None
        state = (info.state or "").upper()
        if state not in vocabulary.RUNNING:
            raise ProvisionerError(
                f"Cluster {self.cluster_id} is {state or 'in an unknown state'}: start it "
                "(status bar or `databrickslabs-jupyterlab`) and restart the kernel."
            )
        self._api = api = remote.CommandApi(ws.client, self.cluster_id or "")
        try:
            self.context_id = await asyncio.to_thread(api.create_context)
            answer = await asyncio.to_thread(
                api.run, self.context_id, prelude(env), PRELUDE_TIMEOUT
            )
        except remote.CommandApiError as exc:
            raise ProvisionerError(str(exc)) from None
        results = answer.results
        text = getattr(results, "data", None)
        lines = [
            ln
            for ln in (text if isinstance(text, str) else "").splitlines()
            if ln.startswith(PRELUDE_MARK)
        ]
        if not lines:
            summary = getattr(results, "summary", None) or getattr(answer.status, "value", "")
            raise ProvisionerError(
                short(
                    f"The execution context on cluster {self.cluster_id} failed its first command: {summary}"
                )
            )
        self._spark_there = bool(json.loads(lines[-1][len(PRELUDE_MARK) :]).get("spark"))

    async def _close_context(self) -> None:
        context_id, self.context_id = self.context_id, None
        api = self._api
        if context_id is None or api is None:
            return
        try:
            problem = await asyncio.wait_for(
                asyncio.to_thread(api.destroy_quietly, context_id), CLEANUP_TIMEOUT
            )
        except asyncio.TimeoutError:
            problem = "the workspace did not answer in time"
        if problem:
            self.log.info("Execution context %s not destroyed: %s", context_id, problem)

    # ------------------------------------------------------------------ KernelProvisionerBase
    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self._owner_loop = asyncio.get_running_loop()
        self._stopping = False
        await self._configure()
        self._record("starting", f"Creating an execution context on cluster {self.cluster_id}")
        # Jupyter's own env handling first: the spec's values arrive with $NAME expanded, as
        # for an SSH kernel.
        kwargs = await super().pre_launch(**kwargs)
        local_env = kwargs.get("env") or {}
        names = getattr(self.kernel_spec, "env", None) or {}
        remote_env = {k: str(local_env[k]) for k in names if k in local_env and not secret_like(k)}
        try:
            await self._open_context(remote_env)
        except BaseException as exc:
            await self._close_context()
            message = str(exc) if isinstance(exc, Exception) else None
            self._record("disconnected" if self._started_before else "dead", message)
            raise
        km = self.parent
        connection_file = getattr(km, "connection_file", "") if km is not None else ""
        kwargs["cmd"] = [sys.executable, "-m", KERNEL_MODULE, "-f", connection_file]
        # The local environment (with the spec's env), so DBJL_COMMAND_POLL_MIN and the like
        # reach the kernel; the workspace token is read from the profile there, as here.
        env = dict(kwargs.get("env") or os.environ)
        settings = self.settings
        env.update(
            DBJL_PROFILE=self.profile or "",
            DBJL_CLUSTER_ID=self.cluster_id or "",
            DBJL_COMMAND_CONTEXT=self.context_id or "",
            DBJL_WORKSPACE_RETRY_TIMEOUT=str(settings.workspace_retry_timeout),
            DBJL_WORKSPACE_HTTP_TIMEOUT=str(settings.workspace_http_timeout),
        )
        if settings.databricks_config_file:
            env["DBJL_COMMAND_CONFIG_FILE"] = str(settings.databricks_config_file)
        kwargs["env"] = env
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        read_fd, write_fd = os.pipe()
        env = dict(kwargs.get("env") or {})
        env["DBJL_COMMAND_STATE_FD"] = str(write_fd)
        kwargs["env"] = env
        kwargs["pass_fds"] = (*kwargs.get("pass_fds", ()), write_fd)
        try:
            info = await super().launch_kernel(cmd, **kwargs)
        except BaseException:
            os.close(read_fd)
            await self._close_context()
            self._record("dead", "The local kernel process could not be started")
            raise
        finally:
            os.close(write_fd)
        self._generation += 1
        self._reader = asyncio.ensure_future(self._read_states(read_fd, self._generation))
        return info

    async def post_launch(self, **kwargs: Any) -> None:
        await super().post_launch(**kwargs)
        self._started_before = True
        where = f"execution context {self.context_id} on cluster {self.cluster_id}"
        if self.spark and self._spark_there:
            self._record(
                "running-spark", f"Kernel running in {where} (Command Execution API), with Spark"
            )
        else:
            self._record("running", f"Kernel running in {where} (Command Execution API)")

    async def _read_states(self, fd: int, generation: int) -> None:
        """The kernel's ``state`` lines, to the board; the end of the pipe is the end of the
        kernel process."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            async for line in reader:
                try:
                    message = json.loads(line)
                    state, text = str(message["state"]), str(message.get("message") or "")
                except (ValueError, KeyError, TypeError):
                    continue
                if state == "disconnected" and not self._stopping:
                    # One warning, as for an SSH kernel whose link dropped.
                    self.log.warning("Kernel %s: %s", self.kernel_id, short(text))
                if state in ("disconnected", "running") and not self._stopping:
                    self._record(state, short(text), unless=self._current(generation))
        finally:
            transport.close()
        if not self._stopping and generation == self._generation:
            self._record(
                "dead", "The local kernel process exited", unless=self._current(generation)
            )

    async def shutdown_requested(self, restart: bool = False) -> None:
        self._stopping = True
        await super().shutdown_requested(restart=restart)

    async def kill(self, restart: bool = False) -> None:
        self._stopping = True
        await super().kill(restart=restart)

    async def terminate(self, restart: bool = False) -> None:
        self._stopping = True
        await super().terminate(restart=restart)

    async def cleanup(self, restart: bool = False) -> None:
        self._stopping = True
        await super().cleanup(restart=restart)
        await self._close_context()
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
        if not restart:
            self._record("dead", "Kernel shut down")

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(profile=self.profile, cluster_id=self.cluster_id, context_id=self.context_id)
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self._owner_loop = asyncio.get_running_loop()
        await self._configure()
        self.context_id = provisioner_info.get("context_id")
        if self.context_id:
            self._api = remote.CommandApi((await self._workspace()).client, self.cluster_id or "")

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, 4.0)

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, 30.0)
