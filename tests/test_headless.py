"""Headless runners as a user runs them, each a real subprocess against the kernelspec:
``jupyter nbconvert --execute``, ``papermill`` with a parameters cell, ``jupyter run``. The
kernel runs on the simulated driver over real SSH; a failing cell gives the runner's usual
non-zero exit; no remote process is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from databrickslabs_jupyterlab import kernelspecs
from tests.test_provisioner import _alive, running_cluster  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def kernel(running_cluster: Any, jupyter_dirs: Path) -> str:  # noqa: F811 - the fixture
    return kernelspecs.create_kernelspec(
        running_cluster.name, running_cluster.cluster_id, "sim-cluster", env="hl", spark=False
    )


def _notebook(path: Path, kernel: str, *cells: str, parameters: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells += [nbformat.v4.new_code_cell(code) for code in cells]
    nbformat.write(nb, path)
    return path


def _run(*argv: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        env=dict(os.environ),
    )


def _texts(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [
        "".join(o.get("text", "") for o in cell.get("outputs", []))
        for cell in nb.cells
        if cell.cell_type == "code"
    ]


def _pid_cell(folder: Path) -> str:
    """A cell that prints the remote kernel's pid and leaves it in a file (the simulated driver
    shares this machine's file system): known even when a later cell fails."""
    return (
        "import os\n"
        f"open({str(folder / 'remote.pid')!r}, 'w').write(str(os.getpid()))\n"
        "print('remote pid', os.getpid())"
    )


def _left_behind(folder: Path) -> bool:
    """Whether the remote kernel of the last run is still alive 30 s after its runner ended
    (a generous bound for a loaded machine; it is normally gone when the runner exits)."""
    pid = int((folder / "remote.pid").read_text())
    deadline = time.monotonic() + 30
    while _alive(pid):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)
    return False


def test_nbconvert_executes_on_the_driver_and_fails_on_a_failing_cell(
    kernel: str, tmp_path: Path
) -> None:
    good = _notebook(tmp_path / "good.ipynb", kernel, _pid_cell(tmp_path), "a = 42", "print(a * 2)")
    done = _run(
        sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
        str(good), "--output", "good.out.ipynb", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    texts = _texts(tmp_path / "good.out.ipynb")
    assert texts[2] == "84\n"
    assert not _left_behind(tmp_path)

    bad = _notebook(
        tmp_path / "bad.ipynb", kernel, _pid_cell(tmp_path), "1 / 0", "print('not reached')"
    )
    failed = _run(
        sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
        str(bad), "--output", "bad.out.ipynb", cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode != 0
    assert "ZeroDivisionError" in failed.stderr
    assert not _left_behind(tmp_path), "a remote kernel was left behind"


def test_papermill_injects_parameters_and_fails_like_papermill(kernel: str, tmp_path: Path) -> None:
    source = _notebook(
        tmp_path / "in.ipynb", kernel, _pid_cell(tmp_path), "print(a * 2)", parameters="a = 1"
    )
    done = _run(
        sys.executable, "-m", "papermill", str(source), str(tmp_path / "out.ipynb"),
        "-p", "a", "21", "-k", kernel, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[conn=" not in done.stderr  # asyncssh's INFO lines stay out of papermill's log
    texts = _texts(tmp_path / "out.ipynb")
    assert texts[-1] == "42\n"
    assert not _left_behind(tmp_path)
    injected = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[1]
    assert "injected-parameters" in injected.metadata.get("tags", [])

    failed = _run(
        sys.executable, "-m", "papermill", str(source), str(tmp_path / "fail.ipynb"),
        "-p", "a", "None", "-k", kernel, cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 1
    assert "PapermillExecutionError" in failed.stderr or "Exception encountered" in failed.stderr
    assert not _left_behind(tmp_path), "a remote kernel was left behind"


def test_jupyter_run_prints_the_remote_output(kernel: str, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        _pid_cell(tmp_path)
        + "\nimport json, sys\nprint(json.dumps({'sum': 6 * 7, 'py': sys.executable}))\n"
    )
    done = _run(sys.executable, "-m", "jupyter", "run", f"--kernel={kernel}", str(script),
                cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout.strip().splitlines()[-1])
    assert data["sum"] == 42
    assert "driver" in data["py"]  # the simulated driver's Python, not this one
    assert not _left_behind(tmp_path), "a remote kernel was left behind"
