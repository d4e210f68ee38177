"""The simulator's Command Execution API (REST 1.2), through databricks-sdk's own
``command_execution`` client over real HTTP: contexts backed by REPL processes on the simulated
driver, their results, cancel, destroy, errors, and their death with the cluster.

With pyspark (``DBJL_TEST_PYSPARK_PATH``, see scripts/test.sh) and Java: one Spark application
per cluster start, shared by every context. Tests wait by polling the status endpoints with a
deadline, never with fixed sleeps.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.config import Config
from databricks.sdk.errors import DatabricksError
from databricks.sdk.service.compute import (
    CommandStatus,
    CommandStatusResponse,
    ContextStatus,
    Language,
    ResultType,
)

from databrickslabs_jupyterlab.simulator import SimulatorThread
from tests.fixtures.simulator import SimProfile
from tests.test_simulator import http

pytestmark = pytest.mark.timeout(360)  # a Spark start on a loaded 2-core machine

# Read before the autouse fixture clears DBJL_* variables.
PYSPARK_PATH = os.environ.get("DBJL_TEST_PYSPARK_PATH") or None
HAVE_SPARK = bool(
    PYSPARK_PATH and Path(PYSPARK_PATH, "pyspark", "__init__.py").is_file() and shutil.which("java")
)

_DONE = (CommandStatus.FINISHED, CommandStatus.ERROR, CommandStatus.CANCELLED)

# A 1x1 PNG, for an object with ``_repr_png_``.
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def client(profile: SimProfile) -> WorkspaceClient:
    return WorkspaceClient(
        config=Config(
            profile=profile.name,
            config_file=str(profile.config_file),
            retry_timeout_seconds=10,
            http_timeout_seconds=5,
        )
    )


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def running(profile: SimProfile) -> tuple[WorkspaceClient, str]:
    """The profile's cluster, started through the SDK and RUNNING."""
    w = client(profile)
    w.clusters.start(profile.cluster_id)
    profile.simulator.wait_state(profile.cluster_id, "RUNNING", timeout=10)
    return w, profile.cluster_id


def new_context(w: WorkspaceClient, cid: str, timeout: float = 30) -> str:
    context_id = w.command_execution.create(cluster_id=cid, language=Language.PYTHON).response.id
    assert context_id and context_id.isdigit()
    status = wait_for(
        "the context to leave Pending",
        lambda: (
            (s := w.command_execution.context_status(cid, context_id).status)
            != ContextStatus.PENDING
            and s
        ),
        timeout,
    )
    assert status == ContextStatus.RUNNING
    return context_id


def submit(
    w: WorkspaceClient, cid: str, ctx: str, code: str, language: Language = Language.PYTHON
) -> str:
    return w.command_execution.execute(
        cluster_id=cid, context_id=ctx, language=language, command=code
    ).response.id


def status(w: WorkspaceClient, cid: str, ctx: str, cmd: str) -> CommandStatusResponse:
    return w.command_execution.command_status(cluster_id=cid, context_id=ctx, command_id=cmd)


def wait_status(
    w: WorkspaceClient, cid: str, ctx: str, cmd: str, wanted: tuple = _DONE, timeout: float = 30
) -> CommandStatusResponse:
    return wait_for(
        f"command {cmd} to be {[s.value for s in wanted]}",
        lambda: (r := status(w, cid, ctx, cmd)).status in wanted and r,
        timeout,
    )


def run(
    w: WorkspaceClient,
    cid: str,
    ctx: str,
    code: str,
    language: Language = Language.PYTHON,
    timeout: float = 30,
) -> CommandStatusResponse:
    return wait_status(w, cid, ctx, submit(w, cid, ctx, code, language), timeout=timeout)


def text(result: CommandStatusResponse) -> str:
    assert result.status == CommandStatus.FINISHED, result
    assert result.results.result_type == ResultType.TEXT, result.results
    return result.results.data or ""


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def marked_processes(mark: tuple[str, str]) -> list[int]:
    """Live processes carrying a driver's mark in their environment."""
    needle = f"{mark[0]}={mark[1]}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0") and pid_alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found


# -- one context --------------------------------------------------------------------------------


def test_a_context_keeps_its_namespace_and_answers_text_error_and_images(
    sim_profile: SimProfile,
) -> None:
    w, cid = running(sim_profile)
    ctx = new_context(w, cid)

    assert text(run(w, cid, ctx, "x = 41")) == ""
    assert text(run(w, cid, ctx, "print('hi')\nx + 1")) == "hi\n42"
    assert text(run(w, cid, ctx, "'Hello World!'")) == "'Hello World!'"
    # the driver's environment, as a notebook REPL sees it
    env = text(run(w, cid, ctx, "import os\nos.environ['DATABRICKS_RUNTIME_VERSION'], os.getcwd()"))
    assert env.startswith("('15.4', ") and env.endswith("/databricks/driver')")

    error = run(w, cid, ctx, "def f():\n    return undefined_name\nf()")
    assert error.status == CommandStatus.FINISHED
    assert error.results.result_type == ResultType.ERROR
    assert error.results.summary == "NameError: name 'undefined_name' is not defined"
    assert 'File "<command>", line 2, in f' in error.results.cause
    assert "repl.py" not in error.results.cause
    # neither an exception nor SystemExit ends the REPL
    assert run(w, cid, ctx, "raise SystemExit(3)").results.result_type == ResultType.ERROR
    assert text(run(w, cid, ctx, "x")) == "41"

    define = (
        f"import base64\nPNG = base64.b64decode({base64.b64encode(_PNG).decode()!r})\n"
        "class Pic:\n    def _repr_png_(self):\n        return PNG\n"
    )
    assert text(run(w, cid, ctx, define)) == ""
    one = run(w, cid, ctx, "display(Pic())")
    assert one.results.result_type == ResultType.IMAGE
    prefix, _, payload = one.results.file_name.partition(",")
    assert prefix == "data:image/png;base64" and base64.b64decode(payload) == _PNG
    two = run(w, cid, ctx, "display(Pic()); display(Pic())")
    assert two.results.result_type == ResultType.IMAGES
    assert len(two.results.file_names) == 2

    # sql needs the driver's Spark, which this simulator does not run
    no_spark = run(w, cid, ctx, "select 1", language=Language.SQL)
    assert no_spark.results.result_type == ResultType.ERROR
    assert "Spark is not available" in no_spark.results.summary
    runtime = sim_profile.simulator.cluster(cid).runtime
    assert runtime.describe()["enabled"] is False and runtime.spark_pid is None


def test_commands_run_one_at_a_time_and_cancel_interrupts(sim_profile: SimProfile) -> None:
    w, cid = running(sim_profile)
    ctx = new_context(w, cid)
    assert text(run(w, cid, ctx, "import time\nkept = 'yes'")) == ""

    long = submit(w, cid, ctx, "time.sleep(120)")
    wait_status(w, cid, ctx, long, (CommandStatus.RUNNING,))
    queued = submit(w, cid, ctx, "'ran after the cancel'")
    dropped = submit(w, cid, ctx, "kept = 'no'")
    assert status(w, cid, ctx, queued).status == CommandStatus.QUEUED

    # a queued command is cancelled without running
    w.command_execution.cancel(cluster_id=cid, context_id=ctx, command_id=dropped)
    assert status(w, cid, ctx, dropped).status == CommandStatus.CANCELLED

    t0 = time.monotonic()
    w.command_execution.cancel(cluster_id=cid, context_id=ctx, command_id=long)
    assert status(w, cid, ctx, long).status in (CommandStatus.CANCELLING, CommandStatus.CANCELLED)
    cancelled = wait_status(w, cid, ctx, long, timeout=20)
    assert cancelled.status == CommandStatus.CANCELLED
    assert cancelled.results.result_type == ResultType.ERROR
    assert "KeyboardInterrupt" in cancelled.results.cause
    assert time.monotonic() - t0 < 60  # the sleep was interrupted, not waited out

    assert text(wait_status(w, cid, ctx, queued)) == "'ran after the cancel'"
    assert text(run(w, cid, ctx, "kept")) == "'yes'"

    # a cancel right after the execute (whether the REPL has begun the command or not) holds
    for _ in range(3):
        quick = submit(w, cid, ctx, "time.sleep(120)")
        w.command_execution.cancel(cluster_id=cid, context_id=ctx, command_id=quick)
        assert wait_status(w, cid, ctx, quick, timeout=20).status == CommandStatus.CANCELLED
    assert text(run(w, cid, ctx, "kept")) == "'yes'"


def test_destroy_and_errors_like_the_api(sim_profile: SimProfile) -> None:
    sim = sim_profile.simulator
    w, cid = running(sim_profile)
    ce = w.command_execution
    ctx = new_context(w, cid)
    other = new_context(w, cid)
    assert other != ctx
    pid = int(text(run(w, cid, ctx, "import os\nos.getpid()")))
    cmd = submit(w, cid, ctx, "1")
    wait_status(w, cid, ctx, cmd)

    ce.destroy(cluster_id=cid, context_id=ctx)
    wait_for("the destroyed context's REPL to exit", lambda: not pid_alive(pid), 10)
    for call in (
        lambda: ce.context_status(cid, ctx),
        lambda: ce.command_status(cid, ctx, cmd),
        lambda: submit(w, cid, ctx, "1"),
        lambda: ce.destroy(cluster_id=cid, context_id=ctx),
    ):
        with pytest.raises(DatabricksError) as err:
            call()
        assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        assert f"Execution context {ctx} does not exist" in str(err.value)
    # the other context is untouched
    assert text(run(w, cid, other, "1 + 1")) == "2"
    with pytest.raises(DatabricksError) as err:
        ce.command_status(cid, other, "0123456789abcdef")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"

    with pytest.raises(DatabricksError) as err:
        ce.create(cluster_id="0000-000000-nothere", language=Language.PYTHON)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "0000-000000-nothere does not exist" in str(err.value)
    with pytest.raises(DatabricksError) as err:
        ce.create(cluster_id=cid, language=Language.SCALA)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE" and "scala" in str(err.value)

    # the shape of the simulator's other errors, and its auth
    status_code, body = http(sim, "POST", "/api/1.2/contexts/create", {"language": "python"})
    assert (status_code, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert body["message"] == "Missing required field: clusterId"
    path = f"/api/1.2/contexts/status?clusterId={cid}&contextId={other}"
    assert http(sim, "GET", path) == (200, {"id": other, "status": "Running"})
    status_code, body = http(sim, "GET", path, token=None)
    assert (status_code, body["error_code"]) == (401, "UNAUTHENTICATED")
    status_code, body = http(sim, "GET", path, token="dapiwrong")
    assert (status_code, body["error_code"]) == (401, "UNAUTHENTICATED")
    assert sim.calls()["GET /api/1.2/contexts/status"] >= 3


def test_a_dead_repl_is_an_error(sim_profile: SimProfile) -> None:
    w, cid = running(sim_profile)
    ctx = new_context(w, cid)
    died = run(w, cid, ctx, "import os\nos._exit(1)")
    assert died.status == CommandStatus.ERROR
    assert died.results.result_type == ResultType.ERROR and "REPL ended" in died.results.summary
    assert w.command_execution.context_status(cid, ctx).status == ContextStatus.ERROR
    with pytest.raises(DatabricksError) as err:
        submit(w, cid, ctx, "1")
    assert err.value.error_code == "INVALID_STATE"


@pytest.mark.simulator(time_scale=0.02)
def test_a_running_command_is_activity(simulator: SimulatorThread) -> None:
    # auto-termination after 1 minute x 0.02 = 1.2 s idle: a 3 s command keeps the cluster up
    cid = simulator.add_cluster("busy", state="RUNNING", autotermination_minutes=1)
    w = WorkspaceClient(
        config=Config(
            host=simulator.url,
            token=simulator.token,
            retry_timeout_seconds=10,
            http_timeout_seconds=5,
        )
    )
    ctx = new_context(w, cid)
    cmd = submit(w, cid, ctx, "import time\ntime.sleep(3)\n'done'")

    def finished() -> CommandStatusResponse | None:
        assert simulator.cluster(cid).state == "RUNNING"
        result = status(w, cid, ctx, cmd)
        return result if result.status in _DONE else None

    assert text(wait_for("the 3 s command", finished, 20)) == "'done'"
    simulator.wait_state(cid, "TERMINATING", timeout=10)
    assert client_reason(w, cid) == "INACTIVITY"


def client_reason(w: WorkspaceClient, cid: str) -> str:
    return w.clusters.get(cid).termination_reason.code.value


def test_contexts_die_with_the_cluster(sim_profile: SimProfile) -> None:
    sim = sim_profile.simulator
    w, cid = running(sim_profile)
    ce = w.command_execution
    ctx = new_context(w, cid)
    repl = int(text(run(w, cid, ctx, "import os\nos.getpid()")))
    # a process the command leaves behind, in a session of its own, dies with the driver too
    child = int(
        text(
            run(
                w,
                cid,
                ctx,
                "import subprocess\nsubprocess.Popen(['sleep', '120'], start_new_session=True,"
                " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid",
            )
        )
    )
    long = submit(w, cid, ctx, "import time\ntime.sleep(120)")
    wait_status(w, cid, ctx, long, (CommandStatus.RUNNING,))
    assert pid_alive(repl) and pid_alive(child)

    sim.terminate(cid, "USER_REQUEST")  # returns once the driver's processes are gone
    assert not pid_alive(repl) and not pid_alive(child)
    assert marked_processes(sim.cluster(cid).driver.mark_env) == []
    for call in (
        lambda: ce.context_status(cid, ctx),
        lambda: ce.command_status(cid, ctx, long),
        lambda: ce.create(cluster_id=cid, language=Language.PYTHON),
        lambda: submit(w, cid, ctx, "1"),
    ):
        with pytest.raises(DatabricksError) as err:
            call()
        assert err.value.error_code == "INVALID_STATE"
        assert f"Cluster {cid} is not running" in str(err.value)

    sim.wait_state(cid, "TERMINATED", timeout=10)
    w.clusters.start(cid)
    sim.wait_state(cid, "RUNNING", timeout=10)
    # a new driver: the old context is unknown there
    with pytest.raises(DatabricksError) as err:
        ce.context_status(cid, ctx)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    fresh = new_context(w, cid)
    assert text(run(w, cid, fresh, "'x' in globals()")) == "False"


# -- Spark --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_SPARK, reason="needs DBJL_TEST_PYSPARK_PATH with pyspark, and Java")
@pytest.mark.simulator(pyspark_path=PYSPARK_PATH)
def test_one_spark_application_per_cluster_start_shared_by_every_context(
    sim_profile: SimProfile,
) -> None:
    sim = sim_profile.simulator
    w, cid = running(sim_profile)
    # RUNNING does not wait for Spark, which starts in the background
    assert sim.cluster(cid).runtime.describe()["ready_time"] is None
    spark = sim.wait_spark(cid, timeout=120)
    assert spark["error"] is None, spark["error"]
    app_id = spark["application_id"]
    assert app_id and spark["ready_time"] >= spark["started"]
    runtime = sim.cluster(cid).runtime
    gateway_file = runtime.layout.gateway_file
    assert gateway_file.stat().st_mode & 0o777 == 0o600
    assert (runtime.layout.databricks / "python" / "bin" / "python").exists()

    first, second = new_context(w, cid), new_context(w, cid)
    assert text(run(w, cid, first, "sc.applicationId")) == repr(app_id)
    assert text(run(w, cid, second, "sc.applicationId")) == repr(app_id)
    assert text(run(w, cid, second, "type(sqlContext).__name__, spark.sparkContext is sc")) == (
        "('SQLContext', True)"
    )
    assert text(run(w, cid, first, "spark.range(5).createOrReplaceTempView('shared_view')")) == ""
    assert text(run(w, cid, second, "spark.table('shared_view').count()", timeout=60)) == "5"

    table = run(
        w, cid, second, "select id, id * 2 as twice from shared_view order by id", Language.SQL
    )
    assert table.status == CommandStatus.FINISHED, table.results
    assert table.results.result_type == ResultType.TABLE
    assert table.results.schema == [
        {"name": "id", "type": '"long"', "metadata": "{}"},
        {"name": "twice", "type": '"long"', "metadata": "{}"},
    ]
    assert table.results.data == [[i, 2 * i] for i in range(5)]
    assert table.results.truncated is False and table.results.is_json_schema is True
    shown = run(w, cid, first, "display(spark.range(1001))", timeout=60)
    assert shown.results.result_type == ResultType.TABLE
    assert len(shown.results.data) == 1000 and shown.results.truncated is True

    # a cancel interrupts the command and cancels its Spark jobs (seen from the other context)
    busy = submit(w, cid, first, "spark.range(10**12).selectExpr('sum(id)').collect()")
    jobs = "len(sc.statusTracker().getActiveJobsIds())"
    wait_for("a running Spark job", lambda: text(run(w, cid, second, jobs)) != "0", 60)
    w.command_execution.cancel(cluster_id=cid, context_id=first, command_id=busy)
    assert wait_status(w, cid, first, busy, timeout=30).status == CommandStatus.CANCELLED
    wait_for("no Spark job", lambda: text(run(w, cid, second, jobs)) == "0", 30)
    assert text(run(w, cid, first, "spark.range(3).count()", timeout=60)) == "3"

    # termination takes the application (its JVM) and the gateway file with it
    host = spark["pid"]
    sim.terminate(cid, "USER_REQUEST")
    assert not pid_alive(host)
    assert marked_processes(sim.cluster(cid).driver.mark_env) == []
    assert not gateway_file.exists()

    # the next start runs a new application
    sim.wait_state(cid, "TERMINATED", timeout=10)
    w.clusters.start(cid)
    sim.wait_state(cid, "RUNNING", timeout=10)
    again = sim.wait_spark(cid, timeout=120)
    assert again["error"] is None and again["application_id"] != app_id
    ctx = new_context(w, cid)
    assert text(run(w, cid, ctx, "sc.applicationId")) == repr(again["application_id"])


def test_contexts_run_without_spark_when_it_cannot_start(
    tmp_path: Path, simulator_state_dir: Path
) -> None:
    broken = tmp_path / "broken-pyspark"
    (broken / "pyspark").mkdir(parents=True)
    (broken / "pyspark" / "__init__.py").write_text("raise ImportError('no Spark here')\n")
    sim = SimulatorThread(time_scale=0.1, state_dir=simulator_state_dir, pyspark_path=broken)
    sim.start()
    try:
        cid = sim.add_cluster("c", state="RUNNING")
        spark = sim.wait_spark(cid, timeout=60)
        assert "no Spark here" in spark["error"] and spark["application_id"] is None
        w = WorkspaceClient(
            config=Config(
                host=sim.url, token=sim.token, retry_timeout_seconds=10, http_timeout_seconds=5
            )
        )
        ctx = new_context(w, cid)
        assert text(run(w, cid, ctx, "'spark' in globals(), 1 + 1")) == "(False, 2)"
    finally:
        sim.stop()
