"""A process-wide board of the remote kernels this process runs.

The kernel provisioner runs inside whatever process manages the kernel (the Jupyter server,
``jupyter console``, nbclient). It records the kernel's state here; the server extension, when
present in the same process, reads the board to answer ``GET .../kernels/{id}`` and subscribes to
changes so that a disconnected kernel shows up in the cluster's status at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .vocabulary import KERNEL_STATES  # re-exported for older imports


@dataclass
class KernelRecord:
    kernel_id: str
    profile: str
    cluster_id: str
    state: str
    message: str | None = None
    updated_at: float = field(default_factory=time.time)


Listener = Callable[[KernelRecord], None]


#: Seconds a dead kernel stays on the board (and in its cluster's status), and how many dead
#: ones are kept at most: enough to see why a kernel died, never a list that only grows.
DEAD_TTL = 600.0
MAX_DEAD = 50


class KernelBoard:
    def __init__(self, *, dead_ttl: float = DEAD_TTL, max_dead: int = MAX_DEAD) -> None:
        self._records: dict[str, KernelRecord] = {}
        self._listeners: list[Listener] = []
        self.dead_ttl = dead_ttl
        self.max_dead = max_dead
        #: kernel id -> monotonic time it was reported dead, oldest first
        self._dead: dict[str, float] = {}

    def set(
        self, kernel_id: str, profile: str, cluster_id: str, state: str, message: str | None = None
    ) -> KernelRecord:
        if state not in KERNEL_STATES:
            raise ValueError(f"unknown kernel state {state!r}")
        record = KernelRecord(kernel_id, profile, cluster_id, state, message)
        self._records[kernel_id] = record
        self._dead.pop(kernel_id, None)
        if state == "dead":
            self._dead[kernel_id] = time.monotonic()
        self._prune()
        for listener in list(self._listeners):
            listener(record)
        return record

    def _prune(self) -> None:
        """Forget dead kernels older than ``dead_ttl`` and all but the newest ``max_dead``."""
        limit = time.monotonic() - self.dead_ttl
        for kernel_id, since in list(self._dead.items()):
            if since > limit and len(self._dead) <= self.max_dead:
                break  # the rest are newer
            del self._dead[kernel_id]
            self._records.pop(kernel_id, None)

    def count(self) -> int:
        """Kernels on the board now (not ``__len__``: an empty board must stay truthy)."""
        self._prune()
        return len(self._records)

    def get(self, kernel_id: str) -> KernelRecord | None:
        self._prune()
        return self._records.get(kernel_id)

    def remove(self, kernel_id: str) -> None:
        self._records.pop(kernel_id, None)
        self._dead.pop(kernel_id, None)

    def for_cluster(self, profile: str, cluster_id: str) -> list[KernelRecord]:
        self._prune()
        return [
            r for r in self._records.values() if (r.profile, r.cluster_id) == (profile, cluster_id)
        ]

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe


board = KernelBoard()
