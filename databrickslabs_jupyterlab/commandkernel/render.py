"""REST 1.2 results as Jupyter output, and the notebook idioms of the SSH kernel for cells that
run in a REST 1.2 context.

Results (``results.resultType``):

* ``text``: the command's printed output and the value of its last expression, as Databricks
  gives them, in one piece: a ``stdout`` stream;
* ``table`` (``schema``, ``data``, ``truncated``): the same HTML and plain-text table as the SSH
  kernel's ``display()`` and ``%sql`` (``idioms.table_bundle``);
* ``image``/``images``: ``image/png`` from a ``data:image/png;base64`` file name; a plain file
  name (a real driver's ``/plots/...`` path) is named as text, since fetching it needs another API;
* ``error``: an error reply whose traceback is the remote cause (its traceback).

Idioms: a cell that starts with ``%md``/``%%md`` is shown as Markdown locally (nothing to run);
one that starts with ``%sql``/``%%sql`` (options ``--limit N`` and ``-p NAME`` as on the SSH
kernel) becomes Python that runs the statements with the context's ``spark`` and ``display()``s
the last result, so the same table comes back. Other magics get one sentence.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..idioms import options, parse_sql_options, split_sql, table_bundle

_TAG = re.compile(r"<[^>]+>")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAGIC = re.compile(r"\s*(%%?)([A-Za-z_][\w-]*)([^\n]*)(?:\n(.*))?\Z", re.DOTALL)
#: Magics the SSH kernel has that a REST 1.2 context cannot run, with what to do instead.
_NOT_HERE = {
    "pip": "install libraries on the cluster (Compute > Libraries) or use an SSH kernel",
    "sh": "run shell commands with subprocess in Python, or use an SSH kernel",
    "fs": "use dbutils.fs in Python",
}


@dataclass
class Output:
    """What one cell shows: iopub messages (type, content) and the reply's error part."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: dict[str, Any] | None = None


@dataclass
class Plan:
    """How a cell runs: ``code`` in the context (None: nothing remote), ``local`` output to show
    without a remote call, and ``sql_limit`` for a ``%sql`` table's caption."""

    code: str | None = None
    local: Output | None = None
    sql_limit: int | None = None


def error_output(ename: str, evalue: str, traceback: list[str]) -> Output:
    content = {"ename": ename, "evalue": evalue, "traceback": traceback}
    return Output([("error", content)], content)


def usage_error(message: str) -> Output:
    return error_output("UsageError", message, [f"UsageError: {message}"])


def plan(code: str) -> Plan:
    """The cell as it runs: plain Python as is, ``%md`` locally, ``%sql`` as Python."""
    match = _MAGIC.match(code)
    if match is None or not code.lstrip().startswith("%"):
        return Plan(code=code)
    cell_mode, name, line, rest = (
        match.group(1) == "%%",
        match.group(2),
        match.group(3),
        match.group(4),
    )
    body = rest or ""
    if name == "md":
        text = (
            (line.strip() + "\n" + body if line.strip() else body)
            if cell_mode or body
            else line.strip()
        )
        return Plan(
            local=Output([("display_data", _bundle({"text/markdown": text, "text/plain": text}))])
        )
    if name == "sql":
        try:
            limit, params, sql = parse_sql_options(line)
        except Exception as exc:  # noqa: BLE001 - the idioms' usage errors
            return Plan(local=usage_error(str(exc)))
        if cell_mode and sql.strip():
            return Plan(
                local=usage_error("%%sql takes options on its first line and SQL below it.")
            )
        statements = split_sql(body if cell_mode else sql + ("\n" + body if body else ""))
        if not statements:
            return Plan(local=usage_error("%sql needs a SQL statement."))
        limit = options.max_rows if limit is None else limit
        return Plan(code=sql_code(statements, params, limit), sql_limit=limit)
    advice = _NOT_HERE.get(name)
    prefix = "%%" if cell_mode else "%"
    if advice:
        return Plan(
            local=usage_error(
                f"{prefix}{name} is not available in a Command Execution API kernel: {advice}."
            )
        )
    return Plan(
        local=usage_error(
            f"{prefix}{name} is not available in a Command Execution API kernel (its cells run in a "
            "REST 1.2 context on the cluster, where only %sql and %md are understood)."
        )
    )


def sql_code(statements: list[str], params: list[str], limit: int) -> str:
    """Python for the context: the statements with ``spark.sql`` (bound parameters as on the SSH
    kernel), ``_sqldf`` set to the last result, which is displayed with one row more than
    ``limit`` (to tell whether there are more)."""
    return (
        "def __dbjl_sql(statements, names, limit):\n"
        "    import re\n"
        "    g = globals()\n"
        "    if g.get('spark') is None:\n"
        "        raise RuntimeError('There is no `spark` in this execution context: the "
        "cluster runs no Spark for it.')\n"
        "    missing = [n for n in names if n not in g]\n"
        "    if missing:\n"
        "        raise NameError('%sql -p: no variable ' + ', '.join(missing) + ' in this "
        "notebook.')\n"
        "    df = None\n"
        "    for s in statements:\n"
        "        used = {n: g[n] for n in names if re.search(':' + n + r'\\b', s)}\n"
        "        df = g['spark'].sql(s, args=used) if used else g['spark'].sql(s)\n"
        "    g['_sqldf'] = df\n"
        "    if df is not None and list(df.columns):\n"
        "        display(df.limit(limit + 1))\n"
        "try:\n"
        f"    __dbjl_sql({json.dumps(statements)}, {json.dumps(params)}, {int(limit)})\n"
        "finally:\n"
        "    del __dbjl_sql\n"
    )


def _bundle(data: dict[str, Any]) -> dict[str, Any]:
    return {"data": data, "metadata": {}}


def clean(text: str) -> str:
    """A summary as plain text: Databricks marks some up with HTML spans or ANSI colours."""
    return html.unescape(_TAG.sub("", _ANSI.sub("", text))).strip()


def _png(file_name: str | None) -> dict[str, Any] | None:
    prefix = "data:image/png;base64,"
    if not file_name:
        return None
    if file_name.startswith(prefix):
        payload = file_name[len(prefix) :]
        try:
            base64.b64decode(payload, validate=True)
        except ValueError:
            return _bundle({"text/plain": "An image the driver sent could not be decoded."})
        return _bundle({"image/png": payload, "text/plain": "<image>"})
    return _bundle({"text/plain": f"An image was saved on the driver as {file_name}."})


def table(results: Any, limit: int | None = None) -> dict[str, Any]:
    """A table result as the SSH kernel's table bundle. With ``limit`` (``%sql``) the context
    sent at most one row more than ``limit``; otherwise ``truncated`` says there were more."""
    columns = [str((c or {}).get("name", "")) for c in (results.schema or [])]
    rows = [list(r) if isinstance(r, list | tuple) else [r] for r in (results.data or [])]
    more = bool(results.truncated)
    if limit is not None and len(rows) > limit:
        rows, more = rows[:limit], True
    texts = [[_value_text(v) for v in row] for row in rows]
    total = f"{len(rows) + 1}+" if more else str(len(rows))
    return _bundle(table_bundle(columns, texts, shown=len(rows), total=total))


def _value_text(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def error(results: Any) -> Output:
    """An error result: ``summary`` as ``ename: evalue``, ``cause`` (the remote traceback) as
    the traceback."""
    summary = clean(results.summary or "") or "The command failed on the cluster"
    first = summary.splitlines()[0]
    name, sep, value = first.partition(":")
    if sep and re.fullmatch(r"[\w.]+", name.strip()):
        ename, evalue = name.strip().rsplit(".", 1)[-1], value.strip()
    else:
        ename, evalue = "RemoteError", first
    cause = (results.cause or "").rstrip("\n")
    traceback = cause.splitlines() if cause.strip() else [summary]
    if clean(cause).splitlines()[-1:] != [first] and cause.strip():
        traceback.append(summary)
    return error_output(ename, evalue, traceback)


def render(answer: Any, sql_limit: int | None = None) -> Output:
    """The Output of a finished, failed or cancelled command (a ``CommandStatusResponse``)."""
    from databricks.sdk.service.compute import CommandStatus, ResultType

    results = answer.results
    status = answer.status
    if status == CommandStatus.CANCELLED:
        cause = (getattr(results, "cause", None) or "").rstrip("\n")
        lines = cause.splitlines() if cause else []
        return error_output(
            "KeyboardInterrupt",
            "the command was cancelled on the cluster",
            lines or ["KeyboardInterrupt"],
        )
    if results is None:
        state = getattr(status, "value", status)
        return error_output("RemoteError", f"The command ended {state} without a result", [])
    kind = results.result_type
    if kind == ResultType.ERROR or status == CommandStatus.ERROR:
        return error(results)
    if kind == ResultType.TABLE:
        return Output([("display_data", table(results, sql_limit))])
    if kind == ResultType.IMAGE:
        shown = _png(results.file_name)
        return Output([("display_data", shown)] if shown else [])
    if kind == ResultType.IMAGES:
        return Output([("display_data", b) for n in results.file_names or [] if (b := _png(n))])
    text = (
        results.data
        if isinstance(results.data, str)
        else ("" if results.data is None else str(results.data))
    )
    if not text:
        return Output()
    return Output(
        [("stream", {"name": "stdout", "text": text if text.endswith("\n") else text + "\n"})]
    )
