"""The kernel-side helper: importable without pyspark, clear errors, local dbutils stand-in."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from databrickslabs_jupyterlab import connect
from databrickslabs_jupyterlab.provisioner import SPARK_ATTACH_CODE

HAVE_PYSPARK = importlib.util.find_spec("pyspark") is not None


def test_imports_without_pyspark_or_databricks() -> None:
    code = (
        "import sys\n"
        "sys.modules['pyspark'] = None\n"  # any import of pyspark now fails
        "import databrickslabs_jupyterlab.connect as c\n"
        "assert 'pyspark' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(c.on_databricks())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(HAVE_PYSPARK, reason="pyspark is installed here")
def test_dbcontext_without_spark_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    with pytest.raises(connect.DbContextError, match="pyspark"):
        connect.dbcontext()


def test_attach_code_fails_quietly_with_advice_without_pyspark() -> None:
    """What the provisioner runs in a new kernel: no output of its own, an error that says why."""
    code = (
        "import sys\n"
        "sys.modules['pyspark'] = None\n"
        "from databrickslabs_jupyterlab.connect import DbContextError\n"
        f"try:\n    exec({SPARK_ATTACH_CODE!r})\n"
        "except DbContextError as exc:\n    sys.stderr.write(str(exc))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABRICKS_RUNTIME_VERSION"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout == ""
    assert "pyspark" in out.stderr and "not running on a Databricks driver" in out.stderr


def test_local_dbutils_fs(tmp_path: Path) -> None:
    fs = connect.LocalDbUtils().fs
    base = tmp_path / "data"
    assert fs.mkdirs(str(base / "sub"))
    assert fs.put(str(base / "a.txt"), "hello\nworld\n")
    with pytest.raises(FileExistsError):
        fs.put(str(base / "a.txt"), "again")
    assert fs.put(str(base / "a.txt"), "hello again", overwrite=True)
    assert fs.head(str(base / "a.txt"), 5) == "hello"

    names = [f.name for f in fs.ls(str(base))]
    assert names == ["a.txt", "sub/"]
    entry = fs.ls(str(base / "a.txt"))[0]
    assert entry.size == len("hello again") and entry.path.startswith("file:")

    assert fs.cp(str(base / "a.txt"), str(base / "sub" / "b.txt"))
    assert fs.mv(str(base / "sub" / "b.txt"), str(base / "c.txt"))
    assert sorted(f.name for f in fs.ls(f"file:{base}")) == ["a.txt", "c.txt", "sub/"]
    with pytest.raises(OSError):
        fs.rm(str(base))  # not empty, no recurse
    assert fs.rm(str(base), recurse=True)
    assert not fs.rm(str(base))
    assert "stand-in" in repr(connect.LocalDbUtils())


def test_dbfs_paths_map_under_slash_dbfs() -> None:
    assert connect._local_path("dbfs:/FileStore/x.csv") == "/dbfs/FileStore/x.csv"
    assert connect._local_path("/tmp/x") == "/tmp/x"
