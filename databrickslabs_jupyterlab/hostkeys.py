"""Pinned SSH host keys of cluster drivers (and of the jump hosts on the way to them).

asyncssh is never given ``~/.ssh/known_hosts``: a driver's address is reused by other VMs and
its key changes with every restart, so OpenSSH's file would either be wrong or be edited behind
the user's back. Instead one small JSON file per cluster, ``<state_dir>/known_hosts/<id>.json``
(``{key, driver_start, recorded_at}``, times in milliseconds since the epoch like the Databricks
API), remembers the key seen first (trust on first use).

A key may only change together with the driver: Databricks gives a restarted driver a new VM and
thus a new key, and reports the driver's start time. A changed key without a newer start is
refused, because that is what a man in the middle looks like.

The files are read and written in a worker thread when called from async code: the connection
path reads the record before the SSH handshake (``pin``), judges the offered key in memory during
key exchange, and writes afterwards (``HostKeyPin.save``), so the event loop never waits on the
disk. The synchronous methods are for code that runs outside an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from . import vocabulary

if TYPE_CHECKING:
    from .ssh.connection import HostKeyChanged

log = logging.getLogger(__name__)

__all__ = ["HostKeyPin", "HostKeyStore", "key_text"]

#: Record names that are not cluster ids (``jump-<host>-<port>``) only need to be safe file
#: names: no separators, no leading dot.
_RECORD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


def key_text(key: asyncssh.SSHKey) -> str:
    """``<algorithm> <base64>`` of a public key, without the comment: what is compared."""
    return " ".join(key.export_public_key("openssh").decode("ascii").split()[:2])


def _fingerprint(text: str) -> str:
    try:
        return asyncssh.import_public_key(text).get_fingerprint()
    except Exception:
        return "an unreadable key"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _changed(message: str) -> HostKeyChanged:
    # ssh.connection owns the SSH error classes and imports this module; importing them when a refusal
    # is built (never at import time) keeps the two modules free of an import cycle.
    from .ssh.connection import HostKeyChanged

    return HostKeyChanged(message)


class HostKeyStore:
    """The pinned keys under ``<state_dir>/known_hosts``; every file there is private (0600 in a
    0700 folder) and replaced atomically, so a crash never leaves half a record."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.folder = Path(state_dir).expanduser() / "known_hosts"

    # -- files (blocking: a worker thread when called from async code) ------------------------

    def path(self, name: str) -> Path:
        """The record file of a cluster id or of a jump host's ``jump-...`` name."""
        if not (vocabulary.is_cluster_id(name) or _RECORD_NAME.fullmatch(name)):
            raise ValueError(f"{name!r} is not a cluster id or host key record name")
        return self.folder / f"{name}.json"

    def _load(self, name: str) -> dict[str, Any] | None:
        path = self.path(name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("Ignoring unreadable host key record %s: %s", path, exc)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            log.warning("Ignoring malformed host key record %s", path)
            return None
        return data

    def _save(self, name: str, text: str, driver_start: int | None) -> None:
        target = self.path(name)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        record = {"key": text, "driver_start": driver_start, "recorded_at": _now_ms()}
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # -- the rule (no I/O) ----------------------------------------------------------------

    def _judge(
        self,
        name: str,
        record: dict[str, Any] | None,
        key: asyncssh.SSHKey,
        driver_start: int | None,
        what: str,
    ) -> bool:
        """Whether ``key`` must be (re)recorded; raises HostKeyChanged when it is refused.

        First contact records the key. A different key is accepted only when the workspace
        reports a driver start later than the one recorded (or, when none was known then, later
        than the moment the old key was recorded). The same key with a newer start refreshes
        the start, so that the next restart is judged against it."""
        text = key_text(key)
        if record is None:
            log.info("Recording the host key of %s (%s)", what, key.get_fingerprint())
            return True
        old_start = _int_or_none(record.get("driver_start"))
        if record["key"] == text:
            return driver_start is not None and (old_start is None or driver_start > old_start)
        reference = old_start if old_start is not None else _int_or_none(record.get("recorded_at"))
        if driver_start is not None and reference is not None and driver_start > reference:
            fingerprint = key.get_fingerprint()
            log.info("Host key of %s changed with a new driver start: %s", what, fingerprint)
            return True
        if name.startswith("jump-"):
            why = "changed"  # a jump host has no driver start to excuse a change
        elif reference is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reference / 1000))
            why = f"changed although the driver was not restarted since {since}"
        else:
            why = "changed although the driver was not restarted since the key was recorded"
        raise _changed(
            f"Connection refused: the host key of {what} {why} (recorded "
            f"{_fingerprint(record['key'])}, offered {key.get_fingerprint()}). If you trust the "
            f"change, forget the recorded key (delete {self.path(name)}) and connect again."
        )

    # -- synchronous API --------------------------------------------------------------------

    def recorded(self, cluster_id: str) -> dict[str, Any] | None:
        """The record for ``cluster_id``, or None when there is none (or it is unreadable)."""
        return self._load(_cluster(cluster_id))

    def check(self, cluster_id: str, key: asyncssh.SSHKey, driver_start: int | None) -> None:
        """Accept and remember ``key`` for ``cluster_id``, or raise HostKeyChanged."""
        name = _cluster(cluster_id)
        if self._judge(name, self._load(name), key, driver_start, _driver(cluster_id)):
            self._save(name, key_text(key), driver_start)

    def forget(self, cluster_id: str) -> None:
        """Drop the record, so that the next connection trusts the key it is offered."""
        with contextlib.suppress(FileNotFoundError):
            self.path(_cluster(cluster_id)).unlink()

    # -- asynchronous API (file work in a thread) -------------------------------------------

    async def arecorded(self, cluster_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.recorded, cluster_id)

    async def acheck(self, cluster_id: str, key: asyncssh.SSHKey, driver_start: int | None) -> None:
        await asyncio.to_thread(self.check, cluster_id, key, driver_start)

    async def aforget(self, cluster_id: str) -> None:
        await asyncio.to_thread(self.forget, cluster_id)

    async def pin(self, name: str, driver_start: int | None, what: str) -> HostKeyPin:
        """Load the record of ``name`` for one connection; see HostKeyPin."""
        self.path(name)  # refuse a bad name before touching the disk
        record = await asyncio.to_thread(self._load, name)
        return HostKeyPin(self, name, record, driver_start, what)


class HostKeyPin:
    """One connection's view of a record: asyncssh asks whether to trust the offered key from
    inside key exchange, a synchronous callback that must not touch the disk, so the record is
    loaded before (``HostKeyStore.pin``), judged in memory (``verify``) and written after
    (``save``)."""

    def __init__(
        self,
        store: HostKeyStore,
        name: str,
        record: dict[str, Any] | None,
        driver_start: int | None,
        what: str,
    ) -> None:
        self.store = store
        self.name = name
        self.record = record
        self.driver_start = driver_start
        self.what = what
        self._pending: str | None = None

    def verify(self, key: asyncssh.SSHKey) -> None:
        """Raise HostKeyChanged when ``key`` is refused; remember what ``save`` must write."""
        if self.store._judge(self.name, self.record, key, self.driver_start, self.what):
            self._pending = key_text(key)

    async def save(self) -> None:
        """Write the key accepted by ``verify`` when it is new or has a newer driver start."""
        text, self._pending = self._pending, None
        if text is not None:
            await asyncio.to_thread(self.store._save, self.name, text, self.driver_start)


def _cluster(cluster_id: str) -> str:
    if not vocabulary.is_cluster_id(cluster_id):
        raise ValueError(f"{cluster_id!r} is not a valid cluster id")
    return cluster_id


def _driver(cluster_id: str) -> str:
    return f"the driver of cluster {cluster_id}"
