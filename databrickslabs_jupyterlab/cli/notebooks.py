"""``-n``: a Databricks HTML export as ``<name>.ipynb`` in the current folder (experimental)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .errors import EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError, sentence
from .output import confirm, out, print_json, progress

log = logging.getLogger(__name__)
#: Seconds -n waits for its URL when --api-timeout is not given.
DEFAULT_TIMEOUT = 20.0


def import_notebook(args: argparse.Namespace) -> int:
    """Write a Databricks HTML export as ``<name>.ipynb`` in the current folder."""
    from .. import notebooks

    source = args.notebook
    shown = notebooks.shown_source(source)
    progress(f"=> Experimental: importing the Databricks HTML export {shown}")
    codes = {"not_found": EXIT_NOT_FOUND, "usage": EXIT_USAGE}
    try:
        timeout = DEFAULT_TIMEOUT if args.api_timeout is None else args.api_timeout
        nb, name = notebooks.load(source, timeout=timeout)
    except notebooks.NotebookImportError as err:
        raise CliError(sentence(err.message), codes.get(err.kind, EXIT_FAILURE)) from None
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
