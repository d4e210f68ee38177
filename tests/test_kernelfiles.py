"""Unit tests of the kernel state files (``kernelfiles``) and of their reader in a server with a
kernel gateway (``gatewaykernels``); the whole path through a real gateway is in
``test_kernel_gateway.py``."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest

from databrickslabs_jupyterlab import gatewaykernels, kernelfiles
from databrickslabs_jupyterlab.kernelstate import KernelBoard


def _record(kernel_id: str, state: str = "running", **kw: object) -> kernelfiles.KernelFile:
    fields: dict[str, object] = {
        "kernel_id": kernel_id, "profile": "p", "cluster_id": "0101-000000-abcdefgh",
        "state": state, "message": None, "seq": 1, "host": kernelfiles._HOST,
        "pid": os.getpid(), "updated_at": time.time(),
    }  # fmt: skip
    fields.update(kw)
    return kernelfiles.KernelFile(**fields)  # type: ignore[arg-type]


def test_a_state_is_written_whole_private_and_read_back(tmp_path: Path) -> None:
    folder = kernelfiles.folder_of(tmp_path)
    kid = str(uuid.uuid4())
    kernelfiles.write(folder, _record(kid, "starting"))
    kernelfiles.write(folder, _record(kid, "running", seq=2))
    got = kernelfiles.read(folder, kid)
    assert got is not None and (got.state, got.seq, got.profile) == ("running", 2, "p")
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / f"{kid}.json").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in folder.iterdir()] == [f"{kid}.json"]  # no partial file left


def test_unreadable_foreign_or_misnamed_files_are_not_states(tmp_path: Path) -> None:
    folder = kernelfiles.folder_of(tmp_path)
    folder.mkdir(parents=True)
    kid, other = str(uuid.uuid4()), str(uuid.uuid4())
    (folder / f"{kid}.json").write_text("{not json")
    assert kernelfiles.read(folder, kid) is None
    kernelfiles.write(folder, _record(other))
    (folder / f"{other}.json").rename(folder / f"{kid}.json")  # says it is another kernel
    assert kernelfiles.read(folder, kid) is None
    kernelfiles.write(folder, _record(other, state="sleeping"))
    assert kernelfiles.read(folder, other) is None
    with pytest.raises(ValueError):
        kernelfiles.write(folder, _record("../escape"))
    assert kernelfiles.read_many(folder, {"../escape", kid, other}) == {}


def test_prune_removes_long_dead_kernels_and_those_of_gone_writers(tmp_path: Path) -> None:
    folder = kernelfiles.folder_of(tmp_path)
    now = time.time()
    alive, dead_now, dead_long, orphan, elsewhere = (str(uuid.uuid4()) for _ in range(5))
    kernelfiles.write(folder, _record(alive))
    kernelfiles.write(folder, _record(dead_now, "dead", updated_at=now - 10))
    kernelfiles.write(folder, _record(dead_long, "dead", updated_at=now - 3600))
    gone_pid = 2**22 + 12345  # above Linux's default pid_max
    kernelfiles.write(folder, _record(orphan, pid=gone_pid))
    kernelfiles.write(folder, _record(elsewhere, pid=gone_pid, host="another-host"))
    assert kernelfiles.prune(folder, now=now, dead_ttl=600) == 2
    assert {p.stem for p in folder.glob("*.json")} == {alive, dead_now, elsewhere}


def test_the_publisher_keeps_the_order_of_one_kernels_states(tmp_path: Path) -> None:
    kid = str(uuid.uuid4())
    publisher = kernelfiles.Publisher()
    futures = [
        publisher.publish(tmp_path, kid, "p", "0101-000000-abcdefgh", state, None)
        for state in ("starting", "running", "disconnected", "running", "dead")
    ]
    for future in futures:
        future.result(10)
    record = kernelfiles.read(kernelfiles.folder_of(tmp_path), kid)
    assert record is not None and (record.state, record.seq) == ("dead", 5)


def test_a_publisher_that_cannot_write_warns_once_and_never_raises(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")  # the state folder's parent is a file
    warnings: list[str] = []

    class Log:
        def warning(self, fmt: str, *args: object) -> None:
            warnings.append(fmt % args)

    publisher = kernelfiles.Publisher()
    for _ in range(3):
        publisher.publish(blocked, str(uuid.uuid4()), "p", "c", "running", None, Log()).result(10)
    assert len(warnings) == 1 and "Could not leave" in warnings[0]


class _Kernels:
    def __init__(self, *ids: str) -> None:
        self.ids = list(ids)

    def list_kernel_ids(self) -> list[str]:
        return list(self.ids)


def test_the_server_copies_listed_gateway_kernels_onto_its_board(tmp_path: Path) -> None:
    folder = kernelfiles.folder_of(tmp_path)
    listed, unlisted = str(uuid.uuid4()), str(uuid.uuid4())
    kernelfiles.write(folder, _record(listed, "starting", message="Starting"))
    kernelfiles.write(folder, _record(unlisted))
    board = KernelBoard()
    seen: list[tuple[str, str]] = []
    board.subscribe(lambda r: seen.append((r.kernel_id, r.state)))
    kernels = _Kernels(listed)
    states = gatewaykernels.GatewayKernelStates(kernels, tmp_path, board=board)

    async def rounds() -> None:
        await states.poll()
        await states.poll()  # nothing new: nothing set again
        kernelfiles.write(folder, _record(listed, "running", seq=2))
        await states.poll()
        kernels.ids = []  # shut down on the gateway
        await states.poll()

    asyncio.run(rounds())
    assert seen == [(listed, "starting"), (listed, "running")]
    assert board.get(listed) is None and board.get(unlisted) is None


def test_a_gateway_kernels_metadata_comes_from_the_gateways_spec() -> None:
    class Specs:
        async def get_kernel_spec(self, name: str) -> dict[str, object]:
            if name != "dbk":
                raise KeyError(name)
            return {"name": name, "spec": {"metadata": {"databricks": {"profile": "p"}}}}

    class Kernel:
        def __init__(self, name: str) -> None:
            self.kernel = {"id": "x", "name": name}

    got = asyncio.run(gatewaykernels.spec_metadata(Kernel("dbk"), Specs()))
    assert got == {"databricks": {"profile": "p"}}
    assert asyncio.run(gatewaykernels.spec_metadata(Kernel("gone"), Specs())) == {}
