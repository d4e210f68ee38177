"""``databrickslabs-jupyterlab`` / ``dj``: set up profiles, SSH keys, kernelspecs and mirrors.

The flags are those of the tool this project succeeds, so its users' habits still work. Every
action is a short ``asyncio.run`` over the same service modules the server extension uses
(``workspace``, ``ssh``, ``driver``, ``kernelspecs``), so the CLI and the status bar agree on
what "ready" means. Failures leave as one sentence on stderr and a documented exit status;
results go to stdout (``--json`` where a script wants them), progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import __version__, mirror, sshconfig
from .settings import DriverSettings

PROG = "databrickslabs-jupyterlab"
log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_SSH = 4
EXIT_WORKSPACE = 5
EXIT_INTERRUPTED = 130

EPILOG = f"""\
examples:
  {PROG} -p                          list profiles and their SSH keys
  {PROG} PROFILE -s -i CLUSTER_ID    add the profile's key to a cluster, write ~/.ssh/config
  {PROG} PROFILE -k [-i CLUSTER_ID]  create a Jupyter kernelspec for a cluster
  {PROG} PROFILE -l -i CLUSTER_ID    start the cluster, check SSH and libraries, run JupyterLab
  {PROG} PROFILE -k -i ID -e A=1     a kernelspec whose remote kernel gets A=1 in its environment
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
  DBJL_SUDO, DBJL_STATE_DIR, DBJL_PIP_ARGS, DBJL_DRIVER_REQUIREMENTS  driver and SSH settings
"""

DEMO_OPTIONS = {"--port", "--no-browser", "--time-scale", "--dir", "-h", "--help"}
CLUSTER_ACTIONS = ("kernelspec", "reconfigure", "lab", "versioncheck", "mirror")


class CliError(Exception):
    """One sentence for the person at the terminal, and the exit status that goes with it."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --------------------------------------------------------------------------------------------
# Output helpers


def out(text: str = "") -> None:
    print(text, flush=True)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False), flush=True)


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(str(c))) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def confirm(question: str, *, assume_yes: bool, default: bool = False) -> bool:
    """Ask on the terminal; ``--yes`` answers yes, no standard input answers the default."""
    if assume_yes:
        return True
    hint = "[Y/n]" if default else "[y/N]"
    try:
        answer = input(f"{question} {hint} ")
    except EOFError:
        print(file=sys.stderr)
        return default
    answer = answer.strip().lower()
    if not answer:
        return default
    return answer in ("y", "yes")


def tilde(path: str | os.PathLike[str]) -> str:
    """``~/...`` for paths under HOME (shorter in tables and ssh config)."""
    p = str(path)
    home = str(Path("~").expanduser())
    if p == home or p.startswith(home + os.sep):
        return "~" + p[len(home) :]
    return p


# --------------------------------------------------------------------------------------------
# Argument parsing


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
    p.add_argument("-k", "--kernelspec", action="store_true", help="Create a kernel specification")
    p.add_argument(
        "-N",
        "--no-spark",
        action="store_true",
        help="-k: a kernel without Spark (dbcontext() is not run when it starts)",
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
        help="Reconfigure the cluster: start it if needed, check SSH, install driver libraries",
    )
    p.add_argument(
        "-s", "--ssh-config", action="store_true", help="Configure SSH access for a cluster"
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
        default=20.0,
        metavar="SECONDS",
        help="How long to retry a workspace API call that fails or gets no answer, and how long "
        "-n waits for its URL (default 20)",
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


def _is_demo(argv: Sequence[str]) -> bool:
    if not argv or argv[0] != "demo":
        return False
    return all(a.split("=", 1)[0] in DEMO_OPTIONS for a in argv[1:] if a.startswith("-"))


# --------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if _is_demo(args_list):
        from . import demo

        return demo.main(args_list[1:])
    lab_args: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, lab_args = args_list[:cut], args_list[cut + 1 :]
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # -h answers 0, a usage error 2
        return int(exc.code or 0)
    args.lab_args = lab_args
    _quiet_sdk_logs()
    if args.debug:
        from . import debuglog

        with debuglog.debug_logging(sys.stderr, _known_secrets()):
            log.debug(
                "databrickslabs-jupyterlab %s, Python %s", __version__, sys.version.split()[0]
            )
            log.debug("arguments: %s", _shown_args(args))
            return _run_reporting(args, parser)
    return _run_reporting(args, parser)


def _run_reporting(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``run`` with its failures turned into one sentence and an exit status."""
    try:
        return run(args, parser)
    except CliError as err:
        print(f"{PROG}: error: {err.message}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into head & co.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK


def _known_secrets() -> tuple[str, ...]:
    """Secret values -D must never print: those of the profiles and of secret-named variables."""
    from . import debuglog
    from .workspace import config_file_path

    values = set(debuglog.config_secrets(config_file_path()))
    values.update(
        v for k, v in os.environ.items() if debuglog.secret_name(k) and len(v.strip()) >= 4
    )
    return tuple(values)


def _shown_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if v not in (None, False, "", [])}


def _quiet_sdk_logs() -> None:
    """The SDK logs its retries and fallbacks as warnings; the CLI reports failures itself."""
    if not os.environ.get("DBJL_DEBUG"):
        import logging

        logging.getLogger("databricks").addHandler(logging.NullHandler())
        logging.getLogger("databricks").propagate = False


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.version:
        out(__version__)
        return EXIT_OK
    if args.print_whitelist or args.print_blacklist:
        names = list(mirror.WHITELIST if args.print_whitelist else mirror.BLACKLIST)
        if args.print_whitelist and args.print_blacklist:
            raise CliError("Choose either -W or -B.", EXIT_USAGE)
        print_json(names) if args.json else out("\n".join(names))
        return EXIT_OK
    if args.bootstrap:
        return bootstrap(args)
    if args.profiles:
        return show_profiles(args)
    if args.delete:
        return delete_kernelspecs(args)
    if args.notebook:
        return import_notebook(args)

    actions = [a for a in CLUSTER_ACTIONS if getattr(args, a)]
    if len(actions) > 1:
        flags = ", ".join(_flag(a) for a in actions)
        raise CliError(f"Use one of {flags} at a time.", EXIT_USAGE)
    if args.whitelist and not args.mirror:
        raise CliError("-w only applies to -m.", EXIT_USAGE)
    if args.no_spark and not args.kernelspec:
        raise CliError("-N only applies to -k.", EXIT_USAGE)
    if args.env and not args.kernelspec:
        raise CliError("-e only applies to -k.", EXIT_USAGE)
    kernel_env(args)  # a wrong -e is a usage error before any workspace call
    if not args.profile:
        if args.ssh_config or args.clipboard or actions or args.id or args.organisation:
            raise CliError(
                "Name a profile first, for example "
                f"'{PROG} PROFILE {_flag(actions[0]) if actions else '-s'}' (see -p).",
                EXIT_USAGE,
            )
        parser.print_help()
        return EXIT_OK

    ctx = Context(args)
    if args.clipboard:
        copy_token(ctx)
        if not (args.ssh_config or actions):
            return EXIT_OK
    if args.ssh_config:
        if not args.id:
            raise CliError("-s needs the cluster id: -s -i CLUSTER_ID.", EXIT_USAGE)
        asyncio.run(configure_ssh(ctx))
    if not actions:
        if not (args.ssh_config or args.clipboard):
            show_profile(ctx)
        return EXIT_OK
    action = actions[0]
    handler: Callable[[Context], Any] = {
        "kernelspec": create_kernelspec,
        "reconfigure": reconfigure,
        "lab": lab,
        "versioncheck": version_check,
        "mirror": mirror_env,
    }[action]
    result = asyncio.run(handler(ctx))
    if action == "lab" and result:
        return exec_lab(result, dry_run=args.dry_run)
    return EXIT_OK


def _flag(action: str) -> str:
    return {
        "kernelspec": "-k",
        "reconfigure": "-r",
        "lab": "-l",
        "versioncheck": "-V",
        "mirror": "-m",
    }[action]


# --------------------------------------------------------------------------------------------
# Profiles


def azure_org_id(host: str | None, explicit: str | None = None) -> str | None:
    """``-o`` if given, else the ``<org>`` of an ``https://adb-<org>.<n>.azuredatabricks.net`` host."""
    if explicit:
        if not re.fullmatch(r"\d+", explicit.strip()):
            raise CliError(
                f"{explicit!r} is not an Azure organisation id (digits only).", EXIT_USAGE
            )
        return explicit.strip()
    if host:
        m = re.match(r"^(?:https?://)?adb-(\d+)\.\d+\.azuredatabricks\.net(?:[:/]|$)", host.strip())
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


def _profiles() -> list[Any]:
    from .workspace import list_profiles

    return list_profiles()


def _key_status(settings: DriverSettings, profile: str) -> tuple[Path, str]:
    key = settings.identity_file_for(profile)
    return key, ("OK" if key.exists() else "MISSING")


def show_profiles(args: argparse.Namespace) -> int:
    from .workspace import config_file_path

    settings = _settings()
    rows = []
    profiles = _profiles()
    log.debug("%d profiles in %s", len(profiles), config_file_path())
    for info in profiles:
        key, status = _key_status(settings, info.name)
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
        out(f"No profiles in {tilde(config_file_path())}; create one with 'databricks configure'.")
        return EXIT_OK
    out(
        table(
            [(r["profile"], r["host"] or "--", r["ssh_key_status"].upper()) for r in rows],
            ("PROFILE", "HOST", "SSH KEY"),
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


class Context:
    """What every profile action needs: the profile, its host, settings and key paths."""

    def __init__(self, args: argparse.Namespace) -> None:
        from .workspace import config_file_path, list_profiles

        self.args = args
        self.profile: str = args.profile
        self.settings = _settings()
        info = next((p for p in list_profiles() if p.name == self.profile), None)
        if info is None:
            raise CliError(
                f"There is no profile {self.profile!r} in {tilde(config_file_path())} (see -p).",
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
            config_file_path(),
            self.key_path,
            self.ssh_config,
            self.settings.state_path,
        )

    def public_key(self) -> str | None:
        from .workspace import public_key_for

        return public_key_for(self.key_path)

    def key_for(self, cluster_id: str | None) -> Path:
        """The private key for a cluster: the IdentityFile of its ``Host`` entry, if any,
        else the profile's key (the same choice the server and the provisioner make)."""
        if not cluster_id:
            return self.key_path
        from . import ssh

        try:
            return ssh.cluster_identity_file(cluster_id, self.profile, self.settings)
        except ssh.SshError as err:
            raise CliError(_sentence(str(err)), EXIT_USAGE) from None

    def require_key(self, cluster_id: str | None = None) -> str:
        from .workspace import public_key_for

        key = self.key_for(cluster_id)
        pub = public_key_for(key)
        if not key.exists() or pub is None:
            raise CliError(
                f"There is no SSH key {tilde(key)} (with .pub) for profile "
                f"{self.profile}; create it and add it to a cluster with "
                f"'{PROG} {self.profile} -s -i CLUSTER_ID'.",
                EXIT_SSH,
            )
        return pub

    async def workspace(self) -> Any:
        from .workspace import Workspace

        timeout = self.args.api_timeout
        return await _ws_call(
            Workspace.for_profile(
                self.profile, retry_timeout=max(1, round(timeout)), http_timeout=timeout
            )
        )


def show_profile(ctx: Context) -> None:
    """A profile named without an action: what the CLI knows about it."""
    _, status = _key_status(ctx.settings, ctx.profile)
    data = {
        "profile": ctx.profile,
        "host": ctx.host,
        "azure_org_id": ctx.org,
        "ssh_key": str(ctx.key_path),
        "ssh_key_status": status.lower(),
    }
    if ctx.args.json:
        print_json(data)
        return
    out(f"profile       {ctx.profile}")
    out(f"host          {ctx.host or '--'}")
    if ctx.org:
        out(f"azure org id  {ctx.org}")
    out(f"ssh key       {tilde(ctx.key_path)} ({status})")
    if ctx.args.id:
        url = cluster_url(ctx.host, ctx.args.id, ctx.org)
        if url:
            out(f"cluster page  {url}")
    out(f"\nActions need a flag, e.g. '{PROG} {ctx.profile} -k'; see -h.")


def _settings() -> DriverSettings:
    try:
        return DriverSettings.from_env()
    except ValueError as err:
        raise CliError(f"A DBJL_* setting is wrong: {err}.", EXIT_USAGE) from None


# --------------------------------------------------------------------------------------------
# Errors from the service modules -> CliError


async def _ws_call(awaitable: Any) -> Any:
    try:
        return await awaitable
    except Exception as err:
        raise _translate(err) from None


def _translate(err: BaseException) -> BaseException:
    from .workspace import NoSuchCluster, NoSuchProfile, WorkspaceError, WorkspaceUnavailable

    if isinstance(err, CliError):
        return err
    if isinstance(err, NoSuchProfile | NoSuchCluster):
        return CliError(_sentence(err.message), EXIT_NOT_FOUND)
    if isinstance(err, WorkspaceUnavailable):
        return CliError(_sentence(err.message), EXIT_WORKSPACE)
    if isinstance(err, WorkspaceError):
        code = EXIT_WORKSPACE if err.code.startswith("workspace_") else EXIT_FAILURE
        return CliError(_sentence(err.message), code)
    try:
        from .ssh import SshError

        if isinstance(err, SshError):
            return CliError(_sentence(str(err)), EXIT_SSH)
    except ImportError:  # pragma: no cover
        pass
    return err


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text if text.endswith((".", "!", "?")) else text + "."


# --------------------------------------------------------------------------------------------
# Clusters


def _describe(c: Any) -> str:
    workers = (c.raw or {}).get("num_workers")
    scale = (c.raw or {}).get("autoscale") or {}
    size = (
        f"scale: {scale.get('min_workers')}-{scale.get('max_workers')}"
        if scale
        else f"workers: {workers if workers is not None else '?'}"
    )
    return f"'{c.cluster_name}' (id: {c.cluster_id}, state: {c.state}, {size})"


async def _cluster(ctx: Context) -> tuple[Any, Any]:
    """The workspace and the chosen cluster; local problems are reported before any API call."""
    ctx.require_key(ctx.args.id)
    if not ctx.args.id and (ctx.args.yes or ctx.args.json):
        raise CliError("Name the cluster with -i CLUSTER_ID (no prompt with --yes/--json).", 2)
    ws = await ctx.workspace()
    return ws, await select_cluster(ctx, ws)


async def select_cluster(ctx: Context, ws: Any, *, need_key: bool = True) -> Any:
    """The cluster of ``-i``, or one picked from a numbered list of those carrying the key."""
    from .workspace import key_installed

    cluster_id = ctx.args.id
    if cluster_id:
        pub = ctx.require_key(cluster_id) if need_key else ctx.public_key()
        info = await _ws_call(ws.get_cluster(cluster_id))
        if need_key and not key_installed(pub, info.ssh_public_keys):
            key = ctx.key_for(cluster_id)
            raise CliError(
                f"Cluster {cluster_id} does not carry the public key {tilde(key)}.pub; "
                f"add it with '{PROG} {ctx.profile} -s -i {cluster_id}'.",
                EXIT_SSH,
            )
        return info
    if ctx.args.yes or ctx.args.json:
        raise CliError("Name the cluster with -i CLUSTER_ID (no prompt with --yes/--json).", 2)
    from .workspace import public_key_for

    clusters = [
        c
        for c in await _ws_call(ws.list_clusters())
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
        out(f"  {n}: {_describe(c)}")
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
            return chosen
        out(f"Please answer with a number from 0 to {len(clusters) - 1}.")
    raise CliError("No cluster chosen; name it with -i CLUSTER_ID.", EXIT_USAGE)


async def ensure_running(ctx: Context, ws: Any, info: Any) -> Any:
    """Start a TERMINATED cluster and wait for RUNNING, reporting each state change."""
    cluster_id = info.cluster_id
    started = False
    began = time.monotonic()
    last_report = 0.0
    last_state = None
    delay = 0.5
    while True:
        state = info.state or "UNKNOWN"
        elapsed = time.monotonic() - began
        if state in ("RUNNING", "RESIZING"):
            if started or last_state is not None:
                progress(f"   cluster {cluster_id} is RUNNING ({elapsed:.0f} s)")
            return info
        if state == "TERMINATED":
            if started and last_state not in (None, "TERMINATED", "TERMINATING"):
                reason = info.state_message or "no reason given"
                raise CliError(f"Cluster {cluster_id} terminated while starting: {reason}")
            if not started:
                progress(
                    f"=> Starting cluster {cluster_id} ({info.cluster_name}), it was TERMINATED"
                )
                await _ws_call(ws.start_cluster(cluster_id))
                started = True
        elif state in ("ERROR", "UNKNOWN"):
            reason = info.state_message or "no reason given"
            raise CliError(f"Cluster {cluster_id} is in state {state}: {reason}")
        if started and state == "TERMINATED" and last_state is None:
            pass  # the start was just requested: the next read shows PENDING
        elif state != last_state or time.monotonic() - last_report > 15:
            msg = f": {info.state_message}" if info.state_message else ""
            progress(f"   cluster {cluster_id} is {state}{msg} ({elapsed:.0f} s)")
            last_report = time.monotonic()
        last_state = state
        if elapsed > ctx.args.timeout:
            raise CliError(
                f"Cluster {cluster_id} did not reach RUNNING within {ctx.args.timeout:.0f} s "
                f"(state {state})."
            )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 5.0)
        info = await _ws_call(ws.get_cluster(cluster_id))


async def _refresh_hostname(ctx: Context, info: Any) -> None:
    """A driver gets a new address on every start: update an existing ``Host`` block."""
    path = ctx.ssh_config
    if not info.public_dns or not sshconfig.SshConfig.load(path).find(info.cluster_id):
        return
    change = await asyncio.to_thread(
        sshconfig.update_host,
        path,
        info.cluster_id,
        {"HostName": info.public_dns},
        backup_dir=ctx.settings.state_path / "ssh_config_backup",
    )
    if change.changed:
        progress(f"=> Updated HostName of Host {info.cluster_id} in {tilde(path)}")


async def check_ssh(ctx: Context, info: Any) -> Any:
    """Resolve the SSH target and log in once; raises CliError(EXIT_SSH) with the reason."""
    from . import ssh

    try:
        target = ssh.resolve_target(info.cluster_id, info.public_dns, ctx.profile, ctx.settings)
    except ssh.SshError as err:
        raise _translate(err) from None
    progress(f"=> Checking SSH to {target.user}@{target.host}:{target.port}")
    host_keys = ssh.HostKeyStore(ctx.settings.state_path)
    error = await ssh.check_reachable(
        target, ctx.settings, host_keys=host_keys, driver_start=info.driver_start
    )
    if error:
        raise CliError(_sentence(error), EXIT_SSH)
    progress("   SSH login works")
    return target


async def _connect(ctx: Context, info: Any, target: Any) -> Any:
    from . import ssh

    host_keys = ssh.HostKeyStore(ctx.settings.state_path)
    try:
        return await ssh.connect(
            target, ctx.settings, host_keys=host_keys, driver_start=info.driver_start
        )
    except ssh.SshError as err:
        raise _translate(err) from None


async def prepare(ctx: Context, info: Any, target: Any) -> list[str]:
    """Check and install the driver libraries, one progress line per step or pip line."""
    from . import driver

    progress(f"=> Checking driver libraries ({', '.join(ctx.settings.driver_requirements)})")
    conn = await _connect(ctx, info, target)
    try:
        installed = await driver.prepare_driver(
            conn, ctx.settings, target.user, lambda line: progress(f"   {line}")
        )
    except Exception as err:
        translated = _translate(err)
        if translated is err:
            raise CliError(_sentence(f"Preparing the driver failed: {err}")) from None
        raise translated from None
    finally:
        conn.close()
    return list(installed or [])


# --------------------------------------------------------------------------------------------
# -s


def _create_key(path: Path, profile: str) -> None:
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
    from .workspace import key_installed

    args = ctx.args
    if not ctx.key_path.exists():
        progress(f"=> Creating SSH key {tilde(ctx.key_path)} (ed25519, no passphrase)")
        await asyncio.to_thread(_create_key, ctx.key_path, ctx.profile)
    elif ctx.public_key() is None:
        raise CliError(
            f"The SSH key {tilde(ctx.key_path)} has no readable {ctx.pub_path.name} next to it; "
            f"recreate it with 'ssh-keygen -y -f {tilde(ctx.key_path)} > {tilde(ctx.pub_path)}'.",
            EXIT_SSH,
        )
    pub_line = ctx.pub_path.read_text(encoding="utf-8").strip()
    pub = ctx.public_key()
    ws = await ctx.workspace()
    info = await _ws_call(ws.get_cluster(args.id))
    restarted = False
    if key_installed(pub, info.ssh_public_keys):
        progress(f"=> Cluster {info.cluster_id} already carries {tilde(ctx.pub_path)}")
    else:
        running = info.state in ("RUNNING", "RESIZING", "PENDING", "RESTARTING")
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
        await _ws_call(ws.set_ssh_public_keys(info.cluster_id, [*info.ssh_public_keys, pub_line]))
        restarted = running
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
        sshconfig.update_host,
        path,
        info.cluster_id,
        options,
        backup_dir=ctx.settings.state_path / "ssh_config_backup",
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


# --------------------------------------------------------------------------------------------
# -k, -d


def _specs(profile: str | None, cluster_id: str | None) -> list[dict[str, str]]:
    from . import kernelspecs

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
    from .kernelspecs import parse_env

    try:
        return parse_env(list(args.env or []))
    except ValueError as err:
        message = str(err).rstrip(".")
        if not args.profile:  # argparse gave it to -e
            message += " (name the profile before -e: it takes every K=V after it)"
        raise CliError(f"-e: {message}.", EXIT_USAGE) from None


async def create_kernelspec(ctx: Context) -> None:
    from . import kernelspecs

    env = kernel_env(ctx.args)
    ws, info = await _cluster(ctx)
    name = await asyncio.to_thread(
        kernelspecs.create_kernelspec,
        ctx.profile,
        info.cluster_id,
        info.cluster_name or info.cluster_id,
        spark=not ctx.args.no_spark,
        kernel_env=env,
    )
    spec = next((s for s in _specs(ctx.profile, info.cluster_id) if s["name"] == name), None)
    display = spec["display_name"] if spec else name
    if ctx.args.json:
        print_json(
            {
                "kernel_name": name,
                "display_name": display,
                "profile": ctx.profile,
                "cluster_id": info.cluster_id,
                "env": env,
            }
        )
        return
    out(f"Created kernelspec {name}: {display}")
    for key, value in env.items():
        out(f"  env {key}={shlex.quote(value)}")
    if info.state not in ("RUNNING", "RESIZING"):
        out(f"Cluster {info.cluster_id} is {info.state}; starting a kernel starts it.")


def delete_kernelspecs(args: argparse.Namespace) -> int:
    if args.yes and not (args.id or args.profile):
        raise CliError(
            "With --yes, name what to delete: a profile and/or -i CLUSTER_ID.", EXIT_USAGE
        )
    from . import kernelspecs

    specs = _specs(args.profile, args.id)
    if not specs:
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
    for spec in specs:
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


# --------------------------------------------------------------------------------------------
# -n


def import_notebook(args: argparse.Namespace) -> int:
    """Write a Databricks HTML export as ``<name>.ipynb`` in the current folder."""
    from . import notebooks

    source = args.notebook
    shown = notebooks.shown_source(source)
    progress(f"=> Experimental: importing the Databricks HTML export {shown}")
    codes = {"not_found": EXIT_NOT_FOUND, "usage": EXIT_USAGE}
    try:
        nb, name = notebooks.load(source, timeout=args.api_timeout)
    except notebooks.NotebookImportError as err:
        raise CliError(_sentence(err.message), codes.get(err.kind, EXIT_FAILURE)) from None
    path = Path.cwd() / notebooks.file_name(name, notebooks.fallback_name(source))
    if path.exists() and not confirm(
        f"{path.name} exists here; overwrite it?", assume_yes=args.yes
    ):
        raise CliError(f"Nothing written: {path.name} already exists (--yes overwrites it).")
    try:
        notebooks.write(nb, path)
    except OSError as err:
        raise CliError(f"{path} cannot be written: {err.strerror or err}.") from None
    log.debug("notebook written to %s", path)
    cells = len(nb.cells)
    if args.json:
        print_json({"notebook": str(path), "name": name, "source": shown, "cells": cells})
    else:
        out(f"Imported {name or path.stem} as {path.name} ({cells} cells, experimental import).")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# -r, -l


async def _ready(ctx: Context) -> tuple[Any, Any, list[str]]:
    ws, info = await _cluster(ctx)
    info = await ensure_running(ctx, ws, info)
    await _refresh_hostname(ctx, info)
    target = await check_ssh(ctx, info)
    installed = await prepare(ctx, info, target)
    return info, target, installed


async def reconfigure(ctx: Context) -> None:
    info, target, installed = await _ready(ctx)
    if ctx.args.json:
        print_json(
            {
                "cluster_id": info.cluster_id,
                "state": info.state,
                "ssh": "ok",
                "host": target.host,
                "port": target.port,
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
    info, _target, installed = await _ready(ctx)
    specs = await asyncio.to_thread(_specs, ctx.profile, info.cluster_id)
    out(f"Cluster {info.cluster_id} is ready: SSH ok, driver libraries present.")
    if not specs:
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
# -V, -m


async def _remote(ctx: Context, info: Any, target: Any) -> tuple[dict[str, str], str]:
    from . import driver

    conn = await _connect(ctx, info, target)
    try:
        packages = await driver.remote_packages(conn, ctx.settings, target.user)
        python = await driver.remote_python_version(conn, ctx.settings, target.user)
    except Exception as err:
        translated = _translate(err)
        if translated is err:
            raise CliError(_sentence(f"Reading the driver's packages failed: {err}")) from None
        raise translated from None
    finally:
        conn.close()
    return dict(packages), str(python)


async def _running_target(ctx: Context) -> tuple[Any, Any]:
    ws, info = await _cluster(ctx)
    info = await ensure_running(ctx, ws, info)
    await _refresh_hostname(ctx, info)
    target = await check_ssh(ctx, info)
    return info, target


async def version_check(ctx: Context) -> None:
    info, target = await _running_target(ctx)
    remote, remote_python = await _remote(ctx, info, target)
    local = mirror.local_packages()
    local_python = ".".join(map(str, sys.version_info[:3]))
    rows = mirror.compare(local, remote, ctx.args.versioncheck)
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


def _env_path(explicit: str | None, settings: DriverSettings, name: str) -> Path:
    return Path(explicit).expanduser() if explicit else settings.state_path / "envs" / name


async def mirror_env(ctx: Context) -> None:
    args = ctx.args
    if args.conda and not mirror.conda_executable():
        raise CliError("--conda was given but conda is not installed; leave it out for a venv.")
    info, target = await _running_target(ctx)
    remote, remote_python = await _remote(ctx, info, target)
    selected = mirror.select(remote, use_whitelist=args.whitelist)
    reqs = mirror.requirements(selected)
    name = args.env_name or mirror.env_name(info.cluster_name or info.cluster_id)
    kind = "conda" if args.conda else "venv"
    path = _env_path(args.env_path, ctx.settings, name)
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
    on_line = progress
    try:
        if args.conda:
            await asyncio.to_thread(
                mirror.create_conda,
                name,
                reqs,
                python_version=short_python,
                pip_args=shlex.split(args.pip_args),
                on_line=on_line,
            )
            out(f"Created conda environment {name}: conda activate {name}")
        else:
            await asyncio.to_thread(
                mirror.create_venv,
                path,
                reqs,
                python=args.python,
                pip_args=shlex.split(args.pip_args),
                on_line=on_line,
            )
            activate = mirror.venv_python(path).parent / "activate"
            out(f"Created venv {tilde(path)}: source {tilde(activate)}")
    except mirror.MirrorError as err:
        raise CliError(str(err)) from None


# --------------------------------------------------------------------------------------------
# -c


NO_CLIPBOARD = (
    "No clipboard is available here (no desktop session with pbcopy, wl-copy, xclip, xsel or "
    "clip.exe)."
)


def clipboard_commands() -> list[list[str]]:
    """Clipboard tools present here, most specific first."""
    cands: list[list[str]] = []
    if sys.platform == "darwin":
        cands.append(["pbcopy"])
    if os.name == "nt":
        cands.append(["clip"])
    if os.environ.get("WAYLAND_DISPLAY"):
        cands.append(["wl-copy"])
    if os.environ.get("DISPLAY"):
        cands.append(["xclip", "-selection", "clipboard", "-in"])
        cands.append(["xsel", "--clipboard", "--input"])
    if _is_wsl():
        cands.append(["clip.exe"])
    return [c for c in cands if shutil.which(c[0])]


def _is_wsl() -> bool:
    try:
        return "microsoft" in Path("/proc/version").read_text().lower()
    except OSError:
        return False


def copy_to_clipboard(text: str) -> str:
    """Copy through the first tool that works; the text goes through stdin only."""
    for cmd in clipboard_commands():
        try:
            # Output to DEVNULL: xclip keeps a child alive holding the selection (and our pipes).
            proc = subprocess.run(
                cmd,
                input=text.encode(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode == 0:
            return cmd[0]
    raise CliError(NO_CLIPBOARD)


def copy_token(ctx: Context) -> None:
    if not clipboard_commands():
        raise CliError(NO_CLIPBOARD)

    async def token() -> str:
        ws = await ctx.workspace()
        try:
            return ws.token_for_clipboard()
        except Exception as err:
            raise _translate(err) from None

    secret = asyncio.run(token())
    tool = copy_to_clipboard(secret)
    out(f"Copied the personal access token of profile {ctx.profile} to the clipboard ({tool}).")


# --------------------------------------------------------------------------------------------
# -b


def _server_extension_state() -> tuple[bool, str]:
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    manager = ExtensionConfigManager(read_config_path=jupyter_config_path())
    enabled = manager.get_jpserver_extensions().get("databrickslabs_jupyterlab")
    if enabled is None:
        return False, "not configured"
    return bool(enabled), "enabled" if enabled else "disabled"


def _labextension_state() -> tuple[bool, str]:
    from jupyter_core.paths import jupyter_config_path, jupyter_path

    found = None
    for base in jupyter_path("labextensions"):
        pkg = Path(base) / "databrickslabs-jupyterlab" / "package.json"
        if pkg.exists():
            found = pkg.parent
            break
    if found is None:
        return False, "not installed (build it with 'jlpm build' or install the wheel)"
    for base in jupyter_config_path():
        page = Path(base) / "labconfig" / "page_config.json"
        try:
            disabled = json.loads(page.read_text()).get("disabledExtensions") or {}
        except (OSError, ValueError):
            continue
        names = disabled if isinstance(disabled, list) else [k for k, v in disabled.items() if v]
        if any(
            n == "databrickslabs-jupyterlab" or n.startswith("databrickslabs-jupyterlab:")
            for n in names
        ):
            return False, f"installed in {tilde(found)} but disabled in {tilde(page)}"
    return True, f"installed and enabled ({tilde(found)})"


def bootstrap(args: argparse.Namespace) -> int:
    from importlib import metadata

    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str, required: bool = True) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail, "required": required})

    try:
        from databrickslabs_jupyterlab import _jupyter_server_extension_points

        _jupyter_server_extension_points()
        importable, why = True, ""
    except Exception as err:  # noqa: BLE001 - reported, not raised
        importable, why = False, f"{type(err).__name__}: {err}"
    enabled, state = _server_extension_state()
    if importable and not enabled:
        if confirm("Enable the server extension for this user?", assume_yes=args.yes, default=True):
            from jupyter_server.extension.serverextension import toggle_server_extension_python

            toggle_server_extension_python("databrickslabs_jupyterlab", enabled=True, user=True)
            enabled, state = _server_extension_state()
            state += " (enabled now)"
    check(
        "server extension",
        importable and enabled,
        state if importable else f"cannot be imported ({why})",
    )
    ok, detail = _labextension_state()
    check("lab extension", ok, detail)
    eps = metadata.entry_points(group="jupyter_client.kernel_provisioners")
    provisioner = next((e for e in eps if e.name == "databricks-ssh-provisioner"), None)
    if provisioner is None:
        check("kernel provisioner", False, "entry point missing (reinstall the package)")
    else:
        try:
            provisioner.load()
            check("kernel provisioner", True, f"{provisioner.value}")
        except Exception as err:  # noqa: BLE001
            check("kernel provisioner", False, f"cannot be loaded ({type(err).__name__}: {err})")
    for dist in ("jupyterlab", "jupyter_server", "databricks-sdk", "asyncssh"):
        try:
            check(dist, True, metadata.version(dist), required=dist != "jupyterlab")
        except metadata.PackageNotFoundError:
            check(dist, False, "not installed", required=dist != "jupyterlab")
    profiles = _profiles()
    check(
        "profiles", bool(profiles), f"{len(profiles)} in the Databricks config file", required=False
    )
    all_ok = all(c["ok"] for c in checks if c["required"])
    if args.json:
        print_json({"ok": all_ok, "version": __version__, "checks": checks})
    else:
        out(f"databrickslabs-jupyterlab {__version__}")
        out(
            table(
                [("OK" if c["ok"] else "MISSING", c["check"], c["detail"]) for c in checks],
                ("STATUS", "CHECK", "DETAIL"),
            )
        )
        out("")
        if all_ok:
            out(
                f"Ready. Next: '{PROG} -p', then '{PROG} PROFILE -s -i CLUSTER_ID' and "
                f"'{PROG} PROFILE -k'. Or try '{PROG} demo'."
            )
        else:
            out("Something is missing: reinstall with 'pip install databrickslabs-jupyterlab'.")
    return EXIT_OK if all_ok else EXIT_FAILURE
