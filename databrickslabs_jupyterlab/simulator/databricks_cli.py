"""A stand-in ``databricks`` executable for the simulator: the Databricks CLI's SSH tunnel.

Implements what the product and its tests need of the Databricks CLI (``experimental/ssh`` of
github.com/databricks/cli), against a simulated workspace:

- ``databricks --version`` / ``databricks version``: ``Databricks CLI v<version>``;
- ``databricks ssh setup --name NAME --cluster ID [--profile P] [--ssh-config PATH]
  [--shutdown-delay D] [--auto-start-cluster[=BOOL]] [--auto-approve]``: checks that the
  cluster is dedicated to a single user, writes the ``Host NAME`` block into
  ``~/.databricks/ssh-tunnel-configs/NAME`` and an ``Include`` of that folder at the top of the
  SSH config (default ``~/.ssh/config``);
- ``databricks ssh connect --cluster ID [--proxy] [--profile P] [--metadata USER,PORT[,ID]]
  [--auto-start-cluster[=BOOL]] [-- COMMAND...]``: starts the cluster if needed, starts the
  cluster's tunnel server, saves the client key pair to ``~/.databricks/ssh-tunnel-keys/ID``,
  then relays stdin/stdout over the driver proxy's websocket (``--proxy``, as the ProxyCommand)
  or runs ``ssh`` through itself.

Errors go to stderr as ``Error: <message>`` with exit code 1, like the real CLI; its progress
lines go to stderr too. Serverless compute, IDE integration and the websocket handover are not
modelled. :func:`write_launcher` writes a ``databricks`` launcher into a folder to put on PATH.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: The version the stand-in reports (the SSH tunnel needs 0.269 or later).
DEFAULT_VERSION = "0.285.0"
DEFAULT_SHUTDOWN_DELAY = 600.0
DEFAULT_HANDOVER_TIMEOUT = 1800.0
CONFIG_DIR = Path(".databricks") / "ssh-tunnel-configs"
KEYS_DIR = Path(".databricks") / "ssh-tunnel-keys"

_DEDICATED = ("SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED")


class CliError(Exception):
    """Printed as ``Error: <message>``; exit code 1."""


# -- launcher ---------------------------------------------------------------------------------
def write_launcher(
    folder: str | Path, *, version: str = DEFAULT_VERSION, python: str | None = None
) -> Path:
    """Write an executable ``databricks`` into ``folder`` that runs this stand-in (reporting
    ``version``); put ``folder`` first on PATH to use it. Returns the launcher's path."""
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise ValueError("version must look like 0.285.0")
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "databricks"
    argv = [
        python or sys.executable,
        str(Path(__file__).resolve()),
        "--stand-in-executable",
        str(path),
        "--stand-in-version",
        version,
    ]
    text = (
        "#!/bin/sh\n"
        "# Stand-in for the Databricks CLI (databrickslabs-jupyterlab workspace simulator).\n"
        f'exec {" ".join(shlex.quote(a) for a in argv)} "$@"\n'
    )
    tmp = folder / ".databricks.tmp"
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)
    return path


# -- flags, as cobra parses them --------------------------------------------------------------
def parse_duration(text: str) -> float:
    """A Go duration (``10m``, ``1h30m``, ``45s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    if text == "0":
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CliError(f'invalid duration "{text}"')
    return sum(float(n) * units[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()`` for whole and fractional seconds (``10m0s``)."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        for unit, size in (("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
            if seconds >= size:
                return f"{seconds / size:g}{unit}"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:g}s"
    if hours or minutes:
        text = f"{int(minutes)}m" + text
    if hours:
        text = f"{int(hours)}h" + text
    return text


def _bool(text: str, flag: str) -> bool:
    if text.lower() in ("1", "t", "true"):
        return True
    if text.lower() in ("0", "f", "false"):
        return False
    raise CliError(
        f'invalid argument "{text}" for "--{flag}" flag: strconv.ParseBool: invalid syntax'
    )


def parse_flags(
    args: list[str], spec: dict[str, tuple[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """Parse ``--flag=value``, ``--flag value``, boolean ``--flag``, ``-p value`` and ``--``;
    returns the values (defaults filled in) and the positional arguments."""
    values = {name: default for name, (_, default) in spec.items()}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional += args[i:]
            break
        if arg == "-p":
            arg = "--profile"
        if not arg.startswith("--") or arg == "--":
            positional.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        if name not in spec:
            raise CliError(f"unknown flag: --{name}")
        kind = spec[name][0]
        if kind == "bool":
            values[name] = _bool(value, name) if eq else True
            continue
        if not eq:
            if i >= len(args):
                raise CliError(f"flag needs an argument: --{name}")
            value = args[i]
            i += 1
        if kind == "duration":
            values[name] = parse_duration(value)
        elif kind == "int":
            try:
                values[name] = int(value)
            except ValueError:
                raise CliError(f'invalid argument "{value}" for "--{name}" flag') from None
        else:
            values[name] = value
    return values, positional


_COMMON = {"profile": ("str", ""), "debug": ("bool", False)}
SETUP_FLAGS = {
    **_COMMON,
    "name": ("str", ""),
    "cluster": ("str", ""),
    "auto-start-cluster": ("bool", True),
    "ssh-config": ("str", ""),
    "shutdown-delay": ("duration", DEFAULT_SHUTDOWN_DELAY),
    "auto-approve": ("bool", False),
}
CONNECT_FLAGS = {
    **_COMMON,
    "cluster": ("str", ""),
    "shutdown-delay": ("duration", DEFAULT_SHUTDOWN_DELAY),
    "max-clients": ("int", 10),
    "auto-start-cluster": ("bool", True),
    "name": ("str", ""),
    "accelerator": ("str", ""),
    "ide": ("str", ""),
    "usage-policy-id": ("str", ""),
    "proxy": ("bool", False),
    "metadata": ("str", ""),
    "handover-timeout": ("duration", DEFAULT_HANDOVER_TIMEOUT),
    "releases-dir": ("str", ""),
    "user-known-hosts-file": ("str", ""),
    "liteswap": ("str", ""),
    "skip-settings-check": ("bool", False),
    "environment-version": ("int", 4),
    "base-environment": ("str", ""),
    "auto-approve": ("bool", False),
}


# -- the workspace ----------------------------------------------------------------------------
def _log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class Workspace:
    """The REST calls the stand-in makes, with the standard library only (it starts fast: an
    SSH ProxyCommand runs once per connection). Credentials: ``--profile`` (a section of
    ``$DATABRICKS_CONFIG_FILE`` or ``~/.databrickscfg``), else ``DATABRICKS_HOST`` and
    ``DATABRICKS_TOKEN``, else ``$DATABRICKS_CONFIG_PROFILE`` or ``DEFAULT``."""

    def __init__(self, profile: str) -> None:
        import configparser

        env = os.environ
        self.profile = profile or env.get("DATABRICKS_CONFIG_PROFILE", "")
        host, token = env.get("DATABRICKS_HOST", ""), env.get("DATABRICKS_TOKEN", "")
        if self.profile or not (host and token):
            path = Path(env.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg").expanduser()
            parser = configparser.ConfigParser(default_section="__no_defaults__")
            with contextlib.suppress(OSError, configparser.Error):
                parser.read(path)
            section = self.profile or "DEFAULT"
            if not parser.has_section(section):
                if self.profile:
                    raise CliError(f"{path} has no {section} profile configured")
                raise CliError(
                    "cannot configure default credentials: give --profile, or set "
                    "DATABRICKS_HOST and DATABRICKS_TOKEN"
                )
            host = parser.get(section, "host", fallback="")
            token = parser.get(section, "token", fallback="")
            if not host or not token:
                raise CliError(f"profile {section} of {path} needs a host and a token")
        self.host = host.rstrip("/")
        if "://" not in self.host:
            self.host = "https://" + self.host
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer; an error answer raises CliError with its message."""
        import json
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, "Content-Type": "application/json"}
        request = urllib.request.Request(self.host + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                text = answer.read()
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("message") or exc.reason
            except ValueError:
                message = exc.reason
            raise CliError(str(message)) from None
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot reach {self.host}: {exc}") from None
        return json.loads(text) if text.strip() else {}

    def cluster(self, cluster_id: str) -> dict[str, Any]:
        from urllib.parse import quote

        return self.call("GET", f"/api/2.1/clusters/get?cluster_id={quote(cluster_id)}")

    def ensure_running(self, cluster_id: str, timeout: float = 1200) -> None:
        """Start the cluster if it is terminated and wait until it runs (like the SDK's
        ``ensure_cluster_is_running``)."""
        deadline = time.monotonic() + timeout
        pause = 0.1
        while True:
            state = self.cluster(cluster_id).get("state")
            if state == "RUNNING":
                return
            if state == "TERMINATED":
                self.call("POST", "/api/2.1/clusters/start", {"cluster_id": cluster_id})
            elif state not in ("PENDING", "RESTARTING", "RESIZING", "TERMINATING"):
                raise CliError(f"cluster {cluster_id} is in state {state}")
            if time.monotonic() > deadline:
                raise CliError(f"timed out after {timeout:g}s: cluster {cluster_id} is {state}")
            time.sleep(pause)
            pause = min(pause * 1.5, 2.0)


def access_mode_label(mode: str | None, single_user_name: str | None) -> str:
    """The access mode as the Databricks UI names it."""
    if mode in _DEDICATED:
        return "Dedicated (single user)" if single_user_name else "Dedicated (group)"
    if mode in ("USER_ISOLATION", "DATA_SECURITY_MODE_STANDARD"):
        return "Standard"
    if mode == "NONE":
        return "No isolation"
    return str(mode or "")


def validate_cluster_access(workspace: Workspace, cluster_id: str) -> None:
    try:
        info = workspace.cluster(cluster_id)
    except CliError as exc:
        raise CliError(
            f"failed to get cluster information for cluster ID '{cluster_id}': {exc}"
        ) from None
    mode, user = info.get("data_security_mode"), info.get("single_user_name")
    if mode not in _DEDICATED or not user:
        raise CliError(
            f"cluster '{cluster_id}' must be a dedicated single-user cluster. Current access "
            f"mode: {access_mode_label(mode, user)}. Please reconfigure it to "
            "Dedicated (single user) access mode"
        )


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def proxy_command(executable: str, options: dict[str, Any], metadata: str = "") -> str:
    command = (
        f"{_go_quote(executable)} ssh connect --proxy --cluster={options['cluster']} "
        f"--auto-start-cluster={'true' if options['auto-start-cluster'] else 'false'} "
        f"--shutdown-delay={format_duration(options['shutdown-delay'])}"
    )
    if metadata:
        command += f" --metadata={metadata}"
        command += f" --handover-timeout={format_duration(DEFAULT_HANDOVER_TIMEOUT)}"
    if options["profile"]:
        command += f" --profile={options['profile']}"
    return command


def host_block(name: str, user: str, identity_file: str, command: str) -> str:
    return (
        f"\nHost {name}\n"
        f"    User {user}\n"
        "    ConnectTimeout 360\n"
        "    StrictHostKeyChecking accept-new\n"
        "    IdentitiesOnly yes\n"
        f"    IdentityFile {_go_quote(identity_file)}\n"
        f"    ProxyCommand {command}\n"
    )


def _backup(path: Path, data: bytes) -> None:
    if not data:
        return
    original = Path(f"{path}.original.bak")
    target = original if not original.exists() else Path(f"{path}.latest.bak")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def ensure_include(config_path: Path, config_dir: Path) -> None:
    """``Include "<config_dir>/*"`` at the top of the SSH config (created if missing)."""
    config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(config_path, b"")
    content = config_path.read_bytes()
    line = f'Include "{config_dir.as_posix()}/*"'
    lines = [raw.rstrip("\r").lstrip(" \t") for raw in content.decode().split("\n")]
    if line in lines:
        return
    old = f"Include {config_dir.as_posix()}/*"
    _backup(config_path, content)
    if old in lines:
        text = content.decode().split("\n")
        text[lines.index(old)] = line
        _write_private(config_path, "\n".join(text).encode())
        return
    new = line + "\n"
    if content and not content.startswith(b"\n"):
        new += "\n"
    _write_private(config_path, new.encode() + content)


def setup(options: dict[str, Any], executable: str) -> int:
    if not options["name"]:
        raise CliError('required flag(s) "name" not set')
    workspace = Workspace(options["profile"])
    if not options["cluster"]:
        raise CliError(
            "cluster ID is required: give it with --cluster (this stand-in does not prompt)"
        )
    cluster_id = options["cluster"]
    validate_cluster_access(workspace, cluster_id)
    options = {**options, "profile": workspace.profile}
    command = proxy_command(executable, options)
    home = Path.home()
    config_path = (
        Path(options["ssh-config"]).expanduser()
        if options["ssh-config"]
        else (home / ".ssh" / "config")
    )
    config_dir = home / CONFIG_DIR
    ensure_include(config_path, config_dir)
    name = options["name"]
    block = host_block(name, "root", str(home / KEYS_DIR / cluster_id), command)
    host_path = config_dir / name
    if host_path.exists():
        if options["auto-approve"]:
            _log(f"Host '{name}' already exists, recreating (--auto-approve)")
        else:
            sys.stderr.write(
                f"Host '{name}' already exists. Do you want to recreate the config? [y/N]: "
            )
            sys.stderr.flush()
            answer = sys.stdin.readline()
            if not answer:
                raise CliError("EOF")
            if answer.strip().lower() not in ("y", "yes"):
                _log(f"Skipping setup for host '{name}'")
                return 0
    _log("Adding new entry to the SSH config:\n" + block)
    _write_private(host_path, block.encode())
    _log(f"Created SSH config file at {host_path} for '{name}' host")
    _log(
        f"You can now connect to the cluster using 'ssh {name}' terminal command, "
        "or use remote capabilities of your IDE"
    )
    return 0


# -- connect ----------------------------------------------------------------------------------
def _check_cluster_state(workspace: Workspace, cluster_id: str, auto_start: bool) -> None:
    if auto_start:
        try:
            workspace.ensure_running(cluster_id)
        except CliError as exc:
            raise CliError(f"failed to ensure that the cluster is running: {exc}") from None
        return
    try:
        state = workspace.cluster(cluster_id).get("state", "")
    except CliError as exc:
        raise CliError(f"failed to get cluster info: {exc}") from None
    if state != "RUNNING":
        raise CliError(
            f"cluster {cluster_id} is not running, current state: {state}. "
            "Use --auto-start-cluster to start it automatically"
        )


def _start_server(workspace: Workspace, cluster_id: str, announce: bool) -> dict[str, Any]:
    if announce:
        _log("Uploading binaries...")
    try:
        server = workspace.call("POST", f"/_sim/clusters/{cluster_id}/ssh-tunnel")
    except CliError as exc:
        raise CliError(
            "failed to ensure that ssh server is running: failed to submit and start ssh "
            f"server job: ssh server bootstrap job failed:\n  {exc}"
        ) from None
    if announce and server.get("started"):
        _log("Starting SSH server...")
    if announce:
        _log("Health check successful, starting ssh WebSocket connection...")
    return server


def _save_keys(cluster_id: str, server: dict[str, Any]) -> Path:
    path = Path.home() / KEYS_DIR / cluster_id
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(path, server["client_private_key"].encode())
    _write_private(Path(f"{path}.pub"), (server["client_public_key"] + "\n").encode(), 0o644)
    return path


def _websocket_url(workspace: Workspace, cluster_id: str, port: int) -> str:
    workspace_id = workspace.call("GET", "/.well-known/databricks-config")["workspace_id"]
    scheme, _, rest = workspace.host.partition("://")
    return (
        f"{'ws' if scheme == 'http' else 'wss'}://{rest}/driver-proxy-api/o/{workspace_id}/"
        f"{cluster_id}/{port}/ssh?id={os.urandom(8).hex()}"
    )


class WebSocket:
    """A minimal RFC 6455 client over a blocking socket: binary messages, ping, close."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        import base64
        import socket
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        try:
            sock = socket.create_connection((parts.hostname, port), timeout=60)
            if secure:
                import ssl

                sock = ssl.create_default_context().wrap_socket(
                    sock, server_hostname=parts.hostname
                )
        except OSError as exc:
            raise CliError(
                f"failed to connect to proxy: failed to establish websocket connection: {exc}"
            ) from None
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {parts.path}?{parts.query} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._sock = sock
        self._file = sock.makefile("rb")
        status = self._file.readline().split()
        while self._file.readline() not in (b"\r\n", b"\n", b""):
            pass
        if len(status) < 2 or status[1] != b"101":
            raise CliError(
                "failed to connect to proxy: failed to establish websocket connection: "
                "websocket: bad handshake"
            )
        sock.settimeout(None)
        self._lock = threading.Lock()

    def send(self, data: bytes, opcode: int = 2) -> None:
        size = len(data)
        if size < 126:
            header = bytes([0x80 | opcode, 0x80 | size])
        elif size < 1 << 16:
            header = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
        mask = os.urandom(4)
        stream = (mask * (size // 4 + 1))[:size]
        masked = (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")
        with self._lock:
            self._sock.sendall(header + mask + masked)

    def _exact(self, size: int) -> bytes:
        data = self._file.read(size)
        if len(data) != size:
            raise EOFError
        return data

    def receive(self) -> bytes | None:
        """The next data message, or None once the connection is closed."""
        message = b""
        try:
            while True:
                first, second = self._exact(2)
                size = second & 0x7F
                if size == 126:
                    size = int.from_bytes(self._exact(2), "big")
                elif size == 127:
                    size = int.from_bytes(self._exact(8), "big")
                payload = self._exact(size)
                opcode = first & 0x0F
                if opcode == 8:
                    with contextlib.suppress(OSError):
                        self.send(payload[:2], 8)
                    return None
                if opcode == 9:
                    self.send(payload, 10)
                    continue
                if opcode in (0, 1, 2):
                    message += payload
                    if first & 0x80:
                        return message
        except (EOFError, OSError):
            return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send((1000).to_bytes(2, "big"), 8)


def relay(url: str, headers: dict[str, str]) -> None:
    """stdin -> websocket, websocket -> stdout, until either side ends."""
    ws = WebSocket(url, headers)

    def read_stdin() -> None:
        with contextlib.suppress(OSError):
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                ws.send(data)
        ws.close()

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    while True:
        data = ws.receive()
        if data is None:
            return
        view = memoryview(data)
        while view:
            view = view[os.write(1, view) :]


def connect(options: dict[str, Any], extra: list[str], executable: str) -> int:
    cluster_id = options["cluster"]
    if not cluster_id:
        if options["proxy"] and not options["name"]:
            raise CliError("either --cluster or --name must be provided")
        raise CliError(
            "serverless compute is not modelled by the simulator's stand-in CLI: "
            "give a cluster with --cluster"
        )
    if options["ide"]:
        raise CliError("--ide is not modelled by the simulator's stand-in CLI")
    workspace = Workspace(options["profile"])
    proxy = options["proxy"]
    if not proxy:
        _log(f"Connecting to {cluster_id}...")
        validate_cluster_access(workspace, cluster_id)
    _log("Checking cluster state...")
    _check_cluster_state(workspace, cluster_id, options["auto-start-cluster"])
    server = _start_server(workspace, cluster_id, announce=not options["metadata"])
    key_path = _save_keys(cluster_id, server)
    user, port = server["user"], int(server["port"])
    if options["metadata"]:
        fields = options["metadata"].split(",")
        if len(fields) < 2:
            raise CliError(
                f"invalid metadata: {options['metadata']}, expected format: "
                "<user_name>,<port>[,<cluster_id>]"
            )
        if not fields[0]:
            raise CliError(f"remote user name is empty in the metadata: {options['metadata']}")
        try:
            user, port = fields[0], int(fields[1])
        except ValueError:
            raise CliError(f"cannot parse port from metadata: {options['metadata']}") from None
    if proxy:
        relay(_websocket_url(workspace, cluster_id, port), workspace.headers)
        return 0
    _log("Connected!")
    options = {**options, "profile": workspace.profile}
    command = proxy_command(executable, options, f"{user},{port},{cluster_id}")
    argv = ["ssh", "-l", user, "-i", str(key_path), "-o", "IdentitiesOnly=yes"]
    argv += ["-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=360"]
    argv += ["-o", f"ProxyCommand={command}"]
    if options["user-known-hosts-file"]:
        argv += ["-o", f"UserKnownHostsFile={options['user-known-hosts-file']}"]
    if not extra:
        argv.append("-t")
    argv.append(cluster_id)
    argv += extra or [
        'command -v bash >/dev/null 2>&1 && exec bash -i || exec "${SHELL:-/bin/sh}" -i'
    ]
    return subprocess.call(argv)


# -- entry point ------------------------------------------------------------------------------
_USAGE = """Databricks CLI (stand-in of the databrickslabs-jupyterlab workspace simulator)

Usage:
  databricks ssh setup --name NAME --cluster ID [--profile P]
  databricks ssh connect --cluster ID [--proxy] [--profile P]
  databricks --version
"""


def run(argv: list[str]) -> int:
    executable, version = str(Path(sys.argv[0]).resolve()), DEFAULT_VERSION
    while argv[:1] in (["--stand-in-executable"], ["--stand-in-version"]):
        if len(argv) < 2:
            raise CliError(f"flag needs an argument: {argv[0]}")
        if argv[0] == "--stand-in-executable":
            executable = argv[1]
        else:
            version = argv[1]
        argv = argv[2:]
    if argv[:1] in (["--version"], ["-v"], ["version"]):
        print(f"Databricks CLI v{version}")
        return 0
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(_USAGE)
        return 0
    if argv[0] != "ssh":
        raise CliError(
            f'unknown command "{argv[0]}" for "databricks" '
            "(the simulator's stand-in implements only ssh setup and ssh connect)"
        )
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        sys.stdout.write(_USAGE)
        return 0
    if argv[1] == "setup":
        options, rest = parse_flags(argv[2:], SETUP_FLAGS)
        if rest:
            raise CliError(f'unknown command "{rest[0]}" for "databricks ssh setup"')
        return setup(options, executable)
    if argv[1] == "connect":
        options, rest = parse_flags(argv[2:], CONNECT_FLAGS)
        return connect(options, rest, executable)
    raise CliError(f'unknown command "{argv[1]}" for "databricks ssh"')


def main(argv: list[str] | None = None) -> int:
    try:
        return run(list(sys.argv[1:] if argv is None else argv))
    except CliError as exc:
        _log(f"Error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
