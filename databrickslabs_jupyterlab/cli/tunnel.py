"""``-s -i ID --tunnel [NAME]``: SSH to a cluster through the Databricks SSH tunnel.

The Databricks CLI owns the tunnel: ``databricks ssh setup`` writes a ``Host NAME`` block (into
a folder that ``~/.ssh/config`` includes) whose ProxyCommand relays SSH over the workspace to a
server it starts on the cluster. Nothing is added to the cluster, so nothing restarts. This
command checks what the tunnel needs before anything is written (a dedicated cluster, Databricks
Runtime 17 or newer, the Databricks CLI 0.269 or newer), runs the setup, and says how the
product and ``ssh`` reach the cluster afterwards.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from typing import Any

from .. import transport
from .context import Context
from .errors import EXIT_FAILURE, EXIT_USAGE, CliError
from .output import out, print_json, progress, tilde

#: The first Databricks CLI with ``databricks ssh`` (the tunnel, Beta).
MIN_CLI = (0, 269)
INSTALL_HINT = (
    "install the Databricks CLI (0.269 or newer): "
    "https://docs.databricks.com/dev-tools/cli/install.html"
)


def _cli_version(executable: str) -> tuple[int, ...] | None:
    try:
        done = subprocess.run(
            [executable, "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", done.stdout + done.stderr)
    return tuple(int(n) for n in found.groups()) if found else None


def databricks_cli() -> str:
    """The ``databricks`` executable that can set up the tunnel, or CliError saying how to get
    one. Blocking."""
    executable = shutil.which("databricks")
    if executable is None:
        raise CliError(f"The Databricks CLI is not on PATH: {INSTALL_HINT}.", EXIT_USAGE)
    version = _cli_version(executable)
    if version is None or version[:2] < MIN_CLI:
        shown = ".".join(map(str, version)) if version else "an unknown version"
        raise CliError(
            f"{executable} is {shown}; the SSH tunnel needs 0.269 or newer: {INSTALL_HINT}.",
            EXIT_USAGE,
        )
    return executable


def _setup(executable: str, name: str, cluster_id: str, profile: str, config: str) -> Any:
    return subprocess.run(
        [
            executable,
            "ssh",
            "setup",
            f"--name={name}",
            f"--cluster={cluster_id}",
            f"--profile={profile}",
            f"--ssh-config={config}",
            "--auto-approve",  # asked for explicitly here; never a prompt on a closed stdin
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


async def setup_tunnel(ctx: Context) -> None:
    args = ctx.args
    cluster_id = args.id
    name = args.tunnel or cluster_id
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise CliError(
            f"{name!r} is not a Host name for the tunnel (letters, digits, '.', '_', '-').",
            EXIT_USAGE,
        )
    ws = await ctx.workspace()
    info = await ctx.read_cluster(ws, cluster_id)
    refusal = transport.tunnel_refusal(info)
    if refusal is not None:
        raise CliError(refusal, EXIT_USAGE)
    executable = await asyncio.to_thread(databricks_cli)
    config = str(ctx.ssh_config)
    progress(f"=> Setting up the Databricks SSH tunnel to cluster {cluster_id} as Host {name}")
    done = await asyncio.to_thread(_setup, executable, name, cluster_id, ctx.profile, config)
    for line in done.stderr.splitlines():
        if line.strip():
            progress(f"   {line}")
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        why = said[-1].removeprefix("Error:").strip() if said else f"exit {done.returncode}"
        raise CliError(f"databricks ssh setup failed: {why}", EXIT_FAILURE)
    route = await asyncio.to_thread(transport.choose, info, ctx.settings)
    if route.transport != transport.TUNNEL:
        raise CliError(
            f"databricks ssh setup ran, but {tilde(ctx.ssh_config)} does not lead to the tunnel "
            f"for cluster {cluster_id}: {route.why}",
            EXIT_FAILURE,
        )
    if args.json:
        print_json(
            {
                "cluster_id": cluster_id,
                "transport": route.transport,
                "host": route.alias,
                "ssh_config": config,
            }
        )
    else:
        out(
            f"SSH access to cluster {cluster_id} through the Databricks SSH tunnel is "
            f"configured: ssh {route.alias}"
        )
