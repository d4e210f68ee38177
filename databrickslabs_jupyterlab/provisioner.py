"""A jupyter_client kernel provisioner that runs ipykernel on a Databricks cluster driver.

The provisioner is chosen by a kernelspec whose ``metadata.kernel_provisioner.provisioner_name``
is ``databricks-ssh-provisioner`` and whose ``metadata.databricks`` names the profile and the
cluster. It works wherever jupyter_client works (Jupyter Server, ``jupyter console``, nbclient):

* the cluster is looked up through the workspace API (public DNS, driver start time, state);
* an asyncssh connection is opened with the product's own known-hosts store, which accepts a new
  host key only after a newer driver start;
* a small bootstrap script runs on the driver: it reads the connection info (with the HMAC key)
  from stdin, writes it to a 0600 file in a private run folder, starts
  ``<driver python> -m ipykernel_launcher`` on 127.0.0.1 with ports chosen by the kernel itself
  (a port taken between choice and bind cannot happen: the kernel binds port 0), reports the
  kernel's PID and ports, and then stays as the kernel's parent to report its exit status and
  remove the run folder;
* the five channels are forwarded from local loopback ports to the kernel's ports;
* unless the spec says ``metadata.databricks.spark: false``, a background task then runs
  ``dbcontext()`` silently in the kernel through the forwarded ports (the user's first cell
  queues behind it). Success puts ``running-spark`` on the board; a failure leaves ``running``
  with a sentence saying why. ``launch_kernel`` does not wait for it; a restart or shutdown
  cancels it, and ``DBJL_SPARK_ATTACH_TIMEOUT`` (seconds, default 120) bounds it: when it runs
  out the kernel is interrupted so that queued cells go on;
* when the SSH link dies (noticed within seconds through keepalives), ``poll`` reports the
  kernel gone and the board says ``disconnected``. Jupyter's auto-restart is held back until the
  cluster has been looked at: it goes ahead only when the cluster still runs on the same driver
  and SSH answers; otherwise (cluster terminated, driver replaced, no answer) the kernel stays
  ``disconnected`` with one warning in the log, until a start or reconfigure of the cluster
  restarts it. Nothing is then sent to a driver that is gone.

All SSH traffic runs on one event loop in a background thread of the process. That keeps the
forwarded channels flowing when the caller's loop is idle (a synchronous ``KernelManager`` only
runs its loop inside calls) and keeps the byte shuffling off the Jupyter server's loop.

Nothing secret leaves this process except the kernel's HMAC key, which travels on the SSH
channel's stdin. The remote kernel's environment is built from scratch-filtered driver variables
plus a few markers; the workspace token is never part of it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import re
import shlex
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase

from . import sparkattach
from .kernelstate import board
from .settings import DriverSettings

T = TypeVar("T")

PROVISIONER_NAME = "databricks-ssh-provisioner"
CLUSTER_ID_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,99}$")
PROFILE_PATTERN = re.compile(r"^[^\s\[\]]{1,200}$")
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
#: Settings a kernelspec may override in ``metadata.databricks``.
SPEC_OVERRIDES = ("driver_python", "sudo", "ssh_user", "ssh_port", "identity_file")
#: Exit status reported by ``poll`` when the SSH link to the driver is gone.
LINK_LOST_STATUS = 255
#: Local environment variables passed to the remote kernel (nothing else is).
PASSED_ENV = ("JPY_SESSION_NAME",)
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|_KEY$", re.IGNORECASE)
_SIGNAL_NAMES = {
    signal.SIGINT: "INT",
    signal.SIGTERM: "TERM",
    signal.SIGKILL: "KILL",
    signal.SIGHUP: "HUP",
    signal.SIGQUIT: "QUIT",
    signal.SIGUSR1: "USR1",
    signal.SIGUSR2: "USR2",
}
READY_TIMEOUT = 60.0
#: A dead link must be noticed within this many seconds (keepalives are tightened to fit).
DEAD_LINK_WITHIN = 15.0
#: Upper bound for stopping or cleaning up a kernel whose driver may be gone.
CLEANUP_TIMEOUT = 8.0
#: Upper bound for finding out, after a lost link, whether the cluster and its driver still run.
LINK_CHECK_TIMEOUT = 20.0
#: Databricks states in which the driver runs.
RUNNING_STATES = frozenset({"RUNNING", "RESIZING"})
LAUNCH_ATTEMPTS = 3
#: Default bound (seconds) for attaching Spark after a start; env ``DBJL_SPARK_ATTACH_TIMEOUT``.
SPARK_ATTACH_TIMEOUT = 120.0
SPARK_ATTACH_TIMEOUT_ENV = "DBJL_SPARK_ATTACH_TIMEOUT"
#: Run silently in a new kernel whose spec enables Spark. ``dbcontext`` stays in the namespace
#: so that the user can run it again.
SPARK_ATTACH_CODE = (
    "from databrickslabs_jupyterlab.connect import dbcontext\ndbcontext(quiet=True)\n"
)
#: Longest error text from the kernel that goes into the board's message.
MESSAGE_LIMIT = 600

# Runs on the driver as ``<driver python> -c BOOTSTRAP``. It speaks JSON lines on stdout and is
# kept compatible with the oldest driver Pythons (3.8). The request arrives on stdin.
BOOTSTRAP = r"""
import json, os, re, shutil, signal, subprocess, sys, tempfile, time
req = json.loads(sys.stdin.read())
def say(**kw):
    try:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()
    except Exception:
        pass
run = tempfile.mkdtemp(prefix="dbjl-kernel-")
os.chmod(run, 0o700)
cf = os.path.join(run, "kernel.json")
names = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
conn = dict(req["conn"], ip="127.0.0.1", transport="tcp")
for n in names:
    conn[n] = 0
fd = os.open(cf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(conn, f)
secret = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|_KEY$", re.I)
env = dict((k, v) for k, v in os.environ.items() if not secret.search(k))
env.update(req.get("env") or {})
helper = req.get("helper")
if helper:
    import importlib.util
    if importlib.util.find_spec("databrickslabs_jupyterlab") is None:
        pkg = os.path.join(run, "lib", "databrickslabs_jupyterlab")
        os.makedirs(pkg)
        for name, text in helper.items():
            with open(os.path.join(pkg, name), "w") as f:
                f.write(text)
        paths = [os.path.join(run, "lib")] + [p for p in [env.get("PYTHONPATH")] if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
log_path = os.path.join(run, "kernel.log")
log = open(log_path, "ab")
cwd = os.path.expanduser("~")
if not os.path.isdir(cwd):
    cwd = "/"
child = subprocess.Popen(
    [sys.executable, "-m", "ipykernel_launcher", "-f", cf] + list(req.get("args") or []),
    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
    close_fds=True, start_new_session=True)
say(pid=child.pid, run_dir=run)
def tail():
    try:
        with open(log_path, "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")
    except OSError:
        return ""
def finish(rc, text=None):
    shutil.rmtree(run, ignore_errors=True)
    say(exit=rc, log=text)
    sys.exit(0)
deadline = time.time() + float(req.get("ready_timeout") or 60)
delay = 0.005
while True:
    rc = child.poll()
    if rc is not None:
        finish(rc, tail())
    try:
        with open(cf) as f:
            info = json.load(f)
        if all(info.get(n) for n in names):
            say(ports=dict((n, info[n]) for n in names))
            break
    except (OSError, ValueError):
        pass
    if time.time() > deadline:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            pass
        child.wait()
        finish(-9, "the kernel did not open its ports in time\n" + tail())
    time.sleep(delay)
    delay = min(delay * 1.5, 0.05)
try:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
except Exception:
    pass
finish(child.wait())
"""


class ProvisionerError(RuntimeError):
    """A kernel could not be started or reached on the driver; the message is for a person."""


class ClusterNotRunning(ProvisionerError):
    """The cluster is not running: a start of the cluster brings the kernel back."""


# --------------------------------------------------------------------------------------------
# The process-wide SSH loop


class _SshLoop:
    """One event loop in a daemon thread where every SSH connection of this process lives."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="databricks-ssh-kernels", daemon=True
                )
                thread.start()
                cls._loop = loop
            return cls._loop


async def _on_ssh_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the SSH loop and await its result from the caller's loop."""
    loop = _SshLoop.get()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:  # pragma: no cover - always called from a coroutine
        running = None
    if running is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def secret_like(name: str) -> bool:
    """Whether an environment variable's name looks like it holds a credential (never sent to
    the driver, never written into a kernelspec)."""
    return bool(_SECRET_NAME.search(name))


def _helper_files() -> dict[str, str]:
    """The kernel-side helper, shipped to drivers that do not have this package installed."""
    here = Path(__file__).with_name("connect.py")
    try:
        return {"__init__.py": "", "connect.py": here.read_text()}
    except OSError:
        return {}


def spark_attach_timeout(environ: dict[str, str] | None = None) -> float:
    """Seconds the background Spark attach may take (``DBJL_SPARK_ATTACH_TIMEOUT``, default 120)."""
    raw = (os.environ if environ is None else environ).get(SPARK_ATTACH_TIMEOUT_ENV, "")
    if not raw.strip():
        return SPARK_ATTACH_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ProvisionerError(
            f"{SPARK_ATTACH_TIMEOUT_ENV} must be a positive number of seconds, not {raw!r}."
        )
    return value


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _target_text(target: Any) -> str:
    return f"{getattr(target, 'user', '?')}@{getattr(target, 'host', '?')}:{getattr(target, 'port', '?')}"


# --------------------------------------------------------------------------------------------


class DatabricksSshProvisioner(KernelProvisionerBase):  # type: ignore[misc]
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
        self._public_dns: str | None = None
        self._driver_start: int | None = None
        self._target: Any = None
        self._conn: Any = None  # asyncssh.SSHClientConnection, lives on the SSH loop
        self._monitor: Any = None  # the bootstrap process
        self._monitor_task: asyncio.Future[Any] | None = None
        self._link_task: asyncio.Future[Any] | None = None
        self._listeners: list[Any] = []
        self._exit_status: int | None = None
        self._link_lost = False
        # The SSH loop saw the link close; the owner's loop has not taken note yet.
        self._link_down = False
        # The driver this kernel ran on is gone (cluster terminated or driver replaced): there is
        # nothing left to stop or clean up on it.
        self._driver_gone = False
        # Counts launches (and re-attachments): work started for one kernel process must not
        # touch the next one.
        self._generation = 0
        self._check_future: Any = None  # concurrent.futures.Future of the lost-link check
        self._launched = False
        self._stopping = False
        self._owner_loop: asyncio.AbstractEventLoop | None = None
        # A kernel that could not be removed: (pid, run folder, sudo, driver start).
        self._stale: tuple[int, str | None, bool, int | None] | None = None
        self._unreachable = False
        self.spark = True
        self._spark_timeout = SPARK_ATTACH_TIMEOUT
        self._spark_future: Any = None  # concurrent.futures.Future of the attach task
        self._spark_generation = 0

    # ---------------------------------------------------------------- configuration

    def _read_spec(self) -> None:
        metadata = dict(getattr(self.kernel_spec, "metadata", None) or {})
        databricks = metadata.get("databricks") or {}
        profile = databricks.get("profile")
        cluster_id = databricks.get("cluster_id")
        if not isinstance(profile, str) or not PROFILE_PATTERN.match(profile):
            raise ProvisionerError(
                "The kernelspec does not name a Databricks profile (metadata.databricks.profile)."
            )
        if not isinstance(cluster_id, str) or not CLUSTER_ID_PATTERN.match(cluster_id):
            raise ProvisionerError(
                "The kernelspec does not name a valid cluster id (metadata.databricks.cluster_id)."
            )
        spark = databricks.get("spark", True)
        if not isinstance(spark, bool):
            raise ProvisionerError(
                "metadata.databricks.spark in the kernelspec must be true or false."
            )
        overrides = {k: databricks[k] for k in SPEC_OVERRIDES if databricks.get(k) is not None}
        try:
            settings = DriverSettings.from_env(**overrides)
        except (TypeError, ValueError) as exc:
            raise ProvisionerError(f"Invalid driver settings in the kernelspec: {exc}") from None
        # asyncssh gives up after count_max unanswered keepalives, one interval later.
        rounds = max(int(settings.keepalive_count_max), 1) + 1
        if (
            settings.keepalive_interval <= 0
            or settings.keepalive_interval * rounds > DEAD_LINK_WITHIN
        ):
            settings = settings.with_overrides(keepalive_interval=(DEAD_LINK_WITHIN - 1) / rounds)
        self.settings = settings
        self.profile = profile
        self.cluster_id = cluster_id
        self.spark = spark
        if spark:
            self._spark_timeout = spark_attach_timeout()

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

        def put() -> None:
            if unless is None or not unless():
                board.set(*args)

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

        assert self.profile and self.cluster_id
        ws = await workspace.Workspace.for_profile(self.profile)
        return await ws.get_cluster(self.cluster_id)

    async def _lookup_cluster(self) -> None:
        """Public DNS and driver start from the workspace (on the caller's loop)."""
        from . import workspace

        try:
            info = await self._read_cluster()
        except workspace.WorkspaceUnavailable as exc:
            # A `Host <cluster_id>` entry may still reach the driver; the host key store then
            # refuses any key change because no newer driver start is known.
            self.log.warning("Workspace not reachable, trying the driver anyway: %s", exc)
            self._public_dns = None
            self._driver_start = None
            return
        except workspace.WorkspaceError as exc:
            raise ProvisionerError(str(exc)) from None
        state = (info.state or "").upper()
        if state not in RUNNING_STATES:
            raise ClusterNotRunning(
                f"Cluster {self.cluster_id} is {state or 'in an unknown state'}: start it "
                "(status bar or `databrickslabs-jupyterlab`) and restart the kernel."
            )
        self._public_dns = info.public_dns
        self._driver_start = info.driver_start

    # ---------------------------------------------------------------- KernelProvisionerBase

    @property
    def has_process(self) -> bool:
        return self._launched

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self._owner_loop = asyncio.get_running_loop()
        self._read_spec()
        self._record("starting", "Starting the kernel on the driver")
        try:
            await self._lookup_cluster()
        except ProvisionerError as exc:
            # A kernel that ran before and waits for its cluster can come back with the
            # cluster's start (which restarts the cluster's disconnected kernels).
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
        km = self.parent
        base: dict[str, Any] = {}
        if km is not None:
            base = dict(km.get_connection_info())
        else:
            base = dict(self.connection_info)
        key = base.get("key", b"")
        if isinstance(key, bytes):
            key = key.decode()
        conn = {
            "key": key,
            "signature_scheme": base.get("signature_scheme", "hmac-sha256"),
            "kernel_name": base.get("kernel_name", ""),
        }
        local_env = kwargs.get("env") or {}
        env = {k: str(local_env[k]) for k in PASSED_ENV if k in local_env}
        for name in getattr(self.kernel_spec, "env", None) or {}:
            if name in local_env and not secret_like(name):
                env[name] = str(local_env[name])  # substituted by pre_launch
        env = {k: v for k, v in env.items() if not secret_like(k)}
        assert self.settings is not None
        env.update(
            {
                "DBJL_REMOTE_KERNEL": "1",
                "DBJL_PROFILE": self.profile or "",
                "DBJL_CLUSTER_ID": self.cluster_id or "",
                "PYSPARK_PYTHON": self.settings.driver_python,
            }
        )
        preferred = {n: int(base.get(n) or 0) for n in PORT_NAMES}
        self._cancel_spark_attach()
        self._cancel_link_check()
        self._generation += 1
        self._exit_status = None
        self._link_lost = False
        self._link_down = False
        self._driver_gone = False
        self._stopping = False
        self._unreachable = False
        try:
            ports = await _on_ssh_loop(self._launch_remote(conn, env, preferred))
        except BaseException as exc:
            self._record("dead", str(exc) if isinstance(exc, Exception) else None)
            raise
        self._launched = True
        info: dict[str, Any] = dict(base)
        info.update(ports)
        info.update(ip="127.0.0.1", transport="tcp")
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
                alive = await _on_ssh_loop(self._remote_alive())
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
        name = _SIGNAL_NAMES.get(signal.Signals(signum))
        if name is None:
            raise ProvisionerError(f"Signal {signum} cannot be sent to a remote kernel.")
        await _on_ssh_loop(self._signal(name))

    async def kill(self, restart: bool = False) -> None:
        await self._stop("KILL")

    async def terminate(self, restart: bool = False) -> None:
        await self._stop("TERM")

    async def shutdown_requested(self, restart: bool = False) -> None:
        self._stopping = True
        self._cancel_spark_attach()
        self._cancel_link_check()

    async def cleanup(self, restart: bool = False) -> None:
        self._cancel_spark_attach()
        self._cancel_link_check()
        pid, run_dir, sudo = self.pid, self.run_dir, self.use_sudo
        gone = self._exit_status is not None or self._driver_gone
        if self._driver_gone:
            run_dir = None  # it went with the driver
        try:
            if self._unreachable:
                # Stopping already failed to reach the driver: do not wait for it again.
                raise ProvisionerError("the driver did not answer the stop request")
            await _on_ssh_loop(
                asyncio.wait_for(
                    self._cleanup_remote(pid, run_dir, sudo, gone, close=not restart),
                    CLEANUP_TIMEOUT,
                )
            )
        except Exception as exc:  # the link may be gone: remember what to remove next time
            await _on_ssh_loop(self._close_link())
            self.log.warning("Could not clean up the kernel on the driver: %s", exc)
            if pid is not None and not gone:
                self._stale = (pid, run_dir, sudo, self._driver_start)
        self.pid = None
        self.run_dir = None
        self.remote_ports = None
        self._launched = False
        if not restart:
            self._record("dead", "Kernel shut down")

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(
            {
                "pid": self.pid,
                "run_dir": self.run_dir,
                "remote_ports": self.remote_ports,
                "use_sudo": self.use_sudo,
                "profile": self.profile,
                "cluster_id": self.cluster_id,
            }
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self._owner_loop = asyncio.get_running_loop()
        self._read_spec()
        self.pid = provisioner_info.get("pid")
        self.run_dir = provisioner_info.get("run_dir")
        self.remote_ports = provisioner_info.get("remote_ports")
        self.use_sudo = bool(provisioner_info.get("use_sudo"))
        self._launched = self.pid is not None
        if self._launched:
            self._generation += 1
            await self._lookup_cluster()
            await _on_ssh_loop(self._reattach())

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, 4.0)

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, 30.0)

    # ---------------------------------------------------------------- Spark attach

    async def _start_spark_attach(self) -> None:
        """Queue the silent attach in the new kernel (see ``sparkattach``): returns once the
        kernel works on it, while its outcome is awaited on the SSH loop."""
        self._cancel_spark_attach()
        generation = self._spark_generation
        attach = sparkattach.SparkAttach(
            self.connection_info,
            self._spark_timeout,
            where=_target_text(self._target),
            current=lambda: self._attach_current(generation),
            interrupt=lambda: self._signal("INT"),
            interrupt_timeout=CLEANUP_TIMEOUT,
        )
        queued: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._spark_future = asyncio.run_coroutine_threadsafe(
            self._attach_spark(attach, generation, queued), _SshLoop.get()
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

    async def _attach_spark(
        self,
        attach: sparkattach.SparkAttach,
        generation: int,
        queued: concurrent.futures.Future[None],
    ) -> None:
        outcome: tuple[str, str] | None
        try:
            try:
                await attach.queue(READY_TIMEOUT)
            finally:
                if not queued.done():
                    queued.set_result(None)
            outcome = await attach.outcome()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client itself failed: the kernel may still be fine
            self.log.warning("Spark attach on cluster %s failed: %s", self.cluster_id, exc)
            outcome = "running", sparkattach.short(f"Spark could not be attached: {exc}")
        finally:
            attach.close()
        if outcome is not None and self._attach_current(generation):
            state, message = outcome
            if state != "running-spark":
                self.log.info("Cluster %s: %s", self.cluster_id, message)
            self._record(state, message, unless=lambda: not self._attach_current(generation))

    # ---------------------------------------------------------------- SSH loop side

    async def _connect(self) -> Any:
        from . import ssh

        if self._conn is not None and not self._link_lost:
            return self._conn
        assert self.settings is not None and self.profile and self.cluster_id
        target = ssh.resolve_target(self.cluster_id, self._public_dns, self.profile, self.settings)
        host_keys = ssh.HostKeyStore(self.settings.state_path)
        conn = await ssh.connect(
            target, self.settings, host_keys=host_keys, driver_start=self._driver_start
        )
        self._target = target
        self._conn = conn
        self._link_lost = False
        self.use_sudo = self.settings.use_sudo(target.user)
        self._link_task = asyncio.ensure_future(self._watch_link(conn))
        return conn

    async def _watch_link(self, conn: Any) -> None:
        try:
            await conn.wait_closed()
        except Exception:
            pass
        if conn is not self._conn:
            return
        self._conn = None
        if self._launched and self._exit_status is None and not self._stopping:
            # poll() reports the kernel gone only once the owner's loop has paused Jupyter's
            # auto-restart, so that no restart starts before the cluster has been looked at.
            self._link_down = True
            self._on_owner_loop(self._link_lost_noticed, self._generation)
        elif self._launched and self._exit_status is None:
            self._link_lost = True

    # ---------------------------------------------------------------- lost link

    def _link_lost_noticed(self, generation: int) -> None:
        """On the owner's loop: the kernel is gone for now; find out whether it may come back.

        Jupyter's restarter (a jupyter_server kernel has one) would restart a kernel that is not
        alive at once, and with the cluster terminated every attempt fails with a traceback. So
        it is paused here, before poll() says the kernel is gone, and resumed only when the
        cluster still runs on the same driver and SSH answers again. Otherwise the kernel stays
        ``disconnected`` until a start or reconfigure of the cluster restarts it. Whoever has no
        restarter (nbclient, ``jupyter console``) just sees ``is_alive()`` turn false.
        """
        if generation != self._generation or not self._link_down:
            return
        self._pause_restarter()
        self._link_down = False
        self._link_lost = True
        if self._stopping or self._exit_status is not None:
            return
        self._record("disconnected", "The SSH connection to the driver was lost")
        self._cancel_link_check()
        self._check_future = asyncio.run_coroutine_threadsafe(
            self._check_lost_link(generation), _SshLoop.get()
        )

    def _link_check_current(self, generation: int) -> bool:
        return (
            generation == self._generation
            and self._link_lost
            and not self._stopping
            and self._exit_status is None
        )

    async def _check_lost_link(self, generation: int) -> None:
        """Look at the cluster and its driver, then let Jupyter restart the kernel or not."""
        from . import ssh

        cid = self.cluster_id
        advice = "start the cluster (status bar or `databrickslabs-jupyterlab`) to restart it"
        restart = False
        try:
            info = await asyncio.wait_for(self._read_cluster(), LINK_CHECK_TIMEOUT)
        except Exception as exc:  # WorkspaceError, timeout: the state is unknown
            reason = f"the state of cluster {cid} could not be read ({exc or 'timed out'})"
            advice = "restart the kernel once the workspace answers"
        else:
            state = (info.state or "").upper() or "in an unknown state"
            replaced = bool(
                info.driver_start and self._driver_start and info.driver_start != self._driver_start
            )
            if state not in RUNNING_STATES:
                self._driver_gone = True
                reason = f"cluster {cid} is {state}"
            elif replaced:
                self._driver_gone = True
                reason = f"the driver of cluster {cid} was replaced"
                advice = "reconfigure the cluster (status bar) to restart it"
            else:
                assert self.settings is not None
                try:
                    problem = await asyncio.wait_for(
                        ssh.check_reachable(
                            self._target,
                            self.settings,
                            host_keys=ssh.HostKeyStore(self.settings.state_path),
                            driver_start=self._driver_start,
                        ),
                        LINK_CHECK_TIMEOUT,
                    )
                except Exception as exc:
                    problem = str(exc) or "the SSH login timed out"
                if problem is None:
                    restart = True
                    reason = f"cluster {cid} still runs"
                else:
                    reason = f"cluster {cid} runs but its driver does not answer: {problem}"
                    advice = "restart the kernel once the driver answers"
        if not self._link_check_current(generation):
            return
        if restart:
            self.log.warning(
                "Kernel %s lost its SSH connection to the driver; %s, so %s.",
                self.kernel_id,
                reason,
                "Jupyter restarts it" if self._auto_restarts() else "it can be restarted",
            )
            self._record(
                "disconnected",
                "The SSH connection to the driver was lost; restarting the kernel",
                unless=lambda: not self._link_check_current(generation),
            )
            self._on_owner_loop(self._resume_restarter, generation)
        else:
            self.log.warning(
                "Kernel %s lost its SSH connection to the driver: %s. It is not restarted "
                "automatically; %s.",
                self.kernel_id,
                reason,
                advice,
            )
            message = _short(f"{reason[:1].upper()}{reason[1:]}; {advice}.")
            self._record(
                "disconnected", message, unless=lambda: not self._link_check_current(generation)
            )

    def _cancel_link_check(self) -> None:
        future, self._check_future = self._check_future, None
        if future is not None and not future.done():
            future.cancel()

    def _auto_restarts(self) -> bool:
        """Whether the kernel's manager restarts a kernel that died (jupyter_server's does)."""
        from jupyter_client.ioloop import AsyncIOLoopKernelManager, IOLoopKernelManager

        km = self.parent
        return isinstance(km, (AsyncIOLoopKernelManager, IOLoopKernelManager)) and bool(
            km.autorestart
        )

    def _pause_restarter(self) -> None:
        stop = getattr(self.parent, "stop_restarter", None)
        if callable(stop):
            stop()

    def _resume_restarter(self, generation: int) -> None:
        if not self._link_check_current(generation):
            return
        start = getattr(self.parent, "start_restarter", None)
        if callable(start):
            start()

    # ---------------------------------------------------------------- SSH loop side (commands)

    def _command(self, argv: list[str]) -> str:
        if self.use_sudo:
            argv = ["sudo", "-n", *argv]
        return shlex.join(argv)

    async def _run(self, argv: list[str], timeout: float = 20.0) -> Any:
        conn = await self._connect()
        return await asyncio.wait_for(conn.run(self._command(argv), check=False), timeout)

    async def _launch_remote(
        self, conn_info: dict[str, Any], env: dict[str, str], preferred: dict[str, int]
    ) -> dict[str, int]:
        conn = await self._connect()
        if self._stale is not None:
            await self._kill_stale()
        assert self.settings is not None
        request = json.dumps(
            {
                "conn": conn_info,
                "env": env,
                "helper": _helper_files(),
                "ready_timeout": READY_TIMEOUT,
            }
        )
        last_error = "the kernel did not start"
        for _attempt in range(LAUNCH_ATTEMPTS):
            process = await conn.create_process(
                self._command([self.settings.driver_python, "-c", BOOTSTRAP]),
                encoding="utf-8",
            )
            process.stdin.write(request)
            process.stdin.write_eof()
            self._monitor = process
            started = time.monotonic()
            ports: dict[str, int] | None = None
            exit_message: dict[str, Any] | None = None
            while True:
                remaining = READY_TIMEOUT + 10 - (time.monotonic() - started)
                try:
                    line = await asyncio.wait_for(process.stdout.readline(), max(remaining, 0.1))
                except asyncio.TimeoutError:
                    process.close()
                    raise ProvisionerError(
                        f"The kernel on cluster {self.cluster_id} did not start in time."
                    ) from None
                if not line:
                    break
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "pid" in message:
                    self.pid = int(message["pid"])
                    self.run_dir = str(message.get("run_dir") or "") or None
                elif "ports" in message:
                    ports = {n: int(message["ports"][n]) for n in PORT_NAMES}
                    break
                elif "exit" in message:
                    exit_message = message
                    break
            if ports is not None:
                self.remote_ports = ports
                self._monitor_task = asyncio.ensure_future(self._watch_monitor(process))
                return await self._forward_all(conn, ports, preferred)
            # The bootstrap ended before the kernel was ready.
            stderr = ""
            try:
                stderr = (await asyncio.wait_for(process.stderr.read(), 2)) or ""
            except Exception:
                pass
            if exit_message is not None:
                last_error = (
                    exit_message.get("log") or ""
                ).strip() or f"exit {exit_message['exit']}"
            else:
                last_error = stderr.strip() or "the bootstrap on the driver ended early"
            self.pid = None
            self.log.warning("Kernel start on cluster %s failed: %s", self.cluster_id, last_error)
            if "Address already in use" not in last_error:
                break
        tail = "\n".join(last_error.splitlines()[-5:])
        raise ProvisionerError(
            f"The kernel could not be started on cluster {self.cluster_id} with "
            f"{self.settings.driver_python}: {tail}"
        )

    async def _forward_all(
        self, conn: Any, ports: dict[str, int], preferred: dict[str, int]
    ) -> dict[str, int]:
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        local: dict[str, int] = {}
        for name in PORT_NAMES:
            listener = None
            for want in (preferred.get(name) or 0, 0):
                try:
                    listener = await conn.forward_local_port(
                        "127.0.0.1", want, "127.0.0.1", ports[name]
                    )
                    break
                except OSError:
                    if want == 0:
                        raise
            assert listener is not None
            self._listeners.append(listener)
            local[name] = listener.get_port()
        return local

    async def _watch_monitor(self, process: Any) -> None:
        status: int | None = None
        try:
            async for line in process.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "exit" in message:
                    status = int(message["exit"])
        except Exception:
            pass
        if status is not None:
            self._exit_status = status
            if not self._stopping:
                self._record("dead", f"The kernel process on the driver exited (status {status})")
        # Without an exit message the link dropped; _watch_link reports that.

    async def _signal(self, name: str, pid: int | None = None) -> None:
        pid = self.pid if pid is None else pid
        if pid is None:
            return
        # The kernel leads its own session: signal the whole group, like a local kernel.
        result = await self._run(["kill", "-s", name, "--", f"-{pid}"])
        if result.exit_status != 0:
            await self._run(["kill", "-s", name, str(pid)])

    async def _remote_alive(self, pid: int | None = None) -> bool:
        pid = self.pid if pid is None else pid
        if pid is None:
            return False
        result = await self._run(["kill", "-0", str(pid)])
        return result.exit_status == 0

    async def _stop(self, signal_name: str) -> None:
        self._cancel_spark_attach()
        self._cancel_link_check()
        if (
            not self._launched
            or self.pid is None
            or self._exit_status is not None
            or self._driver_gone
        ):
            return
        self._stopping = True
        try:
            await _on_ssh_loop(asyncio.wait_for(self._stop_remote(signal_name), CLEANUP_TIMEOUT))
        except Exception as exc:
            self.log.warning("Could not stop the kernel on cluster %s: %s", self.cluster_id, exc)
            self._link_lost = True
            self._unreachable = True

    async def _stop_remote(self, signal_name: str) -> None:
        pid = self.pid
        assert pid is not None
        try:
            await self._signal(signal_name, pid)
        except Exception:
            if not self._link_lost:
                raise
            self._conn = None
            await self._signal(signal_name, pid)  # one new connection
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._exit_status is not None:
                return
            if not await self._remote_alive(pid):
                self._exit_status = -_signal_number(signal_name)
                return
            await asyncio.sleep(0.1)

    async def _kill_stale(self) -> None:
        stale, self._stale = self._stale, None
        if stale is None:
            return
        pid, run_dir, sudo, driver_start = stale
        if driver_start and self._driver_start and driver_start != self._driver_start:
            # Another driver now: the kernel went with the old one, and its PID may be taken.
            return
        saved = self.use_sudo
        self.use_sudo = sudo
        try:
            await self._signal("KILL", pid)
            if run_dir:
                await self._run(["rm", "-rf", "--", run_dir])
        except Exception as exc:
            self.log.warning("Could not remove an earlier kernel from the driver: %s", exc)
        finally:
            self.use_sudo = saved

    async def _cleanup_remote(
        self, pid: int | None, run_dir: str | None, sudo: bool, gone: bool, close: bool
    ) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        self._monitor = None
        try:
            if pid is not None and not gone:
                # Still there (link lost, or never confirmed gone): make sure it is.
                self.use_sudo = sudo
                if self._link_lost:
                    self._conn = None
                if await self._remote_alive(pid):
                    await self._signal("KILL", pid)
            if run_dir and _valid_run_dir(run_dir):
                self.use_sudo = sudo
                await self._run(["rm", "-rf", "--", run_dir])
        finally:
            if close:
                await self._close_link()

    async def _close_link(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    async def _reattach(self) -> None:
        """After load_provisioner_info: connect again and re-open the local forwards."""
        if not self.remote_ports:
            return
        conn = await self._connect()
        preferred = {n: int(self.connection_info.get(n) or 0) for n in PORT_NAMES}
        local = await self._forward_all(conn, self.remote_ports, preferred)
        self.connection_info = dict(self.connection_info, **local)


def _signal_number(name: str) -> int:
    return int(getattr(signal, f"SIG{name}"))


def _valid_run_dir(path: str) -> bool:
    return bool(re.match(r"^/[^\0]*/dbjl-kernel-[A-Za-z0-9_]+$", path))
