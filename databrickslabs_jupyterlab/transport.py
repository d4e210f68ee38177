"""How the product reaches one cluster: its transport, chosen once per cluster state.

Three transports, in the order they are tried:

``ssh``
    A ``Host <cluster_id>`` entry of the user's SSH config (their own route: a bastion, a VPN),
    or the driver's public DNS name on port 2200 with the key in the cluster's
    ``ssh_public_keys`` (classic SSH; a dedicated or no-isolation cluster with a public IP).
``ssh-tunnel``
    The Databricks CLI's SSH tunnel: a ``Host NAME`` entry written by ``databricks ssh setup
    --name NAME --cluster ID`` whose ``ProxyCommand`` runs ``databricks ssh connect --proxy`` for
    the cluster. Needs a dedicated (single-user) cluster on Databricks Runtime 17 or newer.
``command-api``
    The Command Execution API (REST 1.2): no SSH at all; works on every running all-purpose
    cluster, standard access mode included.

``choose`` picks the first that applies, or the one asked for, and refuses an impossible
request with one sentence that names what to do instead (:class:`TransportImpossible`), before
anything is changed. It reads the SSH config: call it in a thread from async code.
"""

from __future__ import annotations

import dataclasses
import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sshconfig import SshConfig, host_entry, split_args
from .vocabulary import RUNNING

SSH = "ssh"
TUNNEL = "ssh-tunnel"
COMMAND_API = "command-api"
TRANSPORTS = (SSH, TUNNEL, COMMAND_API)

#: The Databricks Runtime the SSH tunnel needs (documented: 17.0 or newer).
TUNNEL_MIN_RUNTIME = (17, 0)
#: Access modes whose clusters allow no SSH of any kind.
NO_SSH_MODES = frozenset({"USER_ISOLATION", "LEGACY_TABLE_ACL", "LEGACY_SINGLE_USER_STANDARD"})
#: Access modes the SSH tunnel accepts (a cluster dedicated to one user).
TUNNEL_MODES = frozenset({"SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED", "LEGACY_SINGLE_USER"})


class TransportImpossible(Exception):
    """The transport asked for cannot work on this cluster; ``str()`` says why and what to do."""


@dataclass(frozen=True)
class Route:
    """The transport of one cluster. ``alias`` is the SSH config Host used (``None``: the
    driver's public DNS, or no SSH); ``why`` is one sentence for the status details."""

    transport: str
    alias: str | None
    why: str

    @property
    def uses_ssh(self) -> bool:
        return self.transport != COMMAND_API


def runtime_version(spark_version: str | None) -> tuple[int, int] | None:
    """``17.3.x-scala2.13`` -> (17, 3); None when it names no runtime version."""
    found = re.match(r"(\d+)\.(\d+)", spark_version or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def access_mode(info: Any) -> str | None:
    """``data_security_mode`` of a :class:`~.workspace.ClusterInfo` (None when not given)."""
    raw = getattr(info, "raw", None) or {}
    mode = raw.get("data_security_mode")
    return str(mode).rsplit(".", 1)[-1] if mode else None


def _mode_words(mode: str | None) -> str:
    return {
        "USER_ISOLATION": "standard access mode (shared)",
        "NONE": "no isolation",
        "SINGLE_USER": "dedicated access mode",
    }.get(mode or "", f"access mode {mode}")


def tunnel_cluster(proxy_command: str | None) -> str | None:
    """The cluster id a ``databricks ssh connect --proxy`` ProxyCommand names, else None."""
    if not proxy_command:
        return None
    words = split_args(proxy_command)
    if "ssh" not in words or "connect" not in words:
        return None
    if words.index("connect") != words.index("ssh") + 1 or "--proxy" not in words:
        return None
    for i, word in enumerate(words):
        if word.startswith("--cluster="):
            return word.split("=", 1)[1] or None
        if word == "--cluster" and i + 1 < len(words):
            return words[i + 1]
    return None


def _host_names(path: Path, depth: int = 0) -> list[str]:
    """The literal names of the ``Host`` lines of an SSH config and of the files it includes
    (``databricks ssh setup`` writes its blocks into an included folder), in reading order."""
    if depth > 16 or not path.is_file():
        return []
    names: list[str] = []
    for line in SshConfig.load(path).lines:
        words = split_args(line.strip())
        if len(words) < 2:
            continue
        key = words[0].lower()
        if key == "host":
            names += [w for w in words[1:] if not any(c in w for c in "*?!")]
        elif key == "include":
            for pattern in words[1:]:
                full = Path(pattern).expanduser()
                if not full.is_absolute():
                    full = Path("~/.ssh").expanduser() / pattern
                for found in sorted(glob.glob(str(full))):
                    names += _host_names(Path(found), depth + 1)
    return names


def tunnel_alias(ssh_config_file: str | Path, cluster_id: str) -> str | None:
    """The first ``Host`` name of the SSH config (includes followed) whose ProxyCommand is the
    Databricks CLI's tunnel to ``cluster_id``, as ``databricks ssh setup`` writes it."""
    path = Path(ssh_config_file).expanduser()
    for name in _host_names(path):
        if tunnel_cluster(host_entry(path, name).proxy_command) == cluster_id:
            return name
    return None


def choose(info: Any, settings: Any, wanted: str | None = None) -> Route:
    """The route to ``info``'s cluster: ``wanted`` when given (or TransportImpossible), else
    the first transport that applies. Blocking (reads the SSH config)."""
    if wanted is not None and wanted not in TRANSPORTS:
        raise TransportImpossible(
            f"{wanted!r} is not a transport; choose one of {', '.join(TRANSPORTS)}."
        )
    cid = info.cluster_id
    mode = access_mode(info)
    config_file = settings.ssh_config_file
    path = Path(config_file).expanduser()
    own = host_entry(path, cid) if path.is_file() else None
    own_route = bool(own and (own.hostname or own.proxy_command or own.proxy_jump))
    own_tunnel = own_route and own is not None and tunnel_cluster(own.proxy_command) == cid
    alias = cid if own_tunnel else tunnel_alias(path, cid)

    if wanted == COMMAND_API:
        return Route(COMMAND_API, None, "The Command Execution API was asked for.")
    if wanted == TUNNEL:
        return _tunnel(info, mode, alias, config_file)
    if mode in NO_SSH_MODES:
        if wanted == SSH:
            raise TransportImpossible(
                f"Cluster {cid} uses {_mode_words(mode)}, which allows no SSH: use the Command "
                "Execution API kernel (--transport command-api), or a dedicated cluster."
            )
        return Route(
            COMMAND_API,
            None,
            f"Cluster {cid} uses {_mode_words(mode)}, which allows no SSH; its kernels run "
            "through the Command Execution API.",
        )
    if own_route and not own_tunnel:
        return Route(SSH, cid, f"{config_file} has a Host {cid} entry.")
    unusable = ""
    if alias is not None:  # asked for SSH or nothing: the tunnel is SSH too
        try:
            return _tunnel(info, mode, alias, config_file)
        except TransportImpossible as exc:
            unusable = f"The tunnel entry Host {alias} cannot work: {exc} "
    if info.public_dns:
        return Route(SSH, None, f"{unusable}The driver of cluster {cid} has a public address.")
    if info.state not in RUNNING:
        # no driver, so no address to judge by: SSH until a running driver says otherwise
        return Route(SSH, None, f"Cluster {cid} is not running; its driver address is unknown.")
    if wanted == SSH:
        raise TransportImpossible(
            unusable
            + f"The driver of cluster {cid} has no public IP (secure cluster connectivity) and "
            f"{config_file} has no usable tunnel entry for it: set one up with "
            f"`dj PROFILE -s -i {cid} --tunnel`, or use --transport command-api."
        )
    return Route(
        COMMAND_API,
        None,
        unusable
        + f"The driver of cluster {cid} has no public IP and no usable tunnel entry; its "
        "kernels run through the Command Execution API.",
    )


def tunnel_refusal(info: Any) -> str | None:
    """Why the Databricks SSH tunnel cannot reach this cluster (one sentence), or None."""
    cid = info.cluster_id
    mode = access_mode(info)
    if mode is not None and mode not in TUNNEL_MODES:
        return (
            f"The Databricks SSH tunnel needs a cluster dedicated to one user; cluster {cid} "
            f"uses {_mode_words(mode)}: use --transport command-api, or a dedicated cluster."
        )
    raw = getattr(info, "raw", None) or {}
    if mode in TUNNEL_MODES and "single_user_name" in raw and not raw["single_user_name"]:
        return (
            f"The Databricks SSH tunnel needs a cluster dedicated to one user; cluster {cid} "
            "is dedicated to a group: use --transport command-api."
        )
    version = runtime_version(info.spark_version)
    if version is not None and version < TUNNEL_MIN_RUNTIME:
        return (
            f"The Databricks SSH tunnel needs Databricks Runtime 17.0 or newer; cluster {cid} "
            f"runs {info.spark_version}: upgrade its runtime, or use --transport command-api."
        )
    return None


def _tunnel(info: Any, mode: str | None, alias: str | None, config_file: str) -> Route:
    cid = info.cluster_id
    refusal = tunnel_refusal(info)
    if refusal is not None:
        raise TransportImpossible(refusal)
    if alias is None:
        raise TransportImpossible(
            f"{config_file} has no Databricks SSH tunnel entry for cluster {cid}: run "
            f"`dj PROFILE -s -i {cid} --tunnel` (it runs `databricks ssh setup`)."
        )
    return Route(TUNNEL, alias, f"{config_file} has the tunnel entry Host {alias}.")


def ssh_target(info: Any, profile: str, settings: Any, wanted: str | None = None) -> Any:
    """The :class:`~.ssh.SshTarget` of the route to ``info``'s driver; ``SshError`` with the
    route's sentence when the cluster is reached without SSH or SSH is impossible. Blocking."""
    from . import ssh

    try:
        route = choose(info, settings, wanted)
    except TransportImpossible as exc:
        raise ssh.SshError(str(exc)) from None
    if not route.uses_ssh:
        raise ssh.SshError(
            f"{route.why} An SSH kernel cannot start there: write a kernelspec with "
            f"--transport command-api."
        )
    target = ssh.resolve_target(info.cluster_id, info.public_dns, profile, settings, route.alias)
    if route.transport == TUNNEL and target.proxy_command:
        # A check or a kernel must never start a cluster (auto-termination would never hold):
        # the tunnel's own auto-start is turned off; starts are the lifecycle's, on request.
        command = f"{target.proxy_command} --auto-start-cluster=false"
        target = dataclasses.replace(target, proxy_command=command)
    return target
