"""Kernels that run behind a kernel gateway, seen by the server that shows their status.

With ``--gateway-url`` the Jupyter server starts no kernel itself: the gateway runs the kernel
and, inside it, our provisioner. The server still answers the status bar, so it needs two things
it cannot get from its own process:

* the kernel's ``metadata.databricks``: from the gateway's kernelspec of the kernel's name (the
  gateway serves the kernelspecs with their metadata);
* the kernel's state: from the state files the provisioner leaves in the shared state folder
  (``kernelfiles``), read for the kernels the server lists, about once a second, onto the
  server's board, where the cluster watchers hear of them as of a local kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from pathlib import Path
from typing import Any

from . import kernelfiles, kernelstate

#: Seconds between two reads of the state files.
POLL_INTERVAL = 1.0


def gateway_enabled(serverapp: Any) -> bool:
    config = getattr(serverapp, "gateway_config", None)
    return bool(getattr(config, "gateway_enabled", False))


def is_gateway_kernel(kernel: Any) -> bool:
    try:
        from jupyter_server.gateway.managers import GatewayKernelManager
    except ImportError:  # pragma: no cover - jupyter_server always has it
        return False
    return isinstance(kernel, GatewayKernelManager)


async def spec_metadata(kernel: Any, kernel_spec_manager: Any) -> dict[str, Any]:
    """The ``metadata`` of a gateway kernel's spec, asked of the gateway ({} when unknown)."""
    model = getattr(kernel, "kernel", None)
    name = model.get("name") if isinstance(model, dict) else None
    name = name or getattr(kernel, "kernel_name", None)
    if not name:
        return {}
    try:
        found = kernel_spec_manager.get_kernel_spec(name)
        if inspect.isawaitable(found):
            found = await found
    except Exception:  # noqa: BLE001 - a spec the gateway no longer has is not ours
        return {}
    if isinstance(found, dict):  # the REST model: {"name", "spec": {..., "metadata"}, ...}
        spec = found.get("spec", found)
        metadata = spec.get("metadata") if isinstance(spec, dict) else None
    else:
        metadata = getattr(found, "metadata", None)
    return metadata if isinstance(metadata, dict) else {}


class GatewayKernelStates:
    """Copies the states of the listed gateway kernels from their files onto the board."""

    def __init__(
        self,
        kernel_manager: Any,
        state_dir: Path,
        *,
        board: kernelstate.KernelBoard | None = None,
        interval: float = POLL_INTERVAL,
        log: logging.Logger | None = None,
    ) -> None:
        self.kernel_manager = kernel_manager
        self.folder = kernelfiles.folder_of(state_dir)
        self.board = board if board is not None else kernelstate.board
        self.interval = interval
        self.log = log or logging.getLogger(__name__)
        #: kernel id -> (writer's pid, seq) of the record last put on the board
        self._seen: dict[str, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dbjl-gateway-kernels")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # noqa: BLE001 - the next round tries again
                self.log.exception("Could not read the gateway kernels' states")
            await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        """One round: new states onto the board, kernels no longer listed off it."""
        listed = set(self.kernel_manager.list_kernel_ids())
        records = await asyncio.to_thread(kernelfiles.read_many, self.folder, listed)
        for kernel_id, record in records.items():
            mark = (record.pid, record.seq)
            if self._seen.get(kernel_id) == mark:
                continue
            self._seen[kernel_id] = mark
            self.board.set(
                kernel_id, record.profile, record.cluster_id, record.state, record.message
            )
        for kernel_id in set(self._seen) - listed:
            del self._seen[kernel_id]
            self.board.remove(kernel_id)
