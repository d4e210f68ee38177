"""``-r`` (reconfigure), ``-l`` (JupyterLab once the cluster is ready), ``-V`` (version check)
and ``-m`` (mirror): every one goes through the lifecycle of :mod:`..operations`.

``-r`` is the server's reconfigure, step for step: ``Lifecycle.run("reconfigure")`` on a
running cluster, ``Lifecycle.run("start")`` on any other (as the server's start). ``-l`` runs
the start (the driver is checked once per driver start). ``-V`` and ``-m`` need a logged-in
driver only: they take the steps ``starting`` and ``configuring`` (``Lifecycle.login``).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import mirror
from ..driver import DriverLink
from ..settings import DriverSettings
from ..vocabulary import COMING_UP, RUNNING
from ..workspace import ClusterInfo
from .context import Context, StepPrinter, cluster
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_SSH, EXIT_USAGE, CliError, cli_error, ws_call
from .kernels import specs
from .output import confirm, out, print_json, progress, table, tilde
from .profiles import cluster_url


async def confirm_key(ctx: Context, info: ClusterInfo, public_key: str) -> None:
    """The lifecycle adds a missing key; on a cluster that runs this restarts it: ask first."""
    from ..workspace import key_installed

    if key_installed(public_key, info.ssh_public_keys):
        return
    pub = tilde(ctx.key_for(info.cluster_id)) + ".pub"
    if info.state in RUNNING or info.state in COMING_UP:
        progress(
            f"Cluster {info.cluster_id} ({info.cluster_name}) is {info.state} and does not "
            f"carry {pub}: adding the key with clusters/edit RESTARTS it, which stops every "
            "notebook and job running on it."
        )
        if not confirm(f"Add {pub} to cluster {info.cluster_id}?", assume_yes=ctx.args.yes):
            raise CliError(
                f"Cluster {info.cluster_id} does not carry the public key {pub}; nothing changed.",
                EXIT_SSH,
            )


async def run_lifecycle(ctx: Context, kind: str | None = None) -> Any:
    """The chosen cluster through ``Lifecycle.run``: ``kind``, or ``reconfigure`` for a running
    cluster and ``start`` for any other. Returns the lifecycle's outcome."""
    ws, info = await cluster(ctx, key_on_cluster=False)
    await confirm_key(ctx, info, ctx.require_key(info.cluster_id))
    if kind is None:
        kind = "reconfigure" if info.state in RUNNING else "start"
    lifecycle = ctx.lifecycle(ws, info.cluster_id, StepPrinter(info.cluster_id))
    return await ws_call(lifecycle.run(kind))


async def reconfigure(ctx: Context) -> None:
    from .. import transport

    outcome = await run_lifecycle(ctx)
    info = outcome.info
    installed = list(outcome.installed)
    if ctx.args.json:
        target = await asyncio.to_thread(transport.ssh_target, info, ctx.profile, ctx.settings)
        print_json(
            {
                "cluster_id": info.cluster_id,
                "state": info.state,
                "ssh": "ok",
                "host": target.host,
                "port": target.port,
                "user": outcome.link_user,
                "installed": installed,
            }
        )
        return
    done = f", installed {', '.join(installed)}" if installed else ", libraries present"
    out(f"Cluster {info.cluster_id} ({info.cluster_name}) is ready: SSH ok{done}.")
    url = cluster_url(ctx.host, info.cluster_id, ctx.org)
    if url:
        out(f"Cluster page: {url}")


async def lab(ctx: Context) -> list[str]:
    outcome = await run_lifecycle(ctx, "start")
    info = outcome.info
    found = await asyncio.to_thread(specs, ctx.profile, info.cluster_id)
    done = f"installed {', '.join(outcome.installed)}" if outcome.installed else "present"
    out(f"Cluster {info.cluster_id} is ready: SSH ok, driver libraries {done}.")
    if not found:
        from .parser import PROG

        out(
            f"No kernelspec for this cluster yet: create one with '{PROG} {ctx.profile} -k -i "
            f"{info.cluster_id}'."
        )
    return [sys.executable, "-m", "jupyterlab", *ctx.args.lab_args]


def exec_lab(argv: list[str], *, dry_run: bool) -> int:
    if dry_run:
        out("Would run: " + shlex.join(argv))
        return EXIT_OK
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 - replaces this process by JupyterLab
    return EXIT_FAILURE  # pragma: no cover


# --------------------------------------------------------------------------------------------
# -V, -m: a logged-in driver


async def logged_in(ctx: Context) -> tuple[ClusterInfo, DriverLink]:
    """The chosen cluster running, with the key, and a login to its driver (close the link)."""
    ws, info = await cluster(ctx, key_on_cluster=False)
    cid = info.cluster_id
    public_key = ctx.require_key(cid)
    await confirm_key(ctx, info, public_key)
    lifecycle = ctx.lifecycle(ws, cid, StepPrinter(cid))
    info, link = await ws_call(lifecycle.login(info, start=info.state not in RUNNING))
    if link is None:
        why = lifecycle.last_route.why if lifecycle.last_route else ""
        raise CliError(
            f"{why} Comparing or mirroring the driver's libraries needs SSH to the driver.",
            EXIT_USAGE,
        )
    progress("   SSH login works.")
    return info, link


async def remote(ctx: Context) -> tuple[ClusterInfo, dict[str, str], str]:
    """The driver's packages (name -> version) and its Python version."""
    from .. import driver

    info, link = await logged_in(ctx)
    try:
        packages = await driver.remote_packages(link.conn, ctx.settings, link.user)
        python = await driver.remote_python_version(link.conn, ctx.settings, link.user)
    except Exception as err:
        raise cli_error(err, "Reading the driver's packages failed") from None
    finally:
        await link.close()
    return info, dict(packages), str(python)


async def version_check(ctx: Context) -> None:
    info, packages, remote_python = await remote(ctx)
    local = mirror.local_packages()
    local_python = ".".join(map(str, sys.version_info[:3]))
    rows = mirror.compare(local, packages, ctx.args.versioncheck)
    if ctx.args.json:
        print_json(
            {
                "cluster_id": info.cluster_id,
                "python": {"local": local_python, "remote": remote_python},
                "packages": [asdict(r) for r in rows],
            }
        )
        return
    out(f"Python: local {local_python}, remote {remote_python}")
    out(
        table(
            [(r.package, r.local or "--", r.remote or "--") for r in rows],
            ("Package", "local", "remote"),
        )
    )


def env_path(explicit: str | None, settings: DriverSettings, name: str) -> Path:
    return Path(explicit).expanduser() if explicit else settings.state_path / "envs" / name


async def mirror_env(ctx: Context) -> None:
    args = ctx.args
    if args.conda and not mirror.conda_executable():
        raise CliError("--conda was given but conda is not installed; leave it out for a venv.")
    info, packages, remote_python = await remote(ctx)
    dropped = mirror.invalid_names(packages)
    if dropped:
        shown = ", ".join(repr(n[:60]) for n in dropped[:5])
        progress(f"Skipped {len(dropped)} driver package name(s) that are not valid names: {shown}")
    selected = mirror.select(packages, use_whitelist=args.whitelist)
    reqs = mirror.requirements(selected)
    name = args.env_name or mirror.env_name(info.cluster_name or info.cluster_id)
    kind = "conda" if args.conda else "venv"
    path = env_path(args.env_path, ctx.settings, name)
    short_python = ".".join(remote_python.split(".")[:2])
    if args.json and args.dry_run:
        print_json(
            {
                "kind": kind,
                "name": name,
                "path": None if args.conda else str(path),
                "python": short_python,
                "requirements": reqs,
            }
        )
        return
    out(f"Library versions being installed ({'whitelist' if args.whitelist else 'blacklist'}):")
    for r in reqs:
        out(f"  - {r}")
    if args.dry_run:
        return
    if not reqs:
        raise CliError("No package of the driver passes the filter: nothing to mirror.")
    local_short = ".".join(map(str, sys.version_info[:2]))
    if kind == "venv" and not args.python and local_short != short_python:
        progress(
            f"Note: the driver runs Python {short_python}, this venv gets {local_short}; pass "
            "--python or --conda for the same version."
        )
    where = name if args.conda else tilde(path)
    if not confirm(
        f"Create {kind} {where} with {len(reqs)} packages?", assume_yes=args.yes, default=True
    ):
        raise CliError("Nothing created.")
    try:
        if args.conda:
            await asyncio.to_thread(
                mirror.create_conda,
                name,
                reqs,
                python_version=short_python,
                pip_args=shlex.split(args.pip_args),
                on_line=progress,
            )
            out(f"Created conda environment {name}: conda activate {name}")
        else:
            await asyncio.to_thread(
                mirror.create_venv,
                path,
                reqs,
                python=args.python,
                pip_args=shlex.split(args.pip_args),
                on_line=progress,
            )
            activate = mirror.venv_python(path).parent / "activate"
            out(f"Created venv {tilde(path)}: source {tilde(activate)}")
    except mirror.MirrorError as err:
        raise CliError(str(err)) from None
