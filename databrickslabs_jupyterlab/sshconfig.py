"""The user's OpenSSH client config: read the way ``ssh`` reads it, edited without losing a byte.

Reading and editing share one parser and one ``Host`` matching rule, so the block the CLI writes
for a cluster is the block the connection later uses. The rules are OpenSSH's (``ssh_config(5)``,
checked against ``ssh -G`` in the tests):

* a ``Host`` line applies when one of its non-negated patterns matches the name and none of its
  ``!negated`` ones does; patterns use ``*`` and ``?`` and are case-sensitive;
* for each option the first value obtained wins (``ProxyCommand`` and ``ProxyJump`` exclude each
  other: whichever comes first);
* ``Include`` is followed where it stands (inside a non-matching block it adds nothing), relative
  paths are taken from ``~/.ssh``, globs are read in sorted order, nesting stops at 16 levels;
* ``Match`` blocks are skipped: they depend on things we cannot or must not evaluate (``exec``
  runs commands, ``canonical``/``final`` need a second pass), so their options never apply.

One deliberate departure, the ``catch_all`` switch: options that apply to every host (lines
before the first ``Host``, ``Host *``) are by default not used for a cluster. Such entries are
written for the user's own machines (``User me``, ``IdentityFile ~/.ssh/id_rsa``) and must not
replace the driver's defaults; ``catch_all=True`` gives plain OpenSSH.

The editor keeps the file as a list of lines and touches only the lines of one block, so
comments, blank lines, ``Include``/``Match`` lines, indentation and order survive; it refuses a
name or value with a line break, a double quote or a NUL. Writing the file (backup, lock,
symlinks) is ``sshconfigfile``'s part.
"""

from __future__ import annotations

import functools
import getpass
import glob
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = [
    "BLOCK_KEYS",
    "MAX_INCLUDE_DEPTH",
    "ROUTING_KEYS",
    "Block",
    "HostEntry",
    "SshConfig",
    "SshConfigError",
    "expand_path",
    "expand_tokens",
    "host_entry",
    "host_matches",
    "host_options",
    "local_user",
    "parse_jump",
    "parse_port",
    "read_host_entry",
    "split_args",
]

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
#: OpenSSH's READCONF_MAX_DEPTH.
MAX_INCLUDE_DEPTH = 16
#: Options whose value is the rest of the line, given to a shell: neither split nor unquoted.
_COMMAND_KEYS = frozenset({"proxycommand", "localcommand", "remotecommand", "knownhostscommand"})

_LINE = re.compile(
    r"^(?P<indent>\s*)(?P<key>[A-Za-z][A-Za-z0-9]*)(?P<sep>\s*=\s*|\s+)(?P<value>.*?)\s*$"
)


# --------------------------------------------------------------------------------------------
# Lines, words and patterns


def _parse(line: str) -> tuple[str, str] | None:
    """``(key lower-cased, raw value)`` of an option line; ``None`` for blanks, comments and
    lines that are not ``Key value``/``Key=value`` (skipped, where OpenSSH would refuse)."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    m = _LINE.match(line.rstrip("\n"))
    if not m:
        return None
    return m.group("key").lower(), m.group("value")


def split_args(text: str) -> list[str]:
    """The words of an option value as OpenSSH's ``argv_split`` sees them: double or single
    quotes group, a backslash escapes a quote, backslash or blank, and an unquoted word that
    starts with ``#`` ends the line (a trailing comment)."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] == "#":
            break
        word: list[str] = []
        quote = ""
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n and text[i + 1] in "\\\"' ":
                word.append(text[i + 1])
                i += 2
                continue
            if quote:
                if c == quote:
                    quote = ""
                else:
                    word.append(c)
            elif c in "\"'":
                quote = c
            elif c in " \t":
                break
            else:
                word.append(c)
            i += 1
        words.append("".join(word))
    return words


def _option_value(key: str, raw: str) -> str:
    if key in _COMMAND_KEYS:
        return raw.strip()
    return " ".join(split_args(raw))


@functools.lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    """OpenSSH's ``match_pattern``: ``*`` and ``?`` are the only wildcards (``[`` is literal,
    unlike ``fnmatch``) and letters match case-sensitively."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _host_state(patterns: Iterable[str], name: str) -> str | None:
    """``None`` when the ``Host`` line does not apply to ``name``; ``"named"`` when a pattern
    other than a bare ``*`` selects it; ``"all"`` when only ``*`` does (a catch-all)."""
    state: str | None = None
    for pattern in patterns:
        negated = pattern.startswith("!")
        if negated:
            pattern = pattern[1:]
        if not pattern or not _pattern(pattern).fullmatch(name):
            continue
        if negated:
            return None
        if pattern != "*":
            state = "named"
        elif state is None:
            state = "all"
    return state


def host_matches(patterns: Iterable[str], name: str) -> bool:
    """OpenSSH's rule for a ``Host`` line: some non-negated pattern matches ``name``
    (case-sensitively, ``*`` and ``?`` as wildcards) and no negated pattern does."""
    return _host_state(patterns, name) is not None


def expand_tokens(value: str, tokens: Mapping[str, str]) -> str:
    """``%h``-style tokens replaced from ``tokens`` (one letter each), ``%%`` as ``%``; unknown
    tokens are left as written (OpenSSH would refuse the option)."""

    def repl(m: re.Match[str]) -> str:
        char = m.group(1)
        if char == "%":
            return "%"
        return tokens.get(char, m.group(0))

    return re.sub(r"%(.)", repl, value)


def local_user() -> str:
    """The ``%u`` token and the user OpenSSH logs in as when nothing names one."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry and no LOGNAME/USER
        return "root" if os.geteuid() == 0 else "user"


def expand_path(value: str, tokens: Mapping[str, str]) -> str:
    """An ``IdentityFile``-like path: tokens (plus ``%d``, ``%u``), ``~``, and a relative path
    taken from the home folder, so the same file is meant wherever the process runs."""
    home = str(Path("~").expanduser())
    path = os.path.expanduser(expand_tokens(value, {"d": home, "u": local_user(), **tokens}))
    return path if os.path.isabs(path) else str(Path(home) / path)


def parse_port(text: str) -> int:
    """A TCP port as written in a config (``Port``, ``host:port``); ValueError otherwise."""
    port = int(text) if text.isdigit() else 0
    if not 0 < port < 65536:
        raise ValueError(f"{text!r} is not a TCP port")
    return port


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """``(user, host, port)`` of one ``[user@]host[:port]`` or ``ssh://[user@]host[:port]`` of a
    ``ProxyJump`` list (an IPv6 address in brackets); ValueError when it is not one."""
    text = spec.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://") :].rstrip("/")
    user = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
    port = None
    if text.startswith("["):  # [ipv6]:port
        end = text.find("]")
        host, rest = text[1:end] if end > 0 else "", text[end + 1 :] if end > 0 else ""
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{spec!r} is not a [user@]host[:port]")
            port = parse_port(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = parse_port(port_text)
    else:
        host = text
    if not host or (user is not None and not user):
        raise ValueError(f"{spec!r} is not a [user@]host[:port]")
    return user, host, port


# --------------------------------------------------------------------------------------------
# Reading


class _Resolver:
    """Collects the options that apply to one name, walking lines and Includes like ``ssh``."""

    def __init__(self, name: str, catch_all: bool) -> None:
        self.name = name
        self.catch_all = catch_all
        self.found: dict[str, str] = {}

    def applies(self, state: str | None) -> bool:
        return state == "named" or (state == "all" and self.catch_all)

    def lines(self, lines: Iterable[str], where: str, state: str | None, depth: int) -> None:
        """``state`` is the one the lines start in: that of the ``Include`` that led here,
        ``"all"`` for a top-level file. An ``Include`` in a block that does not apply is not
        read at all: OpenSSH reads it with every ``Host`` line failing, which adds nothing."""
        for lineno, line in enumerate(lines, 1):
            parsed = _parse(line)
            if parsed is None:
                if line.strip() and not line.strip().startswith("#"):
                    log.debug("ssh config %s:%d: line ignored", where, lineno)
                continue
            key, raw = parsed
            if key == "host":
                state = _host_state(split_args(raw), self.name)
            elif key == "match":
                log.debug("ssh config %s:%d: Match block skipped", where, lineno)
                state = None
            elif key == "include":
                if state is not None:
                    for item in split_args(raw):
                        self.include(item, state, depth + 1, f"{where}:{lineno}")
            elif self.applies(state) and key not in self.found:
                if key in ROUTING_KEYS and any(k in self.found for k in ROUTING_KEYS):
                    continue  # whichever of ProxyCommand and ProxyJump comes first wins
                self.found[key] = _option_value(key, raw)

    def file(self, path: Path, state: str | None, depth: int) -> None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.debug("ssh config %s not read: %s", path, exc)
            return
        self.lines(text.splitlines(), str(path), state, depth)

    def include(self, item: str, state: str | None, depth: int, where: str) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            log.warning("ssh config %s: Include nested deeper than %d", where, MAX_INCLUDE_DEPTH)
            return
        pattern = os.path.expanduser(item)
        if not os.path.isabs(pattern):
            pattern = str(Path("~/.ssh").expanduser() / pattern)
        for included in sorted(glob.glob(pattern)):
            self.file(Path(included), state, depth)


def read_host_entry(
    config_file: str | os.PathLike[str], name: str, *, catch_all: bool = False
) -> dict[str, str]:
    """The options (lower-cased keys, first value of each) that the config file gives ``name``.

    Values are unquoted and trailing comments dropped, except for commands such as
    ``ProxyCommand`` which keep the rest of their line; ``%`` tokens are left for the caller
    (see ``expand_tokens``), because what they stand for depends on the connection."""
    resolver = _Resolver(name, catch_all)
    resolver.file(Path(config_file).expanduser(), "all", 0)
    return resolver.found


@dataclass(frozen=True)
class HostEntry:
    """The connection options the config gives one name, typed; ``None`` where the config says
    nothing (or ``none``, OpenSSH's word for "no proxy"), so the caller's defaults apply."""

    hostname: str | None = None  # %h expanded
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None  # as written: its tokens depend on the connection
    proxy_command: str | None = None  # as written: expanded when the proxy is started
    proxy_jump: str | None = None


def host_entry(
    config_file: str | os.PathLike[str], name: str, *, catch_all: bool = False
) -> HostEntry:
    """``read_host_entry`` reduced to what a connection needs; ValueError for a Port that is
    not a TCP port (OpenSSH refuses such a config too)."""
    found = read_host_entry(config_file, name, catch_all=catch_all)
    port = None
    if found.get("port"):
        try:
            port = parse_port(found["port"])
        except ValueError:
            raise ValueError(
                f"The Port {found['port']!r} that {config_file} gives {name} is not a TCP port"
            ) from None

    def proxy(key: str) -> str | None:
        value = found.get(key)
        return None if not value or value.lower() == "none" else value

    hostname = found.get("hostname")
    return HostEntry(
        hostname=expand_tokens(hostname, {"h": name}) if hostname else None,
        port=port,
        user=found.get("user") or None,
        identity_file=found.get("identityfile") or None,
        proxy_command=proxy("proxycommand"),
        proxy_jump=proxy("proxyjump"),
    )


# --------------------------------------------------------------------------------------------
# Editing


class SshConfigError(ValueError):
    """A value that cannot be written into an SSH config safely; the message is a sentence."""


_KEY = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# A line break would start a new directive, a quote would end the quoted value early, and NUL
# ends the line for OpenSSH: none of them is ever written.
_UNWRITABLE = re.compile(r'[\r\n\0"]')


def _check_entry(name: str, options: Mapping[str, str]) -> None:
    """Refuse a ``Host`` name or an option that would change the file's meaning when written."""
    if not name or _UNWRITABLE.search(name) or any(c.isspace() for c in name):
        raise SshConfigError(f"{name[:80]!r} cannot be a Host name in an SSH config.")
    for key, value in options.items():
        if not _KEY.fullmatch(str(key)) or _UNWRITABLE.search(str(value)):
            raise SshConfigError(
                f"The {str(key)[:40]!r} value for Host {name} contains a line break, a double "
                "quote or a NUL and is not written to the SSH config."
            )


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
        """True when OpenSSH would apply this block to ``name`` (``Match`` blocks: never, as
        for the reader)."""
        return self.kind == "host" and host_matches(self.patterns, name)


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
                blocks.append(Block(i, len(self.lines), parsed[0], split_args(parsed[1])))
        return blocks

    def find(self, name: str) -> Block | None:
        """The first block written for exactly ``name`` (also inside multi-pattern Host lines)."""
        for block in self.blocks():
            if block.names(name):
                return block
        return None

    def options(self, name: str, *, catch_all: bool = False) -> dict[str, str]:
        """The options ``name`` gets from this text and the files it includes: the same
        resolution as ``read_host_entry`` (every matching block, first value wins)."""
        resolver = _Resolver(name, catch_all)
        resolver.lines(self.lines, "<ssh config>", "all", 0)
        return resolver.found

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
        _check_entry(name, options)
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
        _check_entry(name, {})
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
