"""``-s``: the profile's SSH key on a cluster and the cluster's ``Host`` entry in ~/.ssh/config.

The cluster side is the lifecycle's: on a running cluster :meth:`~..operations.Lifecycle.add_key`
puts the key on and waits until Databricks has restarted it; a terminated cluster gets the key
with its configuration (``Lifecycle.put_key``) and uses it from its next start.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from .. import sshconfig, sshconfigfile
from ..vocabulary import COMING_UP, RUNNING
from .context import Context, StepPrinter
from .errors import EXIT_SSH, CliError, ws_call
from .output import confirm, out, print_json, progress, tilde
from .parser import CLUSTER_ACTIONS


def create_key(path: Path, profile: str) -> None:
    """An ed25519 key pair without passphrase, the private half readable by its owner only."""
    import asyncssh

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key(
        "ssh-ed25519", comment=f"databrickslabs-jupyterlab-{profile}"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_private_key("openssh"))
    pub = path.with_name(path.name + ".pub")
    pub.write_bytes(key.export_public_key("openssh"))
    os.chmod(pub, 0o644)


async def configure_ssh(ctx: Context) -> None:
    from ..workspace import key_installed

    args = ctx.args
    if not ctx.key_path.exists():
        progress(f"=> Creating SSH key {tilde(ctx.key_path)} (ed25519, no passphrase)")
        await asyncio.to_thread(create_key, ctx.key_path, ctx.profile)
    elif ctx.public_key() is None:
        raise CliError(
            f"The SSH key {tilde(ctx.key_path)} has no readable {ctx.pub_path.name} next to it; "
            f"recreate it with 'ssh-keygen -y -f {tilde(ctx.key_path)} > {tilde(ctx.pub_path)}'.",
            EXIT_SSH,
        )
    pub_line = ctx.pub_path.read_text(encoding="utf-8").strip()
    ws = await ctx.workspace()
    info = await ctx.read_cluster(ws, args.id)
    restarted = False
    if key_installed(pub_line, info.ssh_public_keys):
        progress(f"=> Cluster {info.cluster_id} already carries {tilde(ctx.pub_path)}")
    else:
        running = info.state in RUNNING or info.state in COMING_UP
        note = (
            f"Cluster {info.cluster_id} ({info.cluster_name}) is {info.state}: adding the key "
            "with clusters/edit RESTARTS it, which stops every notebook and job running on it."
            if running
            else f"Cluster {info.cluster_id} ({info.cluster_name}) is {info.state}: the key "
            "applies from its next start."
        )
        progress(note)
        if not confirm(
            f"Add {tilde(ctx.pub_path)} to cluster {info.cluster_id}?", assume_yes=args.yes
        ):
            raise CliError("Nothing changed: the key was not added.")
        lifecycle = ctx.lifecycle(ws, info.cluster_id, StepPrinter(info.cluster_id))
        if running:
            info = await ws_call(lifecycle.add_key(info, pub_line))
            progress(f"=> Added the key to cluster {info.cluster_id}; it is {info.state} again")
            restarted = True
        else:
            await ws_call(lifecycle.put_key(info, pub_line))  # it applies from the next start
            progress(f"=> Added the key to cluster {info.cluster_id}")
    path = ctx.ssh_config
    existing = sshconfig.SshConfig.load(path).options(info.cluster_id)
    options = sshconfig.host_options(
        hostname=info.public_dns or "",
        port=ctx.settings.ssh_port,
        user=ctx.settings.ssh_user,
        identity_file=tilde(ctx.key_path),
        keepalive_interval=ctx.settings.keepalive_interval,
        keepalive_count_max=ctx.settings.keepalive_count_max,
        connect_timeout=ctx.settings.connect_timeout,
    )
    if not info.public_dns:
        options.pop("HostName")
    # In an existing block the user's own Port/User/timeouts stay; the address and key are ours.
    keep = set(k.lower() for k in options) - {"hostname", "identityfile"} if existing else set()
    change = await asyncio.to_thread(
        sshconfigfile.update_host,
        path,
        info.cluster_id,
        options,
        backup_dir=ctx.backup_dir,
        keep=keep,
    )
    if change.changed:
        verb = "Created" if change.created else "Updated"
        progress(f"=> {verb} Host {info.cluster_id} in {tilde(path)}")
        if change.backup:
            progress(f"   backup of the previous file: {tilde(change.backup)}")
        for line in change.diff.splitlines()[2:]:
            if line.startswith(("+", "-")):
                progress(f"   {line}")
    else:
        progress(f"=> Host {info.cluster_id} in {tilde(path)} is up to date")
    if not info.public_dns:
        progress("   HostName is added by -r once the cluster runs.")
    data = {
        "cluster_id": info.cluster_id,
        "key": str(ctx.key_path),
        "ssh_config": str(path),
        "restarting": restarted,
    }
    if args.json and not any(getattr(args, a) for a in CLUSTER_ACTIONS):
        print_json(data)
    else:
        out(f"SSH access to cluster {info.cluster_id} is configured: ssh {info.cluster_id}")
