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


class KernelBoard:
    def __init__(self) -> None:
        self._records: dict[str, KernelRecord] = {}
        self._listeners: list[Listener] = []

    def set(
        self, kernel_id: str, profile: str, cluster_id: str, state: str, message: str | None = None
    ) -> KernelRecord:
        if state not in KERNEL_STATES:
            raise ValueError(f"unknown kernel state {state!r}")
        record = KernelRecord(kernel_id, profile, cluster_id, state, message)
        self._records[kernel_id] = record
        for listener in list(self._listeners):
            listener(record)
        return record

    def get(self, kernel_id: str) -> KernelRecord | None:
        return self._records.get(kernel_id)

    def remove(self, kernel_id: str) -> None:
        self._records.pop(kernel_id, None)

    def for_cluster(self, profile: str, cluster_id: str) -> list[KernelRecord]:
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
