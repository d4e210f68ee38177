"""``-k`` (a kernelspec for a cluster, the driver prepared when the cluster runs), ``-e`` (its
environment) and ``-d`` (deleting kernelspecs).

``-k`` on a running cluster logs in and installs what ``driver_requirements`` says is missing,
with the lifecycle's own steps (:meth:`~..operations.Lifecycle.connect`,
:meth:`~..operations.Lifecycle.prepare`); on a cluster that does not run it only writes the
spec: the start of the cluster (server or kernel) prepares the driver.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
from typing import Any

from ..vocabulary import RUNNING
from ..workspace import ClusterInfo
from .context import Context, StepPrinter, cluster
from .errors import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError, ws_call
from .output import confirm, out, print_json, progress


def specs(profile: str | None, cluster_id: str | None) -> list[dict[str, str]]:
    from .. import kernelspecs

    return [
        {
            "name": s.name,
            "display_name": s.display_name,
            "profile": s.profile,
            "cluster_id": s.cluster_id,
        }
        for s in kernelspecs.list_kernelspecs()
        if (profile is None or s.profile == profile)
        and (cluster_id is None or s.cluster_id == cluster_id)
    ]


def kernel_env(args: argparse.Namespace) -> dict[str, str]:
    """The ``-e NAME=VALUE`` variables, checked; a bad one is a usage error."""
    from ..kernelspecs import parse_env

    try:
        return parse_env(list(args.env or []))
    except ValueError as err:
        message = str(err).rstrip(".")
        if not args.profile:  # argparse gave it to -e
            message += " (name the profile before -e: it takes every K=V after it)"
        raise CliError(f"-e: {message}.", EXIT_USAGE) from None


async def prepare_driver(ctx: Context, ws: Any, info: ClusterInfo) -> list[str]:
    """Log in to the running driver and install what it lacks (the lifecycle's steps)."""
    cid = info.cluster_id
    lifecycle = ctx.lifecycle(ws, cid, StepPrinter(cid))
    info, link = await ws_call(lifecycle.login(info, start=False))
    if link is None:  # the Command Execution API needs nothing on the driver
        return []
    try:
        return await ws_call(lifecycle.prepare_running(link, info, force=False))
    finally:
        await link.close()


async def _cluster_and_transport(ctx: Context) -> tuple[Any, ClusterInfo, str]:
    """The cluster and the kernel's transport: ``--transport`` when given (an impossible one is
    a usage error, before anything is written), else command-api when the cluster cannot be
    reached over SSH (standard access mode, no public IP and no tunnel entry), else SSH."""
    from .. import kernelspecs, transport

    asked = getattr(ctx.args, "transport", None)
    if not ctx.args.id:  # the picker lists the clusters that carry the key
        ws, info = await cluster(ctx)
        return ws, info, asked or kernelspecs.SSH
    ws = await ctx.workspace()
    info = await ctx.read_cluster(ws, ctx.args.id)
    try:
        route = await asyncio.to_thread(transport.choose, info, ctx.settings, asked)
    except transport.TransportImpossible as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if route.transport == transport.COMMAND_API:
        if asked is None:
            progress(f"=> {route.why}")
        return ws, info, kernelspecs.COMMAND_API
    if route.transport == transport.SSH:
        # Classic SSH or the user's own Host entry: the profile's key must exist and be on the
        # cluster, as before transports were chosen (the tunnel needs neither).
        ws, info = await cluster(ctx)
    return ws, info, kernelspecs.SSH


async def create_kernelspec(ctx: Context) -> None:
    from .. import kernelspecs

    env = kernel_env(ctx.args)
    ws, info, transport = await _cluster_and_transport(ctx)
    running = info.state in RUNNING
    # A command-api kernel needs nothing on the driver (and no SSH to it).
    ssh = transport == kernelspecs.SSH
    installed = await prepare_driver(ctx, ws, info) if running and ssh else []
    name = await asyncio.to_thread(
        kernelspecs.create_kernelspec,
        ctx.profile,
        info.cluster_id,
        info.cluster_name or info.cluster_id,
        spark=not ctx.args.no_spark,
        kernel_env=env,
        transport=transport,
    )
    spec = next((s for s in specs(ctx.profile, info.cluster_id) if s["name"] == name), None)
    display = spec["display_name"] if spec else name
    if ctx.args.json:
        print_json(
            {
                "kernel_name": name,
                "display_name": display,
                "profile": ctx.profile,
                "cluster_id": info.cluster_id,
                "env": env,
                "transport": transport,
                "driver_prepared": running and ssh,
                "installed": installed,
            }
        )
        return
    out(f"Created kernelspec {name}: {display}")
    for key, value in env.items():
        out(f"  env {key}={shlex.quote(value)}")
    if not ssh:
        out(
            f"Its cells run in a Command Execution API context of cluster {info.cluster_id} "
            "(no SSH; nothing is installed on the driver)."
        )
        if not running:
            out(f"Cluster {info.cluster_id} is {info.state}; start it before starting the kernel.")
    elif running:
        done = f"installed {', '.join(installed)}" if installed else "libraries present"
        out(f"The driver of cluster {info.cluster_id} is prepared: {done}.")
    else:
        out(
            f"Cluster {info.cluster_id} is {info.state}; starting a kernel starts it, and the "
            "driver is prepared (missing libraries installed) once it runs."
        )


def delete_kernelspecs(args: argparse.Namespace) -> int:
    if args.yes and not (args.id or args.profile):
        raise CliError(
            "With --yes, name what to delete: a profile and/or -i CLUSTER_ID.", EXIT_USAGE
        )
    from .. import kernelspecs

    found = specs(args.profile, args.id)
    if not found:
        what = " and ".join(
            x
            for x in (
                f"profile {args.profile}" if args.profile else "",
                f"cluster {args.id}" if args.id else "",
            )
            if x
        )
        message = f"No Databricks kernelspecs{' for ' + what if what else ''}."
        if args.id or args.profile:
            raise CliError(message, EXIT_NOT_FOUND)
        out(message)
        return EXIT_OK
    deleted = []
    for spec in found:
        if not confirm(
            f"Delete kernelspec '{spec['display_name']}' ({spec['name']})?", assume_yes=args.yes
        ):
            continue
        kernelspecs.delete_kernelspec(spec["name"])
        deleted.append(spec)
    if args.json:
        print_json({"deleted": deleted})
    else:
        for spec in deleted:
            out(f"Deleted kernelspec {spec['name']}: {spec['display_name']}")
        if not deleted:
            out("No kernelspec deleted.")
    return EXIT_OK
