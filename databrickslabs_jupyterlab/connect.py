"""Kernel-side helper: ``dbcontext()`` puts Spark and ``dbutils`` into the notebook's namespace.

Runs inside the remote kernel on the driver. It never needs a workspace token:

* on a Databricks driver (DBR 13 and later) it attaches to the driver's running SparkSession
  through the runtime's own modules (``dbruntime``), and takes the runtime's ``dbutils``;
* elsewhere (the workspace simulator's driver, a laptop) it starts a local ``SparkSession`` when
  ``pyspark`` is importable, and offers :class:`LocalDbUtils`, a small stand-in whose ``fs``
  works on the local file system (``dbfs:/x`` and ``/dbfs/x`` map to ``/dbfs/x``; plain paths
  are used as they are).

Everything is imported lazily: this module imports without pyspark and without Databricks.
It is shipped to drivers that lack this package, so it only uses the standard library at
import time.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["dbcontext", "LocalDbUtils", "DbContextError", "FileInfo", "on_databricks"]

DRIVER_PYTHON_DEFAULT = "/databricks/python/bin/python"


class DbContextError(RuntimeError):
    """Spark or dbutils could not be provided; the message says what to do."""


def on_databricks() -> bool:
    """True inside a Databricks runtime (its environment variable or its ``/databricks`` tree)."""
    return bool(os.environ.get("DATABRICKS_RUNTIME_VERSION")) or os.path.isdir("/databricks/spark")


# ------------------------------------------------------------------------ Spark


def _databricks_spark() -> Any:
    """The driver's running SparkSession, through the runtime's modules (several DBR layouts)."""
    errors = []
    try:  # DBR 13+: the runtime keeps the notebook session here
        from dbruntime.spark_connection import get_and_configure_uds_spark  # type: ignore

        return get_and_configure_uds_spark()
    except Exception as exc:  # noqa: BLE001 - layouts differ between runtimes
        errors.append(f"dbruntime.spark_connection: {exc}")
    try:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        return SparkSession.builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001
        errors.append(f"pyspark: {exc}")
    raise DbContextError(
        "Could not attach to the Spark session of this Databricks driver ("
        + "; ".join(errors)
        + "). Check that the cluster runs DBR 13 or later and that the kernel uses the "
        "driver's Python (" + DRIVER_PYTHON_DEFAULT + ")."
    )


def _local_spark(app_name: str) -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise DbContextError(
            "This kernel is not running on a Databricks driver and pyspark is not installed, "
            "so there is no Spark to connect to. Install pyspark on this machine "
            "(`pip install pyspark`, needs Java) to get a local Spark session."
        ) from None
    return SparkSession.builder.master("local[*]").appName(app_name).getOrCreate()


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


def dbcontext(app_name: str = "databrickslabs-jupyterlab", *, quiet: bool = False) -> dict:
    """Create (or attach to) Spark and publish ``spark, sc, sqlContext, dbutils``.

    Returns the dict of published names. Raises :class:`DbContextError` with advice when no
    Spark is available. ``quiet`` leaves out the "ready" line: the provisioner runs
    ``dbcontext(quiet=True)`` silently in every new kernel whose spec enables Spark, and a
    notebook may call ``dbcontext()`` again to retry or to see where Spark comes from.
    """
    if on_databricks():
        spark = _databricks_spark()
        dbutils = _databricks_dbutils(spark) or LocalDbUtils()
        where = "the Databricks driver"
    else:
        spark = _local_spark(app_name)
        dbutils = LocalDbUtils()
        where = "a local Spark session (not a Databricks driver)"
    try:
        from pyspark.sql import SQLContext

        sql_context = SQLContext(spark.sparkContext, spark)
    except Exception:  # noqa: BLE001 - removed in newer Spark; the session answers SQL itself
        sql_context = spark
    names = {
        "spark": spark,
        "sc": spark.sparkContext,
        "sqlContext": sql_context,
        "dbutils": dbutils,
    }
    try:
        spark.conf.set("spark.sql.repl.eagerEval.enabled", "true")
    except Exception:  # noqa: BLE001
        pass
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
            f"Spark {spark.version} from {where}: spark, sc, sqlContext, dbutils are ready.",
            file=sys.stdout,
        )
    return names
