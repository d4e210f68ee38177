"""The REPL behind one REST 1.2 execution context, run by the simulated driver's Python.

A standalone script (standard library at import time; pyspark only when the driver has Spark),
started by path, so that the driver venv needs nothing of this package. One process per context,
one command at a time, one namespace for the context's life, like a notebook REPL on a driver.

Protocol: JSON lines. Requests on stdin: ``{"id", "language", "command"}`` runs a command (the
simulator sends the next one only after the previous reply), ``{"cancel": id}`` interrupts that
command (a SIGINT to the main thread, only while that very command runs) or skips it if it has
not started. Replies on the original stdout: ``{"ready": ...}`` once, then ``{"id", "results",
"cancelled"}`` per command. The file descriptors 1 and 2 then go to the context's log, so that
output written by child processes or C code never corrupts the protocol.

Usage: ``python repl.py LOG_FILE [SPARK_GATEWAY_FILE]``
"""

from __future__ import annotations

import ast
import base64
import contextlib
import io
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Any

#: Rows of a table result before ``truncated`` (a notebook's display shows the first 1000).
MAX_ROWS = 1000
SPARK_WAIT_SECONDS = 300.0

_executing = False
_lock = threading.Lock()
_current: str | None = None  # the command running now
_cancel: set[str] = set()  # commands to interrupt or skip


def _on_sigint(signum: int, frame: Any) -> None:
    # Only the command that was asked to stop: a late signal never hits the next command.
    if _executing and _current in _cancel:
        raise KeyboardInterrupt


def _read_requests(requests: queue.Queue[dict[str, Any] | None]) -> None:
    """Reader thread: commands go to the main thread, cancels are acted on at once."""
    main_thread = threading.main_thread().ident
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if "cancel" in request:
            with _lock:
                _cancel.add(str(request["cancel"]))
                if _current == request["cancel"] and main_thread is not None:
                    signal.pthread_kill(main_thread, signal.SIGINT)
        else:
            requests.put(request)
    requests.put(None)


class _Display:
    """What ``display()`` and open matplotlib figures produced during one command."""

    def __init__(self) -> None:
        self.table: dict[str, Any] | None = None
        self.images: list[str] = []


def _png_data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if hasattr(value, "asDict"):  # a Spark Row inside a Row
        return [_json_value(v) for v in value]
    return str(value)


def _spark_table(df: Any) -> dict[str, Any]:
    rows = df.limit(MAX_ROWS + 1).collect()
    schema = [
        {"name": f.name, "type": json.dumps(f.dataType.jsonValue()), "metadata": "{}"}
        for f in df.schema.fields
    ]
    return {
        "resultType": "table",
        "schema": schema,
        "data": [[_json_value(v) for v in row] for row in rows[:MAX_ROWS]],
        "truncated": len(rows) > MAX_ROWS,
        "isJsonSchema": True,
    }


def _pandas_table(df: Any) -> dict[str, Any]:
    head = df.head(MAX_ROWS)
    schema = [
        {"name": str(name), "type": json.dumps(str(dtype)), "metadata": "{}"}
        for name, dtype in df.dtypes.items()
    ]
    data = json.loads(head.to_json(orient="values", date_format="iso"))
    return {
        "resultType": "table",
        "schema": schema,
        "data": data,
        "truncated": len(df) > MAX_ROWS,
        "isJsonSchema": True,
    }


def _make_display(shown: list[_Display]) -> Any:
    def display(obj: Any, *args: Any, **kwargs: Any) -> None:
        """Like a notebook's ``display``: a DataFrame becomes the command's table result, an
        object with ``_repr_png_`` (or a matplotlib figure) an image."""
        current = shown[-1]
        module = type(obj).__module__ or ""
        if module.startswith("pyspark.sql") and hasattr(obj, "schema") and hasattr(obj, "limit"):
            current.table = _spark_table(obj)
        elif module.startswith("pandas") and hasattr(obj, "dtypes"):
            current.table = _pandas_table(obj)
        elif hasattr(obj, "_repr_png_"):
            current.images.append(_png_data_url(obj._repr_png_()))
        elif hasattr(obj, "savefig"):
            buf = io.BytesIO()
            obj.savefig(buf, format="png")
            current.images.append(_png_data_url(buf.getvalue()))
        else:
            print(obj)

    return display


def _figures() -> list[str]:
    """PNG data URLs of the matplotlib figures a command left open (then closed)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    urls = []
    for number in plt.get_fignums():
        buf = io.BytesIO()
        plt.figure(number).savefig(buf, format="png")
        urls.append(_png_data_url(buf.getvalue()))
    plt.close("all")
    return urls


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the command's own frames on (the REPL's frames left out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _error(exc: BaseException) -> dict[str, Any]:
    summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return {"resultType": "error", "summary": summary, "cause": _user_traceback(exc)}


def _run_python(code: str, namespace: dict[str, Any], out: io.StringIO) -> Any:
    """Run a cell: every statement, then the value of a final expression (like a notebook)."""
    tree = ast.parse(code, "<command>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<command>", "exec"), namespace)  # noqa: S102 - a REPL runs code
    if last is not None:
        return eval(compile(last, "<command>", "eval"), namespace)  # noqa: S307 - a REPL
    return None


def _execute(request: dict[str, Any], namespace: dict[str, Any], shown: list[_Display]) -> dict:
    global _current
    with _lock:
        _current = str(request.get("id"))
        skip = _current in _cancel
    try:
        if skip:
            return {
                "id": request.get("id"),
                "results": {
                    "resultType": "error",
                    "summary": "Command cancelled",
                    "cause": "Command cancelled before it started",
                },
                "cancelled": True,
            }
        return _execute_now(request, namespace, shown)
    finally:
        with _lock:
            _cancel.discard(_current or "")
            _current = None


def _execute_now(request: dict[str, Any], namespace: dict[str, Any], shown: list[_Display]) -> dict:
    global _executing
    language = request.get("language") or "python"
    code = request.get("command") or ""
    sc = namespace.get("sc")
    group = request.get("id") or "command"
    shown.append(_Display())
    out = io.StringIO()
    cancelled = False
    value = None
    results: dict[str, Any]
    try:
        if sc is not None:
            sc.setJobGroup(group, "REST 1.2 command", True)
        _executing = True
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                if language == "sql":
                    spark = namespace.get("spark")
                    if spark is None:
                        raise RuntimeError("Spark is not available on this driver")
                    namespace["display"](spark.sql(code))
                else:
                    value = _run_python(code, namespace, out)
        finally:
            _executing = False
        if value is not None:
            namespace["_"] = value
            print(repr(value), file=out)
        current = shown[-1]
        images = current.images + _figures()
        if current.table is not None:
            results = current.table
        elif len(images) == 1:
            results = {"resultType": "image", "fileName": images[0]}
        elif images:
            results = {"resultType": "images", "fileNames": images}
        else:
            results = {"resultType": "text", "data": out.getvalue().rstrip("\n")}
    except KeyboardInterrupt as exc:
        cancelled = True
        if sc is not None:
            with contextlib.suppress(Exception):
                sc.cancelJobGroup(group)
        results = {
            "resultType": "error",
            "summary": "Command cancelled",
            "cause": _user_traceback(exc),
        }
    except BaseException as exc:  # SystemExit too: a command never ends the REPL
        results = _error(exc)
    finally:
        shown.pop()
    return {"id": request.get("id"), "results": results, "cancelled": cancelled}


def _attach_spark(gateway_file: str, namespace: dict[str, Any]) -> str | None:
    """Wait for the driver's Spark application, then wrap it: ``spark``, ``sc``, ``sqlContext``.

    Returns the application id, or raises with the reason Spark is not there."""
    deadline = time.monotonic() + SPARK_WAIT_SECONDS
    info: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        try:
            with open(gateway_file) as f:
                info = json.load(f)
            break
        except (OSError, ValueError):
            time.sleep(0.1)
    if info is None:
        raise RuntimeError("the driver's Spark did not start in time")
    if info.get("error"):
        raise RuntimeError(f"the driver's Spark failed to start: {info['error']}")
    os.environ["PYSPARK_GATEWAY_PORT"] = str(info["port"])
    os.environ["PYSPARK_GATEWAY_SECRET"] = str(info["secret"])
    try:
        from pyspark import SparkContext
        from pyspark.java_gateway import launch_gateway
        from pyspark.sql import SparkSession, SQLContext

        gateway = launch_gateway()
    finally:
        os.environ.pop("PYSPARK_GATEWAY_PORT", None)
        os.environ.pop("PYSPARK_GATEWAY_SECRET", None)
    jvm = gateway.jvm
    jsc = jvm.org.apache.spark.api.java.JavaSparkContext(
        jvm.org.apache.spark.SparkContext.getOrCreate()
    )
    sc = SparkContext(gateway=gateway, jsc=jsc)
    jsession = getattr(jvm, "org.apache.spark.sql.classic.SparkSession").getDefaultSession().get()
    spark = SparkSession(sc, jsparkSession=jsession)
    namespace.update(spark=spark, sc=sc, sqlContext=SQLContext(sc, spark))
    return sc.applicationId


def main(argv: list[str]) -> int:
    log_file = argv[1]
    gateway_file = argv[2] if len(argv) > 2 else ""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    signal.signal(signal.SIGINT, _on_sigint)

    def send(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    shown: list[_Display] = []
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    namespace["display"] = _make_display(shown)
    ready: dict[str, Any] = {"ready": True, "spark": None}
    if gateway_file:
        try:
            ready["spark"] = _attach_spark(gateway_file, namespace)
        except Exception as exc:  # the context runs without Spark, and says why
            ready["sparkError"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    send(ready)
    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(target=_read_requests, args=(requests,), daemon=True).start()
    while (request := requests.get()) is not None:
        send(_execute(request, namespace, shown))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
