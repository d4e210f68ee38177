"""``databrickslabs-jupyterlab demo``: the whole product against the built-in simulator.

A new user sees a notebook whose kernel runs on a (simulated) cluster driver, the status bar,
and the restart dialog, without a Databricks account. Everything the demo writes lives in one
private folder: its own Databricks config file, SSH key and SSH config, product state, Jupyter
config and data (so the kernelspec does not appear in the user's own kernel list). The child
JupyterLab gets these through environment variables; the user's ``~/.databrickscfg``,
``~/.ssh`` and ``~/.jupyter`` are never read or written.

With pyspark importable in this Python (``pip install 'databrickslabs-jupyterlab[spark]'``) and
Java on the PATH, the simulated driver runs one Spark application, the kernel attaches to it and
the notebook runs ``%sql`` and ``display()``; without them the demo says in one line how to get
Spark.

Ctrl-C (or SIGTERM) stops JupyterLab (which shuts its kernels down), then the simulator (which
kills whatever still runs on its drivers), so nothing is left running.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import secrets
import shlex
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path
from typing import Any

PROFILE = "demo"
CLUSTER_NAME = "demo-cluster"
#: Fixed, so the notebook and the kernelspec of one run still fit the next.
CLUSTER_ID = "0101-000000-demo0001"
NOTEBOOK = "databricks-demo.ipynb"


class DemoError(Exception):
    """A step of the demo failed; one sentence."""


#: How to get Spark into the demo (said when pyspark is not importable).
SPARK_HINT = (
    "Spark: not in this demo; pip install 'databrickslabs-jupyterlab[spark]' (pyspark, needs "
    "Java 17 or newer) and run the demo again to see the notebook run %sql on the cluster."
)


def find_pyspark() -> tuple[str | None, str]:
    """(the folder that holds this Python's ``pyspark`` package, or None; one line for the user)

    The folder is given to the simulated driver, as a Databricks driver has pyspark."""
    try:
        spec = importlib.util.find_spec("pyspark")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return None, SPARK_HINT
    folder = str(Path(spec.origin).resolve().parent.parent)
    if shutil.which("java") is None:
        return None, (
            "Spark: pyspark is installed but Java is not on the PATH; install Java 17 or newer "
            "(e.g. apt-get install default-jre-headless) and run the demo again to see Spark."
        )
    return folder, f"Spark: pyspark from {folder} runs on the simulated driver."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="databrickslabs-jupyterlab demo",
        description="Start a simulated Databricks workspace with one cluster and JupyterLab "
        "with a notebook whose kernel runs on that cluster's driver. Ctrl-C stops everything.",
    )
    p.add_argument("--port", type=int, default=0, help="JupyterLab's port (default: a free port)")
    p.add_argument("--no-browser", action="store_true", help="Do not open a web browser")
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="Speed of the simulated cluster: 0.1 starts it ten times faster (default 1.0)",
    )
    p.add_argument(
        "--dir",
        default="~/.databrickslabs_jupyterlab/demo",
        help="Private folder for the demo's profile, key, settings and notebook "
        "(default ~/.databrickslabs_jupyterlab/demo)",
    )
    return p


def say(text: str) -> None:
    """Print a line; a closed or broken output (``demo | tee log`` whose tee went with the
    terminal's Ctrl-C) is ignored, so stopping never depends on printing."""
    try:
        print(text, flush=True)
    except (OSError, ValueError):  # BrokenPipeError, EIO of a gone terminal, a closed stdout
        # Later prints and the interpreter's final flush would fail again: write nowhere.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Layout:
    """Paths inside the demo folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.databrickscfg = root / "databrickscfg"
        self.ssh_dir = root / "ssh"
        self.key = self.ssh_dir / f"id_{PROFILE}"
        self.ssh_config = self.ssh_dir / "config"
        self.state = root / "state"
        self.simulator = root / "simulator"
        self.jupyter_config = root / "jupyter" / "config"
        self.jupyter_data = root / "jupyter" / "data"
        self.notebooks = root / "notebooks"
        self.log = root / "jupyterlab.log"

    def prepare(self) -> None:
        for d in (self.root, self.ssh_dir, self.state, self.jupyter_config, self.jupyter_data):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.notebooks.mkdir(parents=True, exist_ok=True)
        # Host keys of earlier runs' drivers mean nothing now (every run is a new simulator).
        shutil.rmtree(self.state / "known_hosts", ignore_errors=True)

    def environment(self, driver_python: str) -> dict[str, str]:
        """The variables that point every part of the product at the demo folder."""
        return {
            "DATABRICKS_CONFIG_FILE": str(self.databrickscfg),
            "DBJL_SSH_CONFIG": str(self.ssh_config),
            "DBJL_IDENTITY_FILE": str(self.key),
            "DBJL_DRIVER_PYTHON": driver_python,
            "DBJL_STATE_DIR": str(self.state),
            "JUPYTER_CONFIG_DIR": str(self.jupyter_config),
            "JUPYTER_DATA_DIR": str(self.jupyter_data),
            "JUPYTER_RUNTIME_DIR": str(self.jupyter_data / "runtime"),
        }


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def notebook(kernel_name: str, display_name: str, spark: bool = False) -> dict[str, Any]:
    """The sample notebook: where the kernel runs, a computation, and Spark (with ``spark``,
    the cluster's application through ``%sql`` and ``display()``; else a guarded call)."""

    def md(text: str) -> dict[str, Any]:
        return {"cell_type": "markdown", "metadata": {}, "source": text}

    def code(text: str) -> dict[str, Any]:
        return {
            "cell_type": "code",
            "metadata": {},
            "source": text,
            "outputs": [],
            "execution_count": None,
        }

    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": kernel_name, "display_name": display_name, "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [
            md(
                "# databrickslabs-jupyterlab demo\n\n"
                f"This notebook's kernel runs on the driver of the cluster `{CLUSTER_NAME}` "
                f"(`{CLUSTER_ID}`) of a **simulated** Databricks workspace, reached over SSH "
                "exactly like a real cluster. The status bar item at the bottom shows the "
                "cluster's state; click it to restart or reconfigure the cluster.\n\n"
                "Run the cells with Shift-Enter."
            ),
            code(
                "import os, socket, sys\n"
                "\n"
                "# The simulated driver is a Python environment of the simulator, with its own\n"
                "# home folder: both differ from those of this JupyterLab.\n"
                'print("driver host:  ", socket.gethostname())\n'
                'print("kernel pid:   ", os.getpid())\n'
                'print("driver python:", sys.executable)\n'
                'print("driver home:  ", os.path.expanduser("~"))'
            ),
            code(
                "# Some work on the driver\n"
                "def primes(n):\n"
                "    sieve = bytearray([1]) * (n + 1)\n"
                "    sieve[0:2] = b'\\x00\\x00'\n"
                "    for i in range(2, int(n ** 0.5) + 1):\n"
                "        if sieve[i]:\n"
                "            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))\n"
                "    return sieve.count(1)\n"
                "\n"
                'print("primes below one million:", primes(1_000_000))'
            ),
            *(spark_cells(code, md) if spark else no_spark_cells(code, md)),
        ],
    }


def spark_cells(code: Any, md: Any) -> list[dict[str, Any]]:
    return [
        md(
            "## Spark\n\n"
            "The kernel attached to the cluster's Spark application when it started (the status "
            "bar says *running with Spark*), as it does on a real cluster, and published `spark`, "
            "`sc`, `sqlContext` and `dbutils`. `dbcontext()` says where its Spark comes from."
        ),
        code("dbcontext()"),
        md("`%%sql` runs Spark SQL; the last result is shown as a table and kept in `_sqldf`."),
        code(
            "%%sql\n"
            "CREATE OR REPLACE TEMP VIEW squares AS\n"
            "  SELECT id AS n, id * id AS square FROM range(1, 11);\n"
            "SELECT n, square FROM squares WHERE n % 2 = 0 ORDER BY n"
        ),
        md("`display()` shows a Spark (or pandas) DataFrame as a table."),
        code('display(spark.table("squares").selectExpr("count(*) AS n", "sum(square) AS total"))'),
        md(
            "A job that runs longer than a second shows its progress under the cell; "
            "interrupting the cell cancels it. `sc` links the cluster's Spark UI."
        ),
        code(
            "# six rows sleeping a second each on two partitions: about three seconds\n"
            "rows = spark.sql(\"SELECT reflect('java.lang.Thread', 'sleep', CAST(1000 AS BIGINT)) \"\n"
            '                 "FROM range(0, 6, 1, 2)").collect()\n'
            "len(rows)"
        ),
        code("sc"),
    ]


def no_spark_cells(code: Any, md: Any) -> list[dict[str, Any]]:
    return [
        md(
            "On a real cluster, `dbcontext()` attaches the notebook to the cluster's Spark "
            "and publishes `spark`, `sc`, `sqlContext` and `dbutils`. This demo's simulated "
            "driver has no Spark (" + SPARK_HINT.removeprefix("Spark: not in this demo; ") + ")"
        ),
        code(
            "try:\n"
            "    from databrickslabs_jupyterlab.connect import dbcontext\n"
            "\n"
            "    dbcontext()\n"
            "    print(spark.range(10).count())\n"
            "except Exception as exc:  # no Spark on the simulated driver\n"
            '    print("dbcontext() is not available here:", exc)'
        ),
    ]


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.layout = Layout(Path(args.dir).expanduser().resolve())
        self.sim: Any = None
        self.lab: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.handover: Path | None = None  # env.sh: the demo's values for dj and curl
        self.pyspark_path: str | None = None

    # -- steps -------------------------------------------------------------------------------
    def start_simulator(self) -> None:
        from .simulator import SimulatorThread
        from .simulator.keys import read_or_make_keypair

        lay = self.layout
        self.pyspark_path, spark_line = find_pyspark()
        say(spark_line)
        say("Starting the Databricks workspace simulator (the first run prepares its driver)...")
        self.sim = SimulatorThread(
            time_scale=self.args.time_scale,
            state_dir=lay.simulator,
            pyspark_path=self.pyspark_path,
        )
        self.sim.start()
        public = read_or_make_keypair(lay.key)
        write_private(lay.databrickscfg, self.sim.profile_text(PROFILE))
        self.sim.add_cluster(
            CLUSTER_NAME, cluster_id=CLUSTER_ID, state="TERMINATED", ssh_public_keys=[public]
        )
        write_private(lay.ssh_config, self.sim.ssh_config_entry(CLUSTER_ID, str(lay.key)))
        say(f"  workspace {self.sim.url}, profile '{PROFILE}' in {lay.databrickscfg}")

    def set_environment(self) -> None:
        for name in list(os.environ):
            if name.startswith(("DATABRICKS_", "DBJL_", "JUPYTER_")):
                del os.environ[name]
        os.environ.update(self.layout.environment(self.sim.driver_python))

    def start_cluster(self) -> None:
        """Through the workspace API, like a user would, then wait for RUNNING."""
        import asyncio

        from .workspace import Workspace

        async def start() -> None:
            ws = await Workspace.for_profile(PROFILE)
            await ws.start_cluster(CLUSTER_ID)

        say(f"Starting cluster {CLUSTER_NAME} ({CLUSTER_ID})...")
        began = time.monotonic()
        asyncio.run(start())
        self.sim.wait_state(CLUSTER_ID, "RUNNING", timeout=60 * self.args.time_scale + 60)
        port = self.sim.cluster(CLUSTER_ID).ssh_port
        say(f"  RUNNING after {time.monotonic() - began:.0f} s, driver SSH on 127.0.0.1:{port}")
        if self.pyspark_path:
            # Ready before the notebook opens: its kernel attaches to this application.
            spark = self.sim.wait_spark(CLUSTER_ID, timeout=180)
            if spark.get("error"):
                say(f"  Spark did not start on the driver: {spark['error']}")
                self.pyspark_path = None
            else:
                say(f"  Spark application {spark['application_id']} runs on the driver")

    def create_kernelspec(self) -> tuple[str, str]:
        from . import kernelspecs

        for old in kernelspecs.list_kernelspecs():
            if old.profile == PROFILE and old.cluster_id != CLUSTER_ID:
                kernelspecs.delete_kernelspec(old.name)
        kernel_env = None
        if self.pyspark_path and self.pyspark_path not in _site_folders():
            # A folder outside this Python's site-packages (which the driver sees anyway).
            kernel_env = {"PYTHONPATH": self.pyspark_path}
        name = kernelspecs.create_kernelspec(
            PROFILE, CLUSTER_ID, CLUSTER_NAME, env=CLUSTER_NAME, kernel_env=kernel_env
        )
        display = next(
            (s.display_name for s in kernelspecs.list_kernelspecs() if s.name == name), name
        )
        say(f"  kernelspec '{display}' ({name})")
        return name, display

    def write_notebook(self, name: str, display: str) -> Path:
        path = self.layout.notebooks / NOTEBOOK
        nb = notebook(name, display, spark=bool(self.pyspark_path))
        path.write_text(json.dumps(nb, indent=1) + "\n", encoding="utf-8")
        return path

    def start_lab(self) -> None:
        port = self.args.port or free_port()
        token = secrets.token_hex(24)
        env = dict(os.environ, JUPYTER_TOKEN=token)
        argv = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.layout.notebooks}",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            argv.append("--allow-root")  # containers often run as root
        say("Starting JupyterLab...")
        log = open(self.layout.log, "wb")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            # A session of its own: the terminal's Ctrl-C reaches only us, and we stop it cleanly.
            self.lab = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        base = f"http://127.0.0.1:{port}"
        self.wait_ready(base, token)
        self.url = f"{base}/lab/tree/{NOTEBOOK}?token={token}"
        self.handover = self.layout.root / "env.sh"
        write_private(self.handover, "".join(f"{line}\n" for line in self.exports(base, token)))

    def exports(self, base: str, token: str) -> list[str]:
        """``export`` lines that point ``dj`` and the README's curl examples at this demo: its
        profile's config file, SSH config, key, driver Python and Jupyter folders, the API's base
        URL (``$B``), the Jupyter token (``$JT``) and the cluster id (``$CID``)."""
        values = {
            **self.layout.environment(os.environ["DBJL_DRIVER_PYTHON"]),
            "JT": token,
            "B": f"{base}/databrickslabs-jupyterlab/api/v1",
            "CID": CLUSTER_ID,
        }
        return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]

    def wait_ready(self, base: str, token: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(
            f"{base}/api/status", headers={"Authorization": f"token {token}"}
        )
        while time.monotonic() < deadline:
            assert self.lab is not None
            if self.lab.poll() is not None:
                raise DemoError(
                    f"JupyterLab exited with status {self.lab.returncode}; see {self.layout.log}"
                    f"{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise DemoError(f"JupyterLab did not answer within {timeout:.0f} s; see {self.layout.log}.")

    def _log_tail(self) -> str:
        try:
            lines = self.layout.log.read_text(errors="replace").splitlines()[-5:]
        except OSError:
            return "."
        return ":\n    " + "\n    ".join(lines) if lines else "."

    # -- life --------------------------------------------------------------------------------
    def run(self) -> int:
        self.layout.prepare()
        self.start_simulator()
        self.set_environment()
        self.start_cluster()
        name, display = self.create_kernelspec()
        self.write_notebook(name, display)
        self.start_lab()
        say("")
        say(f"JupyterLab: {self.url}")
        say(f"Notebook:   {self.layout.notebooks / NOTEBOOK}")
        say(f"To use dj and the README's curl examples on this demo: source {self.handover}")
        say(
            f'  e.g. dj {PROFILE} -p;  curl -H "Authorization: token $JT" $B/clusters/{PROFILE}/$CID'
        )
        say("Press Ctrl-C to stop JupyterLab, the simulated cluster and the simulator.")
        if not self.args.no_browser:
            try:
                webbrowser.open(self.url)
            except Exception:  # noqa: BLE001 - no browser on this machine is fine
                pass
        assert self.lab is not None
        while self.lab.poll() is None:
            time.sleep(0.5)
        say(f"JupyterLab exited with status {self.lab.returncode}.")
        return 1 if self.lab.returncode else 0

    def stop(self) -> None:
        lab, self.lab = self.lab, None
        if lab is not None and lab.poll() is None:
            # Signal first, print afterwards: a print may block or fail (see say).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                lab.send_signal(signal.SIGTERM)  # a clean stop: kernels are shut down
            say("Stopping JupyterLab...")
            try:
                lab.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(lab.pid, signal.SIGKILL)
                lab.wait(5)
        if lab is not None:
            # Anything the server left in its session (it should leave nothing).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(lab.pid, signal.SIGKILL)
        sim, self.sim = self.sim, None
        if sim is not None:
            sim.stop()
            say("Simulator stopped.")


def _site_folders() -> set[str]:
    folders = [*site.getsitepackages(), site.getusersitepackages()]
    return {str(Path(f).resolve()) for f in folders}


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.time_scale <= 0:
        print(
            "databrickslabs-jupyterlab demo: error: --time-scale must be positive.", file=sys.stderr
        )
        return 2
    if importlib.util.find_spec("jupyterlab") is None:
        print(
            "databrickslabs-jupyterlab demo: error: JupyterLab is not installed in this Python "
            f"({sys.executable}); pip install 'jupyterlab>=4,<5'.",
            file=sys.stderr,
        )
        return 1
    demo = Demo(args)
    # Ctrl-C is how the demo ends. A process started in the background of a script (or by a
    # parent that ignores SIGINT) inherits SIGINT ignored, and Python then leaves it ignored:
    # take it back explicitly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return demo.run()
    except KeyboardInterrupt:
        say("")
        return 0
    except DemoError as err:
        print(f"databrickslabs-jupyterlab demo: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - one sentence, not a traceback
        message = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
        print(f"databrickslabs-jupyterlab demo: error: {message}", file=sys.stderr)
        return 1
    finally:
        # Ctrl-C while stopping must not leave half of it running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            demo.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
        say("Demo stopped.")
