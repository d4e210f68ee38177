"""The notebook idioms (%sql, %fs, %sh, %md, %pip, display, displayHTML) in a real IPython shell.

The pure parts run in the in-process shell of ``IPython.testing.globalipapp``. The Spark parts
run when pyspark is importable here or ``DBJL_TEST_PYSPARK_PATH`` names a folder holding it (as
for the real-Spark test of test_provisioner.py), and need Java; they share one local
SparkSession. One test goes through a real ipykernel started by a local KernelManager.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.testing.globalipapp import get_ipython
from IPython.utils.capture import capture_output

from databrickslabs_jupyterlab import connect, idioms

# Read before the autouse fixture clears DBJL_* variables.
PYSPARK_PATH = os.environ.get("DBJL_TEST_PYSPARK_PATH") or None
HAVE_PYSPARK = importlib.util.find_spec("pyspark") is not None or bool(
    PYSPARK_PATH and Path(PYSPARK_PATH, "pyspark", "__init__.py").is_file()
)
needs_spark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_PYSPARK, reason="pyspark is not importable here"),
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java"),
]


@pytest.fixture(scope="module")
def shell() -> Any:
    ip = get_ipython()
    # The terminal shell formats text/plain only; a kernel formats every type.
    ip.display_formatter.active_types = ip.display_formatter.format_types
    assert idioms.register(ip)
    return ip


def run(shell: Any, code: str) -> tuple[Any, Any]:
    """(execution result, captured output) of one cell."""
    with capture_output() as cap:
        result = shell.run_cell(code)
    return result, cap


def bundles(cap: Any) -> list[dict[str, str]]:
    return [output.data for output in cap.outputs]


# ------------------------------------------------------------------------ import, registration


def test_imports_with_the_standard_library_only_and_is_a_no_op_outside_ipython() -> None:
    code = (
        "import sys\n"
        "for name in ('IPython', 'pyspark', 'pandas', 'traitlets'):\n"
        "    sys.modules[name] = None\n"  # any import of these now fails
        "from databrickslabs_jupyterlab import idioms\n"
        "print(idioms.register())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_register_installs_the_magics_and_names_once(shell: Any) -> None:
    for name in ("sql", "fs", "sh", "md", "pip"):
        assert shell.find_line_magic(name) is not None
    for name in ("sql", "fs", "sh", "md"):
        assert shell.find_cell_magic(name) is not None
    assert shell.user_ns["display"] is idioms.display
    assert shell.user_ns["displayHTML"] is idioms.displayHTML
    original = shell.find_line_magic("pip")._dbjl_idiom
    assert original.__self__.__class__.__name__ == "PackagingMagics"  # IPython's own %pip
    assert idioms.register(shell)  # again, as a second dbcontext() does
    for event in ("pre_run_cell", "post_run_cell"):  # one pair of cell hooks, not two
        owners = [getattr(c, "__self__", None) for c in shell.events.callbacks[event]]
        assert sum(isinstance(o, idioms._CellJobs) for o in owners) == 1
    assert shell.find_line_magic("pip")._dbjl_idiom is original  # not re-wrapped


@pytest.mark.parametrize(
    ("language", "cell", "advice"),
    [
        ("Scala", "%%scala\nval n = spark.range(3).count()\n", "port it to PySpark"),
        ("R", "%%R\nlibrary(SparkR)\n", "rpy2"),
        ("R", "%%r\nx <- 1\n", "rpy2"),
    ],
)
def test_other_languages_say_in_one_sentence_how_to_run_them(
    shell: Any, language: str, cell: str, advice: str
) -> None:
    """What the HTML import writes for Databricks' %scala and %r commands."""
    from databrickslabs_jupyterlab.notebooks import command_cells

    imported = command_cells(cell.split("\n", 1)[1], language.lower())[0].source
    assert imported.splitlines()[0] in ("%%scala", "%%R")
    for source in (cell, imported):
        result, cap = run(shell, source)
        assert isinstance(result.error_in_exec, UsageError)
        message = str(result.error_in_exec)
        assert message.startswith(f"This kernel runs Python on the driver, so a {language} cell")
        assert advice in message and message.count(". ") == 0  # one sentence
        assert "Traceback" not in cap.stdout + cap.stderr


def test_an_r_magic_of_rpy2_is_not_hidden(shell: Any) -> None:
    cells = shell.magics_manager.magics["cell"]
    ours = cells.pop("R")

    def rpy2_like(line: str, cell: str) -> str:
        return "ran R"

    shell.register_magic_function(rpy2_like, "cell", "R")
    try:
        assert idioms.register(shell)
        assert shell.run_cell_magic("R", "", "x <- 1") == "ran R"
    finally:
        cells["R"] = ours
        shell.magics_manager.magics["line"]["R"] = ours


def test_magic_text_is_not_expanded(shell: Any) -> None:
    shell.user_ns["secret"] = "EXPANDED"
    _, cap = run(shell, "%md {secret} and $secret\n")
    assert bundles(cap) == [
        {"text/markdown": "{secret} and $secret", "text/plain": "{secret} and $secret"}
    ]


# ------------------------------------------------------------------------ %md, %sh, %pip


def test_md_renders_markdown(shell: Any) -> None:
    _, cap = run(shell, "%%md\n# Title\n\n* one <b>two</b>\n")
    assert bundles(cap) == [
        {
            "text/markdown": "# Title\n\n* one <b>two</b>\n",
            "text/plain": "# Title\n\n* one <b>two</b>\n",
        }
    ]


def test_sh_prints_both_streams_and_a_failure_is_an_error(shell: Any) -> None:
    result, cap = run(shell, "%%sh\necho out\necho err >&2\nexit 3\n")
    assert isinstance(result.error_in_exec, idioms.CommandFailed)
    assert "status 3" in str(result.error_in_exec)
    assert "out\n" in cap.stdout and "err\n" in cap.stderr
    result, cap = run(shell, "%sh echo fine\n")
    assert result.success and cap.stdout == "fine\n"


def test_sh_never_waits_for_input(shell: Any) -> None:
    result, cap = run(shell, '%sh read line; echo "got:[$line] status:$?"\n')
    assert result.success
    assert cap.stdout == "got:[] status:1\n"


class _Watcher:
    """A stream that reacts to a text as soon as it is written."""

    def __init__(self, trigger: str, action: Any) -> None:
        self.text, self.trigger, self.action, self.fired = "", trigger, action, False

    def write(self, text: str) -> None:
        self.text += text
        if not self.fired and self.trigger in self.text:
            self.fired = True
            self.action()

    def flush(self) -> None:
        pass


def test_sh_streams_output_while_the_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command waits on a FIFO that the test fills only once the first line has arrived:
    without streaming it would never end."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def release() -> None:
        with open(fifo, "w") as f:
            f.write("go\n")

    out = _Watcher("first\n", release)
    monkeypatch.setattr(sys, "stdout", out)
    status = idioms.run_shell(["/bin/sh", "-c", f"echo first; read x < {fifo}; echo second $x"])
    assert status == 0 and out.text == "first\nsecond go\n"


def test_sh_interrupt_ends_the_command_and_its_children(monkeypatch: pytest.MonkeyPatch) -> None:
    pgid: list[int] = []

    def interrupt() -> None:
        pgid.append(int(out.text.split()[0]))
        os.kill(os.getpid(), signal.SIGINT)

    out = _Watcher("started", interrupt)
    monkeypatch.setattr(sys, "stdout", out)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            idioms.run_shell(["/bin/sh", "-c", "echo $$ started; sleep 60 & wait"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert _group_gone(pgid[0], within=10.0)  # the sleep in the same group is gone too


def _group_gone(pgid: int, within: float) -> bool:
    """Whether process group ``pgid`` ends within ``within`` seconds (an orphan needs a moment
    to be reaped by init)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_pip_warns_that_executors_do_not_get_it(shell: Any) -> None:
    result, cap = run(shell, "%pip --version\n")  # IPython's %pip prints to the process's fd 1
    assert result.success and idioms.PIP_WARNING not in cap.stderr
    result, cap = run(shell, "%pip install --no-index --dry-run no-such-package-dbjl\n")
    assert idioms.PIP_WARNING in cap.stderr


# ------------------------------------------------------------------------ %fs


@pytest.fixture
def fs_shell(shell: Any) -> Iterator[Any]:
    shell.user_ns["dbutils"] = connect.LocalDbUtils()
    yield shell
    shell.user_ns.pop("dbutils", None)


def test_fs_commands_on_local_dbutils(fs_shell: Any, tmp_path: Path) -> None:
    base = tmp_path / "data"
    magic = fs_shell.run_line_magic
    assert magic("fs", f"mkdirs {base}/sub")
    assert magic("fs", f"put {base}/a.txt 'hello <world>'")
    with pytest.raises(FileExistsError):
        magic("fs", f"put {base}/a.txt again")
    assert magic("fs", f"put -f {base}/a.txt 'hello & <again>'")
    assert (base / "a.txt").read_text() == "hello & <again>"

    with capture_output() as cap:
        assert magic("fs", f"head {base}/a.txt") is None
        magic("fs", f"head --maxBytes=5 {base}/a.txt")
    assert cap.stdout == "hello & <again>\nhello\n"

    assert magic("fs", f"cp {base}/a.txt {base}/sub/b.txt")
    with pytest.raises(IsADirectoryError):
        magic("fs", f"cp {base}/sub {base}/copy")
    assert magic("fs", f"cp -r {base}/sub {base}/copy")
    assert (base / "copy" / "b.txt").read_text() == "hello & <again>"
    assert magic("fs", f"mv {base}/copy/b.txt {base}/c.txt")
    with pytest.raises(OSError):
        magic("fs", f"rm {base}/sub")  # not empty, no -r
    assert magic("fs", f"rm -r {base}/sub")
    assert sorted(p.name for p in base.iterdir()) == ["a.txt", "c.txt", "copy"]


def test_fs_ls_is_an_escaped_table(fs_shell: Any, tmp_path: Path) -> None:
    (tmp_path / "<b>x&y.txt").write_text("12345")
    (tmp_path / "dir").mkdir()
    result, cap = run(fs_shell, f"%fs ls file:{tmp_path}\n")
    assert result.success and result.result is None
    [bundle] = bundles(cap)
    markup = bundle["text/html"]
    assert "<th>path</th><th>name</th><th>size</th><th>modificationTime</th>" in markup
    assert "<td>&lt;b&gt;x&amp;y.txt</td><td>5</td>" in markup
    assert "<b>x" not in markup
    assert "<td>dir/</td>" in markup and "2 rows" in markup
    assert "<b>x&y.txt" in bundle["text/plain"]


def test_fs_cell_forms(fs_shell: Any, tmp_path: Path) -> None:
    result, _ = run(fs_shell, f"%%fs put {tmp_path}/note.md\n# Note\nline two\n")
    assert result.success and (tmp_path / "note.md").read_text() == "# Note\nline two\n"
    result, _ = run(
        fs_shell,
        f"%%fs\nmkdirs {tmp_path}/x\n# a comment\ncp {tmp_path}/note.md {tmp_path}/x/n.md\n",
    )
    assert result.success and (tmp_path / "x" / "n.md").is_file()


@pytest.mark.parametrize(
    "line, message",
    [
        ("", "Usage"),
        ("bogus /tmp", "unknown command"),
        ("rm -f /tmp/x", "unknown option -f"),
        ("cp /tmp/x", "wrong number"),
        ("head --maxBytes=x /tmp/x", "must be a number"),
        ("put /tmp/x 'unbalanced", "No closing quotation"),
    ],
)
def test_fs_usage_errors(fs_shell: Any, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        fs_shell.run_line_magic("fs", line)


def test_fs_and_sql_without_dbcontext_say_what_to_do(shell: Any) -> None:
    shell.user_ns.pop("dbutils", None)
    saved = shell.user_ns.pop("spark", None)
    try:
        with pytest.raises(UsageError, match=r"run dbcontext\(\) first"):
            shell.run_line_magic("fs", "ls /")
        with pytest.raises(UsageError, match=r"run dbcontext\(\) first"):
            shell.run_line_magic("sql", "SELECT 1")
    finally:
        if saved is not None:
            shell.user_ns["spark"] = saved


# ------------------------------------------------------------------------ display, tables


def test_table_bundle_escapes_every_value() -> None:
    bundle = idioms.table_bundle(
        ["<th>", "a&b"], [("<script>alert(1)</script>", None), ('"q"', 3)], shown=2, total="2"
    )
    markup = bundle["text/html"]
    assert "<script>" not in markup and "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert "<th>&lt;th&gt;</th><th>a&amp;b</th>" in markup
    assert "<td>&quot;q&quot;</td>" in markup and "<td>null</td>" in markup
    assert bundle["text/plain"].splitlines()[-1] == "2 rows"
    truncated = idioms.table_bundle(["x"], [(1,)], shown=1, total="2+")
    assert "Showing 1 of 2+ rows" in truncated["text/html"]


def test_display_falls_back_to_ipython(shell: Any) -> None:
    class Rich:
        def _repr_html_(self) -> str:
            return "<em>rich</em>"

    shell.user_ns["Rich"] = Rich
    _, cap = run(shell, "display('plain', Rich())\ndisplayHTML('<b>as is</b>')\n")
    data = bundles(cap)
    assert data[0] == {"text/plain": "'plain'"}
    assert data[1]["text/html"] == "<em>rich</em>"
    assert data[2]["text/html"] == "<b>as is</b>"


def test_display_pandas_dataframe(shell: Any) -> None:
    pd = pytest.importorskip("pandas")
    shell.user_ns["pdf"] = pd.DataFrame({"n": range(5), "tag": ["<i>", "b", "c", "d", "e"]})
    _, cap = run(shell, "display(pdf, limit=2)\n")
    [bundle] = bundles(cap)
    markup = bundle["text/html"]
    assert "<th></th><th>n</th><th>tag</th>" in markup
    assert "<td>0</td><td>0</td><td>&lt;i&gt;</td>" in markup
    assert markup.count("<tr>") == 3 and "Showing 2 of 5 rows" in markup


# ------------------------------------------------------------------------ Spark


@pytest.fixture(scope="module")
def spark_shell(shell: Any) -> Iterator[Any]:
    """The shell after dbcontext(): one local SparkSession for the module's Spark tests."""
    added = bool(PYSPARK_PATH) and importlib.util.find_spec("pyspark") is None
    if added:
        sys.path.insert(0, PYSPARK_PATH)
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k == "DATABRICKS_RUNTIME_VERSION"}
    names = connect.dbcontext(quiet=True)
    os.environ.update(saved)
    yield shell
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    names["spark"].stop()
    for name in ("spark", "sc", "sqlContext", "dbutils", "_sqldf"):
        shell.user_ns.pop(name, None)
    if gateway is not None:  # end the JVM: its stdin closing makes it exit
        gateway.shutdown()
        gateway.proc.stdin.close()
        gateway.proc.wait(60)
        SparkContext._gateway = SparkContext._jvm = None
    if added:  # later tests (test_connect's) see no pyspark again, as at collection
        sys.path.remove(PYSPARK_PATH)
        for module in [m for m in sys.modules if m.split(".")[0] in ("pyspark", "py4j")]:
            del sys.modules[module]


def _spark(test: Any) -> Any:
    for mark in needs_spark:
        test = mark(test)
    return test


@_spark
def test_dbcontext_registers_the_idioms(spark_shell: Any) -> None:
    assert spark_shell.user_ns["displayHTML"] is idioms.displayHTML
    assert spark_shell.find_cell_magic("sql") is not None


@_spark
def test_sql_statements_run_in_order_and_the_last_is_shown(spark_shell: Any) -> None:
    result, cap = run(
        spark_shell,
        "%%sql\n"
        "CREATE OR REPLACE TEMP VIEW idioms_t AS\n"
        "  SELECT id, concat('<b>', id, ';') AS tag FROM range(5);\n"
        "-- a comment; with a semicolon\n"
        "SELECT * FROM idioms_t WHERE id < 3 ORDER BY id\n",
    )
    assert result.success, result.error_in_exec
    [bundle] = bundles(cap)
    markup = bundle["text/html"]
    assert "<th>id</th><th>tag</th>" in markup
    assert "<td>2</td><td>&lt;b&gt;2;</td>" in markup and "<b>" not in markup
    assert "3 rows" in markup and "3 rows" in bundle["text/plain"]
    sqldf = spark_shell.user_ns["_sqldf"]
    assert idioms.is_spark_dataframe(sqldf)
    assert [r.id for r in sqldf.collect()] == [0, 1, 2]


@_spark
def test_sql_row_limit(spark_shell: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, cap = run(spark_shell, "%sql --limit 4 SELECT id FROM range(10)\n")
    [bundle] = bundles(cap)
    assert bundle["text/html"].count("<tr>") == 5  # header + 4
    assert "Showing 4 of 5+ rows" in bundle["text/html"]
    assert spark_shell.user_ns["_sqldf"].count() == 10  # the limit is only for the display
    monkeypatch.setattr(idioms.options, "max_rows", 2)
    _, cap = run(spark_shell, "%sql SELECT id FROM range(10)\n")
    assert "Showing 2 of 3+ rows" in bundles(cap)[0]["text/html"]


@_spark
def test_sql_parameters_are_bound_not_pasted(spark_shell: Any) -> None:
    spark_shell.user_ns["wanted"] = 3
    spark_shell.user_ns["evil"] = "x' OR '1'='1"
    _, cap = run(spark_shell, "%sql -p wanted SELECT id FROM range(10) WHERE id = :wanted\n")
    assert [r.id for r in spark_shell.user_ns["_sqldf"].collect()] == [3]
    result, cap = run(
        spark_shell,
        "%%sql -p evil\nSELECT :evil AS v, count(*) AS n FROM range(3) WHERE 'x' = :evil\n",
    )
    assert result.success, result.error_in_exec
    [row] = spark_shell.user_ns["_sqldf"].collect()
    assert (row.v, row.n) == ("x' OR '1'='1", 0)
    with pytest.raises(UsageError, match="no variable nowhere"):
        spark_shell.run_line_magic("sql", "-p nowhere SELECT :nowhere")


@_spark
def test_display_spark_dataframe(spark_shell: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idioms.options, "max_rows", 1000)
    _, cap = run(spark_shell, "display(spark.range(3).selectExpr('id', \"'<&>' AS s\"))\n")
    [bundle] = bundles(cap)
    assert "<td>1</td><td>&lt;&amp;&gt;</td>" in bundle["text/html"]
    assert bundle["text/html"].count("<tr>") == 4 and "3 rows" in bundle["text/html"]
    _, cap = run(spark_shell, "display(spark.range(2000))\n")
    assert bundles(cap)[0]["text/html"].count("<tr>") == 1001
    assert "Showing 1000 of 1001+ rows" in bundles(cap)[0]["text/html"]


# ------------------------------------------------------------------------ a real kernel


@_spark
@pytest.mark.timeout(240)
def test_sql_cell_and_display_in_a_real_kernel() -> None:
    from jupyter_client.manager import KernelManager

    env = dict(os.environ)
    env.pop("DATABRICKS_RUNTIME_VERSION", None)
    if PYSPARK_PATH:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PYSPARK_PATH, env.get("PYTHONPATH")]))
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)

        def execute(code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            """(execute_reply content, iopub messages up to the idle status of the request)."""
            msg_id = kc.execute(code)
            messages = []
            while True:
                msg = kc.get_iopub_msg(timeout=120)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                messages.append(msg)
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
            while True:
                reply = kc.get_shell_msg(timeout=30)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"], messages

        def html_outputs(messages: list[dict[str, Any]]) -> list[str]:
            return [
                m["content"]["data"]["text/html"]
                for m in messages
                if m["msg_type"] == "display_data"
                and "dbjl-table" in m["content"]["data"].get("text/html", "")  # not progress
            ]

        reply, _ = execute("from databrickslabs_jupyterlab.connect import dbcontext\ndbcontext()")
        assert reply["status"] == "ok", reply
        reply, messages = execute("%%sql\nSELECT 1 AS one, '<i>' AS tag\n")
        assert reply["status"] == "ok", reply
        [markup] = html_outputs(messages)
        assert "<td>1</td><td>&lt;i&gt;</td>" in markup
        reply, messages = execute("display(_sqldf.selectExpr('one + 1 AS two'))")
        assert reply["status"] == "ok", reply
        [markup] = html_outputs(messages)
        assert "<th>two</th>" in markup and "<td>2</td>" in markup

        # A job of about three seconds (six rows sleeping 1 s each, on two partitions).
        reply, messages = execute(
            "spark.sql(\"SELECT reflect('java.lang.Thread', 'sleep', CAST(1000 AS BIGINT)) "
            'FROM range(0, 6, 1, 2)").collect()'
        )
        assert reply["status"] == "ok", reply
        progress = [
            (m["msg_type"], m["content"]["data"]["text/plain"])
            for m in messages
            if m["msg_type"] in ("display_data", "update_display_data")
        ]
        assert progress[0][0] == "display_data"
        assert progress[0][1].startswith("Spark: 1 job running, stage ")
        assert progress[-1] == ("update_display_data", "Spark: 1 job finished")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@_spark
def test_an_interrupted_cell_cancels_its_spark_jobs(spark_shell: Any) -> None:
    """A SIGINT while a cell waits for Spark (what ipykernel's interrupt does) cancels its job."""
    spark = spark_shell.user_ns["spark"]
    tracker = spark.sparkContext.statusTracker()
    started = threading.Event()

    def interrupt_once_running() -> None:
        deadline = time.monotonic() + 60
        while not tracker.getActiveJobsIds() and time.monotonic() < deadline:
            time.sleep(0.05)
        started.set()
        os.kill(os.getpid(), signal.SIGINT)

    spark_shell.user_ns["endless"] = spark.range(0, 10**13, numPartitions=4).selectExpr("max(id)")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_once_running, daemon=True).start()
        result, _ = run(spark_shell, "endless.collect()\n")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
    # A KeyboardInterrupt, or py4j's network error when the interrupt cut its answer short.
    assert started.is_set() and result.error_in_exec is not None
    deadline = time.monotonic() + 30  # a hang guard: a cancelled job ends within a second here
    while tracker.getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tracker.getActiveJobsIds() == []
    result, cap = run(spark_shell, "print(spark.range(5).count())\n")  # the session still works
    assert result.success and cap.stdout == "5\n"
