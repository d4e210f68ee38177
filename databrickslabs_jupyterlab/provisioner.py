"""A jupyter_client kernel provisioner that runs ipykernel on a Databricks cluster driver.

A kernelspec chooses it (``metadata.kernel_provisioner.provisioner_name`` is
``databricks-ssh-provisioner``; ``metadata.databricks`` names the profile and the cluster), so it
works wherever jupyter_client works: Jupyter Server, ``jupyter console``, nbclient. One start:

* settings: ``config.for_consumer`` (Jupyter config of the kernel manager and of Jupyter's config
  path) with the kernelspec's overrides, one precedence for every consumer;
* the cluster is looked up through the workspace API (public DNS, driver start, state);
* an asyncssh connection is opened with the product's own host key store;
* a driver that lacks a required library (ipykernel) gets it first, once per driver start
  (``driver.DriverAccess.prepare``), with pip's progress on the kernel board;
* ``remote/bootstrap.py`` starts the kernel on the driver and stays its parent
  (``remotekernel``); the five channels are forwarded from local loopback ports;
* unless the spec says ``metadata.databricks.spark: false``, ``dbcontext()`` is queued silently
  in the kernel before the start returns (``sparkattach``), so the first cell runs after it;
* a lost link is judged by ``linkpolicy`` before Jupyter may restart the kernel;
* a stop is bounded whatever the driver or the network do, and a kernel whose controlling
  connection is gone for ``watchdog_grace`` seconds ends on the driver by itself (``kernelstop``).

All SSH traffic runs on one event loop in a background thread of the process: the forwarded
channels keep flowing when the caller's loop is idle (a synchronous ``KernelManager`` runs its
loop only inside calls), and the byte shuffling stays off the Jupyter server's loop. Remote
processes are signalled, checked and removed only through ``ssh``'s "remote processes" section.
Nothing secret leaves this process except the kernel's HMAC key and, for Spark, the cluster's
own py4j gateway port and secret (asked through a REST 1.2 context, ``sparkattach.ask_gateway``),
both on the SSH channel's stdin; the workspace token never leaves.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase

from . import (
    config,
    kernelfiles,
    kernelstop,
    linkpolicy,
    remotekernel,
    sparkattach,
    ssh,
    transport,
    vocabulary,
)
from .kernelstate import board
from .remotekernel import on_ssh_loop, ssh_loop
from .settings import DriverSettings

PROVISIONER_NAME = "databricks-ssh-provisioner"
#: Older import path of the vocabulary's rule (ids and profiles: ``vocabulary.is_*``).
secret_like = vocabulary.secret_like
SPARK_ATTACH_CODE = sparkattach.ATTACH_CODE
PORT_NAMES = remotekernel.PORT_NAMES
#: Exit status reported by ``poll`` when the SSH link to the driver is gone.
LINK_LOST_STATUS = 255
#: Local environment variables passed to the remote kernel (besides the spec's ``env``).
PASSED_ENV = ("JPY_SESSION_NAME",)
#: A dead link must be noticed within this many seconds (keepalives are tightened to fit).
DEAD_LINK_WITHIN = 15.0
CLEANUP_TIMEOUT = kernelstop.CLEANUP_TIMEOUT
SHUTDOWN_BUDGET = kernelstop.SHUTDOWN_BUDGET
SHUTDOWN_INTERRUPT_TIMEOUT = kernelstop.SHUTDOWN_INTERRUPT_TIMEOUT


ProvisionerError = kernelstop.ProvisionerError


class ClusterNotRunning(ProvisionerError):
    """The cluster is not running: a start of the cluster brings the kernel back."""


def _target_text(target: Any) -> str:
    return f"{getattr(target, 'user', '?')}@{getattr(target, 'host', '?')}:{getattr(target, 'port', '?')}"


class DatabricksSshProvisioner(  # type: ignore[misc]
    kernelstop.KernelStop, linkpolicy.LinkWatch, KernelProvisionerBase
):
    """Starts ipykernel on a Databricks driver over SSH and forwards its channels locally."""

    # Remote state (also persisted through get/load_provisioner_info).
    pid: int | None = None
    run_dir: str | None = None
    remote_ports: dict[str, int] | None = None
    use_sudo: bool = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.profile: str | None = None
        self.cluster_id: str | None = None
        self.settings: DriverSettings | None = None
        self.spark = True
        self._spark_timeout = sparkattach.DEFAULT_TIMEOUT
        self._handoff_timeout = sparkattach.HANDOFF_TIMEOUT
        self._cluster: Any = None  # workspace.ClusterInfo of the last lookup
        self._driver_start: int | None = None
        self._target: Any = None
        self._conn: Any = None  # asyncssh.SSHClientConnection, lives on the SSH loop
        self._monitor_task: asyncio.Future[Any] | None = None
        # The heartbeat for the driver's watchdog, and the hold process of a re-attach.
        self._heartbeat: asyncio.Future[Any] | None = None
        self._controller: Any = None
        self._link_task: asyncio.Future[Any] | None = None
        self._listeners: list[Any] = []
        self._exit_status: int | None = None
        self._link_lost = False
        # The SSH loop saw the link close; the owner's loop has not taken note yet.
        self._link_down = False
        # The driver this kernel ran on is gone: nothing is left to stop or clean up on it.
        self._driver_gone = False
        # Counts launches: work started for one kernel process must not touch the next one.
        self._generation = 0
        self._check_future: Any = None  # concurrent.futures.Future of the lost-link check
        self._launched = False
        self._stopping = False
        self._owner_loop: asyncio.AbstractEventLoop | None = None
        # A kernel that could not be removed: (pid, run folder, sudo, driver start).
        self._stale: tuple[int, str | None, bool, int | None] | None = None
        self._unreachable = False
        # When the remote work of the current shutdown must be over (time.monotonic()).
        self._shutdown_deadline: float | None = None
        self._spark_future: Any = None  # concurrent.futures.Future of the attach task
        self._spark_generation = 0

    # ---------------------------------------------------------------- configuration

    async def _configure(self) -> None:
        """Profile, cluster and settings from the kernelspec and the one configuration."""
        databricks = dict(getattr(self.kernel_spec, "metadata", None) or {}).get("databricks")
        databricks = databricks if isinstance(databricks, dict) else {}
        profile, cluster_id = databricks.get("profile"), databricks.get("cluster_id")
        if not vocabulary.is_profile(profile):
            raise ProvisionerError(
                "The kernelspec does not name a Databricks profile (metadata.databricks.profile)."
            )
        if not vocabulary.is_cluster_id(cluster_id):
            raise ProvisionerError(
                "The kernelspec does not name a valid cluster id (metadata.databricks.cluster_id)."
            )
        spark = databricks.get("spark", True)
        if not isinstance(spark, bool):
            raise ProvisionerError(
                "metadata.databricks.spark in the kernelspec must be true or false."
            )
        overrides = {
            k: databricks[k] for k in config.SPEC_OVERRIDES if databricks.get(k) is not None
        }
        parent_config = self.parent.config if self.parent is not None else None
        try:  # reads Jupyter's config files: blocking
            driver_config = await asyncio.to_thread(config.for_consumer, parent_config)
            settings = driver_config.settings(overrides)
            spark_timeout = sparkattach.attach_timeout() if spark else self._spark_timeout
            handoff_timeout = sparkattach.handoff_timeout() if spark else self._handoff_timeout
        except (TypeError, ValueError) as exc:
            raise ProvisionerError(f"Invalid driver settings: {exc}") from None
        # asyncssh gives up after count_max unanswered keepalives, one interval later.
        rounds = max(int(settings.keepalive_count_max), 1) + 1
        if (
            settings.keepalive_interval <= 0
            or settings.keepalive_interval * rounds > DEAD_LINK_WITHIN
        ):
            settings = settings.with_overrides(keepalive_interval=(DEAD_LINK_WITHIN - 1) / rounds)
        self.settings, self.profile, self.cluster_id = settings, profile, cluster_id
        self.spark, self._spark_timeout = spark, spark_timeout
        self._handoff_timeout = handoff_timeout

    def _record(
        self, state: str, message: str | None = None, *, unless: Callable[[], bool] | None = None
    ) -> None:
        """Put the kernel's state on the board, from the loop of whoever manages the kernel.

        ``unless`` is asked again right before the record is made (on the owner's loop): a
        result that became stale on the way is dropped.
        """
        if not (self.kernel_id and self.profile and self.cluster_id):
            return
        args = (self.kernel_id, self.profile, self.cluster_id, state, message)
        state_dir = self.settings.state_path if self.settings is not None else None

        def put() -> None:
            if unless is None or not unless():
                board.set(*args)
                if state_dir is not None:  # for a server in another process (a gateway's)
                    kernelfiles.publisher.publish(state_dir, *args, log=self.log)

        self._on_owner_loop(put)

    def _on_owner_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn`` on the loop of whoever manages the kernel, or right here when that loop
        does not run (a synchronous ``KernelManager`` runs its loop only inside calls)."""
        loop = self._owner_loop
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is not None and loop is not current and loop.is_running():
            loop.call_soon_threadsafe(fn, *args)
        else:
            fn(*args)

    async def _read_cluster(self) -> Any:
        """The cluster as the workspace sees it now (a ``workspace.ClusterInfo``)."""
        from . import workspace

        assert self.profile and self.cluster_id and self.settings
        ws = await workspace.Workspace.for_profile(
            self.profile,
            config_file=self.settings.databricks_config_file,
            retry_timeout=self.settings.workspace_retry_timeout,
            http_timeout=self.settings.workspace_http_timeout,
        )
        return await ws.get_cluster(self.cluster_id)

    async def _lookup_cluster(self) -> None:
        from . import workspace

        try:
            info = await self._read_cluster()
        except workspace.WorkspaceUnavailable as exc:
            # A `Host <cluster_id>` entry may still reach the driver; the host key store then
            # refuses any key change because no newer driver start is known.
            self.log.warning("Workspace not reachable, trying the driver anyway: %s", exc)
            # Without a driver start, the driver counts as unprepared (PreparedDrivers).
            self._cluster = workspace.ClusterInfo.from_dict({"cluster_id": self.cluster_id})
            self._driver_start = None
            return
        except workspace.WorkspaceError as exc:
            raise ProvisionerError(str(exc)) from None
        state = (info.state or "").upper()
        if state not in vocabulary.RUNNING:
            raise ClusterNotRunning(
                f"Cluster {self.cluster_id} is {state or 'in an unknown state'}: start it "
                "(status bar or `databrickslabs-jupyterlab`) and restart the kernel."
            )
        self._cluster, self._driver_start = info, info.driver_start

    # ---------------------------------------------------------------- KernelProvisionerBase

    @property
    def has_process(self) -> bool:
        return self._launched

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self._owner_loop = asyncio.get_running_loop()
        await self._configure()
        self._record("starting", "Starting the kernel on the driver")
        try:
            await self._lookup_cluster()
        except ProvisionerError as exc:
            # A kernel that ran before and waits for its cluster comes back with the cluster's
            # start (which restarts the cluster's disconnected kernels).
            again = isinstance(exc, ClusterNotRunning) and self._generation > 0
            self._record("disconnected" if again else "dead", str(exc))
            raise
        km = self.parent
        if km is not None:
            if getattr(km, "transport", "tcp") != "tcp":
                raise ProvisionerError("Databricks kernels need the tcp transport.")
            km.ip = "127.0.0.1"
        kwargs.pop("extra_arguments", None)
        kwargs.pop("transport_encryption", None)
        kwargs = await super().pre_launch(**kwargs)
        kwargs["cmd"] = list(getattr(self.kernel_spec, "argv", None) or [])
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        base = dict(self.parent.get_connection_info() if self.parent else self.connection_info)
        key = base.get("key", b"")
        conn = {
            "key": key.decode() if isinstance(key, bytes) else key,
            "signature_scheme": base.get("signature_scheme", "hmac-sha256"),
            "kernel_name": base.get("kernel_name", ""),
        }
        local_env = kwargs.get("env") or {}
        names = [*PASSED_ENV, *(getattr(self.kernel_spec, "env", None) or {})]
        env = {k: str(local_env[k]) for k in names if k in local_env and not secret_like(k)}
        assert self.settings is not None
        env.update(
            DBJL_REMOTE_KERNEL="1",
            DBJL_PROFILE=self.profile or "",
            DBJL_CLUSTER_ID=self.cluster_id or "",
            PYSPARK_PYTHON=self.settings.driver_python,
        )
        preferred = {n: int(base.get(n) or 0) for n in PORT_NAMES}
        self._cancel_spark_attach()
        self._cancel_link_check()
        self._generation += 1
        self._exit_status = None
        self._link_lost = self._link_down = self._driver_gone = False
        self._stopping = self._unreachable = False
        self._shutdown_deadline = None
        try:
            ports = await on_ssh_loop(self._launch_remote(conn, env, preferred))
        except BaseException as exc:
            self._record("dead", str(exc) if isinstance(exc, Exception) else None)
            raise
        self._launched = True
        info: dict[str, Any] = dict(base, **ports, ip="127.0.0.1", transport="tcp")
        self.connection_info = info
        return info

    async def post_launch(self, **kwargs: Any) -> None:
        if self._link_lost or self._link_down:
            self._record("disconnected", "The SSH connection to the driver was lost")
        elif self._exit_status is None:
            where = _target_text(self._target)
            if self.spark:
                self._record("running", f"Kernel running on {where}, attaching Spark")
                await self._start_spark_attach()
            else:
                self._record("running", f"Kernel running on {where}")

    async def poll(self) -> int | None:
        if not self._launched:
            return 0
        if self._exit_status is not None:
            return self._exit_status
        if self._link_lost:
            return LINK_LOST_STATUS
        if self._link_down:
            return None  # only until the owner's loop takes note (see _link_lost_noticed)
        if self._conn is None and self.pid is not None:
            # State loaded from another process: ask the driver directly.
            try:
                work = self._remote(ssh.process_alive, self.pid)
                alive = await on_ssh_loop(work, self._remaining(CLEANUP_TIMEOUT))
            except Exception:
                return LINK_LOST_STATUS
            return None if alive else 0
        return None

    async def wait(self) -> int | None:
        while True:
            status = await self.poll()
            if status is not None:
                break
            await asyncio.sleep(0.05)
        self._launched = False
        return status

    async def send_signal(self, signum: int) -> None:
        if not self._launched or self.pid is None or self._exit_status is not None:
            return
        if signum == 0 or self._link_lost:
            return  # a lost link cannot carry a signal; poll() already reports the kernel gone
        name = signal.Signals(signum).name.removeprefix("SIG")
        if name not in ssh.SIGNAL_NAMES:
            raise ProvisionerError(f"Signal {signum} cannot be sent to a remote kernel.")
        if self._shutting_down():
            # jupyter_client interrupts a kernel before it asks it to shut down: a failure here
            # would end the shutdown with an exception (and a server's stop with it, for good).
            if self._unreachable:
                return
            try:
                work = self._remote(ssh.signal_process, self.pid, name)
                await on_ssh_loop(work, self._remaining(SHUTDOWN_INTERRUPT_TIMEOUT))
            except Exception as exc:
                self.log.warning(
                    "Could not signal the kernel on cluster %s before its shutdown: %s",
                    self.cluster_id,
                    exc,
                )
            return
        try:
            await on_ssh_loop(self._remote(ssh.signal_process, self.pid, name), CLEANUP_TIMEOUT)
        except TimeoutError as exc:
            raise ProvisionerError(f"The kernel could not be signalled: {exc}.") from None

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(
            pid=self.pid,
            run_dir=self.run_dir,
            remote_ports=self.remote_ports,
            use_sudo=self.use_sudo,
            profile=self.profile,
            cluster_id=self.cluster_id,
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self._owner_loop = asyncio.get_running_loop()
        await self._configure()
        self.pid = provisioner_info.get("pid")
        self.run_dir = provisioner_info.get("run_dir")
        self.remote_ports = provisioner_info.get("remote_ports")
        self.use_sudo = bool(provisioner_info.get("use_sudo"))
        self._launched = self.pid is not None
        if self._launched:
            self._generation += 1
            await self._lookup_cluster()
            await on_ssh_loop(self._reattach())

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, 4.0)

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, 30.0)

    # ---------------------------------------------------------------- Spark attach

    async def _start_spark_attach(self) -> None:
        """Queue the silent attach (see ``sparkattach``): returns once the kernel works on it."""
        self._cancel_spark_attach()
        generation = self._spark_generation
        current = lambda: self._attach_current(generation)  # noqa: E731
        attach = sparkattach.SparkAttach(
            self.connection_info,
            self._spark_timeout,
            where=_target_text(self._target),
            current=current,
            interrupt=lambda: self._remote(ssh.signal_process, self.pid, "INT"),
            interrupt_timeout=CLEANUP_TIMEOUT,
        )

        def on_outcome(state: str, message: str) -> None:
            if state != "running-spark":
                self.log.info("Cluster %s: %s", self.cluster_id, message)
            self._record(state, message, unless=lambda: not current())

        self._spark_future, queued = sparkattach.start(
            attach, ssh_loop(), remotekernel.READY_TIMEOUT, on_outcome
        )
        await asyncio.wrap_future(queued)

    def _cancel_spark_attach(self) -> None:
        """Forget a running attach: it will not touch the board or the kernel any more."""
        self._spark_generation += 1
        future, self._spark_future = self._spark_future, None
        if future is not None and not future.done():
            future.cancel()

    def _attach_current(self, generation: int) -> bool:
        return (
            generation == self._spark_generation
            and self._launched
            and not self._stopping
            and not self._link_lost
            and self._exit_status is None
        )

    # ---------------------------------------------------------------- SSH loop side

    def _ssh_target(self) -> Any:
        """The route to the driver from the cluster as last read (blocking: a thread)."""
        assert self.settings is not None and self.profile and self.cluster_id
        if self._cluster is None:
            return ssh.resolve_target(self.cluster_id, None, self.profile, self.settings)
        return transport.ssh_target(self._cluster, self.profile, self.settings)

    async def _connect(self) -> Any:
        if self._conn is not None and not self._link_lost:
            return self._conn
        assert self.settings is not None and self.profile and self.cluster_id
        target = await asyncio.to_thread(self._ssh_target)
        host_keys = ssh.HostKeyStore.for_profile(self.settings, self.profile)
        conn = await ssh.connect(
            target, self.settings, host_keys=host_keys, driver_start=self._driver_start
        )
        self._target, self._conn, self._link_lost = target, conn, False
        self.use_sudo = self.settings.use_sudo(target.user)
        self._link_task = asyncio.ensure_future(self._watch_link(conn))  # keep a reference
        return conn

    async def _remote(
        self, action: Callable[..., Any], *args: Any, sudo: bool | None = None
    ) -> Any:
        """``action(conn, *args, sudo=...)`` from ``ssh``'s remote processes, on the link."""
        conn = await self._connect()
        return await action(conn, *args, sudo=self.use_sudo if sudo is None else sudo)

    async def _prepare_driver(self, conn: Any) -> None:
        """A driver without ipykernel would fail the start with a bare traceback: install it."""
        assert self.settings is not None
        wanted = ", ".join(self.settings.driver_requirements)

        def progress(line: str) -> None:
            text = f"Installing {wanted} on the driver: {line}"
            self._record("starting", sparkattach.short(text))

        try:
            await remotekernel.prepare_driver(
                self.settings, conn, self._target.user, self._cluster, progress
            )
        except remotekernel.LaunchError as exc:
            raise ProvisionerError(
                f"The driver of cluster {self.cluster_id} could not be prepared for kernels: {exc}"
            ) from None

    async def _spark_handoff(self) -> dict[str, Any]:
        assert self.settings is not None and self.profile and self.cluster_id
        gateway = await sparkattach.handoff(
            self.profile, self.cluster_id, self._driver_start, self.settings, self._handoff_timeout
        )
        if "error" in gateway:
            self.log.info("Cluster %s: no gateway hand-off: %s", self.cluster_id, gateway["error"])
        return gateway

    async def _launch_remote(
        self, conn_info: dict[str, Any], env: dict[str, str], preferred: dict[str, int]
    ) -> dict[str, int]:
        # Asked while the SSH link opens and the driver is prepared.
        handoff = asyncio.ensure_future(self._spark_handoff()) if self.spark else None
        try:
            conn = await self._connect()
            if self._stale is not None:
                await self._kill_stale()
            await self._prepare_driver(conn)
            gateway = await handoff if handoff is not None else None
        except BaseException:
            if handoff is not None:
                handoff.cancel()
            raise
        assert self.settings is not None

        def on_pid(pid: int | None, run_dir: str | None) -> None:
            self.pid, self.run_dir = pid, run_dir

        try:
            started = await remotekernel.launch(
                conn,
                self.settings.driver_python,
                conn_info,
                env,
                sudo=self.use_sudo,
                on_pid=on_pid,
                spark_gateway=gateway,
                grace=self.settings.watchdog_grace,
            )
        except (remotekernel.LaunchError, ssh.SshError) as exc:
            raise ProvisionerError(
                f"The kernel could not be started on cluster {self.cluster_id} with "
                f"{self.settings.driver_python}: {exc}"
            ) from None
        self.remote_ports = started.ports
        monitor = self._watch_monitor(started.process, self._generation)
        self._monitor_task = asyncio.ensure_future(monitor)
        self._control(started.process)
        try:
            return await self._forward_all(conn, started.ports, preferred)
        except BaseException:
            # A start that fails here leaves nothing behind: the kernel is removed at once.
            await self._give_up_started(started.pid, started.run_dir)
            raise

    async def _forward_all(
        self, conn: Any, ports: dict[str, int], preferred: dict[str, int]
    ) -> dict[str, int]:
        await self._close_listeners()
        local, self._listeners = await remotekernel.forward(conn, ports, preferred)
        return local

    async def _watch_monitor(self, process: Any, generation: int) -> None:
        status = await remotekernel.exit_status(process)
        if generation != self._generation:
            return  # a restart's old kernel, reported after the new one started
        if status is not None:  # without it the link dropped; _watch_link reports that
            # On the board before poll() reports it: the restarter's "starting" comes after.
            if not self._stopping:
                self._record("dead", f"The kernel process on the driver exited (status {status})")
            self._exit_status = status

    async def _kill_stale(self) -> None:
        stale, self._stale = self._stale, None
        if stale is None:
            return
        pid, run_dir, sudo, driver_start = stale
        if driver_start and self._driver_start and driver_start != self._driver_start:
            return  # another driver now: the kernel went with the old one, its PID may be taken
        try:
            await self._remote(ssh.remove_process, pid, run_dir, sudo=sudo)
        except Exception as exc:
            self.log.warning("Could not remove an earlier kernel from the driver: %s", exc)

    async def _reattach(self) -> None:
        """After load_provisioner_info: connect again and re-open the local forwards."""
        if not self.remote_ports:
            return
        conn = await self._connect()
        preferred = {n: int(self.connection_info.get(n) or 0) for n in PORT_NAMES}
        local = await self._forward_all(conn, self.remote_ports, preferred)
        self.connection_info = dict(self.connection_info, **local)
        if self.run_dir and self.settings is not None:
            # This process controls the kernel now: its driver-side watchdog must see it.
            python = self.settings.driver_python
            process = await remotekernel.hold(conn, python, self.run_dir, sudo=self.use_sudo)
            self._control(process, hold=True)
