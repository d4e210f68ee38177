"""What the CLI prints: results on stdout (text or ``--json``), progress on stderr, questions on
the terminal."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
