"""The JupyterHub of the browser test through a hub (``hub-tests/``), never for anything else.

Starts the same two-user hub as ``tests/test_jupyterhub.py`` (``/hub-prefix/``, a simulated
workspace, profile, key and HOME per user, ``DummyAuthenticator`` with the password in
``DBJL_HUB_PASSWORD``) on ``DBJL_HUB_PORT``, starts alice's cluster through her server until it is
connected, leaves a notebook on her Databricks kernel in her home, writes what the browser test
needs into the JSON file named by ``DBJL_HUB_INFO`` and runs until SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.fixtures.hub import PREFIX, proxy_command, two_user_hub  # noqa: E402

NOTEBOOK = "hub.ipynb"


def main() -> None:
    info_file = Path(os.environ["DBJL_HUB_INFO"])
    password = os.environ["DBJL_HUB_PASSWORD"]
    port = int(os.environ.get("DBJL_HUB_PORT", "8765"))
    chp = proxy_command()
    if chp is None:
        sys.exit("configurable-http-proxy is not installed (scripts/test.sh installs it)")
    for name in list(os.environ):  # only the test's own Databricks and product settings
        if name.startswith(("DATABRICKS_", "DBJL_")):
            del os.environ[name]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    root = Path(tempfile.mkdtemp(prefix="dbjl-hub-ui-"))
    with two_user_hub(root, root / "simulator", chp, port=port, password=password) as world:
        world.connected("alice")
        alice = world.people["alice"]
        notebook = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {
                "kernelspec": {"name": world.kernel_name, "display_name": "alice's cluster"}
            },
            "cells": [
                {
                    "cell_type": "code",
                    "id": "first",
                    "metadata": {},
                    "source": "print(6 * 7)",
                    "outputs": [],
                    "execution_count": None,
                }
            ],
        }
        (alice.home / NOTEBOOK).write_text(json.dumps(notebook))
        people = {
            name: {"profile": p.profile, "cluster_id": p.cluster_id, "cluster": f"{name}-cluster"}
            for name, p in world.people.items()
        }
        partial = info_file.with_suffix(".partial")
        partial.write_text(json.dumps({"prefix": PREFIX, "notebook": NOTEBOOK, "people": people}))
        partial.replace(info_file)
        print(f"hub ready under http://127.0.0.1:{port}{PREFIX}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
