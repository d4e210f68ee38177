"""The notebook idioms of Databricks in a Jupyter kernel: ``%sql``, ``%fs``, ``%sh``, ``%md``,
``%pip``, ``display()`` and ``displayHTML()``.

:func:`register` installs them in the running IPython shell; ``dbcontext()`` (``connect.py``)
calls it once Spark is there. Outside IPython it does nothing. Like ``connect.py`` this module
may be shipped to a driver that lacks the package, so it imports only the standard library at
import time; IPython, pyspark and pandas are used lazily, through the objects handed to it.

It also hooks IPython's cell events so that interrupting a cell cancels the Spark jobs the cell
started (:class:`SparkJobTag`).

Text after a magic is taken literally (no ``{var}``/``$var`` expansion by IPython): SQL never
gets Python values pasted into its text. Values reach SQL as bound parameters instead:
``%%sql -p name`` binds the notebook variable ``name`` to the marker ``:name``.
"""

from __future__ import annotations

import codecs
import html
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .sparkjobs import _MARKER, SparkJobTag, SparkProgress, _CellJobs, _is_a

__all__ = [
    "register",
    "display",
    "displayHTML",
    "options",
    "split_sql",
    "table_bundle",
    "run_shell",
    "SparkJobTag",
    "SparkProgress",
    "CommandFailed",
]

#: Environment variable for the default row limit of tables (``options.max_rows``).
MAX_ROWS_ENV = "DBJL_DISPLAY_MAX_ROWS"
DEFAULT_MAX_ROWS = 1000
#: Longest cell text in the text/plain form of a table.
PLAIN_CELL_WIDTH = 40
PIP_WARNING = (
    "Note: %pip installs into this kernel's Python on the driver only. Spark executors do not "
    "get the package: code that runs in UDFs or on workers needs a cluster library instead."
)


class Options:
    """Session-wide settings: ``idioms.options.max_rows = 100`` in a cell changes the default
    row limit of ``%sql`` and ``display()`` (both also take a limit per call)."""

    def __init__(self) -> None:
        raw = os.environ.get(MAX_ROWS_ENV, "").strip()
        self.max_rows = int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_ROWS


options = Options()


class CommandFailed(RuntimeError):
    """A shell command or a pip run ended with a non-zero status (shown without a traceback)."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of the stack
        return [f"{type(self).__name__}: {self}"]


def _usage_error(message: str) -> Exception:
    try:
        from IPython.core.error import UsageError
    except ImportError:  # pragma: no cover - only called from magics, i.e. inside IPython
        return ValueError(message)
    return UsageError(message)


# ------------------------------------------------------------------------ tables


def _cell_text(value: Any) -> str:
    return "null" if value is None else str(value)


def _plain(columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str) -> str:
    def clip(text: str) -> str:
        text = text.replace("\n", " ")
        return text if len(text) <= PLAIN_CELL_WIDTH else text[: PLAIN_CELL_WIDTH - 1] + "…"

    header = [clip(c) for c in columns]
    body = [[clip(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return "\n".join(lines + [caption])


def table_bundle(
    columns: Sequence[Any], rows: Iterable[Sequence[Any]], *, shown: int, total: str
) -> dict[str, str]:
    """The ``text/html`` and ``text/plain`` forms of a table; every header and value is escaped.

    ``total`` is the row count as it should read ("25", or "1000+" when only a limit is known)."""
    names = [_cell_text(c) for c in columns]
    texts = [[_cell_text(v) for v in row] for row in rows]
    word = "row" if total == "1" else "rows"
    caption = f"{shown} {word}" if str(shown) == total else f"Showing {shown} of {total} rows"
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in texts
    )
    markup = (
        '<div class="dbjl-table" style="max-height:40em;overflow:auto">'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<p><small>{html.escape(caption)}</small></p></div>"
    )
    return {"text/html": markup, "text/plain": _plain(names, texts, caption)}


def is_spark_dataframe(obj: Any) -> bool:
    """A classic or Spark Connect DataFrame (recognised without importing pyspark)."""
    return _is_a(obj, "pyspark.sql", "DataFrame")


def is_pandas_dataframe(obj: Any) -> bool:
    return _is_a(obj, "pandas", "DataFrame")


def spark_bundle(df: Any, limit: int | None = None) -> dict[str, str]:
    """A table of at most ``limit`` rows; one more is fetched to know whether there are more."""
    limit = options.max_rows if limit is None else limit
    rows = df.limit(limit + 1).collect()
    more = len(rows) > limit
    rows = rows[:limit]
    total = f"{limit + 1}+" if more else str(len(rows))  # at least one more than shown
    return table_bundle(list(df.columns), [tuple(r) for r in rows], shown=len(rows), total=total)


def pandas_bundle(df: Any, limit: int | None = None) -> dict[str, str]:
    limit = options.max_rows if limit is None else limit
    head = df.head(limit)
    index_name = "" if df.index.name is None else df.index.name
    columns = [index_name, *df.columns]
    rows = list(head.itertuples(index=True, name=None))
    return table_bundle(columns, rows, shown=len(rows), total=str(len(df)))


def _publish(bundle: dict[str, str]) -> None:
    from IPython.display import display as ipython_display

    ipython_display(bundle, raw=True)


def display(*objs: Any, limit: int | None = None, **kwargs: Any) -> None:
    """Databricks' ``display``: Spark and pandas DataFrames as tables of at most ``limit`` rows
    (``options.max_rows`` by default); anything else through IPython's ``display``."""
    from IPython.display import display as ipython_display

    for obj in objs:
        if is_spark_dataframe(obj):
            _publish(spark_bundle(obj, limit))
        elif is_pandas_dataframe(obj):
            _publish(pandas_bundle(obj, limit))
        else:
            ipython_display(obj, **kwargs)


def displayHTML(html_text: str) -> None:  # noqa: N802 - Databricks' name
    """Show ``html_text`` as HTML, as it is (the caller's markup, so not escaped)."""
    _publish({"text/html": str(html_text), "text/plain": str(html_text)})


# ------------------------------------------------------------------------ %sql


def split_sql(text: str) -> list[str]:
    """Statements of a SQL text, split at ``;`` outside quotes, backticks and comments."""
    statements: list[str] = []
    start = i = 0
    quote = ""
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"`":
            quote = c
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
            continue
        elif c == ";":
            statements.append(text[start:i])
            start = i + 1
        i += 1
    statements.append(text[start:])
    return [s.strip() for s in statements if s.strip()]


_SQL_OPTION = re.compile(r"\s*(--limit|-n|--param|-p)(?:\s+|=)(\S+)")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_sql_options(text: str) -> tuple[int | None, list[str], str]:
    """(row limit, parameter names, SQL) of ``[--limit N] [-p NAME]... SQL``."""
    limit: int | None = None
    params: list[str] = []
    while match := _SQL_OPTION.match(text):
        option, value = match.groups()
        if option in ("--limit", "-n"):
            if not value.isdigit() or int(value) <= 0:
                raise _usage_error(f"%sql {option} takes a positive number of rows, not {value!r}")
            limit = int(value)
        else:
            for name in value.split(","):
                if not _IDENTIFIER.fullmatch(name):
                    raise _usage_error(f"%sql {option} takes a variable name, not {name!r}")
                params.append(name)
        text = text[match.end() :]
    return limit, params, text


class _Idioms:
    """The magics of one shell; they read ``spark`` and ``dbutils`` from its namespace at each
    call, so a later ``dbcontext()`` (another session) is picked up."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def _get(self, name: str) -> Any:
        value = self.shell.user_ns.get(name)
        if value is None:
            raise _usage_error(f"There is no `{name}` in this notebook: run dbcontext() first.")
        return value

    def sql(self, line: str, cell: str | None = None) -> None:
        limit, params, text = parse_sql_options(line)
        if cell is not None:
            if text.strip():
                raise _usage_error("%%sql takes options on its first line and SQL below it.")
            text = cell
        statements = split_sql(text)
        if not statements:
            raise _usage_error("%sql needs a SQL statement.")
        spark = self._get("spark")
        missing = [p for p in params if p not in self.shell.user_ns]
        if missing:
            raise _usage_error(f"%sql -p: no variable {', '.join(missing)} in this notebook.")
        args = {p: self.shell.user_ns[p] for p in params}
        df = None
        for statement in statements:
            used = {k: v for k, v in args.items() if re.search(rf":{k}\b", statement)}
            df = spark.sql(statement, args=used) if used else spark.sql(statement)
        self.shell.user_ns["_sqldf"] = df
        if df is not None and list(df.columns):
            _publish(spark_bundle(df, limit))

    # -------------------------------------------------------------------- %fs

    def fs(self, line: str, cell: str | None = None) -> Any:
        if cell is None:
            return self._fs_command(line)
        words = _fs_words(line)
        if words and words[0] == "put":  # %%fs put [-f] PATH: the cell is the contents
            return self._fs_command(line, contents=cell)
        if words:
            raise _usage_error("%%fs takes `put [-f] PATH` on its first line, or nothing.")
        result = None
        for command in cell.splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                result = self._fs_command(command)
        return result

    def _fs_command(self, line: str, contents: str | None = None) -> Any:
        words = _fs_words(line)
        if not words:
            raise _usage_error(_FS_USAGE)
        command, rest = words[0], words[1:]
        flags = {w for w in rest if w.startswith("-") and len(w) > 1}
        args = [w for w in rest if w not in flags]
        fs = self._get("dbutils").fs
        recurse = bool(flags & {"-r", "--recurse", "--recurse=true"})
        max_bytes = [f.split("=", 1)[1] for f in flags if f.startswith("--maxBytes=")]
        known = {
            "ls": set(),
            "head": {f"--maxBytes={m}" for m in max_bytes},
            "cp": {"-r", "--recurse", "--recurse=true"},
            "mv": {"-r", "--recurse", "--recurse=true"},
            "rm": {"-r", "--recurse", "--recurse=true"},
            "mkdirs": set(),
            "put": {"-f", "--overwrite", "--overwrite=true"},
        }
        arity = {
            "ls": (0, 1),
            "head": (1, 2),
            "cp": (2, 2),
            "mv": (2, 2),
            "rm": (1, 1),
            "mkdirs": (1, 1),
            "put": (1, 1) if contents is not None else (2, 2),
        }
        if command not in known:
            raise _usage_error(f"%fs {command}: unknown command. {_FS_USAGE}")
        if flags - known[command]:
            raise _usage_error(
                f"%fs {command}: unknown option {' '.join(sorted(flags - known[command]))}"
            )
        low, high = arity[command]
        if not low <= len(args) <= high:
            raise _usage_error(f"%fs {command}: wrong number of arguments. {_FS_USAGE}")
        if command == "ls":
            entries = fs.ls(args[0] if args else "/")
            columns = ["path", "name", "size", "modificationTime"]
            rows = [[getattr(e, c, None) for c in columns] for e in entries]
            _publish(table_bundle(columns, rows, shown=len(rows), total=str(len(rows))))
            return None
        if command == "head":
            limit = max_bytes[0] if max_bytes else (args[1] if len(args) > 1 else "65536")
            if not limit.isdigit():
                raise _usage_error(f"%fs head: the byte count must be a number, not {limit!r}")
            print(fs.head(args[0], int(limit)))
            return None
        if command in ("cp", "mv"):
            return getattr(fs, command)(args[0], args[1], recurse)
        if command == "rm":
            return fs.rm(args[0], recurse)
        if command == "mkdirs":
            return fs.mkdirs(args[0])
        overwrite = bool(flags)
        return fs.put(args[0], contents if contents is not None else args[1], overwrite)

    # -------------------------------------------------------------------- %sh, %md, %pip

    def sh(self, line: str, cell: str | None = None) -> None:
        script = line if cell is None else (line + "\n" + cell if line.strip() else cell)
        status = run_shell(
            ["/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh", "-c", script]
        )
        if status != 0:
            raise CommandFailed(f"the shell command exited with status {status}")

    def md(self, line: str, cell: str | None = None) -> None:
        text = line if cell is None else (line + "\n" + cell if line.strip() else cell)
        _publish({"text/markdown": text, "text/plain": text})


def _fs_words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:  # an unbalanced quote
        raise _usage_error(f"%fs: {exc} in {line!r}") from None


_FS_USAGE = (
    "Usage: %fs ls [PATH] | head [--maxBytes=N] PATH | cp [-r] FROM TO | mv [-r] FROM TO | "
    "rm [-r] PATH | mkdirs PATH | put [-f] PATH CONTENTS"
)


def run_shell(argv: list[str], *, cwd: str | None = None) -> int:
    """Run ``argv`` without standard input, copy its output to ``sys.stdout``/``sys.stderr`` as
    it comes, and return its exit status. An interrupt ends the process group, then re-raises."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        start_new_session=True,  # its own process group: an interrupt ends its children too
    )
    assert process.stdout is not None and process.stderr is not None
    selector = selectors.DefaultSelector()
    for pipe, name in ((process.stdout, "stdout"), (process.stderr, "stderr")):
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        selector.register(pipe, selectors.EVENT_READ, (name, decoder))
    try:
        while selector.get_map():
            for key, _ in selector.select():
                name, decoder = key.data
                chunk = os.read(key.fd, 65536)
                stream = getattr(sys, name)  # looked up each time: ipykernel replaces them
                text = decoder.decode(chunk, final=not chunk)
                if text:
                    stream.write(text)
                    stream.flush()
                if not chunk:
                    selector.unregister(key.fileobj)
        return process.wait()
    except KeyboardInterrupt:
        _end(process)
        raise
    finally:
        selector.close()
        process.stdout.close()
        process.stderr.close()


def _end(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _ipython_pip(shell: Any) -> Callable[[str], Any] | None:
    """IPython's own ``%pip``, resolved now: IPython 9 registers magics lazily, and a lazy entry
    looked up later would find our wrapper in its place (and call itself)."""
    try:
        from IPython.core.magics.packaging import PackagingMagics
    except ImportError:
        return None
    return PackagingMagics(shell=shell).pip


def _pip_magic(original: Callable[[str], Any] | None) -> Callable[[str], Any]:
    def pip(line: str) -> Any:
        words = line.split()
        if words and words[0] in ("install", "uninstall"):
            print(PIP_WARNING, file=sys.stderr)
        if original is not None:
            return original(line)
        status = run_shell([sys.executable, "-m", "pip", *shlex.split(line)])
        if status != 0:
            raise CommandFailed(f"pip exited with status {status}")
        return None

    pip.__doc__ = "pip in this kernel's Python (on the driver only; executors do not get it)."
    setattr(pip, _MARKER, original)
    return pip


# ------------------------------------------------------------------------ registration


def _literal(func: Callable[..., Any], doc: str) -> Callable[..., Any]:
    """``func`` as a magic whose line IPython passes without ``{var}``/``$var`` expansion."""

    def magic(line: str, cell: str | None = None) -> Any:
        return func(line, cell)

    magic.__doc__ = doc
    magic._ipython_magic_no_var_expand = True  # type: ignore[attr-defined] # IPython's attribute
    setattr(magic, _MARKER, True)
    return magic


#: Cell magics of Databricks notebooks in other languages (the HTML import writes ``%%scala`` and
#: ``%%R``), with the sentence each gives: this kernel runs Python only.
OTHER_LANGUAGES = {"scala": "Scala", "R": "R", "r": "R"}
_ELSEWHERE = {
    "Scala": "run it in a Databricks notebook attached to this cluster, or port it to PySpark "
    "(`%%sql` runs its SQL parts here)",
    "R": "run it in a Databricks notebook attached to this cluster, or here through rpy2 "
    "(`%pip install rpy2`, then `%load_ext rpy2.ipython`) when R is installed on the driver",
}


def _not_here(language: str) -> Callable[..., Any]:
    def magic(line: str, cell: str | None = None) -> None:
        raise _usage_error(
            f"This kernel runs Python on the driver, so a {language} cell cannot run here: "
            f"{_ELSEWHERE[language]}."
        )

    magic.__doc__ = f"{language} is not available in this Python kernel (says how to run it)."
    setattr(magic, _MARKER, True)
    return magic


def register(shell: Any = None) -> bool:
    """Install the idioms in ``shell`` (the running IPython shell by default).

    Returns False, doing nothing, outside IPython. Safe to call again (``dbcontext()`` may run
    more than once): the magics and the cell events are replaced, IPython's own ``%pip`` stays
    the one wrapped."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
        if shell is None:
            return False
    idioms = _Idioms(shell)
    magics = {
        "sql": (
            idioms.sql,
            "Spark SQL: `%sql [--limit N] [-p NAME] SQL` or `%%sql` with SQL "
            "below; `;` separates statements, the last result is shown and kept in _sqldf. "
            "-p NAME binds the notebook variable NAME to the marker :NAME.",
        ),
        "fs": (idioms.fs, _FS_USAGE + " (through dbutils.fs)."),
        "sh": (idioms.sh, "Shell commands on the driver; a non-zero exit is an error."),
        "md": (idioms.md, "Markdown, rendered."),
    }
    for name, (func, doc) in magics.items():
        shell.register_magic_function(_literal(func, doc), "line_cell", name)
    cell_magics = shell.magics_manager.magics["cell"]
    for name, language in OTHER_LANGUAGES.items():
        current = cell_magics.get(name)
        if current is None or hasattr(current, _MARKER):  # never hide rpy2's own %%R
            shell.register_magic_function(_not_here(language), "line_cell", name)
    current = shell.magics_manager.magics["line"].get("pip")
    if isinstance(current, types.FunctionType) and hasattr(current, _MARKER):
        original = getattr(current, _MARKER)  # our wrapper: never wrap it again
    else:
        original = _ipython_pip(shell)
    shell.register_magic_function(_pip_magic(original), "line", "pip")
    shell.user_ns["display"] = display
    shell.user_ns["displayHTML"] = displayHTML
    _CellJobs(shell).install()
    return True
