"""Round-trip editor for the ``Host <cluster_id>`` blocks of an OpenSSH client config.

The user's ``~/.ssh/config`` is theirs: comments, blank lines, ``Include`` and ``Match`` lines,
indentation and the order of entries must survive an edit. So the file is kept as a list of
lines and only the lines of one block are touched. Before any change the old file is copied to
``<state_dir>/ssh_config_backup/`` (the newest few copies are kept), and the new text replaces
the old one atomically with mode 0600.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Keys that a ``-s`` run writes into a new block, in this order.
BLOCK_KEYS = (
    "HostName",
    "Port",
    "User",
    "IdentityFile",
    "IdentitiesOnly",
    "ServerAliveInterval",
    "ServerAliveCountMax",
    "ConnectTimeout",
)
#: When one of these is present, the user routes the connection themselves (bastion, tunnel):
#: ``HostName`` is then theirs and is never rewritten.
ROUTING_KEYS = ("proxycommand", "proxyjump")
BACKUPS_KEPT = 10

_LINE = re.compile(
    r"^(?P<indent>\s*)(?P<key>[A-Za-z][A-Za-z0-9]*)(?P<sep>\s*=\s*|\s+)(?P<value>.*?)\s*$"
)


def _parse(line: str) -> tuple[str, str] | None:
    """``(key lower-cased, value)`` of an option line; ``None`` for blanks and comments."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    m = _LINE.match(line.rstrip("\n"))
    if not m:
        return None
    return m.group("key").lower(), m.group("value")


def _patterns(value: str) -> list[str]:
    out: list[str] = []
    for token in value.split():
        if token.startswith("#"):
            break
        out.append(token.strip('"'))
    return out


def _format_value(value: str) -> str:
    return f'"{value}"' if " " in value and not value.startswith('"') else value


@dataclass
class Block:
    """One ``Host``/``Match`` section: lines ``[start, end)``, the header at ``start``."""

    start: int
    end: int
    kind: str  # "host" or "match"
    patterns: list[str] = field(default_factory=list)

    def names(self, name: str) -> bool:
        """True when the block is exactly for ``name`` (listed literally, not via a wildcard)."""
        return self.kind == "host" and name in self.patterns

    def matches(self, name: str) -> bool:
        """True when OpenSSH would apply this block to ``name`` (wildcards, negations)."""
        if self.kind != "host":
            return False
        hit = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatchcase(name, pattern.lstrip("!")):
                if negated:
                    return False
                hit = True
        return hit


@dataclass
class Change:
    """What an update did, for printing to the person who ran it."""

    path: Path
    changed: bool
    created: bool
    backup: Path | None
    diff: str


class SshConfig:
    """The lines of one config file plus an index of its blocks."""

    def __init__(self, text: str = "") -> None:
        self.lines: list[str] = text.splitlines(keepends=True)
        if self.lines and not self.lines[-1].endswith("\n"):
            self.lines[-1] += "\n"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SshConfig:
        p = Path(path).expanduser()
        return cls(p.read_text(encoding="utf-8") if p.exists() else "")

    def text(self) -> str:
        return "".join(self.lines)

    def blocks(self) -> list[Block]:
        blocks: list[Block] = []
        for i, line in enumerate(self.lines):
            parsed = _parse(line)
            if parsed and parsed[0] in ("host", "match"):
                if blocks:
                    blocks[-1].end = i
                blocks.append(Block(i, len(self.lines), parsed[0], _patterns(parsed[1])))
        return blocks

    def find(self, name: str) -> Block | None:
        """The first block written for exactly ``name`` (also inside multi-pattern Host lines)."""
        for block in self.blocks():
            if block.names(name):
                return block
        return None

    def options(self, name: str) -> dict[str, str]:
        """Options of the block for ``name`` (lower-cased keys, first value wins like OpenSSH)."""
        block = self.find(name)
        out: dict[str, str] = {}
        if block is None:
            return out
        for line in self.lines[block.start + 1 : block.end]:
            parsed = _parse(line)
            if parsed:
                out.setdefault(parsed[0], parsed[1].strip('"'))
        return out

    def _indent(self, block: Block) -> str:
        for line in self.lines[block.start + 1 : block.end]:
            m = _LINE.match(line)
            if m and _parse(line):
                return m.group("indent") or "    "
        return "    "

    def set_host(self, name: str, options: Mapping[str, str], *, keep: Iterable[str] = ()) -> None:
        """Create or update the block for ``name``.

        Existing keys are rewritten in place (keeping their indentation and separator), unless
        they are listed in ``keep`` (lower-case) which only fills them in when missing. Keys not
        yet in the block are added after its last option line, so comments that introduce the
        next block stay where they are. A shared ``Host a b c`` line is not edited: a dedicated
        block is put in front of it, because OpenSSH takes the first value it finds.
        """
        keep = {k.lower() for k in keep}
        block = self.find(name)
        if block is not None and block.patterns != [name]:
            block = None  # shared header: add a dedicated block before it (see below)
        if block is None:
            self._insert_block(name, options)
            return
        indent = self._indent(block)
        seen: set[str] = set()
        last_option = block.start
        wanted = {k.lower(): (k, v) for k, v in options.items()}
        for i in range(block.start + 1, block.end):
            parsed = _parse(self.lines[i])
            if not parsed:
                continue
            last_option = i
            key = parsed[0]
            if key in wanted and key not in seen:
                seen.add(key)
                if key in keep:
                    continue
                m = _LINE.match(self.lines[i])
                assert m is not None
                new_value = _format_value(wanted[key][1])
                if m.group("value").strip('"') != str(wanted[key][1]):
                    self.lines[i] = (
                        f"{m.group('indent')}{m.group('key')}{m.group('sep')}{new_value}\n"
                    )
        missing = [(k, v) for k, v in options.items() if k.lower() not in seen]
        new_lines = [f"{indent}{k} {_format_value(str(v))}\n" for k, v in missing]
        self.lines[last_option + 1 : last_option + 1] = new_lines

    def _insert_block(self, name: str, options: Mapping[str, str]) -> None:
        body = [f"Host {name}\n"] + [
            f"    {k} {_format_value(str(v))}\n" for k, v in options.items()
        ]
        # In front of the first block that would also apply to this host (``Host *`` and the
        # like), otherwise at the end of the file.
        for block in self.blocks():
            if block.kind == "match" or block.matches(name) or block.names(name):
                pos = block.start
                while pos > 0 and self.lines[pos - 1].strip().startswith("#"):
                    pos -= 1  # the comment right above a block introduces it
                self.lines[pos:pos] = body + ["\n"]
                return
        if self.lines and self.lines[-1].strip():
            body.insert(0, "\n")
        self.lines.extend(body)

    def remove_host(self, name: str) -> bool:
        """Delete the dedicated block for ``name``; a shared ``Host`` line only loses the name."""
        block = self.find(name)
        if block is None:
            return False
        if block.patterns == [name]:
            # Comments and blank lines after the last option introduce the next block: keep them.
            last = block.start
            for i in range(block.start + 1, block.end):
                if _parse(self.lines[i]):
                    last = i
            end = last + 1
            if end < len(self.lines) and not self.lines[end].strip():
                if block.start == 0 or not self.lines[block.start - 1].strip():
                    end += 1
            del self.lines[block.start : end]
        else:
            header = self.lines[block.start]
            self.lines[block.start] = re.sub(
                rf"(?<=\s){re.escape(name)}(?=\s|$)\s?", "", header, count=1
            )
        return True


def host_options(
    *,
    hostname: str,
    port: int,
    user: str,
    identity_file: str,
    keepalive_interval: float,
    keepalive_count_max: int,
    connect_timeout: float,
) -> dict[str, str]:
    """The options a ``Host <cluster_id>`` block gets, in file order."""
    return {
        "HostName": hostname,
        "Port": str(port),
        "User": user,
        "IdentityFile": identity_file,
        "IdentitiesOnly": "yes",
        "ServerAliveInterval": str(max(1, round(keepalive_interval))),
        "ServerAliveCountMax": str(max(1, keepalive_count_max)),
        "ConnectTimeout": str(max(1, round(connect_timeout))),
    }


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
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
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
    """
    p = Path(path).expanduser()
    config = SshConfig.load(p)
    before = config.text()
    existing = config.options(name)
    keep = set(k.lower() for k in keep)
    if any(k in existing for k in ROUTING_KEYS):
        keep.add("hostname")
    config.set_host(name, options, keep=keep)
    return _save(p, before, config, backup_dir)


def remove_host(path: str | os.PathLike[str], name: str, *, backup_dir: Path) -> Change:
    p = Path(path).expanduser()
    config = SshConfig.load(p)
    before = config.text()
    config.remove_host(name)
    return _save(p, before, config, backup_dir)
