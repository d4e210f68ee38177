"""The servers of the browser tests behind a hub and behind a kernel gateway, never for anything
else: ``python servers.py hub`` or ``python servers.py gateway``, run by Playwright as the web
server of ``playwright.hub.config.js`` and ``playwright.gateway.config.js``.

``hub``: the two-user JupyterHub of ``tests/test_jupyterhub.py`` (``/hub-prefix/``, a simulated
workspace, profile, key and HOME per user, ``DummyAuthenticator`` with the password in
``DBJL_UI_PASSWORD``) on ``DBJL_UI_PORT``; alice's cluster is started through her server until
it is connected.

``gateway``: one simulated workspace with a running cluster, a real Jupyter Kernel Gateway that
has the cluster's kernelspec, and JupyterLab with ``--gateway-url`` on ``DBJL_UI_PORT`` with the
token ``DBJL_UI_PASSWORD``.

Either way a notebook on the Databricks kernel is left where the browser opens it, what the test
needs is written into the JSON file named by ``DBJL_UI_SERVER_INFO``, and the servers run until
SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.fixtures.hub import PREFIX, one_workspace, proxy_command, two_user_hub  # noqa: E402

NOTEBOOK = "databricks.ipynb"
#: Settings of the test run itself, not of the product.
KEEP = ("DBJL_UI_SERVER_INFO", "DBJL_TEST_CHP")


def _notebook(folder: Path, kernel_name: str, display_name: str) -> None:
    cell = {
        "cell_type": "code", "id": "first", "metadata": {}, "source": "print(6 * 7)",
        "outputs": [], "execution_count": None,
    }  # fmt: skip
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": kernel_name, "display_name": display_name}},
        "cells": [cell],
    }
    (folder / NOTEBOOK).write_text(json.dumps(notebook))


def _ready(info: dict[str, Any], stop: threading.Event) -> None:
    target = Path(os.environ["DBJL_UI_SERVER_INFO"])
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps({"notebook": NOTEBOOK, **info}))
    partial.replace(target)
    print("servers ready", flush=True)
    stop.wait()


def hub(root: Path, port: int, password: str, stop: threading.Event) -> None:
    chp = proxy_command()
    if chp is None:
        sys.exit("configurable-http-proxy is not installed (scripts/test.sh installs it)")
    with two_user_hub(root, root / "simulator", chp, port=port, password=password) as world:
        world.connected("alice")
        _notebook(world.people["alice"].home, world.kernel_name, "alice's cluster")
        people = {
            name: {"profile": p.profile, "cluster_id": p.cluster_id, "cluster": f"{name}-cluster"}
            for name, p in world.people.items()
        }
        _ready({"prefix": PREFIX, "people": people}, stop)


def gateway(root: Path, port: int, password: str, stop: threading.Event) -> None:
    from databrickslabs_jupyterlab import kernelspecs
    from tests.fixtures.gateway import gateway_and_server

    with ExitStack() as stack:
        person, env = one_workspace(
            stack, root / "home", "gw", root / "simulator", 0.25, state="RUNNING"
        )
        os.environ.update(env)
        os.environ["HOME"] = str(person.home)
        os.environ["JUPYTER_DATA_DIR"] = str(root / "jupyter-data")
        kernel = kernelspecs.create_kernelspec(
            person.profile, person.cluster_id, "gw-cluster", env="gateway", spark=False
        )
        notebooks = root / "notebooks"
        notebooks.mkdir()
        _notebook(notebooks, kernel, "gw-cluster")
        with gateway_and_server(root, notebooks, app="lab", port=port, token=password) as gw:
            info = {"profile": person.profile, "cluster_id": person.cluster_id}
            info.update(cluster="gw-cluster", gateway_url=gw.gateway_url)
            _ready({**info, "gateway_token": gw.gateway_token}, stop)


def main() -> None:
    which = sys.argv[1] if len(sys.argv) == 2 else ""
    if which not in ("hub", "gateway"):
        sys.exit("usage: python servers.py hub|gateway")
    password = os.environ["DBJL_UI_PASSWORD"]
    port = int(os.environ["DBJL_UI_PORT"])
    for name in list(os.environ):  # only the test's own Databricks and product settings
        if name.startswith(("DATABRICKS_", "DBJL_")) and name not in KEEP:
            del os.environ[name]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    root = Path(tempfile.mkdtemp(prefix=f"dbjl-ui-{which}-"))
    (hub if which == "hub" else gateway)(root, port, password, stop)


if __name__ == "__main__":
    main()
