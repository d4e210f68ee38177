"""``python -m databrickslabs_jupyterlab.simulator``: run a simulated workspace until Ctrl-C.

Prints a ready-to-use profile (databrickscfg section, ssh config entries, environment exports)
and, on request, writes them so that the product can be tried without a Databricks account.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from ..settings import DriverSettings
from ..sshconfigfile import replace_text
from . import Simulator
from .databricks_cli import write_launcher
from .keys import read_or_make_keypair
from .lifecycle import CREATOR

_BEGIN = "# >>> databrickslabs-jupyterlab simulator >>>"
_END = "# <<< databrickslabs-jupyterlab simulator <<<"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m databrickslabs_jupyterlab.simulator",
        description="Run a simulated Databricks workspace (REST API and SSH drivers) until Ctrl-C.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address of the HTTP API (default %(default)s)"
    )
    p.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    p.add_argument(
        "--clusters", type=int, default=1, help="number of clusters (default %(default)s)"
    )
    p.add_argument(
        "--running", action="store_true", help="clusters start RUNNING instead of TERMINATED"
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="factor for every simulated duration (start 6 s, restart 4 s, terminate 3 s)",
    )
    p.add_argument(
        "--autotermination-minutes",
        type=int,
        default=120,
        help="inactivity before a cluster terminates (times --time-scale; 0: never)",
    )
    p.add_argument(
        "--access-mode",
        default="SINGLE_USER",
        choices=("SINGLE_USER", "USER_ISOLATION", "NONE"),
        help="the clusters' data_security_mode (default %(default)s)",
    )
    p.add_argument(
        "--spark-version",
        default="15.4.x-scala2.12",
        help="the clusters' runtime (default %(default)s; the SSH tunnel needs 17.x or later)",
    )
    p.add_argument(
        "--no-public-ip",
        action="store_true",
        help="secure cluster connectivity: no driver.public_dns, no classic SSH (tunnel only)",
    )
    p.add_argument(
        "--databricks-cli",
        metavar="DIR",
        help="write the simulator's stand-in 'databricks' executable (ssh setup/connect) into DIR",
    )
    p.add_argument("--state-dir", help="where the driver's Python venv lives (reused)")
    p.add_argument(
        "--pyspark-path",
        metavar="DIR",
        help="a folder holding pyspark (pip install --target DIR pyspark), put on the drivers' "
        "PYTHONPATH: each running cluster then runs one Spark application (needs Java), "
        "used by its REST 1.2 execution contexts",
    )
    p.add_argument("--token", help="the workspace token (default: a random one)")
    p.add_argument("--seed", type=int, help="seed for cluster ids (reproducible runs)")
    p.add_argument("--profile", default="demo", help="profile name to print (default %(default)s)")
    p.add_argument(
        "--write-profile",
        metavar="PROFILE",
        help="write the profile into --config-file and the ssh entries into --ssh-dir/config",
    )
    p.add_argument(
        "--config-file",
        help="Databricks config file to write (default $DATABRICKS_CONFIG_FILE or ~/.databrickscfg)",
    )
    p.add_argument(
        "--ssh-dir",
        help="create (or reuse) the key pair id_<profile> here, register its public key on the "
        "clusters and write their Host entries into <ssh-dir>/config "
        "(default with --write-profile: ~/.ssh)",
    )
    return p


def write_profile(config_file: Path, profile: str, text: str, *, backup_dir: Path) -> None:
    """Replace (or add) one ``[profile]`` section, keeping the rest of the file as it is; the
    user's file is copied to ``backup_dir`` first and replaced atomically (a symlink stays)."""
    lines = config_file.read_text().splitlines() if config_file.exists() else []
    kept: list[str] = []
    skipping = False
    for line in lines:
        header = re.match(r"^\s*\[([^\]]+)\]\s*$", line)
        if header:
            skipping = header.group(1).strip() == profile
        if not skipping:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    body = "\n".join(kept)
    body = (body + "\n\n" if body else "") + text
    _replace(config_file, body, backup_dir)


def _replace(path: Path, text: str, backup_dir: Path) -> None:
    backup = replace_text(path, text, backup_dir=backup_dir)
    if backup is not None:
        print(f"# the previous {path} is saved as {backup}", file=sys.stderr)


def write_ssh_config(config: Path, entries: str, *, backup_dir: Path) -> None:
    """Replace the simulator's block in an ssh config file (other entries stay), with the same
    backup and atomic write as ``write_profile``."""
    text = config.read_text() if config.exists() else ""
    text = re.sub(rf"\n?{re.escape(_BEGIN)}.*?{re.escape(_END)}\n?", "\n", text, flags=re.S)
    text = text.strip("\n")
    block = f"{_BEGIN}\n{entries.rstrip()}\n{_END}\n"
    _replace(config, (text + "\n\n" if text else "") + block, backup_dir)


async def run(
    args: argparse.Namespace, ssh_dir_path: Path | None, config_file: Path, home_ssh: Path
) -> int:
    profile = args.write_profile or args.profile
    backup_dir = DriverSettings.from_env().state_path / "simulator_backup"
    sim = Simulator(
        token=args.token,
        time_scale=args.time_scale,
        state_dir=args.state_dir,
        seed=args.seed,
        pyspark_path=args.pyspark_path,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    identity = (ssh_dir_path or home_ssh) / f"id_{profile}"
    keys: list[str] = []
    if ssh_dir_path is not None:
        keys.append(await asyncio.to_thread(read_or_make_keypair, identity))

    await sim.start(args.host, args.port)
    try:
        ids = []
        for index in range(max(args.clusters, 0)):
            name = "sim-cluster" if args.clusters == 1 else f"sim-cluster-{index + 1}"
            ids.append(
                sim.add_cluster(
                    name,
                    state="RUNNING" if args.running else "TERMINATED",
                    ssh_public_keys=keys,
                    autotermination_minutes=args.autotermination_minutes,
                    data_security_mode=args.access_mode,
                    single_user_name=CREATOR if args.access_mode == "SINGLE_USER" else None,
                    spark_version=args.spark_version,
                    public_ip=not args.no_public_ip,
                )
            )
        profile_text = sim.profile_text(profile)
        # A cluster without a public IP has no classic entry (only the tunnel reaches it), nor
        # has a standard access mode one (no SSH at all).
        classic = not args.no_public_ip and args.access_mode != "USER_ISOLATION"
        entries = "\n".join(sim.ssh_config_entry(cid, str(identity)) for cid in ids if classic)
        reach = "public IP" if not args.no_public_ip else "no public IP"
        clusters = [f"{cid}  {args.access_mode}  {args.spark_version}  {reach}" for cid in ids]
        if args.write_profile:
            await asyncio.to_thread(
                write_profile, config_file, profile, profile_text, backup_dir=backup_dir
            )
        if ssh_dir_path is not None:
            await asyncio.to_thread(
                write_ssh_config, ssh_dir_path / "config", entries, backup_dir=backup_dir
            )

        out = [f"# Databricks workspace simulator at {sim.url} (Ctrl-C to stop)", ""]
        where = f" (written to {config_file})" if args.write_profile else ""
        out += [f"# Databricks config file{where}", profile_text]
        out += ["# clusters (id, access mode, runtime, driver address)", *clusters, ""]
        where = f" (written to {ssh_dir_path / 'config'})" if ssh_dir_path else ""
        if not keys:
            where += f"; no key registered on the clusters: use --ssh-dir to create {identity}"
        out += [f"# ssh config{where}", entries]
        out += ["# environment", f"export DBJL_DRIVER_PYTHON={sim.driver_python}"]
        if args.databricks_cli:
            launcher = await asyncio.to_thread(write_launcher, args.databricks_cli)
            out.append(f'export PATH="{launcher.parent}:$PATH"  # the stand-in databricks CLI')
        if args.write_profile and args.config_file:
            out.append(f"export DATABRICKS_CONFIG_FILE={config_file}")
        if ssh_dir_path is not None and ssh_dir_path != home_ssh:
            out.append(f"export DBJL_SSH_CONFIG={ssh_dir_path / 'config'}")
        out += ["", "# simulator ready"]
        sys.stdout.write("\n".join(out) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    home_ssh = Path("~/.ssh").expanduser().resolve()
    ssh_dir = args.ssh_dir or ("~/.ssh" if args.write_profile else None)
    ssh_dir_path = Path(ssh_dir).expanduser().resolve() if ssh_dir else None
    config_file = Path(
        args.config_file or os.environ.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg"
    ).expanduser()
    return asyncio.run(run(args, ssh_dir_path, config_file, home_ssh))


if __name__ == "__main__":
    sys.exit(main())
