"""Server configuration of the galata UI tests.

Starts the workspace simulator in a thread, writes a Databricks profile, an SSH key and an SSH
config into a private temporary HOME, creates the kernelspec of one simulated cluster, and
points the extension at all of it through DBJL_* variables. The tests control the simulator over
its ``/_sim`` endpoints; where to find it is written to the JSON file named by ``DBJL_UI_INFO``.

Never use this configuration outside the tests: galata's settings remove every security check.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from jupyterlab.galata import configure_jupyter_server

from databrickslabs_jupyterlab import kernelspecs
from databrickslabs_jupyterlab.simulator import SimulatorThread
from databrickslabs_jupyterlab.simulator.keys import make_keypair

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.fixtures.wheels import build_wheel  # noqa: E402 - the repository's test helpers

c = get_config()  # noqa: F821 - provided by the traitlets config loader

configure_jupyter_server(c)
c.ServerApp.jpserver_extensions = {"databrickslabs_jupyterlab": True}

PROFILE = "demo"
CLUSTER_NAME = "ui-test-cluster"
CLUSTER_ID = "0101-000000-uitest01"
# Simulated transitions run at this fraction of their real pace (start 6 s -> 1.5 s), slow
# enough for the browser to see every step, fast enough for the tests.
TIME_SCALE = float(os.environ.get("DBJL_UI_TIME_SCALE", "0.25"))

root = Path(tempfile.mkdtemp(prefix="dbjl-ui-tests-"))

# The browser gets the labextension built in this checkout (`jlpm build`), not a copy that an
# earlier `pip install` left in share/jupyter/labextensions: the first path naming it wins.
built = REPO / "databrickslabs_jupyterlab" / "labextension"
if (built / "package.json").exists():
    (root / "labextensions").mkdir()
    (root / "labextensions" / "databrickslabs-jupyterlab").symlink_to(built)
    galata_paths = c.LabServerApp.extra_labextensions_path
    if isinstance(galata_paths, str):
        galata_paths = [galata_paths]
    c.LabServerApp.extra_labextensions_path = [str(root / "labextensions"), *galata_paths]

home = root / "home"
ssh_dir = home / ".ssh"
ssh_dir.mkdir(parents=True, mode=0o700)
key = ssh_dir / f"id_{PROFILE}"

# A folder with pyspark (scripts/test.sh provides one): a second kernelspec puts it on the remote
# kernel's PYTHONPATH, as a Databricks driver has it, so that Spark really attaches.
PYSPARK_PATH = os.environ.get("DBJL_TEST_PYSPARK_PATH") or ""
if not (
    PYSPARK_PATH
    and (Path(PYSPARK_PATH) / "pyspark" / "__init__.py").is_file()
    and shutil.which("java")
):
    PYSPARK_PATH = ""

# Only the test's own Databricks and product settings may be read.
for name in list(os.environ):
    if name.startswith(("DATABRICKS_", "DBJL_")) and name != "DBJL_UI_INFO":
        del os.environ[name]

sim = SimulatorThread(time_scale=TIME_SCALE, state_dir=root / "simulator")
sim.start()

public_key = make_keypair(key)
cluster_id = sim.add_cluster(
    CLUSTER_NAME, cluster_id=CLUSTER_ID, state="RUNNING", ssh_public_keys=[public_key]
)
config_file = home / ".databrickscfg"
config_file.write_text(sim.profile_text(PROFILE))
config_file.chmod(0o600)
ssh_config = ssh_dir / "config"
ssh_config.write_text(sim.ssh_config_entry(cluster_id, str(key)))

os.environ.update(
    {
        "HOME": str(home),
        "DATABRICKS_CONFIG_FILE": str(config_file),
        "DBJL_SSH_CONFIG": str(ssh_config),
        "DBJL_IDENTITY_FILE": str(key),
        "DBJL_DRIVER_PYTHON": sim.driver_python,
        "DBJL_STATE_DIR": str(home / ".databrickslabs_jupyterlab"),
        # The kernelspec lives in the test's own data folder, not in the user's.
        "JUPYTER_DATA_DIR": str(root / "jupyter-data"),
    }
)

# A driver library that the tests can take away from the simulated driver (pip uninstall), so
# that a reconfigure has something to install. It is installed from a local wheel only. Its
# many small modules make pip work for a few seconds, as a real library does, long enough for
# the browser to show the installing step.
PROBE = "dbjl-ui-probe"
wheels = build_wheel(
    root / "wheels",
    PROBE,
    "1.0",
    modules={f"parts/part{i:04d}.py": f"PART = {i}\n" * 20 for i in range(2000)},
).parent
pip_args = ["--no-index", "--find-links", str(wheels)]
subprocess.run(
    [
        sim.driver_python,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        *pip_args,
        PROBE,
    ],
    check=True,
)
c.DatabricksLabsDriver.driver_requirements = ["ipykernel>=6.0", PROBE]
c.DatabricksLabsDriver.pip_args = pip_args

kernel_name = kernelspecs.create_kernelspec(PROFILE, cluster_id, CLUSTER_NAME, env=CLUSTER_NAME)
spark_kernel_name = ""
if PYSPARK_PATH:
    # Written beside the first spec: create_kernelspec would replace that one (one spec per
    # cluster and profile is what the CLI keeps).
    spec = kernelspecs.kernel_json(
        PROFILE, cluster_id, CLUSTER_NAME, "pyspark", kernel_env={"PYTHONPATH": PYSPARK_PATH}
    )
    spark_kernel_name = kernelspecs.kernel_name(spec["display_name"])
    spec_dir = root / "spark-spec"
    spec_dir.mkdir()
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    KernelSpecManager().install_kernel_spec(str(spec_dir), spark_kernel_name, user=True)
# A second cluster whose simulated driver runs the cluster's own Spark application (spark.spec.ts
# starts it): its kernel attaches through the gateway hand-off, as on Databricks. TERMINATED until
# then, so that the other tests never pay for its JVM.
SPARK_CLUSTER_ID = "0101-000000-uispark1"
spark_cluster_kernel_name = ""
if PYSPARK_PATH:
    sim.add_cluster(
        "ui-spark-cluster",
        cluster_id=SPARK_CLUSTER_ID,
        state="TERMINATED",
        ssh_public_keys=[public_key],
    )
    runtime = sim.cluster(SPARK_CLUSTER_ID).runtime
    runtime.pyspark_path, runtime.spark_enabled = PYSPARK_PATH, True
    with open(ssh_config, "a") as f:
        f.write(sim.ssh_config_entry(SPARK_CLUSTER_ID, str(key)))
    spec = kernelspecs.kernel_json(
        PROFILE, SPARK_CLUSTER_ID, "ui-spark-cluster", "spark", kernel_env={"PYTHONPATH": PYSPARK_PATH}
    )
    spark_cluster_kernel_name = kernelspecs.kernel_name(spec["display_name"])
    spec_dir = root / "spark-cluster-spec"
    spec_dir.mkdir()
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    KernelSpecManager().install_kernel_spec(str(spec_dir), spark_cluster_kernel_name, user=True)
display_names = {s.name: s.display_name for s in kernelspecs.list_kernelspecs()}
display_name = display_names.get(kernel_name, kernel_name)

info = {
    "simulator_url": sim.url,
    "simulator_token": sim.token,
    "profile": PROFILE,
    "cluster_id": cluster_id,
    "cluster_name": CLUSTER_NAME,
    "kernel_name": kernel_name,
    "kernel_display_name": display_name,
    "driver_python": sim.driver_python,
    "driver_library": PROBE,
    "spark_kernel_name": spark_kernel_name,
    "spark_kernel_display_name": display_names.get(spark_kernel_name, ""),
    "spark_cluster_id": SPARK_CLUSTER_ID if PYSPARK_PATH else "",
    "spark_cluster_kernel_name": spark_cluster_kernel_name,
    "spark_cluster_kernel_display_name": display_names.get(spark_cluster_kernel_name, ""),
}
info_path = Path(os.environ.get("DBJL_UI_INFO", root / "info.json"))
info_path.parent.mkdir(parents=True, exist_ok=True)
fd = os.open(info_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as fh:
    json.dump(info, fh, indent=1)


def _cleanup() -> None:
    sim.stop()
    shutil.rmtree(root, ignore_errors=True)


atexit.register(_cleanup)
