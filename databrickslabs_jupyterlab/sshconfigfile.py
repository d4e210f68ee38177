"""Writing the user's ``~/.ssh/config``: backup, lock, atomic replace, symlinks kept.

Before any change the old file is copied to ``<state_dir>/ssh_config_backup/`` (the newest few
copies are kept), and the new text replaces the old one atomically with mode 0600. A config
that is a symlink (dotfiles kept in a repository) stays one: the file it points to is written.
Two runs of the CLI (or the CLI and the server) editing the file at the same time take turns
through an ``fcntl`` lock on a file next to it, held from reading the old text to writing the
new one, so neither loses the other's change.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .sshconfig import ROUTING_KEYS, SshConfig, SshConfigError

__all__ = [
    "BACKUPS_KEPT",
    "Change",
    "SshConfigError",
    "locked",
    "remove_host",
    "replace_text",
    "update_host",
]

BACKUPS_KEPT = 10


@dataclass
class Change:
    """What an update did, for printing to the person who ran it."""

    path: Path
    changed: bool
    created: bool
    backup: Path | None
    diff: str


def _target(path: Path) -> Path:
    """The file really written: a symlink's final target (which may not exist yet)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock for editing the config at ``path`` (blocking; released on exit)."""
    target = _target(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(target.parent / f".{target.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _backup(path: Path, backup_dir: Path) -> Path:
    backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = backup_dir / f"{path.name}.{stamp}"
    n = 1
    while target.exists():
        target = backup_dir / f"{path.name}.{stamp}.{n}"
        n += 1
    shutil.copy2(path, target)
    os.chmod(target, 0o600)
    old = sorted(backup_dir.glob(f"{path.name}.*"), key=lambda p: p.stat().st_mtime_ns)
    for stale in old[:-BACKUPS_KEPT]:
        stale.unlink(missing_ok=True)
    return target


def _write_atomic(path: Path, text: str) -> None:
    """Replace the file (a symlink's target, so the link stays) with ``text``, mode 0600."""
    target = _target(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(path: Path, before: str, config: SshConfig, backup_dir: Path) -> Change:
    after = config.text()
    diff = "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"{path} (before)",
            tofile=str(path),
        )
    )
    if after == before:
        return Change(path, False, False, None, "")
    existed = path.exists()
    backup = _backup(path, backup_dir) if existed else None
    _write_atomic(path, after)
    return Change(path, True, not existed, backup, diff)


def replace_text(path: str | os.PathLike[str], text: str, *, backup_dir: Path) -> Path | None:
    """Replace the whole file (a symlink's target) with ``text`` under the lock, the old file
    copied to ``backup_dir`` first; returns that copy (None when nothing existed or changed)."""
    p = Path(path).expanduser()
    with locked(p):
        before = p.read_text(encoding="utf-8") if p.exists() else None
        if before == text:
            return None
        backup = _backup(p, backup_dir) if before is not None else None
        _write_atomic(p, text)
        return backup


def update_host(
    path: str | os.PathLike[str],
    name: str,
    options: Mapping[str, str],
    *,
    backup_dir: Path,
    keep: Iterable[str] = (),
) -> Change:
    """Write or update ``Host <name>`` in the file at ``path``; back it up first.

    ``HostName`` is left alone when the block routes through ``ProxyCommand``/``ProxyJump``.
    SshConfigError for a name or value that cannot be written safely (nothing is changed).
    """
    p = Path(path).expanduser()
    with locked(p):
        config = SshConfig.load(p)
        before = config.text()
        existing = config.options(name)
        keep = set(k.lower() for k in keep)
        if any(k in existing for k in ROUTING_KEYS):
            keep.add("hostname")
        config.set_host(name, options, keep=keep)
        return _save(p, before, config, backup_dir)


def remove_host(path: str | os.PathLike[str], name: str, *, backup_dir: Path) -> Change:
    """Drop ``Host <name>`` from the file at ``path`` (backed up first), keeping the rest."""
    p = Path(path).expanduser()
    with locked(p):
        config = SshConfig.load(p)
        before = config.text()
        config.remove_host(name)
        return _save(p, before, config, backup_dir)
