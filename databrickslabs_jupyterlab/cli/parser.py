"""The command line: the flags of the tool this project succeeds, so its users' habits still
work, plus the scripting options (``--yes``, ``--json``, timeouts)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

PROG = "databrickslabs-jupyterlab"

EPILOG = f"""\
examples:
  {PROG} -p                          list profiles and their SSH keys
  {PROG} PROFILE -s -i CLUSTER_ID    add the profile's key to a cluster, write ~/.ssh/config
  {PROG} PROFILE -k [-i CLUSTER_ID]  create a Jupyter kernelspec for a cluster
  {PROG} PROFILE -r -i CLUSTER_ID    start the cluster, add the key, log in, install libraries
  {PROG} PROFILE -l -i CLUSTER_ID    the same (libraries only when missing), then JupyterLab
  {PROG} PROFILE -k -i ID -e A=1     a kernelspec whose remote kernel gets A=1 in its environment
  {PROG} PROFILE -s -i ID --tunnel   SSH through the Databricks SSH tunnel (no public IP needed)
  {PROG} PROFILE -k -i ID --transport command-api
                                     a kernelspec without SSH (REST 1.2 execution context)
  {PROG} -n EXPORT.html              import a Databricks HTML export as <name>.ipynb (experimental)
  {PROG} -D PROFILE -r -i ID         the same as without -D, plus a debug log (no token) on stderr
  {PROG} demo [--no-browser]         try everything against a built-in workspace simulator

  "demo" followed only by demo options (--port, --no-browser, --time-scale, --dir) starts the
  demo; with any other flag it names a profile called "demo".
  Arguments after "--" are passed to "jupyter lab" (-l).

exit status:
  0    success
  1    the operation failed or was declined
  2    wrong usage (unknown flag, missing profile or cluster id)
  3    not found: profile, cluster, kernelspec or notebook file
  4    SSH: key missing, cluster without the key, driver unreachable or login refused
  5    the workspace is unreachable or refused the profile's credentials
  130  interrupted

environment:
  DATABRICKS_CONFIG_FILE  profiles file (default ~/.databrickscfg)
  DBJL_SSH_CONFIG, DBJL_IDENTITY_FILE, DBJL_SSH_PORT, DBJL_SSH_USER, DBJL_DRIVER_PYTHON,
  DBJL_SUDO, DBJL_STATE_DIR, DBJL_PIP_ARGS, DBJL_DRIVER_REQUIREMENTS  driver and SSH settings;
  they win over c.DatabricksLabsDriver.* in jupyter_server_config.py, which the CLI reads too
"""

DEMO_OPTIONS = {"--port", "--no-browser", "--time-scale", "--dir", "-h", "--help"}
CLUSTER_ACTIONS = ("kernelspec", "reconfigure", "lab", "versioncheck", "mirror")
FLAGS = {
    "kernelspec": "-k",
    "reconfigure": "-r",
    "lab": "-l",
    "versioncheck": "-V",
    "mirror": "-m",
}


def flag(action: str) -> str:
    """The short flag of a cluster action (``reconfigure`` -> ``-r``)."""
    return FLAGS[action]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Configure remote Databricks access with JupyterLab",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("profile", nargs="?", help="A Databricks CLI profile (see -p)")
    p.add_argument(
        "-b",
        "--bootstrap",
        action="store_true",
        help="Check that the server extension, lab extension and kernel provisioner are installed "
        "and enabled (enables the server extension if needed)",
    )
    p.add_argument("-d", "--delete", action="store_true", help="Delete Databricks kernelspecs")
    p.add_argument(
        "-m", "--mirror", action="store_true", help="Mirror a remote Databricks environment locally"
    )
    p.add_argument(
        "-c",
        "--clipboard",
        action="store_true",
        help="Copy the personal access token to the clipboard",
    )
    p.add_argument(
        "-D",
        "--debug",
        action="store_true",
        help="Log what the CLI does to stderr, with each HTTP request to the workspace (method, "
        "URL, status, time); tokens and passwords are masked",
    )
    p.add_argument(
        "-e",
        "--env",
        action="extend",
        nargs="+",
        default=[],
        metavar="K=V",
        help="-k: environment variables for the remote kernel, stored in the kernelspec; "
        "repeat -e or give several after one -e (put the profile before -e). The value is "
        "everything after the first '=', kept verbatim; secret-looking names (TOKEN, SECRET, "
        "PASSWORD, ..._KEY) and DBJL_*, PYSPARK_PYTHON are refused",
    )
    p.add_argument(
        "-i", "--id", metavar="CLUSTER_ID", help="The cluster_id to avoid manual selection"
    )
    p.add_argument(
        "-k",
        "--kernelspec",
        action="store_true",
        help="Create a kernel specification (on a running cluster, prepare its driver first)",
    )
    p.add_argument(
        "-N",
        "--no-spark",
        action="store_true",
        help="-k: a kernel without Spark (dbcontext() is not run when it starts)",
    )
    p.add_argument(
        "--transport",
        choices=("ssh", "command-api"),
        default=None,
        help="-k: how the kernel reaches the cluster: ssh (the default; ipykernel on the driver) "
        "or command-api (no SSH: cells run in a Command Execution API context, with the "
        "profile's credentials kept on this machine)",
    )
    p.add_argument(
        "-l",
        "--lab",
        action="store_true",
        help="Safely start JupyterLab (start the cluster, check SSH and libraries first)",
    )
    p.add_argument(
        "-n",
        "--notebook",
        metavar="URL|FILE",
        help="Experimental: import a Databricks HTML notebook export (http(s) URL or file) as "
        "<name>.ipynb in the current folder; --yes overwrites an existing file",
    )
    p.add_argument(
        "-o",
        "--organisation",
        metavar="ORGANISATION",
        help="The organisation id of an Azure Databricks workspace "
        "(derived from adb-<org>.<n>.azuredatabricks.net hosts)",
    )
    p.add_argument(
        "-p",
        "--profiles",
        action="store_true",
        help="Show all Databricks CLI profiles and check their SSH key",
    )
    p.add_argument(
        "-r",
        "--reconfigure",
        action="store_true",
        help="Reconfigure the cluster as the server does: start it if it is not running, add the "
        "SSH key, log in, install the driver libraries that are missing",
    )
    p.add_argument(
        "-s", "--ssh-config", action="store_true", help="Configure SSH access for a cluster"
    )
    p.add_argument(
        "--tunnel",
        nargs="?",
        const="",
        default=None,
        metavar="NAME",
        help="-s: through the Databricks SSH tunnel instead (runs 'databricks ssh setup'; needs "
        "the Databricks CLI 0.269+, a dedicated cluster and Databricks Runtime 17+; NAME is the "
        "SSH Host, by default the cluster id)",
    )
    p.add_argument(
        "-v", "--version", action="store_true", help="Show the version of databrickslabs-jupyterlab"
    )
    p.add_argument(
        "-V",
        "--versioncheck",
        choices=("all", "diff", "same"),
        help="Compare the versions of local and remote packages",
    )
    p.add_argument(
        "-w",
        "--whitelist",
        action="store_true",
        help="Mirror only the whitelist (include pkg) instead of all but the blacklist",
    )
    p.add_argument(
        "-W",
        "--print-whitelist",
        action="store_true",
        help="Print the whitelist (include pkg) of packages to mirror",
    )
    p.add_argument(
        "-B",
        "--print-blacklist",
        action="store_true",
        help="Print the blacklist (exclude pkg) of packages not to mirror",
    )
    extra = p.add_argument_group("scripting and details")
    extra.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="Answer yes to every question; never prompt (needs -i where a cluster is chosen)",
    )
    extra.add_argument("--json", action="store_true", help="Print results as JSON (-p, -V, ...)")
    extra.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="How long to wait for a cluster to reach RUNNING (default 1800)",
    )
    extra.add_argument(
        "--api-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="How long to retry a workspace API call that fails or gets no answer, and how long "
        "-n waits for its URL (default: the workspace_retry_timeout setting, 20)",
    )
    extra.add_argument(
        "--dry-run",
        action="store_true",
        help="-l: check everything, print the JupyterLab command instead of running it; "
        "-m: print the requirements instead of creating the environment",
    )
    extra.add_argument("--conda", action="store_true", help="-m: create a conda environment")
    extra.add_argument(
        "--env-name", metavar="NAME", help="-m: environment name (default: the cluster's name)"
    )
    extra.add_argument(
        "--env-path",
        metavar="PATH",
        help="-m: venv folder (default: <state dir>/envs/<name>)",
    )
    extra.add_argument("--python", metavar="PYTHON", help="-m: interpreter that creates the venv")
    extra.add_argument(
        "--pip-args",
        metavar="ARGS",
        default="",
        help='-m: extra arguments for the local pip install, e.g. --pip-args="--index-url URL"',
    )
    return p


def is_demo(argv: Sequence[str]) -> bool:
    if not argv or argv[0] != "demo":
        return False
    return all(a.split("=", 1)[0] in DEMO_OPTIONS for a in argv[1:] if a.startswith("-"))
