"""``databrickslabs-jupyterlab`` / ``dj``: set up profiles, SSH keys, kernelspecs and mirrors.

The flags are those of the tool this project succeeds, so its users' habits still work. Every
action is a short ``asyncio.run`` over the same service modules the server extension uses; a
cluster is started, keyed, logged in to and prepared only by :mod:`..operations`, whose steps
the CLI prints as the server shows them. Failures leave as one sentence on stderr and a
documented exit status; results go to stdout (``--json`` where a script wants them), progress
to stderr.

Modules: :mod:`.parser` (flags), :mod:`.output` (printing, questions), :mod:`.errors` (exit
statuses), :mod:`.context` (profile, workspace, cluster choice, lifecycle), and one per group of
flags: :mod:`.profiles` (-p), :mod:`.keys` (-s), :mod:`.kernels` (-k -e -d), :mod:`.cluster`
(-r -l -V -m), :mod:`.notebooks` (-n), :mod:`.setup` (-b -c demo).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from .. import __version__, vocabulary
from .errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_SSH,
    EXIT_USAGE,
    EXIT_WORKSPACE,
    CliError,
    translate,
)
from .output import out, print_json
from .parser import CLUSTER_ACTIONS, PROG, build_parser, flag

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_SSH",
    "EXIT_USAGE",
    "EXIT_WORKSPACE",
    "PROG",
    "CliError",
    "main",
]

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    from .setup import run_demo

    demo_status = run_demo(args_list)
    if demo_status is not None:
        return demo_status
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
    with _quiet_sdk_logs():
        if args.debug:
            from .. import debuglog

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
        try:
            return run(args, parser)
        except CliError:
            raise
        except Exception as err:
            translated = translate(err)
            if translated is err:
                raise
            raise translated from None
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
    from .. import debuglog
    from ..workspace import config_file_path

    paths = {config_file_path()}
    try:  # the config file may be a setting in jupyter_server_config too
        from .context import load_settings

        paths.add(config_file_path(load_settings().databricks_config_file))
    except CliError:
        pass  # reported by the command itself
    values = {secret for path in paths for secret in debuglog.config_secrets(path)}
    values.update(
        v
        for k, v in os.environ.items()
        if (debuglog.secret_name(k) or vocabulary.secret_like(k)) and len(v.strip()) >= 4
    )
    return tuple(values)


def _shown_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if v not in (None, False, "", [])}


@contextlib.contextmanager
def _quiet_sdk_logs() -> Iterator[None]:
    """The SDK logs its retries and fallbacks as warnings; the CLI reports failures itself.
    Only while the command runs: ``main()`` called in a process (a test, a notebook) leaves
    that process's logging as it found it."""
    if os.environ.get("DBJL_DEBUG"):
        yield
        return
    sdk = logging.getLogger("databricks")
    quiet = logging.NullHandler()
    propagate = sdk.propagate
    sdk.addHandler(quiet)
    sdk.propagate = False
    try:
        yield
    finally:
        sdk.removeHandler(quiet)
        sdk.propagate = propagate


def _check_names(args: argparse.Namespace) -> None:
    """A profile and a cluster id must follow the rules the server and the kernels apply."""
    if args.profile is not None and not vocabulary.is_profile(args.profile):
        raise CliError(f"{args.profile!r} is not a Databricks CLI profile name.", EXIT_USAGE)
    if args.id is not None and not vocabulary.is_cluster_id(args.id):
        raise CliError(
            f"{args.id!r} is not a cluster id (letters, digits and '-', e.g. 0806-143104-skirt84).",
            EXIT_USAGE,
        )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.version:
        out(__version__)
        return EXIT_OK
    if args.print_whitelist or args.print_blacklist:
        from .. import mirror

        if args.print_whitelist and args.print_blacklist:
            raise CliError("Choose either -W or -B.", EXIT_USAGE)
        names = list(mirror.WHITELIST if args.print_whitelist else mirror.BLACKLIST)
        print_json(names) if args.json else out("\n".join(names))
        return EXIT_OK
    if args.bootstrap:
        from .setup import bootstrap

        return bootstrap(args)
    if args.profiles:
        from .profiles import show_profiles

        return show_profiles(args)
    _check_names(args)
    if args.delete:
        from .kernels import delete_kernelspecs

        return delete_kernelspecs(args)
    if args.notebook:
        from .notebooks import import_notebook

        return import_notebook(args)

    actions = [a for a in CLUSTER_ACTIONS if getattr(args, a)]
    if len(actions) > 1:
        flags = ", ".join(flag(a) for a in actions)
        raise CliError(f"Use one of {flags} at a time.", EXIT_USAGE)
    if args.whitelist and not args.mirror:
        raise CliError("-w only applies to -m.", EXIT_USAGE)
    if args.no_spark and not args.kernelspec:
        raise CliError("-N only applies to -k.", EXIT_USAGE)
    if args.env and not args.kernelspec:
        raise CliError("-e only applies to -k.", EXIT_USAGE)
    if getattr(args, "transport", None) and not args.kernelspec:
        raise CliError("--transport only applies to -k.", EXIT_USAGE)
    if args.tunnel is not None and not args.ssh_config:
        raise CliError("--tunnel only applies to -s.", EXIT_USAGE)
    from .kernels import kernel_env

    kernel_env(args)  # a wrong -e is a usage error before any workspace call
    if not args.profile:
        if args.ssh_config or args.clipboard or actions or args.id or args.organisation:
            raise CliError(
                "Name a profile first, for example "
                f"'{PROG} PROFILE {flag(actions[0]) if actions else '-s'}' (see -p).",
                EXIT_USAGE,
            )
        parser.print_help()
        return EXIT_OK

    from .context import Context

    ctx = Context(args)
    if args.clipboard:
        from .setup import copy_token

        copy_token(ctx)
        if not (args.ssh_config or actions):
            return EXIT_OK
    if args.ssh_config:
        if not args.id:
            raise CliError("-s needs the cluster id: -s -i CLUSTER_ID.", EXIT_USAGE)
        if args.tunnel is not None:
            from .tunnel import setup_tunnel

            asyncio.run(setup_tunnel(ctx))
        else:
            from .keys import configure_ssh

            asyncio.run(configure_ssh(ctx))
    if not actions:
        if not (args.ssh_config or args.clipboard):
            from .profiles import show_profile

            show_profile(ctx)
        return EXIT_OK
    from . import cluster, kernels

    action = actions[0]
    handler = {
        "kernelspec": kernels.create_kernelspec,
        "reconfigure": cluster.reconfigure,
        "lab": cluster.lab,
        "versioncheck": cluster.version_check,
        "mirror": cluster.mirror_env,
    }[action]
    result = asyncio.run(handler(ctx))
    if action == "lab" and result:
        return cluster.exec_lab(result, dry_run=args.dry_run)
    return EXIT_OK
