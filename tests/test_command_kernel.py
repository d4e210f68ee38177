"""The Command Execution API kernel (a kernel without SSH) against the simulator over real HTTP:
the kernelspec's provisioner creates a REST 1.2 context on the simulated driver, the local
kernel runs each cell there and polls its status; the kernel board follows it as for SSH kernels.

Nothing is mocked: the simulator's REPL processes run the cells, its runtime shows the contexts.
Tests wait on messages or poll a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from databrickslabs_jupyterlab import kernelspecs
from databrickslabs_jupyterlab.commandkernel import render
from databrickslabs_jupyterlab.commandkernel.provisioner import CommandApiProvisioner
from databrickslabs_jupyterlab.kernelstate import board
from tests.test_provisioner import _start, _wait_record, running_cluster

__all__ = ["running_cluster"]  # a fixture of this module too

pytestmark = pytest.mark.timeout(180)

# Read before the autouse fixture clears DBJL_* variables.
PYSPARK_PATH = os.environ.get("DBJL_TEST_PYSPARK_PATH") or None
HAVE_SPARK = bool(
    PYSPARK_PATH and Path(PYSPARK_PATH, "pyspark", "__init__.py").is_file() and shutil.which("java")
)
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def cmd_kernel(running_cluster: Any, jupyter_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A command-api kernelspec for the simulator's cluster; idle checks every half second."""
    monkeypatch.setenv("DBJL_COMMAND_CHECK_INTERVAL", "0.5")
    return kernelspecs.create_kernelspec(
        running_cluster.name,
        running_cluster.cluster_id,
        "sim-cluster",
        env="test",
        transport="command-api",
        kernel_env={"GREETING": "hello $USER"},
    )


def contexts(profile: Any) -> list[str]:
    return list(profile.simulator.cluster(profile.cluster_id).runtime.contexts)


async def _stop(km: AsyncKernelManager, kc: Any) -> None:
    kc.stop_channels()
    await km.shutdown_kernel()


async def _run(kc: Any, code: str, timeout: float = 30) -> tuple[dict, list[dict]]:
    """The reply and the cell's iopub messages (type and content)."""
    messages: list[dict] = []
    reply = await kc.execute_interactive(
        code,
        timeout=timeout,
        output_hook=lambda m: messages.append({"type": m["msg_type"], **m["content"]}),
    )
    return reply["content"], messages


def _tables(messages: list[dict]) -> list[dict]:
    return [m["data"] for m in messages if m["type"] == "display_data" and "text/html" in m["data"]]


def _stdout(messages: list[dict]) -> str:
    return "".join(m["text"] for m in messages if m["type"] == "stream")


def test_cells_run_in_one_context_with_rich_results(cmd_kernel: str, running_cluster: Any) -> None:
    async def scenario() -> None:
        km, kc = await _start(cmd_kernel)
        try:
            assert isinstance(km.provisioner, CommandApiProvisioner)
            record = board.get(km.kernel_id)
            assert record.state == "running"
            assert "Command Execution API" in record.message
            context_id = km.provisioner.context_id
            assert contexts(running_cluster) == [context_id]

            reply, out = await _run(kc, "x = 41\nprint('hi')\nx + 1")
            assert reply["status"] == "ok"
            assert _stdout(out) == "hi\n42\n"
            # the spec's env reached the context, and the token did not
            reply, out = await _run(
                kc, "import os\nos.environ['GREETING'], 'DATABRICKS_TOKEN' in os.environ"
            )
            assert _stdout(out) == "('hello $USER', False)\n"

            reply, out = await _run(kc, "def f():\n    return undefined_name\nf()")
            assert reply["status"] == "error"
            assert reply["ename"] == "NameError"
            assert reply["evalue"] == "name 'undefined_name' is not defined"
            trace = "\n".join(reply["traceback"])
            assert 'File "<command>", line 2, in f' in trace
            assert [m["type"] for m in out if m["type"] in ("error", "stream")] == ["error"]

            define = (
                f"import base64\nPNG = base64.b64decode({base64.b64encode(_PNG).decode()!r})\n"
                "class Pic:\n    def _repr_png_(self):\n        return PNG\n"
            )
            await _run(kc, define)
            reply, out = await _run(kc, "display(Pic())")
            images = [m for m in out if m["type"] == "display_data"]
            assert base64.b64decode(images[0]["data"]["image/png"]) == _PNG

            # %md is shown locally, as the SSH kernel's idiom shows it
            reply, out = await _run(kc, "%%md\n# Title\n*text*")
            shown = [m for m in out if m["type"] == "display_data"]
            assert shown[0]["data"]["text/markdown"] == "# Title\n*text*"
            reply, out = await _run(kc, "%pip install x")
            assert reply["status"] == "error" and "not available" in reply["evalue"]
            reply, out = await _run(kc, "spark = dbcontext()")
            assert reply["status"] == "error" and "Spark is not available" in reply["evalue"]
        finally:
            await _stop(km, kc)
        # shutdown destroyed the context
        assert contexts(running_cluster) == []
        assert board.get(km.kernel_id).state == "dead"

    asyncio.run(scenario())


def test_table_results_are_the_ssh_kernels_tables() -> None:
    """A REST 1.2 table answer becomes the idioms' table (HTML and text)."""
    from databricks.sdk.service.compute import CommandStatus, CommandStatusResponse, Results

    answer = CommandStatusResponse.from_dict(
        {
            "status": "Finished",
            "results": {
                "resultType": "table",
                "schema": [{"name": "id", "type": '"long"'}, {"name": "<b>", "type": '"string"'}],
                "data": [[1, "a"], [2, None]],
                "truncated": True,
            },
        }
    )
    assert answer.status == CommandStatus.FINISHED and isinstance(answer.results, Results)
    (kind, content), *rest = render.render(answer).messages
    assert kind == "display_data" and not rest
    assert "<th>&lt;b&gt;</th>" in content["data"]["text/html"]
    assert "Showing 2 of 3+ rows" in content["data"]["text/plain"]
    assert "null" in content["data"]["text/plain"]
    # %sql asks for one row more than its limit and shows the limit
    limited = render.render(answer, sql_limit=1).messages[0][1]["data"]["text/plain"]
    assert limited.endswith("Showing 1 of 2+ rows")


def test_errors_and_images_as_a_real_driver_words_them() -> None:
    """Summaries marked up with HTML or ANSI colours, a cancelled command, a plotted file."""
    from databricks.sdk.service.compute import CommandStatusResponse

    def answer(status: str, **results: Any) -> Any:
        return CommandStatusResponse.from_dict({"status": status, "results": results})

    marked = answer(
        "Finished",
        resultType="error",
        summary="<span class='ansi-red-fg'>ZeroDivisionError</span>: division by zero",
        cause="\x1b[0;31mZeroDivisionError\x1b[0m  Traceback\n----> 1 1/0\n",
    )
    output = render.render(marked)
    assert (output.error["ename"], output.error["evalue"]) == (
        "ZeroDivisionError",
        "division by zero",
    )
    assert output.error["traceback"][1] == "----> 1 1/0"
    assert output.error["traceback"][-1] == "ZeroDivisionError: division by zero"
    cancelled = render.render(
        answer("Cancelled", resultType="error", summary="Cancelled", cause="")
    )
    assert cancelled.error["ename"] == "KeyboardInterrupt"
    plotted = render.render(answer("Finished", resultType="image", fileName="/plots/a.png"))
    assert "/plots/a.png" in plotted.messages[0][1]["data"]["text/plain"]


def test_sql_plans() -> None:
    plan = render.plan("%%sql --limit 5 -p n\nselect :n; select 2")
    assert plan.sql_limit == 5 and plan.code is not None
    compile(plan.code, "<sql>", "exec")
    assert '["select :n", "select 2"]' in plan.code
    assert render.plan("%%sql select 1").local.error["ename"] == "UsageError"
    assert render.plan("%sql --limit x select 1").local.error is not None
    assert render.plan("print(1)").code == "print(1)"


@pytest.mark.skipif(not HAVE_SPARK, reason="needs DBJL_TEST_PYSPARK_PATH and Java")
@pytest.mark.simulator(time_scale=0.1, pyspark_path=PYSPARK_PATH)
def test_sql_and_display_give_tables_with_spark(cmd_kernel: str) -> None:
    async def scenario() -> None:
        km, kc = await _start(cmd_kernel)
        try:
            assert board.get(km.kernel_id).state == "running-spark"
            reply, out = await _run(kc, "%sql --limit 3 select id from range(10)", timeout=120)
            assert reply["status"] == "ok", reply
            (table,) = _tables(out)
            assert "Showing 3 of 4+ rows" in table["text/plain"]
            assert "<th>id</th>" in table["text/html"]
            reply, out = await _run(kc, "display(spark.range(2))", timeout=120)
            assert _tables(out)[0]["text/plain"].endswith("2 rows")
            reply, out = await _run(kc, "dbcontext() is spark")
            assert _stdout(out) == "True\n"
            reply, out = await _run(kc, "_sqldf.count()", timeout=120)
            assert _stdout(out) == "10\n"
        finally:
            await _stop(km, kc)

    asyncio.run(scenario())


def test_interrupt_cancels_and_restart_gives_a_new_context(
    cmd_kernel: str, running_cluster: Any
) -> None:
    async def scenario() -> None:
        km, kc = await _start(cmd_kernel)
        try:
            await _run(kc, "import time\nkept = 'yes'")
            first = km.provisioner.context_id
            msg_id = kc.execute("print('looping', flush=True)\ntime.sleep(60)")
            # the running line shows after a second: the command runs on the cluster
            deadline = time.monotonic() + 30
            while True:
                msg = await kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] in (
                    "display_data",
                    "update_display_data",
                ):
                    assert "Running on cluster" in msg["content"]["data"]["text/plain"]
                    break
            started = time.monotonic()
            await km.interrupt_kernel()
            reply = await kc._async_get_shell_msg(timeout=30)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = await kc._async_get_shell_msg(timeout=30)
            assert time.monotonic() - started < 15
            assert reply["content"]["status"] == "error"
            assert reply["content"]["ename"] == "KeyboardInterrupt"
            _, out = await _run(kc, "kept")
            assert _stdout(out) == "'yes'\n"

            await km.restart_kernel()
            await kc.wait_for_ready(timeout=30)
            second = km.provisioner.context_id
            assert second != first and contexts(running_cluster) == [second]
            reply, out = await _run(kc, "kept")
            assert reply["ename"] == "NameError"
            assert board.get(km.kernel_id).state == "running"
        finally:
            await _stop(km, kc)
        assert contexts(running_cluster) == []

    asyncio.run(scenario())


def test_terminated_cluster_is_reported_like_a_lost_link(
    cmd_kernel: str, running_cluster: Any
) -> None:
    async def scenario() -> None:
        km, kc = await _start(cmd_kernel)
        try:
            await _run(kc, "x = 1")
            running_cluster.simulator.terminate(running_cluster.cluster_id)
            record = await _wait_record(km.kernel_id, lambda r: r.state == "disconnected")
            assert "TERMINATED" in record.message and "start the cluster" in record.message
            reply, _ = await _run(kc, "x")
            assert reply["status"] == "error" and "TERMINATED" in reply["evalue"]
            assert await km.is_alive()  # the kernel waits for a restart, as the user chooses
        finally:
            await _stop(km, kc)
        assert board.get(km.kernel_id).state == "dead"

    asyncio.run(scenario())


def test_terminated_cluster_refuses_the_start(
    simulator: Any, sim_profile: Any, jupyter_dirs: Path
) -> None:
    name = kernelspecs.create_kernelspec(
        sim_profile.name, sim_profile.cluster_id, "sim-cluster", transport="command-api"
    )

    async def scenario() -> None:
        km = AsyncKernelManager(kernel_name=name)
        with pytest.raises(Exception, match="TERMINATED"):
            await km.start_kernel()
        assert board.get(km.kernel_id).state == "dead"

    asyncio.run(scenario())


def test_notebook_runs_with_nbclient(cmd_kernel: str, running_cluster: Any) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("A notebook"),
        nbformat.v4.new_code_cell("import os\nn = 6 * 7\nprint(os.getcwd())"),
        nbformat.v4.new_code_cell("%md **n** is ready"),
        nbformat.v4.new_code_cell("n"),
    ]
    NotebookClient(nb, kernel_name=cmd_kernel, timeout=60, startup_timeout=60).execute()
    assert nb.cells[1].outputs[0]["text"].endswith("/databricks/driver\n")
    assert nb.cells[2].outputs[0]["data"]["text/markdown"] == "**n** is ready"
    assert nb.cells[3].outputs[0]["text"] == "42\n"
    assert nb.metadata["language_info"]["name"] == "python"
    assert contexts(running_cluster) == []


def test_cli_writes_a_command_api_kernelspec(
    sim_profile: Any, jupyter_dirs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from databrickslabs_jupyterlab import cli

    cid = sim_profile.cluster_id
    code = cli.main(["demo", "-k", "-i", cid, "--transport", "command-api", "--yes", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["transport"] == "command-api" and data["installed"] == []
    assert data["display_name"].startswith(f"Command API {cid} demo:sim-cluster (")
    spec = KernelSpecManager().get_kernel_spec(data["kernel_name"])
    assert spec.metadata["databricks"]["transport"] == "command-api"
    assert sim_profile.simulator.token not in json.dumps(spec.to_dict())
    # without -k, and with an unknown transport: usage errors, before anything else
    assert cli.main(["demo", "--transport", "command-api"]) == cli.EXIT_USAGE
    assert "--transport only applies to -k" in capsys.readouterr().err
    assert cli.main(["demo", "-k", "-i", cid, "--transport", "telnet"]) == cli.EXIT_USAGE
    assert "invalid choice: 'telnet'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ Jupyter server


@pytest.fixture
def jp_server_config(sim_profile: Any) -> Any:
    from tests.test_api import server_config

    config = server_config(sim_profile)
    config["KernelRestarter"] = {"time_to_dead": 0.5}  # a wrong auto-restart would show
    return config


async def test_in_jupyter_server_like_an_ssh_kernel(
    sim_profile: Any,
    jp_fetch: Any,
    jp_serverapp: Any,
    jp_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kernel endpoint, cluster status and events, and the cluster's start restarting a kernel
    whose context was lost: as for an SSH kernel (tests/test_api_kernels.py)."""
    from tests.test_api import Client, assert_no_secret
    from tests.test_api_kernels import _connected, _kernel, _run, _until_kernel

    monkeypatch.setenv("DBJL_COMMAND_CHECK_INTERVAL", "0.5")
    client = Client(jp_fetch)
    sim, cid = sim_profile.simulator, sim_profile.cluster_id
    await _connected(client, sim_profile)
    ksm = KernelSpecManager(data_dir=str(jp_data_dir))
    name = kernelspecs.create_kernelspec(
        "demo", cid, "sim-cluster", env="lab", manager=ksm, transport="command-api"
    )
    reply = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    kernel_id = json.loads(reply.body)["id"]
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    body = await _until_kernel(client, kernel_id, {"running"}, 30)
    assert body["cluster_id"] == cid
    assert {"kernel_id": kernel_id, "kernel_state": "running"} in body["cluster"]["kernels"]
    assert await _run(km, "print(6 * 7)") == "42\n"
    first = km.provisioner.context_id

    await asyncio.to_thread(sim.terminate, cid)
    body = await _until_kernel(client, kernel_id, {"disconnected", "dead"}, 20)
    assert body["kernel_state"] == "disconnected"
    await asyncio.to_thread(sim.wait_state, cid, "TERMINATED")
    await client.until(sim_profile, {"terminated"}, timeout=20)
    body = await _kernel(client, kernel_id)
    assert body["kernel_state"] == "disconnected"
    said = [e["message"] for e in body["cluster"]["events"] if kernel_id in e["message"]]
    assert any("TERMINAT" in m and "start the cluster" in m for m in said), said

    # The cluster's start restarts the kernel: a new context, and cells run again.
    await _connected(client, sim_profile)
    body = await _until_kernel(client, kernel_id, {"running", "dead"}, 60)
    assert body["kernel_state"] == "running"
    assert await _run(km, "print(6 * 7)") == "42\n"
    assert km.provisioner.context_id not in (None, first)
    assert contexts(sim_profile) == [km.provisioner.context_id]
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert contexts(sim_profile) == []
    assert board.get(kernel_id).state == "dead"
    assert_no_secret(sim_profile, client, caplog)


def test_blocking_kernel_manager_like_jupyter_console(
    cmd_kernel: str, running_cluster: Any
) -> None:
    """The synchronous API (``jupyter console``) runs no event loop between its calls."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=cmd_kernel)
    km.start_kernel()
    try:
        assert board.get(km.kernel_id).state == "running"
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=90)
        out: list[str] = []
        reply = kc.execute_interactive(
            "print(6 * 7)",
            timeout=30,
            output_hook=lambda m: out.append(m["content"].get("text", "")),
        )
        assert reply["content"]["status"] == "ok" and "".join(out) == "42\n"
        kc.stop_channels()
    finally:
        km.shutdown_kernel()
    assert contexts(running_cluster) == []
    assert board.get(km.kernel_id).state == "dead"
