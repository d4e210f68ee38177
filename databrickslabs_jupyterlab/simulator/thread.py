"""The simulator on its own loop in a background thread, with a synchronous API.

For synchronous tests and for processes whose main loop belongs to someone else (pytest-jupyter,
a Jupyter server under test): every call is marshalled onto the simulator's loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

_CALL_TIMEOUT = 60.0


async def _cancel_leftovers() -> None:
    """Cancel and await what is still pending (SSH sessions, timers) before the loop stops."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=5)


class SimulatorThread:
    def __init__(self, **simulator_kwargs: Any) -> None:
        self._kwargs = simulator_kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.sim: Any = None

    # -- life --------------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from . import Simulator

        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="databricks-simulator", daemon=True)
        self._thread.start()
        ready.wait()

        async def create() -> Any:
            sim = Simulator(**self._kwargs)
            await sim.start(host, port)
            return sim

        self.sim = self._submit(create())

    def stop(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        if self.sim is not None:
            asyncio.run_coroutine_threadsafe(self.sim.stop(), loop).result(_CALL_TIMEOUT)
        asyncio.run_coroutine_threadsafe(_cancel_leftovers(), loop).result(_CALL_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- marshalling -------------------------------------------------------------------------
    def _submit(self, coro: Coroutine[Any, Any, T], timeout: float = _CALL_TIMEOUT) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the simulator thread is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def call() -> T:
            return fn(*args, **kwargs)

        return self._submit(call())

    def call(self, coro_fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """Run a coroutine method of the simulator (or any coroutine function) on its loop."""
        return self._submit(coro_fn(*args, **kwargs))

    # -- the Simulator's API, synchronously --------------------------------------------------
    @property
    def url(self) -> str:
        return self.sim.url

    @property
    def token(self) -> str:
        return self.sim.token

    @property
    def driver_python(self) -> str:
        return self.sim.driver_python

    def add_cluster(self, name: str, **kwargs: Any) -> str:
        if "ssh_public_keys" in kwargs and not isinstance(kwargs["ssh_public_keys"], list | tuple):
            kwargs["ssh_public_keys"] = list(kwargs["ssh_public_keys"])
        return self._sync(self.sim.add_cluster, name, **kwargs)

    def add_policy(self, name: str, definition: dict[str, Any]) -> str:
        return self._sync(self.sim.add_policy, name, definition)

    def cluster(self, cluster_id: str) -> Any:
        return self.sim.cluster(cluster_id)

    def terminate(self, cluster_id: str, reason: str = "INACTIVITY") -> None:
        """Returns once TERMINATING has begun (and the driver's processes are gone)."""
        self._submit(self.sim.terminate(cluster_id, reason))

    def fail_next(self, n: int, status: int, path: str | None = None) -> None:
        self._sync(self.sim.fail_next, n, status, path)

    def clear_failures(self) -> int:
        return self._sync(self.sim.clear_failures)

    def set_latency(self, seconds: float) -> None:
        def apply() -> None:
            self.sim.latency = float(seconds)

        self._sync(apply)

    def set_ssh_mode(self, cluster_id: str, mode: str) -> None:
        self._sync(self.sim.set_ssh_mode, cluster_id, mode)

    def drop_ssh(self, cluster_id: str) -> int:
        return self._submit(self.sim.drop_ssh(cluster_id))

    def calls(self) -> dict[str, int]:
        return self._sync(lambda: dict(self.sim.calls))

    def reset_calls(self) -> None:
        self._sync(self.sim.calls.clear)

    def wait_state(self, cluster_id: str, state: str, timeout: float = 30) -> None:
        self._submit(self.sim.wait_state(cluster_id, state, timeout), timeout + 5)

    def wait_spark(self, cluster_id: str, timeout: float = 120) -> dict[str, Any]:
        return self._submit(self.sim.wait_spark(cluster_id, timeout), timeout + 5)

    def profile_text(self, profile: str = "demo") -> str:
        return self.sim.profile_text(profile)

    def m2m_profile_text(self, profile: str = "demo-m2m") -> str:
        return self._sync(self.sim.m2m_profile_text, profile)

    def u2m_profile_text(self, profile: str = "demo-u2m", **kwargs: Any) -> str:
        return self.sim.u2m_profile_text(profile, **kwargs)  # writes a file: not on the loop

    def add_service_principal(self) -> tuple[str, str]:
        return self._sync(self.sim.add_service_principal)

    def oauth_issued(self) -> dict[str, int]:
        """Access tokens issued so far, by grant type (``client_credentials``, ``refresh_token``)."""
        return self._sync(lambda: dict(self.sim.oidc.issued))

    def ssh_config_entry(self, cluster_id: str, identity_file: str) -> str:
        return self.sim.ssh_config_entry(cluster_id, identity_file)

    def clusters(self) -> Iterable[Any]:
        return self.sim.clusters
