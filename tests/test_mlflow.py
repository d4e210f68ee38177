"""MLflow in the remote kernel (issue 11): where its runs go.

On a Databricks driver ``dbcontext()`` sets ``MLFLOW_TRACKING_URI=databricks`` (the runtime's own
credentials; no token of ours), unless a URI is already set. The simulated driver names a local
file store in every driver process's environment, so a kernel there logs to
``<simulator state>/driver/mlflow``. With MLflow available (``DBJL_TEST_MLFLOW_PATH``, a folder
holding ``mlflow-skinny`` that scripts/test.sh installs) a run logged in the kernel is found in
that store.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from databrickslabs_jupyterlab import kernelspecs
from databrickslabs_jupyterlab.simulator.driver import MLFLOW_STORE
from tests.fixtures.simulator import SimProfile
from tests.test_provisioner import _run, _set_spec_env
from tests.test_spark_strategies import _running

pytestmark = pytest.mark.timeout(180)

# Read before the autouse fixture clears DBJL_* variables.
MLFLOW_PATH = os.environ.get("DBJL_TEST_MLFLOW_PATH") or ""
HAVE_MLFLOW = bool(MLFLOW_PATH and Path(MLFLOW_PATH, "mlflow", "__init__.py").is_file())


def _tracking(tmp_path: Path, env: dict[str, str], databricks: bool) -> dict[str, str | None]:
    """``connect.mlflow_tracking()`` in a fresh Python: its answer and the variables after."""
    root = tmp_path / ("databricks" if databricks else "nothing")
    if databricks:  # the runtime's modules folder marks a driver (connect.on_databricks)
        (root / "python_shell").mkdir(parents=True, exist_ok=True)
    code = textwrap.dedent(
        f"""
        import json, os
        from databrickslabs_jupyterlab import connect
        connect.DATABRICKS_ROOT = {str(root)!r}
        uri = connect.mlflow_tracking()
        print(json.dumps({{
            "uri": uri, "env": os.environ.get("MLFLOW_TRACKING_URI"),
            "token": os.environ.get("DATABRICKS_TOKEN"), "host": os.environ.get("DATABRICKS_HOST"),
        }}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    return json.loads(out.stdout)


def test_on_a_databricks_driver_mlflow_goes_to_the_workspace(tmp_path: Path) -> None:
    assert _tracking(tmp_path, {}, databricks=True) == {
        "uri": "databricks",
        "env": "databricks",
        "token": None,  # the runtime's credentials, never ours
        "host": None,
    }
    # a URI the driver or the user set stays
    mine = {"MLFLOW_TRACKING_URI": "file:///tmp/elsewhere"}
    assert _tracking(tmp_path, mine, databricks=True)["env"] == "file:///tmp/elsewhere"
    # off Databricks without a URI: MLflow's own default, nothing set
    assert _tracking(tmp_path, {}, databricks=False) == {
        "uri": "",
        "env": None,
        "token": None,
        "host": None,
    }


def test_a_kernel_on_the_simulated_driver_logs_to_its_local_store(
    sim_profile: SimProfile, jupyter_dirs: Path
) -> None:
    cid = sim_profile.cluster_id
    _running(sim_profile)
    store = Path(sim_profile.driver_python).parents[2] / MLFLOW_STORE
    kernel = kernelspecs.create_kernelspec(sim_profile.name, cid, "sim-cluster", env="test")
    if HAVE_MLFLOW:
        _set_spec_env(kernel, {"PYTHONPATH": MLFLOW_PATH})

    async def scenario() -> None:
        km = AsyncKernelManager(kernel_name=kernel)
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            _, out = await _run(
                kc,
                "import os\n"
                "from databrickslabs_jupyterlab.connect import mlflow_tracking\n"
                "print(mlflow_tracking())\n"
                "print(os.environ.get('MLFLOW_ALLOW_FILE_STORE'))",
            )
            assert "".join(out).split() == [store.as_uri(), "true"]
            if not HAVE_MLFLOW:
                return
            _, out = await _run(
                kc,
                "import mlflow\n"
                "with mlflow.start_run() as run:\n"
                "    mlflow.log_param('alpha', 0.5)\n"
                "    mlflow.log_metric('rmse', 0.25)\n"
                "print(mlflow.get_tracking_uri())\n"
                "print(run.info.run_id)",
                timeout=120,
            )
            uri, run_id = "".join(out).split()
            assert uri == store.as_uri()
            [param] = store.glob(f"*/{run_id}/params/alpha")
            assert param.read_text().strip() == "0.5"
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    asyncio.run(scenario())
