"""Kernel states as files, for a server whose kernels run in another process.

Behind a kernel gateway the provisioner runs inside the gateway, not inside the Jupyter server
that answers the status bar, so the process-wide board (``kernelstate``) of the server never hears
of the kernel. The provisioner therefore also leaves each kernel's state in
``<state_dir>/kernels/<kernel id>.json``; a server with a gateway reads those of the kernels it
lists onto its own board (``gatewaykernels``). Both processes must share the state folder: the
same user on the same machine, or ``DBJL_STATE_DIR`` on a shared mount.

A file holds ``{kernel_id, profile, cluster_id, state, message, seq, host, pid, updated_at}``
and no secret. The folder is private (0700), each file 0600, written whole through a rename, by
one writer thread per process so that two states of one kernel land in the order they were set.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from . import vocabulary
from .kernelstate import DEAD_TTL

#: Seconds between two sweeps of the folder by one process (files of dead kernels and of
#: processes that are gone).
PRUNE_EVERY = 60.0

_HOST = socket.gethostname()


@dataclass(frozen=True)
class KernelFile:
    kernel_id: str
    profile: str
    cluster_id: str
    state: str
    message: str | None
    seq: int
    host: str
    pid: int
    updated_at: float


def folder_of(state_dir: Path) -> Path:
    return Path(state_dir).expanduser() / "kernels"


def _path(folder: Path, kernel_id: str) -> Path:
    if not vocabulary.is_kernel_id(kernel_id):  # a file name: never a path of its own
        raise ValueError(f"not a kernel id: {kernel_id!r}")
    return folder / f"{kernel_id}.json"


def write(folder: Path, record: KernelFile) -> None:
    """Write one kernel's state whole (blocking: call it off the event loop)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = _path(folder, record.kernel_id)
    fd, partial = tempfile.mkstemp(prefix=".", suffix=".partial", dir=folder)  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(record), out)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def read(folder: Path, kernel_id: str) -> KernelFile | None:
    """One kernel's last state, or None when there is none or it cannot be read (blocking)."""
    try:
        data = json.loads(_path(folder, kernel_id).read_text(encoding="utf-8"))
        record = KernelFile(**data)
    except (OSError, ValueError, TypeError):
        return None
    if record.kernel_id != kernel_id or record.state not in vocabulary.KERNEL_STATES:
        return None
    return record


def read_many(folder: Path, kernel_ids: set[str]) -> dict[str, KernelFile]:
    """The states of those of ``kernel_ids`` that have a file (blocking)."""
    records = {kernel_id: read(folder, kernel_id) for kernel_id in kernel_ids}
    return {kernel_id: r for kernel_id, r in records.items() if r is not None}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune(folder: Path, *, now: float | None = None, dead_ttl: float = DEAD_TTL) -> int:
    """Remove the files of kernels dead for longer than ``dead_ttl`` and of writers on this host
    that are gone (their kernels went with them). Returns how many went (blocking)."""
    now = time.time() if now is None else now
    removed = 0
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".json")]
    except OSError:
        return 0
    for name in names:
        record = read(folder, name[: -len(".json")])
        stale = record is None or (
            (record.state == "dead" and now - record.updated_at > dead_ttl)
            or (record.host == _HOST and not _alive(record.pid))
        )
        if stale:
            with contextlib.suppress(OSError):
                (folder / name).unlink()
                removed += 1
    return removed


class Publisher:
    """The provisioners' writer of one process: states are written in the order they are set,
    by one thread, never on an event loop; a failing write is logged once, never raised."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self._last_prune: dict[Path, float] = {}
        self._warned = False

    def publish(
        self,
        state_dir: Path,
        kernel_id: str,
        profile: str,
        cluster_id: str,
        state: str,
        message: str | None,
        log: object = None,
    ) -> Future[None]:
        with self._lock:
            self._seq += 1
            record = KernelFile(
                kernel_id, profile, cluster_id, state, message, self._seq, _HOST, os.getpid(),
                time.time(),
            )  # fmt: skip
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="dbjl-kernel-files")
            return self._executor.submit(self._write, folder_of(state_dir), record, log)

    def _write(self, folder: Path, record: KernelFile, log: object) -> None:
        try:
            write(folder, record)
            if time.monotonic() - self._last_prune.get(folder, -PRUNE_EVERY) >= PRUNE_EVERY:
                self._last_prune[folder] = time.monotonic()
                prune(folder)
        except (OSError, ValueError) as exc:
            if not self._warned and log is not None:
                self._warned = True
                warn = getattr(log, "warning", None)
                if callable(warn):
                    warn("Could not leave the kernel's state in %s: %s", folder, exc)


publisher = Publisher()
