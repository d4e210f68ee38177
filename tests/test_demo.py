"""``databrickslabs-jupyterlab demo`` end to end: started as a user would, used over HTTP and
the kernel websocket, stopped with Ctrl-C (SIGINT), leaving nothing running."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from databrickslabs_jupyterlab import demo

# A folder holding pyspark (scripts/test.sh provides one), read before the autouse fixture
# clears DBJL_* variables: the demo gets it on its PYTHONPATH, as `pip install .[spark]` would.
PYSPARK_PATH = os.environ.get("DBJL_TEST_PYSPARK_PATH") or ""
HAVE_SPARK = bool(
    PYSPARK_PATH and Path(PYSPARK_PATH, "pyspark", "__init__.py").is_file() and shutil.which("java")
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


class Lab:
    def __init__(self, url: str) -> None:
        self.base = url.split("/lab/")[0]
        self.token = url.split("token=")[1]
        self.headers = {"Authorization": f"token {self.token}"}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path,
            method=method,
            data=data,
            headers={**self.headers, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as answer:
            return answer.status, answer.read()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        return json.loads(self.request(method, path, body)[1])

    async def execute(self, kernel_id: str, code: str, timeout: float = 60) -> dict[str, Any]:
        """Run ``code`` over the kernel websocket; returns stdout text and the reply."""
        url = self.base.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
        ws = await websocket_connect(HTTPRequest(url, headers=self.headers))
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "test",
            "session": uuid.uuid4().hex,
            "version": "5.3",
            "date": "",
        }
        content = {"code": code, "silent": False, "store_history": True, "allow_stdin": False}
        ws.write_message(
            json.dumps(
                {
                    "header": header,
                    "parent_header": {},
                    "metadata": {},
                    "content": content,
                    "channel": "shell",
                }
            )
        )
        stdout, reply, idle, html = "", None, False, []
        deadline = time.monotonic() + timeout
        try:
            # The reply (shell) and the idle status (iopub) come in either order.
            while reply is None or not idle:
                raw = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
                assert raw is not None, "the kernel websocket closed"
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "stream":
                    stdout += msg["content"]["text"]
                elif msg["msg_type"] in ("display_data", "execute_result"):
                    html.append(msg["content"]["data"].get("text/html", ""))
                elif msg["msg_type"] == "execute_reply":
                    reply = msg["content"]
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
            return {"stdout": stdout, "reply": reply, "html": html}
        finally:
            ws.close()


@pytest.mark.slow
def test_demo_runs_a_notebook_on_the_simulated_driver_and_stops_cleanly(
    isolated_home: Path,
) -> None:
    port = _free_port()
    env = dict(os.environ)
    if HAVE_SPARK:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PYSPARK_PATH, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "databrickslabs_jupyterlab",
            "demo",
            "--no-browser",
            "--time-scale",
            "0.1",
            "--port",
            str(port),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        # Started with SIGINT ignored, as a background job of a script is: Ctrl-C must still
        # stop the demo (it once hung here when an earlier test left SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines: list[str] = []
    url_ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("JupyterLab: "):
                url_ready.set()

    threading.Thread(target=reader, daemon=True).start()
    root = isolated_home / ".databrickslabs_jupyterlab" / "demo"
    try:
        assert url_ready.wait(180), "the demo printed no URL:\n" + "\n".join(lines)
        url = next(line.split(" ", 1)[1] for line in lines if line.startswith("JupyterLab: "))
        assert f"127.0.0.1:{port}/lab/tree/{demo.NOTEBOOK}" in url
        lab = Lab(url)

        # the lab page
        status, page = lab.request("GET", f"/lab/tree/{demo.NOTEBOOK}")
        assert status == 200 and b"JupyterLab" in page

        # the product's status API knows the demo cluster (and sees it running)
        path = f"/databrickslabs-jupyterlab/api/v1/clusters/{demo.PROFILE}/{demo.CLUSTER_ID}"
        cluster = lab.json("GET", path)
        assert cluster["cluster_id"] == demo.CLUSTER_ID and cluster["profile"] == demo.PROFILE
        deadline = time.monotonic() + 60
        while cluster["cluster_state"] != "RUNNING" and time.monotonic() < deadline:
            cluster = lab.json("GET", f"{path}?wait=5&since={cluster['version']}")
        assert cluster["cluster_state"] == "RUNNING"

        # the sample notebook's cells run on the simulated driver
        nb = json.loads((root / "notebooks" / demo.NOTEBOOK).read_text())
        kernel_name = nb["metadata"]["kernelspec"]["name"]
        assert kernel_name in lab.json("GET", "/api/kernelspecs")["kernelspecs"]
        kernel = lab.json("POST", "/api/kernels", {"name": kernel_name})
        cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        results = [asyncio.run(lab.execute(kernel["id"], code, timeout=120)) for code in cells]
        assert all(r["reply"]["status"] == "ok" for r in results), results
        driver_python = root / "simulator" / "driver" / "python" / "bin" / "python"
        assert f"driver python: {driver_python}" in results[0]["stdout"]
        assert "primes below one million: 78498" in results[1]["stdout"]
        if HAVE_SPARK:
            _assert_spark(lab, kernel["id"], cells, results, lines)
        else:
            assert demo.SPARK_HINT in lines  # how to get Spark, in one line

        # the demo hands over: env.sh points dj and the README's curl examples at it
        handover = root / "env.sh"
        assert f"To use dj and the README's curl examples on this demo: source {handover}" in lines
        assert handover.stat().st_mode & 0o077 == 0  # it holds the Jupyter token
        ask = (
            "import json, os, urllib.request; r = urllib.request.Request(os.environ['B'] + "
            "'/clusters/demo/' + os.environ['CID'], headers={'Authorization': 'token ' + "
            "os.environ['JT']}); print(json.load(urllib.request.urlopen(r))['cluster_state'])"
        )
        script = (
            f". {handover} && {sys.executable} -m databrickslabs_jupyterlab -p --json && "
            f"{sys.executable} -c {shlex.quote(ask)}"
        )
        used = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if k != "JT"},
        )  # fmt: skip
        assert used.returncode == 0, used.stderr
        profiles, state = used.stdout.rsplit("\n", 2)[0], used.stdout.split()[-1]
        assert any(p["profile"] == demo.PROFILE for p in json.loads(profiles)), profiles
        assert state == "RUNNING"

        # nothing of the user's own setup was touched
        assert not (isolated_home / ".databrickscfg").exists()
        assert list((isolated_home / ".ssh").iterdir()) == []
        assert not (isolated_home / ".local" / "share" / "jupyter" / "kernels").exists()
        assert (root / "databrickscfg").stat().st_mode & 0o077 == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("the demo did not stop on SIGINT:\n" + "\n".join(lines))
    assert proc.returncode == 0, "\n".join(lines)
    assert "Demo stopped." in lines
    # the demo's children are gone once they are reaped; wait for that, boundedly
    deadline = time.monotonic() + 30
    while _processes_mentioning(str(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(str(root)) == []


def _assert_spark(
    lab: Lab, kernel_id: str, cells: list[str], results: list[dict[str, Any]], lines: list[str]
) -> None:
    """The Spark part of the sample notebook ran on the cluster's application."""
    assert (
        f"Spark: pyspark from {Path(PYSPARK_PATH).resolve()} runs on the simulated driver." in lines
    )
    assert any(line.startswith("  Spark application ") for line in lines), lines
    by_cell = dict(zip(cells, results, strict=True))
    [attach] = [r for c, r in by_cell.items() if c == "dbcontext()"]
    assert "(cluster's application via gateway hand-off)" in attach["stdout"]
    [sql] = [r for c, r in by_cell.items() if c.startswith("%%sql")]
    table = "".join(sql["html"])
    assert "<th>n</th><th>square</th>" in table and "<td>4</td><td>16</td>" in table
    assert "5 rows" in table
    [shown] = [r for c, r in by_cell.items() if c.startswith("display(")]
    assert "<td>10</td><td>385</td>" in "".join(shown["html"])
    [sc] = [r for c, r in by_cell.items() if c == "sc"]
    assert "#setting/clusters/" in "".join(sc["html"])
    # the status item says "running with Spark"
    status = lab.json("GET", f"/databrickslabs-jupyterlab/api/v1/kernels/{kernel_id}")
    assert status["kernel_state"] == "running-spark", status


def test_find_pyspark_says_how_to_get_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = demo.importlib.util.find_spec
    monkeypatch.setattr(
        demo.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyspark" else real_find_spec(name, *a),
    )
    assert demo.find_pyspark() == (None, demo.SPARK_HINT)
    assert "pip install 'databrickslabs-jupyterlab[spark]'" in demo.SPARK_HINT
    cells = demo.notebook("k", "K", spark=False)["cells"]
    assert not any("%%sql" in "".join(c["source"]) for c in cells)


def test_find_pyspark_without_java_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pyspark").mkdir()
    (tmp_path / "pyspark" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    folder, line = demo.find_pyspark()
    assert folder is None
    assert line.startswith("Spark: pyspark is installed but Java is not on the PATH;")
    monkeypatch.setattr(demo.shutil, "which", lambda name: "/usr/bin/java")
    assert demo.find_pyspark()[0] == str(tmp_path.resolve())


def test_demo_rejects_a_bad_time_scale(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--time-scale", "0"]) == 2
    assert "--time-scale must be positive" in capsys.readouterr().err


def test_demo_word_is_a_profile_when_cli_flags_follow() -> None:
    from databrickslabs_jupyterlab.cli.parser import is_demo

    assert is_demo(["demo"])
    assert is_demo(["demo", "--no-browser", "--port=9999", "--time-scale", "0.5"])
    assert not is_demo(["demo", "-k", "-i", "x"])
    assert not is_demo(["demo", "-p"])


def test_demo_without_jupyterlab_says_so_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real_find_spec = demo.importlib.util.find_spec
    monkeypatch.setattr(
        demo.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "jupyterlab" else real_find_spec(name, *a),
    )
    assert demo.main(["--no-browser", "--dir", str(tmp_path / "demo")]) == 1
    err = capsys.readouterr().err
    assert "JupyterLab is not installed" in err and "Traceback" not in err
    assert not (tmp_path / "demo").exists()
