"""Setting up: ``-b`` (are the server extension, lab extension and provisioner installed and
enabled), ``-c`` (the profile's token to the clipboard) and ``demo`` (the built-in simulator)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .context import Context, load_settings
from .errors import EXIT_FAILURE, EXIT_OK, CliError, translate
from .output import confirm, out, print_json, table, tilde
from .parser import PROG, is_demo
from .profiles import list_profiles


def run_demo(argv: Sequence[str]) -> int | None:
    """``demo`` with only demo options starts the demo; anything else names a profile "demo"."""
    if not is_demo(argv):
        return None
    from .. import demo

    return demo.main(list(argv[1:]))


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
    if is_wsl():
        cands.append(["clip.exe"])
    return [c for c in cands if shutil.which(c[0])]


def is_wsl() -> bool:
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
            raise translate(err) from None

    secret = asyncio.run(token())
    tool = copy_to_clipboard(secret)
    out(f"Copied the personal access token of profile {ctx.profile} to the clipboard ({tool}).")


# --------------------------------------------------------------------------------------------
# -b


def server_extension_state() -> tuple[bool, str]:
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    manager = ExtensionConfigManager(read_config_path=jupyter_config_path())
    enabled = manager.get_jpserver_extensions().get("databrickslabs_jupyterlab")
    if enabled is None:
        return False, "not configured"
    return bool(enabled), "enabled" if enabled else "disabled"


def labextension_state() -> tuple[bool, str]:
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
    enabled, state = server_extension_state()
    if importable and not enabled:
        if confirm("Enable the server extension for this user?", assume_yes=args.yes, default=True):
            from jupyter_server.extension.serverextension import toggle_server_extension_python

            toggle_server_extension_python("databrickslabs_jupyterlab", enabled=True, user=True)
            enabled, state = server_extension_state()
            state += " (enabled now)"
    check(
        "server extension",
        importable and enabled,
        state if importable else f"cannot be imported ({why})",
    )
    ok, detail = labextension_state()
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
    try:
        profiles = list_profiles(load_settings())
    except CliError:
        profiles = list_profiles()
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
