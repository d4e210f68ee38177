"""Pinned SSH host keys of cluster drivers (and of the jump hosts on the way to them).

asyncssh is never given ``~/.ssh/known_hosts``: a driver's address is reused by other VMs and
its key changes with every restart, so OpenSSH's file would either be wrong or be edited behind
the user's back. Instead one small JSON file per workspace and cluster,
``<state_dir>/known_hosts/<workspace host>/<id>.json`` (``{key, driver_start, recorded_at}``,
times in milliseconds since the epoch like the Databricks API), remembers the key seen first
(trust on first use). Cluster ids are unique only within a workspace, so a pin is never shared
by two. A record of the first releases, ``known_hosts/<id>.json`` (no workspace), is moved to
the workspace that asks for it first; jump hosts (``jump-<host>-<port>``) stay there.

A record that cannot be read counts as a changed key: re-pinning whatever key is offered would
let a corrupted (or deliberately broken) file turn trust on first use back on.

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
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from . import vocabulary

if TYPE_CHECKING:
    from .settings import DriverSettings
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
    0700 folder) and replaced atomically, so a crash never leaves half a record.

    ``workspace`` (a host or URL) keys the cluster records; without one (and without a profile
    to find it) the records of the first releases, keyed by cluster id only, are used."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        workspace: str | None = None,
        *,
        profile: str | None = None,
        config_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.folder = Path(state_dir).expanduser() / "known_hosts"
        self._workspace = _workspace_name(workspace) if workspace else None
        self._profile = (profile, config_file) if profile and not workspace else None

    @classmethod
    def for_profile(cls, settings: DriverSettings, profile: str | None) -> HostKeyStore:
        """The store of a profile's workspace; the config file is read on first file work
        (which runs in a worker thread), never here."""
        return cls(
            settings.state_path, profile=profile, config_file=settings.databricks_config_file
        )

    @property
    def workspace(self) -> str | None:
        """The folder name of the workspace (its host), None when unknown (blocking once)."""
        if self._profile is not None:
            from .workspace import list_profiles

            profile, config_file = self._profile
            self._profile = None
            try:
                hosts = [p.host for p in list_profiles(config_file) if p.name == profile]
            except Exception as exc:  # noqa: BLE001 - no config: the cluster-only records
                log.debug("No workspace for the host keys of profile %s: %s", profile, exc)
                hosts = []
            try:
                self._workspace = _workspace_name(hosts[0]) if hosts and hosts[0] else None
            except ValueError:
                log.warning("Profile %s has a host that is not a host name", profile)
        return self._workspace

    # -- files (blocking: a worker thread when called from async code) ------------------------

    @staticmethod
    def _check_name(name: str) -> str:
        if not (vocabulary.is_cluster_id(name) or _RECORD_NAME.fullmatch(name)):
            raise ValueError(f"{name!r} is not a cluster id or host key record name")
        return name

    def _legacy_path(self, name: str) -> Path:
        return self.folder / f"{self._check_name(name)}.json"

    def path(self, name: str) -> Path:
        """The record file of a cluster id (in its workspace's folder) or of a jump host's
        ``jump-...`` name."""
        legacy = self._legacy_path(name)
        workspace = None if name.startswith("jump-") else self.workspace
        return self.folder / workspace / legacy.name if workspace else legacy

    def _read(self, path: Path) -> dict[str, Any] | None:
        """The record at ``path``; None when there is none; ``{"malformed": why}`` when there
        is a file that is not a record (judged as a changed key)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None  # no record (the folder missing or not a folder: writing says so)
        except (OSError, ValueError) as exc:
            log.warning("Unreadable host key record %s: %s", path, exc)
            return {"malformed": f"{type(exc).__name__}", "path": str(path)}
        key = data.get("key") if isinstance(data, dict) else None
        if not isinstance(key, str) or len(key.split()) != 2:
            log.warning("Malformed host key record %s", path)
            return {"malformed": "no key in it", "path": str(path)}
        return data

    def _load(self, name: str) -> dict[str, Any] | None:
        path = self.path(name)
        record = self._read(path)
        legacy = self._legacy_path(name)
        if record is None and path != legacy:
            record = self._read(legacy)
            if record is not None and "malformed" not in record:
                self._write(path, record)
                legacy.unlink(missing_ok=True)
                log.info("Moved the host key record of %s to %s", name, path)
        return record

    def _save(self, name: str, text: str, driver_start: int | None) -> None:
        record = {"key": text, "driver_start": driver_start, "recorded_at": _now_ms()}
        self._write(self.path(name), record)

    def _write(self, target: Path, record: dict[str, Any]) -> None:
        name = target.stem
        for folder in {self.folder, target.parent}:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".tmp")
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
        if record is not None and "malformed" in record:
            raise _changed(
                f"Connection refused: the recorded host key of {what} in {record['path']} cannot "
                f"be read ({record['malformed']}), so the key offered ({key.get_fingerprint()}) "
                "cannot be checked. If you trust it, delete that file and connect again."
            )
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
        record = self._load(_cluster(cluster_id))
        return None if record is None or "malformed" in record else record

    def check(self, cluster_id: str, key: asyncssh.SSHKey, driver_start: int | None) -> None:
        """Accept and remember ``key`` for ``cluster_id``, or raise HostKeyChanged."""
        name = _cluster(cluster_id)
        if self._judge(name, self._load(name), key, driver_start, _driver(cluster_id)):
            self._save(name, key_text(key), driver_start)

    def forget(self, cluster_id: str) -> None:
        """Drop the record, so that the next connection trusts the key it is offered."""
        name = _cluster(cluster_id)
        for path in {self.path(name), self._legacy_path(name)}:
            path.unlink(missing_ok=True)

    # -- asynchronous API (file work in a thread) -------------------------------------------

    async def arecorded(self, cluster_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.recorded, cluster_id)

    async def acheck(self, cluster_id: str, key: asyncssh.SSHKey, driver_start: int | None) -> None:
        await asyncio.to_thread(self.check, cluster_id, key, driver_start)

    async def aforget(self, cluster_id: str) -> None:
        await asyncio.to_thread(self.forget, cluster_id)

    async def pin(self, name: str, driver_start: int | None, what: str) -> HostKeyPin:
        """Load the record of ``name`` for one connection; see HostKeyPin."""
        self._check_name(name)  # refuse a bad name before touching the disk
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


def _workspace_name(host: str) -> str:
    """A folder name for a workspace: its host name (and port), lower-cased."""
    parts = urllib.parse.urlsplit(host if "://" in host else f"https://{host}")
    try:
        name, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        name, port = "", None
    if not vocabulary.is_hostname(name) or name.startswith("."):
        raise ValueError(f"{host!r} is not a workspace host")
    return f"{name}_{port}" if port else name


def _cluster(cluster_id: str) -> str:
    if not vocabulary.is_cluster_id(cluster_id):
        raise ValueError(f"{cluster_id!r} is not a valid cluster id")
    return cluster_id


def _driver(cluster_id: str) -> str:
    return f"the driver of cluster {cluster_id}"
