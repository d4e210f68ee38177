"""How ``dbcontext()`` finds Spark (issue 11, item 2): the runtime's entry points, then the
gateway hand-off, then (off Databricks only) a local session; never a second application on a
driver.

Units run ``dbcontext()`` in a fresh Python with fake ``dbruntime``/``pyspark`` packages on its
path and a fake ``/databricks`` layout (``connect.DATABRICKS_ROOT``). The proof runs a remote
kernel on the simulator's driver with real pyspark (``DBJL_TEST_PYSPARK_PATH``, Java 17): its
``sc.applicationId`` is the one a REST 1.2 command reports on the same cluster (databricks-sdk's
own ``command_execution`` client), and temporary views cross both ways.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.compute import CommandStatus, Language, ResultType
from jupyter_client.manager import AsyncKernelManager

from databrickslabs_jupyterlab import connect, kernelspecs, sparkattach
from databrickslabs_jupyterlab.kernelstate import board
from databrickslabs_jupyterlab.workspace import Workspace
from tests.fixtures.simulator import SimProfile
from tests.test_provisioner import _run, _set_spec_env, _wait_record
from tests.test_simulator_commands import client, wait_for

pytestmark = pytest.mark.timeout(180)

# Read before the autouse fixture clears DBJL_* variables.
PYSPARK_PATH = os.environ.get("DBJL_TEST_PYSPARK_PATH") or None
HAVE_PYSPARK_PATH = bool(PYSPARK_PATH and Path(PYSPARK_PATH, "pyspark", "__init__.py").is_file())
HAVE_SPARK = HAVE_PYSPARK_PATH and shutil.which("java") is not None
REPO = str(Path(__file__).resolve().parents[1])

#: A stand-in for a SparkSession: enough for dbcontext() to publish it.
FAKE_SESSION = """
class _Conf:
    def set(self, key, value):
        pass

class FakeSpark:
    version = "17.3.0-fake"
    conf = _Conf()

    def __init__(self, origin, connect=False):
        self.origin = origin
        self._connect = connect

    @property
    def sparkContext(self):
        if self._connect:
            raise RuntimeError("[NOT_SUPPORTED_WITH_SPARK_CONNECT] sparkContext")
        return "sc-of-" + self.origin
"""

#: A ``pyspark`` whose local session builder leaves a mark (it must not be used on a driver).
FAKE_PYSPARK = """
import os

class _Builder:
    def master(self, *a):
        return self

    def appName(self, *a):
        return self

    def getOrCreate(self):
        open(os.environ["LOCAL_SPARK_MARK"], "w").close()
        raise RuntimeError("a local SparkSession was started")

class SparkSession:
    builder = _Builder()
"""


def _package(root: Path, name: str, files: dict[str, str]) -> None:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in files.items():
        (folder / file).write_text(textwrap.dedent(text))


def _dbcontext(
    tmp_path: Path,
    *,
    databricks_root: Path | None = None,
    paths: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``dbcontext(quiet=True)`` in a fresh Python: its strategy and reasons, or its error."""
    code = textwrap.dedent(
        f"""
        import json, os
        from databrickslabs_jupyterlab import connect
        if {str(databricks_root) if databricks_root else None!r}:
            connect.DATABRICKS_ROOT = {str(databricks_root)!r}
        try:
            names = connect.dbcontext(quiet=True)
        except connect.DbContextError as exc:
            print(json.dumps({{"error": str(exc)}}))
        else:
            spark = names["spark"]
            print(json.dumps({{
                "strategy": names.strategy, "label": names.label, "reasons": names.reasons,
                "origin": getattr(spark, "origin", None), "sc": str(names["sc"]),
                "dbutils": str(names["dbutils"]), "display": "display" in names,
                "via": connect.attached_via(), "remote": os.environ.get("SPARK_REMOTE"),
            }}))
        """
    )
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABRICKS_", "DBJL_", "SPARK_", "PYSPARK_"))
    }
    full["PYTHONPATH"] = os.pathsep.join([*(paths or []), REPO])
    full["LOCAL_SPARK_MARK"] = str(tmp_path / "local-spark-started")
    full.update(env or {})
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=full,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _driver_layout(tmp_path: Path, socket_file: bool = False) -> Path:
    """A fake driver: ``<root>/spark`` (and the Spark Connect socket, when asked)."""
    root = tmp_path / "databricks"
    (root / "spark").mkdir(parents=True)
    if socket_file:
        (root / "sparkconnect").mkdir()
        (root / "sparkconnect" / "grpc.sock").touch()
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ strategy units


def test_runtime_namespace_comes_first(tmp_path: Path) -> None:
    fakes = tmp_path / "fakes"
    _package(
        fakes,
        "dbruntime",
        {
            "__init__.py": FAKE_SESSION
            + """
class UserNamespaceInitializer:
    @classmethod
    def getOrCreate(cls):
        return cls()

    def get_namespace_globals(self):
        return {"spark": FakeSpark("namespace"), "dbutils": "runtime-dbutils",
                "display": print}
""",
        },
    )
    # a hand-off is there too: the runtime's own entry point still wins
    handoff = tmp_path / "gw.json"
    handoff.write_text(json.dumps({"port": _free_port(), "secret": "s"}))
    result = _dbcontext(
        tmp_path,
        databricks_root=_driver_layout(tmp_path),
        paths=[str(fakes)],
        env={"DBJL_SPARK_GATEWAY_FILE": str(handoff)},
    )
    assert result["strategy"] == "runtime" and result["reasons"] == {}
    assert result["origin"] == "namespace" and result["sc"] == "sc-of-namespace"
    assert result["dbutils"] == "runtime-dbutils" and result["display"] is True
    assert result["via"] == connect.LABELS["runtime"]


def test_runtime_spark_connect_socket_sets_spark_remote_first(tmp_path: Path) -> None:
    fakes = tmp_path / "fakes"
    root = _driver_layout(tmp_path, socket_file=True)
    _package(
        fakes,
        "dbruntime",
        {
            "__init__.py": """
class UserNamespaceInitializer:
    @classmethod
    def getOrCreate(cls):
        raise ImportError("no notebook namespace outside the REPL")
""",
            "spark_connection.py": FAKE_SESSION
            + """
import os

def get_and_configure_uds_spark():
    assert os.environ["SPARK_REMOTE"].startswith("unix://"), "called without SPARK_REMOTE"
    return FakeSpark("uds", connect=True)
""",
        },
    )
    result = _dbcontext(tmp_path, databricks_root=root, paths=[str(fakes)])
    assert result["strategy"] == "runtime-uds" and result["origin"] == "uds"
    assert result["remote"] == f"unix://{root}/sparkconnect/grpc.sock"
    assert result["sc"] == "None"  # a Spark Connect session has no SparkContext
    assert "LocalDbUtils" in result["dbutils"]


def test_no_socket_no_uds_call_and_no_local_spark_on_a_driver(tmp_path: Path) -> None:
    """On a driver layout where nothing works: a sentence naming every strategy and why, and
    neither the socket entry point without its socket nor a local SparkSession."""
    fakes = tmp_path / "fakes"
    called = tmp_path / "uds-called"
    _package(
        fakes,
        "dbruntime",
        {
            "__init__.py": """
class UserNamespaceInitializer:
    @classmethod
    def getOrCreate(cls):
        raise RuntimeError("py4j.security.Py4JSecurityException: Method public "
                           "org.apache.spark.api.java.JavaSparkContext is not whitelisted")
""",
            "spark_connection.py": f"""
def get_and_configure_uds_spark():
    open({str(called)!r}, "w").close()
""",
        },
    )
    _package(fakes, "pyspark", {"__init__.py": "", "sql.py": FAKE_PYSPARK})
    result = _dbcontext(tmp_path, databricks_root=_driver_layout(tmp_path), paths=[str(fakes)])
    message = result["error"]
    assert message.startswith("Could not attach to the Spark application of this Databricks driver")
    assert "runtime: UserNamespaceInitializer: this cluster restricts py4j" in message
    assert "Traceback" not in message and "Py4JSecurityException" not in message
    assert "no Spark Connect socket at" in message
    assert "gateway: the provisioner passed no gateway to this kernel" in message
    assert "local: a local Spark session is never started on a Databricks driver" in message
    assert not called.exists()
    assert not (tmp_path / "local-spark-started").exists()


def test_runtime_version_alone_marks_a_driver(tmp_path: Path) -> None:
    fakes = tmp_path / "fakes"
    _package(fakes, "pyspark", {"__init__.py": "", "sql.py": FAKE_PYSPARK})
    result = _dbcontext(
        tmp_path,
        databricks_root=tmp_path / "nothing",
        paths=[str(fakes)],
        env={"DATABRICKS_RUNTIME_VERSION": "17.3"},
    )
    assert "runtime: the runtime's dbruntime modules are not importable here" in result["error"]
    assert not (tmp_path / "local-spark-started").exists()


def test_handoff_failure_from_the_provisioner_is_the_gateway_reason(tmp_path: Path) -> None:
    handoff = tmp_path / "gw.json"
    handoff.write_text(json.dumps({"error": "the cluster's Python context has no usable Spark"}))
    result = _dbcontext(
        tmp_path,
        databricks_root=_driver_layout(tmp_path),
        env={"DBJL_SPARK_GATEWAY_FILE": str(handoff)},
    )
    assert "gateway: the cluster's Python context has no usable Spark;" in result["error"]


@pytest.mark.skipif(not HAVE_PYSPARK_PATH, reason="needs DBJL_TEST_PYSPARK_PATH with pyspark")
def test_gateway_with_a_wrong_port_gives_its_reason(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    handoff = tmp_path / "gw.json"
    handoff.write_text(json.dumps({"port": port, "secret": "not-the-secret"}))
    result = _dbcontext(
        tmp_path,
        databricks_root=_driver_layout(tmp_path),
        paths=[str(PYSPARK_PATH)],
        env={"DBJL_SPARK_GATEWAY_FILE": str(handoff)},
    )
    message = result["error"]
    assert f"gateway: the gateway at 127.0.0.1:{port} did not answer: " in message
    assert "not-the-secret" not in message and "Traceback" not in message


def test_off_databricks_a_local_session_comes_last(tmp_path: Path) -> None:
    fakes = tmp_path / "fakes"
    _package(fakes, "pyspark", {"__init__.py": "", "sql.py": FAKE_PYSPARK})
    result = _dbcontext(tmp_path, databricks_root=tmp_path / "nothing", paths=[str(fakes)])
    # the fake builder refuses, after being asked: only off Databricks
    assert (tmp_path / "local-spark-started").exists()
    assert "local: a local SparkSession was started" in result["error"]
    assert result["error"].startswith("No Spark is available to this kernel")


def test_py4j_restriction_is_a_sentence() -> None:
    exc = RuntimeError(
        "An error occurred while calling o123.sc. Trace:\npy4j.security.Py4JSecurityException: "
        "Method public org.apache.spark.SparkContext is not whitelisted on class "
        "class org.apache.spark.api.java.JavaSparkContext\n\tat py4j.security.WhitelistingPy4J"
        "SecurityManager.checkCall(WhitelistingPy4JSecurityManager.java:473)"
    )
    reason = connect._reason(exc)
    assert reason.startswith("this cluster restricts py4j (py4j security")
    assert "\n" not in reason and "at py4j" not in reason


def test_outcome_names_the_strategy() -> None:
    content = {
        "status": "ok",
        "user_expressions": {
            "version": {"status": "ok", "data": {"text/plain": "'4.3.0'"}},
            "via": {
                "status": "ok",
                "data": {"text/plain": repr(connect.LABELS["gateway"])},
            },
        },
    }
    assert sparkattach.outcome_of(content, "u@h:22") == (
        "running-spark",
        "Kernel running on u@h:22 with Spark 4.3.0 (cluster's application via gateway hand-off)",
    )


# ------------------------------------------------------------------------------ against the simulator


def _running(profile: SimProfile) -> WorkspaceClient:
    w = client(profile)
    w.clusters.start(profile.cluster_id)
    profile.simulator.wait_state(profile.cluster_id, "RUNNING", timeout=30)
    return w


def test_handoff_without_spark_on_the_cluster_is_a_reason(sim_profile: SimProfile) -> None:
    """A simulator without pyspark: the REST 1.2 context has no ``sc``; the answer is a reason,
    and the context is destroyed."""
    _running(sim_profile)

    async def ask() -> dict[str, Any]:
        ws = await Workspace.for_profile(sim_profile.name)
        return await asyncio.to_thread(
            sparkattach.ask_gateway, ws._client, sim_profile.cluster_id, 30
        )

    answer = asyncio.run(ask())
    assert answer == {
        "error": "the cluster's Python context has no usable Spark "
        "(NameError: name 'sc' is not defined)"
    }
    assert sim_profile.simulator.cluster(sim_profile.cluster_id).runtime.contexts == {}


def sc_local_ui_absent(markup: str) -> bool:
    """No link to the driver's own Spark UI port (the browser cannot reach the driver)."""
    return ":4040" not in markup and "Spark UI (in the Databricks workspace)" in markup


def _rest_text(w: WorkspaceClient, cid: str, ctx: str, code: str) -> str:
    command = w.command_execution.execute(
        cluster_id=cid, context_id=ctx, language=Language.PYTHON, command=code
    ).response.id
    done = (CommandStatus.FINISHED, CommandStatus.ERROR, CommandStatus.CANCELLED)
    answer = wait_for(
        f"command {code!r}",
        lambda: (
            (
                r := w.command_execution.command_status(
                    cluster_id=cid, context_id=ctx, command_id=command
                )
            ).status
            in done
            and r
        ),
        60,
    )
    assert answer.status == CommandStatus.FINISHED, answer
    assert answer.results.result_type == ResultType.TEXT, answer.results
    return answer.results.data or ""


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_SPARK, reason="needs DBJL_TEST_PYSPARK_PATH with pyspark, and Java")
@pytest.mark.simulator(pyspark_path=PYSPARK_PATH)
def test_kernel_uses_the_clusters_spark_application(
    sim_profile: SimProfile, jupyter_dirs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's acceptance: one application, seen from the kernel and from REST 1.2."""
    caplog.set_level(logging.DEBUG, logger="databricks.sdk")
    sim = sim_profile.simulator
    cid = sim_profile.cluster_id
    w = _running(sim_profile)
    spark = sim.wait_spark(cid, timeout=150)
    assert spark["error"] is None, spark["error"]
    gateway = json.loads(sim.cluster(cid).runtime.layout.gateway_file.read_text())
    kernel = kernelspecs.create_kernelspec(sim_profile.name, cid, "sim-cluster", env="test")
    _set_spec_env(kernel, {"PYTHONPATH": str(PYSPARK_PATH)})

    async def scenario() -> None:
        km = AsyncKernelManager(kernel_name=kernel)
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        pid = km.provisioner.pid
        try:
            await kc.wait_for_ready(timeout=60)
            record = await _wait_record(
                km.kernel_id, lambda r: r.state == "running-spark", timeout=90, what="Spark"
            )
            assert record.message.endswith(
                "with Spark 4.3.0 (cluster's application via gateway hand-off)"
            ), record.message
            # the secret is in no process's environment or command line, and its file is 0600
            for what in ("environ", "cmdline"):
                seen = await asyncio.to_thread(Path(f"/proc/{pid}/{what}").read_bytes)
                seen = seen.decode(errors="replace")
                assert gateway["secret"] not in seen, what
            _, out = await _run(
                kc,
                "import os, stat\n"
                "f = os.environ['DBJL_SPARK_GATEWAY_FILE']\n"
                "print(oct(stat.S_IMODE(os.stat(f).st_mode)), "
                "oct(os.stat(os.path.dirname(f)).st_mode & 0o777))",
            )
            assert out == ["0o600 0o700\n"]
            # databricks-sdk's DEBUG log of the hand-off's answer has the secret redacted
            assert "/api/1.2/commands/status" in caplog.text
            assert gateway["secret"] not in caplog.text
            # dbcontext() again reuses the attached application
            _, out = await _run(kc, "sc0 = sc\nprint(dbcontext(quiet=True)['sc'] is sc0)", 60)
            assert out == ["True\n"]

            _, out = await _run(kc, "print(sc.applicationId)", timeout=60)
            kernel_app = out[0].strip()
            ctx = w.command_execution.create_and_wait(cluster_id=cid, language=Language.PYTHON).id
            assert _rest_text(w, cid, ctx, "sc.applicationId") == repr(kernel_app)
            assert kernel_app == spark["application_id"]

            # sc's HTML repr links the cluster's Spark UI in the workspace (host and id from
            # the hand-off), not the driver-local uiWebUrl
            link = connect.spark_ui_url(sim_profile.host, cid, sim.sim.workspace_id)
            assert link and "?o=" in link
            _, out = await _run(
                kc, "print(sc._repr_html_())\nprint(dbcontext(quiet=True).spark_ui)", 60
            )
            text = "".join(out)
            assert f'href="{link}"' in text and sc_local_ui_absent(text), text
            assert text.strip().endswith(link)

            # a temporary view made in the kernel is visible through REST 1.2 ...
            _, out = await _run(
                kc, "spark.range(7).createOrReplaceTempView('from_kernel')\nprint('ok')", 60
            )
            assert out == ["ok\n"]
            assert _rest_text(w, cid, ctx, "spark.table('from_kernel').count()") == "7"
            # ... and one made through REST 1.2 in the kernel
            _rest_text(w, cid, ctx, "spark.range(3).createOrReplaceTempView('from_rest')")
            _, out = await _run(kc, "spark.table('from_rest').count()", timeout=60)
            assert out == ["3"]
            w.command_execution.destroy(cid, ctx)
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
        assert board.get(km.kernel_id).state == "dead"
        # the Spark application of the cluster survives the kernel
        assert sim.cluster(cid).runtime.describe()["application_id"] == spark["application_id"]

    asyncio.run(scenario())


def test_a_named_gateway_is_asked_once_per_driver_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver keeps its gateway for its life: one REST 1.2 context per driver start; a
    failure is not remembered; a new driver start asks again."""
    import asyncio

    from databrickslabs_jupyterlab import sparkattach, workspace
    from databrickslabs_jupyterlab.settings import DriverSettings

    asked: list[str] = []
    answers = iter([{"error": "not yet"}, {"port": 1, "secret": "s1"}, {"port": 2, "secret": "s2"}])

    class FakeWorkspace:
        client = object()

    async def for_profile(*args: object, **kwargs: object) -> FakeWorkspace:
        return FakeWorkspace()

    def ask_gateway(client: object, cluster_id: str, timeout: float) -> dict:
        asked.append(cluster_id)
        return next(answers)

    monkeypatch.setattr(workspace.Workspace, "for_profile", for_profile)
    monkeypatch.setattr(sparkattach, "ask_gateway", ask_gateway)
    monkeypatch.setattr(sparkattach, "_GATEWAYS", {})
    settings = DriverSettings()

    def handoff(start: int) -> dict:
        return asyncio.run(sparkattach.handoff("p", "c1", start, settings, 5.0))

    assert handoff(1) == {"error": "not yet"}
    assert handoff(1) == {"port": 1, "secret": "s1"}
    assert handoff(1) == {"port": 1, "secret": "s1"}
    assert handoff(2) == {"port": 2, "secret": "s2"}
    assert asked == ["c1", "c1", "c1"]
    assert list(sparkattach._GATEWAYS) == [("p", "c1", 2)]
