"""What every profile action shares: the profile and its settings, the workspace client, the
choice of a cluster, and the cluster lifecycle of :mod:`..operations` with its steps printed.

The CLI has no start, SSH or install sequence of its own: it builds the same
:class:`~..operations.Lifecycle` the server runs, with a :class:`StepPrinter` that prints each
step and detail on stderr, so ``dj -r`` and the server's reconfigure do the same things in the
same order.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from .. import sshconfig, sshconfigfile
from ..operations import NO_KERNELS_HERE, Lifecycle, Progress
from ..settings import DriverSettings
from ..vocabulary import RUNNING, STEPS
from .errors import EXIT_NOT_FOUND, EXIT_SSH, EXIT_USAGE, CliError, sentence, ws_call
from .output import out, progress, tilde
from .parser import PROG

log = logging.getLogger(__name__)

#: Seconds between two reads of a cluster while it starts (the server uses its refresh interval).
POLL_INTERVAL = 1.0
#: Seconds a driver's SSH server may take to accept a login after the cluster runs.
READY_TIMEOUT = 60.0


def load_settings() -> DriverSettings:
    """The driver settings: environment > Jupyter config (``c.DatabricksLabsDriver.*``) >
    defaults, the precedence of the server and the kernels."""
    from .. import config

    try:
        return config.for_consumer().settings()
    except ValueError as err:
        raise CliError(
            f"A driver setting (DBJL_* or c.DatabricksLabsDriver.*) is wrong: {err}.", EXIT_USAGE
        ) from None


class Context:
    """What every profile action needs: the profile, its host, settings and key paths."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ..workspace import config_file_path, list_profiles
        from .profiles import azure_org_id

        self.args = args
        self.profile: str = args.profile
        self.settings = load_settings()
        self.config_file = self.settings.databricks_config_file
        info = next((p for p in list_profiles(self.config_file) if p.name == self.profile), None)
        if info is None:
            raise CliError(
                f"There is no profile {self.profile!r} in "
                f"{tilde(config_file_path(self.config_file))} (see -p).",
                EXIT_NOT_FOUND,
            )
        self.host: str | None = info.host
        self.org = azure_org_id(self.host, args.organisation)
        self.key_path = self.settings.identity_file_for(self.profile)
        self.pub_path = self.key_path.with_name(self.key_path.name + ".pub")
        self.ssh_config = Path(self.settings.ssh_config_file).expanduser()
        self.backup_dir = self.settings.state_path / "ssh_config_backup"
        log.debug(
            "profile %s: host %s, config file %s, SSH key %s, ssh config %s, state %s",
            self.profile,
            self.host,
            config_file_path(self.config_file),
            self.key_path,
            self.ssh_config,
            self.settings.state_path,
        )

    def public_key(self) -> str | None:
        from ..workspace import public_key_for

        return public_key_for(self.key_path)

    def key_for(self, cluster_id: str | None) -> Path:
        """The private key for a cluster: the IdentityFile of its ``Host`` entry, if any,
        else the profile's key (the same choice the server and the provisioner make)."""
        if not cluster_id:
            return self.key_path
        from .. import ssh

        try:
            return ssh.cluster_identity_file(cluster_id, self.profile, self.settings)
        except ssh.SshError as err:
            raise CliError(sentence(str(err)), EXIT_USAGE) from None

    def require_key(self, cluster_id: str | None = None) -> str:
        """The public key (full ``.pub`` line) for a cluster; a missing key pair is an error."""
        from ..workspace import public_key_for

        key = self.key_for(cluster_id)
        pub = key.with_name(key.name + ".pub")
        if not key.exists() or public_key_for(key) is None:
            raise CliError(
                f"There is no SSH key {tilde(key)} (with .pub) for profile "
                f"{self.profile}; create it and add it to a cluster with "
                f"'{PROG} {self.profile} -s -i CLUSTER_ID'.",
                EXIT_SSH,
            )
        return pub.read_text(encoding="utf-8").strip()

    async def workspace(self) -> Any:
        """The profile's workspace client; ``--api-timeout`` wins over the settings' timeouts."""
        from ..workspace import Workspace

        timeout = self.args.api_timeout
        if timeout is None:
            retry, http = (
                self.settings.workspace_retry_timeout,
                self.settings.workspace_http_timeout,
            )
        else:
            retry, http = max(1, round(timeout)), timeout
        return await ws_call(
            Workspace.for_profile(
                self.profile, config_file=self.config_file, retry_timeout=retry, http_timeout=http
            )
        )

    async def read_cluster(self, ws: Any, cluster_id: str) -> Any:
        """The cluster as Databricks describes it; a running driver's address goes into an
        existing ``Host <cluster_id>`` entry of the SSH config (a driver gets a new address on
        every start, and that entry's HostName wins for SSH)."""
        info = await ws_call(ws.get_cluster(cluster_id))
        if info.state in RUNNING and info.public_dns:
            await self.refresh_hostname(info)
        return info

    async def refresh_hostname(self, info: Any) -> None:
        path = self.ssh_config
        config = await asyncio.to_thread(sshconfig.SshConfig.load, path)
        if config.find(info.cluster_id) is None:
            return
        change = await asyncio.to_thread(
            sshconfigfile.update_host,
            path,
            info.cluster_id,
            {"HostName": info.public_dns},
            backup_dir=self.backup_dir,
        )
        if change.changed:
            progress(f"   Updated HostName of Host {info.cluster_id} in {tilde(path)}.")

    def lifecycle(self, ws: Any, cluster_id: str, printer: StepPrinter) -> Lifecycle:
        """The server's lifecycle for one cluster, reporting to ``printer``; no kernels (the
        CLI runs none)."""
        return Lifecycle(
            self.profile,
            cluster_id,
            ws,
            self.settings,
            printer,
            read=lambda: self.read_cluster(ws, cluster_id),
            poll_interval=POLL_INTERVAL,
            ready_timeout=READY_TIMEOUT,
            start_timeout=self.args.timeout,
        )


class StepPrinter(Progress):
    """A lifecycle's progress on stderr: ``=> step: message`` for each step of
    :data:`..vocabulary.STEPS` (the names the server's status shows), indented details."""

    def __init__(self, cluster_id: str) -> None:
        self.cluster_id = cluster_id
        self.current: str | None = None
        self.began = time.monotonic()
        self.start_requested = False
        self.installed = False

    def step(self, step: str, message: str) -> None:
        if step == "configuring" and self.start_requested:
            elapsed = time.monotonic() - self.began
            progress(f"   Cluster {self.cluster_id} is RUNNING ({elapsed:.0f} s).")
        elif step == "installing":
            progress("   SSH login works.")
        elif step == "restarting-kernels":
            message = "Nothing to restart: this command runs no kernels"
            if self.installed:
                message += (
                    "; restart the cluster's kernels in JupyterLab to load what was installed"
                )
            message += "."
        self.current = step
        progress(f"=> {step} ({STEPS.index(step) + 1}/{len(STEPS)}): {message}")

    def detail(self, line: str) -> None:
        if line == NO_KERNELS_HERE:
            return  # said by the step line already
        progress(f"   {line}")

    def note(self, message: str) -> None:
        if self.current == "installing":
            self.installed = True
        progress(f"   {message}")

    def started(self) -> None:
        self.start_requested = True
        self.began = time.monotonic()


def describe(c: Any) -> str:
    workers = (c.raw or {}).get("num_workers")
    scale = (c.raw or {}).get("autoscale") or {}
    size = (
        f"scale: {scale.get('min_workers')}-{scale.get('max_workers')}"
        if scale
        else f"workers: {workers if workers is not None else '?'}"
    )
    return f"'{c.cluster_name}' (id: {c.cluster_id}, state: {c.state}, {size})"


def _needs_id(ctx: Context) -> None:
    if not ctx.args.id and (ctx.args.yes or ctx.args.json):
        raise CliError(
            "Name the cluster with -i CLUSTER_ID (no prompt with --yes/--json).", EXIT_USAGE
        )


async def cluster(ctx: Context, *, key_on_cluster: bool = True) -> tuple[Any, Any]:
    """The workspace and the chosen cluster; local problems are reported before any API call.

    ``key_on_cluster``: a cluster named with ``-i`` must already carry the key (``-k``);
    otherwise the lifecycle adds it (``-r``, ``-l``, ``-V``, ``-m``).
    """
    ctx.require_key(ctx.args.id)
    _needs_id(ctx)
    ws = await ctx.workspace()
    return ws, await select_cluster(ctx, ws, key_on_cluster=key_on_cluster)


async def select_cluster(ctx: Context, ws: Any, *, key_on_cluster: bool = True) -> Any:
    """The cluster of ``-i``, or one picked from a numbered list of those carrying the key."""
    from ..workspace import key_installed, public_key_for

    cluster_id = ctx.args.id
    if cluster_id:
        pub = ctx.require_key(cluster_id)
        info = await ctx.read_cluster(ws, cluster_id)
        if key_on_cluster and not key_installed(pub, info.ssh_public_keys):
            key = ctx.key_for(cluster_id)
            raise CliError(
                f"Cluster {cluster_id} does not carry the public key {tilde(key)}.pub; "
                f"add it with '{PROG} {ctx.profile} -s -i {cluster_id}'.",
                EXIT_SSH,
            )
        return info
    _needs_id(ctx)
    clusters = [
        c
        for c in await ws_call(ws.list_clusters())
        if key_installed(public_key_for(ctx.key_for(c.cluster_id)), c.ssh_public_keys)
    ]
    if not clusters:
        raise CliError(
            f"No cluster of profile {ctx.profile} carries the public key {tilde(ctx.pub_path)}; "
            f"add it to one with '{PROG} {ctx.profile} -s -i CLUSTER_ID'.",
            EXIT_SSH,
        )
    clusters.sort(key=lambda c: (c.cluster_name or "", c.cluster_id))
    out("Clusters that carry the key of profile " + ctx.profile + ":")
    for n, c in enumerate(clusters):
        out(f"  {n}: {describe(c)}")
    for _ in range(3):
        try:
            answer = (
                await asyncio.to_thread(input, f"Which cluster? [0-{len(clusters) - 1}] ")
            ).strip()
        except EOFError:
            break
        if answer.isdigit() and int(answer) < len(clusters):
            chosen = clusters[int(answer)]
            out(f"=> Selected cluster: {chosen.cluster_name} ({chosen.cluster_id})")
            if chosen.state in RUNNING and chosen.public_dns:
                await ctx.refresh_hostname(chosen)
            return chosen
        out(f"Please answer with a number from 0 to {len(clusters) - 1}.")
    raise CliError("No cluster chosen; name it with -i CLUSTER_ID.", EXIT_USAGE)
