"""Kernel-side helper: ``dbcontext()`` puts Spark and ``dbutils`` into the notebook's namespace.

Runs inside the remote kernel on the driver, a process of its own outside the notebook REPL
(shared/DATABRICKS-2026.md, section 3): it must attach to the cluster's Spark application and
never start a second one there. It never needs a workspace token. Strategies, in this order,
each recording why it did not apply:

1. ``runtime``: on a Databricks driver, the runtime's own entry points when they exist: the
   notebook namespace of ``dbruntime.UserNamespaceInitializer.getOrCreate()``, then the driver's
   Spark Connect socket (``SPARK_REMOTE`` is set to it before
   ``dbruntime.spark_connection.get_and_configure_uds_spark()`` is called, never without it);
2. ``gateway``: the gateway hand-off. The provisioner asked the cluster (a REST 1.2 context)
   for its py4j gateway's port and secret and passed them on the bootstrap's stdin; the
   bootstrap wrote them to a 0600 file in the kernel's private run folder and names the file
   (never the secret) in ``DBJL_SPARK_GATEWAY_FILE``. The secret is read from that file only
   here, and only put into ``os.environ`` for the instant pyspark's ``launch_gateway`` reads
   it: an environment variable would be inherited by every process the notebook starts. The
   kernel connects to ``127.0.0.1:<port>`` and wraps the existing JavaSparkContext and the
   JVM's default SparkSession, as the simulator's REPL contexts do;
3. ``local``: only off Databricks (no ``/databricks`` layout, no ``DATABRICKS_RUNTIME_VERSION``),
   a local ``SparkSession`` when ``pyspark`` is importable, with :class:`LocalDbUtils`, a small
   stand-in whose ``fs`` works on the local file system.

On a driver where nothing works, :class:`DbContextError` names each strategy and its reason.

Beside Spark, ``dbcontext()`` links ``sc``'s HTML repr to the cluster's Spark UI in the
workspace (:func:`spark_ui_url`; the workspace's host and id come with the hand-off, never a
token) and points MLflow at the right tracking store (:func:`mlflow_tracking`).

Everything is imported lazily: this module imports without pyspark and without Databricks.
It is shipped to drivers that lack this package, so it only uses the standard library at
import time.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "dbcontext",
    "LocalDbUtils",
    "DbContextError",
    "DbContext",
    "FileInfo",
    "on_databricks",
    "attached_via",
    "spark_ui_url",
]

DRIVER_PYTHON_DEFAULT = "/databricks/python/bin/python"
#: The driver's file system root of the Databricks layout (tests point it elsewhere).
DATABRICKS_ROOT = "/databricks"
#: The driver-local Spark Connect socket, relative to DATABRICKS_ROOT.
SPARK_CONNECT_SOCKET = "sparkconnect/grpc.sock"
#: Names the hand-off file written by the bootstrap (the file, not the secret).
GATEWAY_FILE_ENV = "DBJL_SPARK_GATEWAY_FILE"

#: The cluster page's Spark UI tab in the workspace, after ``https://<host>/[?o=<workspace id>]``.
#: (Databricks' Jobs API documents ``#setting/sparkui/<cluster>/<spark context id>`` for one
#: Spark context; the cluster's tab needs no context id, which the server does not know.)
SPARK_UI_FRAGMENT = "#setting/clusters/{cluster_id}/sparkUi"
#: Spark settings of a Databricks runtime that name the workspace and the cluster (observed on
#: DBR drivers, not documented): a fallback when the hand-off did not name the workspace.
_DBR_WORKSPACE_URL = "spark.databricks.workspaceUrl"
_DBR_ORG_ID = "spark.databricks.clusterUsageTags.clusterOwnerOrgId"
_DBR_CLUSTER_ID = "spark.databricks.clusterUsageTags.clusterId"
_CLUSTER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_NETLOC = re.compile(
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?"
)
_URL_PATH = re.compile(r"[A-Za-z0-9/._~-]*")

#: What each strategy is called in messages.
LABELS = {
    "runtime": "the runtime's notebook Spark",
    "runtime-uds": "the driver's Spark Connect socket",
    "gateway": "cluster's application via gateway hand-off",
    "local": "local Spark session, not a Databricks driver",
}

_env_lock = threading.Lock()
_last: DbContext | None = None


class DbContextError(RuntimeError):
    """Spark or dbutils could not be provided; the message says what to do."""


class _NotApplicable(Exception):
    """A strategy that does not apply here; the message is its reason."""


@dataclass
class _Found:
    spark: Any
    strategy: str
    dbutils: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class DbContext(dict):
    """The names ``dbcontext()`` published, with the strategy that worked (``strategy``, its
    ``label``) and why the earlier ones did not (``reasons``)."""

    strategy: str = ""
    label: str = ""
    reasons: dict[str, str]
    #: The cluster's Spark UI in the workspace (None when the workspace is not known).
    spark_ui: str | None = None
    #: MLflow's tracking URI for this kernel ("" for MLflow's own default).
    mlflow_tracking_uri: str = ""


def on_databricks() -> bool:
    """True inside a Databricks runtime (its environment variable or its ``/databricks`` tree)."""
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return True
    return any(
        os.path.isdir(os.path.join(DATABRICKS_ROOT, name)) for name in ("spark", "python_shell")
    )


def attached_via() -> str:
    """The label of the strategy of the last successful ``dbcontext()`` (empty before)."""
    return _last.label if _last is not None else ""


def _py4j_restricted(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return "Py4JSecurityException" in text or "is not whitelisted" in text


def _reason(exc: BaseException) -> str:
    if _py4j_restricted(exc):
        return (
            "this cluster restricts py4j (py4j security, as on Unity Catalog standard access "
            "mode): the kernel may not use the driver's JVM; use a dedicated (single user) "
            "cluster, or Databricks Connect"
        )
    text = " ".join(str(exc).split()) or type(exc).__name__
    first = re.split(r" at [\w$.]+\(", text, maxsplit=1)[0]  # a Java stack trace: no help
    return first if len(first) <= 300 else first[:299] + "…"


# ------------------------------------------------------------------------ Spark strategies


def _runtime_spark() -> _Found:
    """Strategy 1: the runtime's own entry points (DBR internals, so each step is optional)."""
    import importlib.util

    python_shell = os.path.join(DATABRICKS_ROOT, "python_shell")
    if os.path.isdir(python_shell) and python_shell not in sys.path:
        sys.path.append(python_shell)
    try:
        found = importlib.util.find_spec("dbruntime") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise _NotApplicable("the runtime's dbruntime modules are not importable here")
    reasons = []
    try:
        from dbruntime import UserNamespaceInitializer  # type: ignore

        namespace = UserNamespaceInitializer.getOrCreate().get_namespace_globals()
        spark = namespace.get("spark")
        if spark is None:
            raise RuntimeError("its namespace has no spark")
        extra = {k: namespace[k] for k in ("display", "displayHTML") if k in namespace}
        return _Found(spark, "runtime", namespace.get("dbutils"), extra)
    except Exception as exc:  # noqa: BLE001 - runtime internals differ between releases
        reasons.append(f"UserNamespaceInitializer: {_reason(exc)}")
    socket = os.path.join(DATABRICKS_ROOT, SPARK_CONNECT_SOCKET)
    if not os.path.exists(socket):
        reasons.append(f"no Spark Connect socket at {socket}")
    else:
        try:
            from dbruntime import spark_connection  # type: ignore

            os.environ.setdefault("SPARK_REMOTE", f"unix://{socket}")
            if not os.environ["SPARK_REMOTE"].startswith("unix://"):
                raise RuntimeError(f"SPARK_REMOTE is {os.environ['SPARK_REMOTE']!r}, no socket")
            return _Found(spark_connection.get_and_configure_uds_spark(), "runtime-uds")
        except Exception as exc:  # noqa: BLE001
            reasons.append(f"Spark Connect socket: {_reason(exc)}")
    raise _NotApplicable("; ".join(reasons))


def _read_handoff() -> dict[str, Any]:
    path = os.environ.get(GATEWAY_FILE_ENV)
    if not path:
        raise _NotApplicable("the provisioner passed no gateway to this kernel")
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        raise _NotApplicable(f"the hand-off file cannot be read ({exc})") from None
    if info.get("error"):
        raise _NotApplicable(str(info["error"]))
    if not info.get("port") or not info.get("secret"):
        raise _NotApplicable("the hand-off holds no port and secret")
    return info


def _active_context() -> Any:
    try:
        from pyspark import SparkContext
    except ImportError:
        return None
    return SparkContext._active_spark_context


def _gateway_spark() -> _Found:
    """Strategy 2: connect to the cluster's py4j gateway and wrap its application."""
    info = _read_handoff()
    active = _active_context()
    if active is not None and getattr(active, "_jsc", None) is not None:
        # dbcontext() again: the context already wraps this gateway (a second one would fail)
        params = getattr(active._gateway, "gateway_parameters", None)
        if getattr(params, "port", None) == int(info["port"]):
            from pyspark.sql import SparkSession

            return _Found(SparkSession.getActiveSession() or SparkSession(active), "gateway")
    try:
        from pyspark import SparkContext
        from pyspark.java_gateway import launch_gateway
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise _NotApplicable(f"pyspark is not importable in the kernel's Python ({exc})") from None
    try:
        with _env_lock:  # the secret is in the environment only while launch_gateway reads it
            os.environ["PYSPARK_GATEWAY_PORT"] = str(int(info["port"]))
            os.environ["PYSPARK_GATEWAY_SECRET"] = str(info["secret"])
            try:
                gateway = launch_gateway()
            finally:
                os.environ.pop("PYSPARK_GATEWAY_PORT", None)
                os.environ.pop("PYSPARK_GATEWAY_SECRET", None)
        jvm = gateway.jvm
        jsc = jvm.org.apache.spark.api.java.JavaSparkContext(
            jvm.org.apache.spark.SparkContext.getOrCreate()
        )
        sc = SparkContext(gateway=gateway, jsc=jsc)
        jsession = None
        for name in (
            "org.apache.spark.sql.classic.SparkSession",
            "org.apache.spark.sql.SparkSession",
        ):
            try:
                default = getattr(jvm, name).getDefaultSession()
                if default.isDefined():
                    jsession = default.get()
                    break
            except Exception as exc:  # noqa: BLE001 - Spark 3 has no classic package
                if _py4j_restricted(exc):
                    raise
        spark = SparkSession(sc, jsparkSession=jsession)
    except _NotApplicable:
        raise
    except Exception as exc:  # noqa: BLE001
        where = f"127.0.0.1:{info.get('port')}"
        raise _NotApplicable(f"the gateway at {where} did not answer: {_reason(exc)}") from None
    return _Found(spark, "gateway")


def _local_spark(app_name: str) -> _Found:
    """Strategy 3, never on a driver: there it would be a second application."""
    if on_databricks():
        raise _NotApplicable(
            "a local Spark session is never started on a Databricks driver (it would be a "
            "second application beside the cluster's)"
        )
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise _NotApplicable(
            "this kernel is not running on a Databricks driver and pyspark is not installed, "
            "so there is no Spark to connect to. Install pyspark on this machine "
            "(`pip install pyspark`, needs Java) to get a local Spark session"
        ) from None
    spark = SparkSession.builder.master("local[*]").appName(app_name).getOrCreate()
    return _Found(spark, "local", LocalDbUtils())


def _find_spark(app_name: str) -> tuple[_Found, dict[str, str]]:
    reasons: dict[str, str] = {}
    attempts = (
        ("runtime", _runtime_spark),
        ("gateway", _gateway_spark),
        ("local", lambda: _local_spark(app_name)),
    )
    for name, attempt in attempts:
        try:
            return attempt(), reasons
        except _NotApplicable as exc:
            reasons[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a strategy's failure is its reason
            reasons[name] = _reason(exc)
    if on_databricks():
        head = "Could not attach to the Spark application of this Databricks driver"
        advice = (
            " Check that the cluster runs and that the kernel uses the driver's Python ("
            + DRIVER_PYTHON_DEFAULT
            + "); restart the kernel to hand the gateway over again."
        )
    else:
        head = "No Spark is available to this kernel"
        advice = ""
    said = "; ".join(f"{name}: {why.rstrip('.')}" for name, why in reasons.items())
    raise DbContextError(f"{head} ({said}).{advice}")


def _databricks_dbutils(spark: Any) -> Any | None:
    for attempt in ("dbruntime.dbutils", "pyspark.dbutils"):
        try:
            if attempt == "dbruntime.dbutils":
                from dbruntime.dbutils import DBUtils  # type: ignore
            else:
                from pyspark.dbutils import DBUtils  # type: ignore
        except Exception:  # noqa: BLE001
            continue
        for args in ((spark,), (spark.sparkContext,)):
            try:
                return DBUtils(*args)
            except Exception:  # noqa: BLE001 - the constructor changed between runtimes
                continue
    return None


# ------------------------------------------------------------------------ Spark UI, MLflow


def spark_ui_url(
    host: str | None, cluster_id: str | None, workspace_id: str | int | None = None
) -> str | None:
    """The cluster's Spark UI in the workspace: ``https://<host>/?o=<workspace id>#setting/
    clusters/<cluster id>/sparkUi`` (without ``?o=`` when the id is unknown), or None when the
    host or the cluster id is missing or malformed. The server's status and the kernel's ``sc``
    both link through this one rule."""
    if not host or not cluster_id or not _CLUSTER_ID.fullmatch(cluster_id):
        return None
    host = host.strip()
    if "://" not in host:
        host = "https://" + host
    parts = urllib.parse.urlsplit(host)
    if (
        parts.scheme not in ("http", "https")
        or not _NETLOC.fullmatch(parts.netloc)
        or not _URL_PATH.fullmatch(parts.path)
    ):
        return None
    base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"
    org = str(workspace_id).strip() if workspace_id is not None else ""
    query = f"?o={org}" if org.isdigit() else ""
    return base + query + SPARK_UI_FRAGMENT.format(cluster_id=cluster_id)


def _handoff_workspace() -> dict[str, Any]:
    """The workspace the provisioner named in the hand-off file (host and id; also when the
    gateway itself could not be had), or {}."""
    path = os.environ.get(GATEWAY_FILE_ENV)
    if not path:
        return {}
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return {}
    workspace = info.get("workspace") if isinstance(info, dict) else None
    return workspace if isinstance(workspace, dict) else {}


def _conf(spark: Any, key: str) -> str:
    try:
        return str(spark.conf.get(key, None) or "")
    except Exception:  # noqa: BLE001 - not a Databricks runtime, or a restricted conf
        return ""


def _workspace_link(spark: Any) -> str | None:
    """The cluster's Spark UI for this kernel: the hand-off names the workspace; on a DBR
    driver without one, the runtime's own Spark settings do."""
    workspace = _handoff_workspace()
    host, org = workspace.get("host"), workspace.get("workspace_id")
    cluster_id = os.environ.get("DBJL_CLUSTER_ID") or ""
    if on_databricks():
        host = host or _conf(spark, _DBR_WORKSPACE_URL)
        org = org or _conf(spark, _DBR_ORG_ID)
        cluster_id = cluster_id or _conf(spark, _DBR_CLUSTER_ID)
    return spark_ui_url(host, cluster_id, org)


def _sc_html(sc: Any, url: str) -> str:
    """``sc``'s HTML repr with the workspace's Spark UI (the driver's own ``uiWebUrl`` is a
    driver-local address that the browser cannot reach)."""

    def field(name: str) -> str:
        try:
            return html.escape(str(getattr(sc, name)))
        except Exception:  # noqa: BLE001 - a stopped context
            return "?"

    return (
        "<div><p><b>SparkContext</b></p>"
        f'<p><a href="{html.escape(url)}" target="_blank" rel="noopener noreferrer">'
        "Spark UI (in the Databricks workspace)</a></p>"
        f"<dl><dt>Version</dt><dd><code>v{field('version')}</code></dd>"
        f"<dt>Master</dt><dd><code>{field('master')}</code></dd>"
        f"<dt>AppName</dt><dd><code>{field('appName')}</code></dd>"
        f"<dt>Application</dt><dd><code>{field('applicationId')}</code></dd></dl></div>"
    )


def _link_spark_ui(sc: Any, url: str | None) -> None:
    """Give this ``sc`` (and so ``spark``, whose repr embeds it) the workspace's Spark UI."""
    if sc is None or url is None:
        return
    try:
        sc._repr_html_ = lambda: _sc_html(sc, url)
    except Exception:  # noqa: BLE001 - an object that takes no attributes keeps its repr
        pass


#: MLflow's variable for its tracking store.
MLFLOW_TRACKING_ENV = "MLFLOW_TRACKING_URI"


def mlflow_tracking() -> str:
    """Where MLflow logs from this kernel, set up before the notebook imports it.

    A tracking URI already in the environment stays (the simulated driver names a local file
    store there; a user may name another). On a Databricks driver it is ``databricks``: MLflow
    logs to the workspace with the runtime's own credentials. No token of ours is ever set. Off
    Databricks without a URI: "" (MLflow's own default, a local store)."""
    current = os.environ.get(MLFLOW_TRACKING_ENV, "")
    if not current and on_databricks():
        current = os.environ[MLFLOW_TRACKING_ENV] = "databricks"
    return current


# ------------------------------------------------------------------------ dbutils stand-in


@dataclass(frozen=True)
class FileInfo:
    """Shape of ``dbutils.fs.ls`` entries."""

    path: str
    name: str
    size: int
    modificationTime: int  # noqa: N815 - same field name as Databricks


def _local_path(path: str) -> str:
    if path.startswith("dbfs:"):
        path = "/dbfs/" + path[len("dbfs:") :].lstrip("/")
    elif path.startswith("file:"):
        path = path[len("file:") :]
    return os.path.abspath(os.path.expanduser(path))


class _LocalFs:
    """``dbutils.fs`` on the local file system."""

    def ls(self, path: str = ".") -> list[FileInfo]:
        base = _local_path(path)
        if os.path.isfile(base):
            entries = [base]
        else:
            entries = [os.path.join(base, n) for n in sorted(os.listdir(base))]
        out = []
        for entry in entries:
            st = os.stat(entry)
            is_dir = os.path.isdir(entry)
            name = os.path.basename(entry) + ("/" if is_dir else "")
            out.append(
                FileInfo(
                    path="file:" + entry + ("/" if is_dir else ""),
                    name=name,
                    size=0 if is_dir else st.st_size,
                    modificationTime=int(st.st_mtime * 1000),
                )
            )
        return out

    def head(self, path: str, maxBytes: int = 65536) -> str:  # noqa: N803
        with open(_local_path(path), "rb") as f:
            return f.read(maxBytes).decode("utf-8", "replace")

    def put(self, path: str, contents: str, overwrite: bool = False) -> bool:
        target = _local_path(path)
        if os.path.exists(target) and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        with open(target, "w") as f:
            f.write(contents)
        return True

    def mkdirs(self, path: str) -> bool:
        os.makedirs(_local_path(path), exist_ok=True)
        return True

    def rm(self, path: str, recurse: bool = False) -> bool:
        target = _local_path(path)
        if not os.path.lexists(target):
            return False
        if os.path.isdir(target) and not os.path.islink(target):
            if recurse:
                shutil.rmtree(target)
            else:
                os.rmdir(target)
        else:
            os.remove(target)
        return True

    def cp(self, src: str, dst: str, recurse: bool = False) -> bool:
        source, target = _local_path(src), _local_path(dst)
        if os.path.isdir(source):
            if not recurse:
                raise IsADirectoryError(f"{src} is a directory; pass recurse=True")
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            shutil.copy2(source, target)
        return True

    def mv(self, src: str, dst: str, recurse: bool = False) -> bool:
        source, target = _local_path(src), _local_path(dst)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        shutil.move(source, target)
        return True

    def help(self) -> str:
        return "Local stand-in for dbutils.fs: ls, head, put, mkdirs, rm, cp, mv."


class LocalDbUtils:
    """Minimal ``dbutils`` for drivers without the Databricks runtime.

    Only ``fs`` exists, and it works on the local file system of the machine the kernel runs on
    (``dbfs:/`` paths map under ``/dbfs``). It is not DBFS; it lets notebooks written for
    Databricks run their file handling against the simulator or a laptop.
    """

    def __init__(self) -> None:
        self.fs = _LocalFs()

    def help(self) -> str:
        return "Local stand-in for dbutils (not Databricks): only dbutils.fs is available."

    def __repr__(self) -> str:
        return "<LocalDbUtils: local file system stand-in for dbutils.fs>"


# ------------------------------------------------------------------------ dbcontext


def _user_namespace() -> dict[str, Any] | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else shell.user_ns


def dbcontext(app_name: str = "databrickslabs-jupyterlab", *, quiet: bool = False) -> DbContext:
    """Attach to (or, off Databricks only, create) Spark and publish ``spark, sc, sqlContext,
    dbutils``.

    Returns a :class:`DbContext` (the dict of published names, with ``strategy``, ``label`` and
    ``reasons``). Raises :class:`DbContextError` naming each strategy and why it failed. ``quiet``
    leaves out the "ready" line: the provisioner runs ``dbcontext(quiet=True)`` silently in every
    new kernel whose spec enables Spark, and a notebook may call ``dbcontext()`` again to retry or
    to see where Spark comes from.
    """
    global _last
    found, reasons = _find_spark(app_name)
    spark = found.spark
    try:
        sc = spark.sparkContext
    except Exception:  # noqa: BLE001 - a Spark Connect session has none
        sc = None
    dbutils = found.dbutils
    if dbutils is None and found.strategy != "local":
        dbutils = _databricks_dbutils(spark)
    if dbutils is None:
        dbutils = LocalDbUtils()
    sql_context: Any = spark
    if sc is not None:
        try:
            from pyspark.sql import SQLContext

            sql_context = SQLContext(sc, spark)
        except Exception:  # noqa: BLE001 - removed in newer Spark; the session answers SQL
            sql_context = spark
    names = DbContext(spark=spark, sc=sc, sqlContext=sql_context, dbutils=dbutils, **found.extra)
    names.strategy, names.label, names.reasons = found.strategy, LABELS[found.strategy], reasons
    names.spark_ui = _workspace_link(spark)
    _link_spark_ui(sc, names.spark_ui)
    names.mlflow_tracking_uri = mlflow_tracking()
    try:
        spark.conf.set("spark.sql.repl.eagerEval.enabled", "true")
    except Exception:  # noqa: BLE001
        pass
    _last = names
    ns = _user_namespace()
    if ns is not None:
        ns.update(names)
        try:  # %sql, %fs, display()...; a helper copy shipped without idioms.py just lacks them
            from .idioms import register
        except ImportError:
            pass
        else:
            register()
    if not quiet:
        print(
            f"Spark {spark.version} ({names.label}): spark, sc, sqlContext, dbutils are ready.",
            file=sys.stdout,
        )
    return names
