"""``-p`` (every profile and its SSH key) and a profile named without an action."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..settings import DriverSettings
from .errors import EXIT_OK, EXIT_USAGE, CliError
from .output import out, print_json, table, tilde
from .parser import PROG

if TYPE_CHECKING:
    from .context import Context

log = logging.getLogger(__name__)

_AZURE_HOST = re.compile(r"(?:https?://)?adb-(\d+)\.\d+\.azuredatabricks\.net(?:[:/].*)?")


def azure_org_id(host: str | None, explicit: str | None = None) -> str | None:
    """``-o`` if given, else the ``<org>`` of an ``https://adb-<org>.<n>.azuredatabricks.net`` host."""
    if explicit:
        if not (explicit.strip().isascii() and explicit.strip().isdigit()):
            raise CliError(
                f"{explicit!r} is not an Azure organisation id (digits only).", EXIT_USAGE
            )
        return explicit.strip()
    if host:
        m = _AZURE_HOST.fullmatch(host.strip())
        if m:
            return m.group(1)
    return None


def cluster_url(host: str | None, cluster_id: str, org: str | None) -> str | None:
    if not host:
        return None
    base = host.rstrip("/")
    if not base.startswith(("http://", "https://")):
        base = "https://" + base
    query = f"/?o={org}" if org else "/"
    return f"{base}{query}#setting/clusters/{cluster_id}/configuration"


def list_profiles(settings: DriverSettings | None = None) -> list[Any]:
    from ..workspace import list_profiles as listing

    return listing(settings.databricks_config_file if settings else None)


def key_status(settings: DriverSettings, profile: str) -> tuple[Path, str]:
    key = settings.identity_file_for(profile)
    return key, ("OK" if key.exists() else "MISSING")


def show_profiles(args: argparse.Namespace) -> int:
    from ..workspace import config_file_path
    from .context import load_settings

    settings = load_settings()
    rows = []
    profiles = list_profiles(settings)
    path = config_file_path(settings.databricks_config_file)
    log.debug("%d profiles in %s", len(profiles), path)
    for info in profiles:
        key, status = key_status(settings, info.name)
        log.debug("profile %s: %s auth, SSH key %s %s", info.name, info.auth_type, key, status)
        rows.append(
            {
                "profile": info.name,
                "host": info.host,
                "auth_type": info.auth_type,
                "ssh_key": str(key),
                "ssh_key_status": status.lower(),
                "azure_org_id": azure_org_id(info.host),
            }
        )
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        out(f"No profiles in {tilde(path)}; create one with 'databricks configure'.")
        return EXIT_OK
    out(
        table(
            [
                (r["profile"], r["host"] or "--", r["auth_type"], r["ssh_key_status"].upper())
                for r in rows
            ],
            ("PROFILE", "HOST", "AUTH", "SSH KEY"),
        )
    )
    missing = [r for r in rows if r["ssh_key_status"] == "missing"]
    if missing:
        out("")
        out(
            f"A MISSING key is created by '{PROG} PROFILE -s -i CLUSTER_ID', which also adds it "
            "to the cluster."
        )
    return EXIT_OK


def show_profile(ctx: Context) -> None:
    """A profile named without an action: what the CLI knows about it."""
    _, status = key_status(ctx.settings, ctx.profile)
    auth = next((p.auth_type for p in list_profiles(ctx.settings) if p.name == ctx.profile), None)
    data = {
        "profile": ctx.profile,
        "host": ctx.host,
        "auth_type": auth,
        "azure_org_id": ctx.org,
        "ssh_key": str(ctx.key_path),
        "ssh_key_status": status.lower(),
    }
    if ctx.args.json:
        print_json(data)
        return
    out(f"profile       {ctx.profile}")
    out(f"host          {ctx.host or '--'}")
    out(f"auth          {auth or '--'}")
    if ctx.org:
        out(f"azure org id  {ctx.org}")
    out(f"ssh key       {tilde(ctx.key_path)} ({status})")
    if ctx.args.id:
        url = cluster_url(ctx.host, ctx.args.id, ctx.org)
        if url:
            out(f"cluster page  {url}")
    out(f"\nActions need a flag, e.g. '{PROG} {ctx.profile} -k'; see -h.")
