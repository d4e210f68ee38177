"""The simulated driver node of a cluster: an SSH server with real processes.

A real Databricks driver is a fresh VM after every (re)start: a new host key, nothing running,
an sshd on port 2200 that accepts the cluster's ``ssh_public_keys``, passwordless ``sudo`` for
``ubuntu``. :class:`SshDriver` gives each simulated cluster the same, on a stable local port,
for exactly as long as the cluster is RUNNING. Processes are real (``/bin/sh -c``), each started
in its own session and with the driver's mark in its environment, so that terminating the cluster
can find and kill everything it left behind, even daemons that started sessions of their own (a
real driver VM takes them all with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import asyncssh

log = logging.getLogger(__name__)

SSH_MODES = ("ok", "refuse", "hang")

#: Set in the environment of every process of a driver; inherited by what those processes start.
DRIVER_MARK = "DBJL_SIM_DRIVER"

#: Environment variables a client may set (Debian's sshd default ``AcceptEnv LANG LC_*``).
_ACCEPTED_ENV_PREFIXES = ("LANG", "LC_")

_SUDO_SHIM = """#!/bin/sh
# Simulated Databricks driver: the SSH user has passwordless sudo.
while [ $# -gt 0 ]; do
  case "$1" in
    -n|-E|-H|-S|--preserve-env|--non-interactive) shift ;;
    -u) shift 2 ;;
    --) shift; break ;;
    -*) echo "sudo: option $1 is not supported by the simulated driver" >&2; exit 1 ;;
    *) break ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "usage: sudo [-n] [-E] [--] [VAR=value ...] command [args ...]" >&2
  exit 1
fi
exec env -- "$@"
"""

#: Spark settings of the simulated driver (``$SPARK_CONF_DIR/spark-defaults.conf``). A notebook on
#: Databricks shows job progress in its UI, never as console text: without this a local Spark
#: prints ``[Stage 0:> (0 + 2) / 2]`` on the kernel's stderr, which ipykernel echoes into cells.
_SPARK_DEFAULTS = "spark.ui.showConsoleProgress false\n"
SPARK_CONF = "spark-conf"
#: MLflow's tracking store of the simulated driver (a folder beside bin/).
MLFLOW_STORE = "mlflow"
#: The search path of a driver process (the driver's bin/ with the sudo shim goes first).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_signals() -> None:
    """In a new session's process, before it runs: the signals a login shell of sshd starts
    with. A simulator started from ``nohup`` (or anything ignoring SIGHUP) would otherwise pass
    the ignored SIGHUP on, and the end of a PTY session would hang up nothing."""
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)


def driver_path(bin_dir: Path | None) -> str:
    """PATH of a process on the simulated driver."""
    return SYSTEM_PATH if bin_dir is None else f"{bin_dir}:{SYSTEM_PATH}"


def spark_conf_env(bin_dir: Path | None) -> dict[str, str]:
    """What every process of the simulated driver has in its environment besides PATH:
    ``SPARK_CONF_DIR`` (the folder beside bin/, see ensure_driver_env) and MLflow's local
    tracking store.

    A Databricks runtime sets ``MLFLOW_TRACKING_URI=databricks`` (runs go to the workspace with
    the runtime's credentials). The simulator has no tracking server, so its driver names a file
    store beside bin/ (``<state>/driver/mlflow``); ``MLFLOW_ALLOW_FILE_STORE`` lets MLflow 3,
    which keeps file stores in maintenance mode, use it (older MLflow ignores the variable)."""
    if bin_dir is None:
        return {}
    return {
        "SPARK_CONF_DIR": str(bin_dir.parent / SPARK_CONF),
        "MLFLOW_TRACKING_URI": (bin_dir.parent / MLFLOW_STORE).as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }


def ensure_driver_env(state_dir: Path) -> tuple[Path, Path]:
    """Create (once) the driver's Python venv and the ``bin/`` folder with the ``sudo`` shim.

    Blocking: call it in a thread. ``--without-pip`` keeps creation fast; the base Python's pip
    is visible through ``--system-site-packages`` and installs into the venv when run as
    ``<venv>/bin/python -m pip``. A lock file makes concurrent simulators share one venv.
    """
    driver_dir = state_dir / "driver"
    driver_dir.mkdir(parents=True, exist_ok=True)
    venv = driver_dir / "python"
    bin_dir = driver_dir / "bin"
    with open(driver_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = venv / ".simulator-ready"
        if not ready.exists() or not (venv / "bin" / "python").exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "venv",
                    "--clear",
                    "--system-site-packages",
                    "--without-pip",
                    str(venv),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _see_parent_environment(venv)
            ready.write_text("ok\n")
        bin_dir.mkdir(exist_ok=True)
        sudo = bin_dir / "sudo"
        if not sudo.exists() or sudo.read_text() != _SUDO_SHIM:
            tmp = bin_dir / ".sudo.tmp"
            tmp.write_text(_SUDO_SHIM)
            tmp.chmod(0o755)
            tmp.replace(sudo)
        spark_conf = driver_dir / SPARK_CONF
        spark_conf.mkdir(exist_ok=True)
        defaults = spark_conf / "spark-defaults.conf"
        if not defaults.exists() or defaults.read_text() != _SPARK_DEFAULTS:
            tmp = spark_conf / ".defaults.tmp"
            tmp.write_text(_SPARK_DEFAULTS)
            tmp.replace(defaults)
    return venv / "bin" / "python", bin_dir


def _see_parent_environment(venv: Path) -> None:
    """When this Python is itself a virtual environment, ``--system-site-packages`` exposes only
    the base interpreter's packages: add this environment's site-packages too (through a
    ``.pth`` file, after the driver venv's own), so the driver sees what the product has."""
    if sys.prefix == sys.base_prefix:
        return
    import site
    import sysconfig

    base = {os.path.realpath(p) for p in site.getsitepackages([sys.base_prefix])}
    mine = [p for p in site.getsitepackages() if os.path.realpath(p) not in base]
    if not mine:
        return
    purelib = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    Path(purelib).mkdir(parents=True, exist_ok=True)
    (Path(purelib) / "dbjl-simulator-parent.pth").write_text("".join(f"{p}\n" for p in mine))


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _marked(pid: str, mark: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return mark in f.read().split(b"\0")
    except OSError:
        return False


def _sessions_alive(sids: set[int], mark: bytes | None = None) -> list[int]:
    """PIDs (not zombies) whose session id is one of ``sids``, or whose environment holds
    ``mark`` (``NAME=value``) (Linux /proc)."""
    found = []
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[-1].split()
        # rest: state ppid pgrp session ...
        if len(rest) <= 3 or rest[0] == "Z":
            continue
        if int(rest[3]) in sids or (mark is not None and _marked(entry, mark)):
            found.append(int(entry))
    return found


def kill_sessions(sids: Iterable[int], grace: float = 1.0, mark: str | None = None) -> int:
    """SIGTERM every process of the given sessions (and every process whose environment holds
    ``mark``, ``NAME=value``), SIGKILL what is left after ``grace``.

    Blocking (reads /proc, sleeps): call it in a thread. Returns how many processes were found.
    """
    sids = set(sids)
    marked = mark.encode() if mark else None
    if not sids and marked is None:
        return 0
    if not os.path.isdir("/proc"):  # pragma: no cover - not Linux
        for sid in sids:
            with contextlib.suppress(OSError):
                os.killpg(sid, signal.SIGKILL)
        return len(sids)
    pids = _sessions_alive(sids, marked)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _sessions_alive(sids, marked):
            return len(pids)
        time.sleep(0.05)
    for pid in _sessions_alive(sids, marked):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


class _DriverSshServer(asyncssh.SSHServer):
    def __init__(self, driver: SshDriver) -> None:
        self._driver = driver
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._driver._connection_made(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._driver._connection_lost(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        # Only the driver itself can be reached through it, as the product needs (kernel ports).
        return is_loopback(dest_host)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False


class SshDriver:
    """The SSH side of one cluster's driver. Lives on the simulator's loop.

    ``listen()`` starts a new "VM" (new host key, given authorized keys); ``close()`` takes it
    down (listener closed, connections aborted) and returns the sessions to kill.
    """

    def __init__(
        self,
        cluster_id: str,
        port: int,
        *,
        host: str = "127.0.0.1",
        bin_dir: Callable[[], Path | None],
        home_dir: Path,
        on_activity: Callable[[], None] = lambda: None,
    ) -> None:
        self.cluster_id = cluster_id
        self.port = port
        self.host = host
        self.mode = "ok"
        self.host_key: asyncssh.SSHKey | None = None
        self._bin_dir = bin_dir
        self._home_dir = home_dir
        self._on_activity = on_activity
        self._sock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._conns: set[asyncssh.SSHServerConnection] = set()
        self._hung: set[socket.socket] = set()
        self._sids: set[int] = set()
        self._pty_sids: dict[asyncssh.SSHServerConnection, set[int]] = {}
        self._proc_tasks: set[asyncio.Task[None]] = set()
        # Marks this driver's processes and their descendants (see DRIVER_MARK).
        self._mark = f"{cluster_id}-{os.getpid()}-{os.urandom(6).hex()}"

    # -- state -------------------------------------------------------------------------------
    @property
    def listening(self) -> bool:
        return self._sock is not None

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    @property
    def mark_env(self) -> tuple[str, str]:
        """The environment variable (name, value) that marks this driver's processes."""
        return DRIVER_MARK, self._mark

    @property
    def host_key_text(self) -> str | None:
        if self.host_key is None:
            return None
        return self.host_key.export_public_key().decode().strip()

    # -- lifecycle ---------------------------------------------------------------------------
    def listen(self, authorized_keys: Iterable[str]) -> None:
        """Bind the port now (synchronously, so a client seeing RUNNING can connect at once)."""
        self.close_listener()
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        keys = "\n".join(k.strip() for k in authorized_keys if k and k.strip())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self._accept_task = asyncio.get_running_loop().create_task(
            self._accept_loop(sock, self.host_key, keys)
        )

    def close_listener(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            self._accept_task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> set[int]:
        """Take the driver down: no listener, no connections. Returns the sessions to kill."""
        self.close_listener()
        self.drop()
        for task in list(self._conn_tasks):
            task.cancel()
        sids, self._sids = self._sids, set()
        self._pty_sids.clear()
        return sids

    async def kill(self, sids: set[int]) -> None:
        """Kill what the driver ran: the given sessions and every process carrying its mark."""
        await asyncio.to_thread(kill_sessions, sids, mark=f"{DRIVER_MARK}={self._mark}")

    def drop(self) -> int:
        """Abort every live connection (like a network failure). Processes keep running."""
        count = 0
        for conn in list(self._conns):
            conn.abort()
            count += 1
        for sock in list(self._hung):
            sock.close()
            count += 1
        self._hung.clear()
        return count

    # -- accepting ---------------------------------------------------------------------------
    async def _accept_loop(self, sock: socket.socket, host_key: asyncssh.SSHKey, keys: str) -> None:
        loop = asyncio.get_running_loop()
        options = await asyncssh.SSHServerConnectionOptions.construct(
            server_factory=lambda: _DriverSshServer(self),
            server_host_keys=[host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(keys) if keys else None,
            process_factory=self._run_process,
            sftp_factory=True,
            allow_scp=True,
            encoding=None,
            login_timeout=30,
            keepalive_interval=0,
        )
        while True:
            try:
                client, _ = await loop.sock_accept(sock)
            except asyncio.CancelledError:
                raise
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            if self.mode == "hang":
                self._hung.add(client)
                continue
            task = loop.create_task(self._serve(client, options))
            self._conn_tasks.add(task)
            task.add_done_callback(self._conn_tasks.discard)

    async def _serve(
        self, client: socket.socket, options: asyncssh.SSHServerConnectionOptions
    ) -> None:
        try:
            await asyncssh.run_server(client, options=options)
        except asyncio.CancelledError:
            client.close()
            raise
        except Exception as exc:  # auth failure, client gone, ...
            log.debug("simulated driver %s: SSH connection ended: %s", self.cluster_id, exc)
            client.close()

    def _connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conns.add(conn)
        self._on_activity()

    def _connection_lost(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conns.discard(conn)
        self._on_activity()
        # Like sshd: processes with a PTY get SIGHUP when their session ends.
        pty_sids = self._pty_sids.pop(conn, set())
        for sid in pty_sids:
            with contextlib.suppress(OSError):
                os.killpg(sid, signal.SIGHUP)

    # -- processes ---------------------------------------------------------------------------
    def _environment(self, process: asyncssh.SSHServerProcess, username: str) -> dict[str, str]:
        bin_dir = self._bin_dir()
        env = {
            "PATH": driver_path(bin_dir),
            "HOME": str(self._home_dir),
            "USER": username,
            "LOGNAME": username,
            "SHELL": "/bin/sh",
            "LANG": "C.UTF-8",
            DRIVER_MARK: self._mark,
        }
        env.update(spark_conf_env(bin_dir))
        peer = process.get_extra_info("peername") or ("127.0.0.1", 0)
        sockname = process.get_extra_info("sockname") or ("127.0.0.1", self.port)
        env["SSH_CLIENT"] = f"{peer[0]} {peer[1]} {sockname[1]}"
        env["SSH_CONNECTION"] = f"{peer[0]} {peer[1]} {sockname[0]} {sockname[1]}"
        for key, value in (process.env or {}).items():
            key = key.decode() if isinstance(key, bytes) else str(key)
            value = value.decode() if isinstance(value, bytes) else str(value)
            if key.startswith(_ACCEPTED_ENV_PREFIXES):
                env[key] = value
        return env

    async def _run_process(self, process: asyncssh.SSHServerProcess) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._proc_tasks.add(task)
        try:
            await self._run_process_inner(process)
        finally:
            if task is not None:
                self._proc_tasks.discard(task)

    async def _run_process_inner(self, process: asyncssh.SSHServerProcess) -> None:
        conn = process.channel.get_connection()
        username = process.get_extra_info("username") or "ubuntu"
        command = process.command
        argv = ["/bin/sh", "-c", command] if command is not None else ["/bin/sh"]
        await asyncio.to_thread(self._home_dir.mkdir, parents=True, exist_ok=True)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._environment(process, username),
                cwd=str(self._home_dir),
                start_new_session=True,
                preexec_fn=default_signals,
            )
        except OSError as exc:
            process.stderr.write(f"cannot start /bin/sh: {exc}\n".encode())
            process.exit(127)
            return
        self._sids.add(proc.pid)
        if process.term_type:
            self._pty_sids.setdefault(conn, set()).add(proc.pid)

        async def pump_out(reader: asyncio.StreamReader, writer: asyncssh.SSHWriter) -> None:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                with contextlib.suppress(Exception):
                    writer.write(data)

        async def pump_in() -> None:
            stdin = proc.stdin
            assert stdin is not None
            while True:
                try:
                    data = await process.stdin.read(65536)
                except asyncssh.SignalReceived as exc:
                    signum = getattr(signal, f"SIG{exc.signal}", None)
                    if signum is not None:
                        with contextlib.suppress(OSError):
                            os.killpg(proc.pid, signum)
                    continue
                except asyncssh.BreakReceived:
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGINT)
                    continue
                except asyncssh.TerminalSizeChanged:
                    continue
                except Exception:
                    data = b""
                if not data:
                    with contextlib.suppress(Exception):
                        stdin.close()
                    return
                try:
                    stdin.write(data)
                    await stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    return

        assert proc.stdout is not None and proc.stderr is not None
        outs = [
            asyncio.ensure_future(pump_out(proc.stdout, process.stdout)),
            asyncio.ensure_future(pump_out(proc.stderr, process.stderr)),
        ]
        feeder = asyncio.ensure_future(pump_in())
        try:
            status = await proc.wait()
            await asyncio.gather(*outs, return_exceptions=True)
        finally:
            feeder.cancel()
            for task in outs:
                task.cancel()
        with contextlib.suppress(Exception):
            if status >= 0:
                process.exit(status)
            else:
                name = signal.Signals(-status).name.removeprefix("SIG")
                process.exit_with_signal(name)
        with contextlib.suppress(Exception):
            await process.wait_closed()
