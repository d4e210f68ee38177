"""The host-key store as a unit: trust on first use, a key changes only with the driver, private
files replaced atomically, and no file work on the event loop."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
from pathlib import Path

import asyncssh
import pytest

from databrickslabs_jupyterlab import hostkeys
from databrickslabs_jupyterlab.hostkeys import HostKeyStore, key_text
from databrickslabs_jupyterlab.ssh import HostKeyChanged, SshError

CLUSTER = "0123-456789-abcdef12"


def new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519").convert_to_public()


@pytest.fixture
def store(tmp_path: Path) -> HostKeyStore:
    return HostKeyStore(tmp_path / "state")


def record_file(store: HostKeyStore, name: str = CLUSTER) -> Path:
    return store.folder / f"{name}.json"


def test_first_use_records_the_key_privately(store: HostKeyStore) -> None:
    key = new_key()
    store.check(CLUSTER, key, 1_000)
    path = record_file(store)
    record = json.loads(path.read_text())
    assert record["key"] == key_text(key) and record["key"].startswith("ssh-ed25519 ")
    assert record["driver_start"] == 1_000 and isinstance(record["recorded_at"], int)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.folder.stat().st_mode) == 0o700
    assert store.recorded(CLUSTER) == record


def test_same_key_passes_without_rewriting(store: HostKeyStore) -> None:
    key = new_key()
    store.check(CLUSTER, key, 1_000)
    before = record_file(store).read_bytes()
    for start in (1_000, 999, None):
        store.check(CLUSTER, key, start)
    assert record_file(store).read_bytes() == before
    store.check(CLUSTER, key, 5_000)  # same key, newer start: the start is remembered
    assert store.recorded(CLUSTER)["driver_start"] == 5_000  # type: ignore[index]


@pytest.mark.parametrize("start", [1_000, 999, None])
def test_changed_key_without_a_newer_driver_start_is_refused(
    store: HostKeyStore, start: int | None
) -> None:
    first, second = new_key(), new_key()
    store.check(CLUSTER, first, 1_000)
    before = record_file(store).read_bytes()
    with pytest.raises(HostKeyChanged) as refused:
        store.check(CLUSTER, second, start)
    assert isinstance(refused.value, SshError)  # callers catch every SSH problem as SshError
    message = str(refused.value)
    assert f"host key of the driver of cluster {CLUSTER} changed although" in message
    assert first.get_fingerprint() in message and second.get_fingerprint() in message
    assert str(record_file(store)) in message  # says which file to delete to trust the change
    assert record_file(store).read_bytes() == before


def test_new_driver_start_replaces_the_key(store: HostKeyStore) -> None:
    first, second = new_key(), new_key()
    store.check(CLUSTER, first, 1_000)
    store.check(CLUSTER, second, 2_000)
    record = store.recorded(CLUSTER)
    assert record is not None
    assert (record["key"], record["driver_start"]) == (key_text(second), 2_000)
    store.check(CLUSTER, second, None)
    with pytest.raises(HostKeyChanged):  # the old key is not trusted any more
        store.check(CLUSTER, first, 2_000)


def test_without_a_recorded_start_the_record_time_is_the_reference(store: HostKeyStore) -> None:
    first, second = new_key(), new_key()
    store.check(CLUSTER, first, None)
    recorded_at = store.recorded(CLUSTER)["recorded_at"]  # type: ignore[index]
    with pytest.raises(HostKeyChanged, match="since the key was recorded|since \\d{4}-"):
        store.check(CLUSTER, second, recorded_at - 60_000)  # started before we saw the key
    store.check(CLUSTER, second, recorded_at + 60_000)  # restarted after we saw the key
    assert store.recorded(CLUSTER)["key"] == key_text(second)  # type: ignore[index]


def test_forget_allows_a_new_first_use(store: HostKeyStore) -> None:
    first, second = new_key(), new_key()
    store.check(CLUSTER, first, 1_000)
    store.forget(CLUSTER)
    assert not record_file(store).exists() and store.recorded(CLUSTER) is None
    store.check(CLUSTER, second, 1_000)
    assert store.recorded(CLUSTER)["key"] == key_text(second)  # type: ignore[index]
    store.forget("0000-000000-never")  # nothing recorded: no error


def test_write_is_atomic(store: HostKeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = new_key(), new_key()
    store.check(CLUSTER, first, 1_000)
    before = record_file(store).read_bytes()
    renames: list[tuple[Path, int]] = []
    real_replace = os.replace

    def crash_on_replace(src: str, dst: str) -> None:
        renames.append((Path(src), stat.S_IMODE(os.stat(src).st_mode)))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hostkeys.os, "replace", crash_on_replace)
    with pytest.raises(OSError):
        store.check(CLUSTER, second, 2_000)
    monkeypatch.setattr(hostkeys.os, "replace", real_replace)
    # The new record was complete in a private file of the same folder (a rename there is
    # atomic); after the failure the old record is intact and no temporary file is left.
    [(tmp, mode)] = renames
    assert tmp.parent == store.folder and tmp.name.startswith(".") and mode == 0o600
    assert record_file(store).read_bytes() == before
    assert sorted(p.name for p in store.folder.iterdir()) == [f"{CLUSTER}.json"]


def test_unreadable_records_are_ignored(store: HostKeyStore) -> None:
    store.folder.mkdir(parents=True)
    record_file(store).write_text("{not json")
    assert store.recorded(CLUSTER) is None
    record_file(store).write_text('{"key": 42}')
    assert store.recorded(CLUSTER) is None


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", ".hidden", "x\n", "0123 4"])
def test_bad_names_never_reach_the_file_system(store: HostKeyStore, name: str) -> None:
    with pytest.raises(ValueError):
        store.check(name, new_key(), None)
    with pytest.raises(ValueError):
        store.path(name)
    assert not store.folder.exists()


def test_jump_host_key_may_never_change(store: HostKeyStore) -> None:
    first, second = new_key(), new_key()

    async def connect_with(key: asyncssh.SSHKey) -> None:
        pin = await store.pin("jump-bastion.example.com-22", None, "jump host bastion:22")
        pin.verify(key)
        await pin.save()

    asyncio.run(connect_with(first))
    assert record_file(store, "jump-bastion.example.com-22").exists()
    with pytest.raises(HostKeyChanged, match="of jump host bastion:22 changed \\("):
        asyncio.run(connect_with(second))


def test_pin_writes_only_an_accepted_key(store: HostKeyStore) -> None:
    first, second = new_key(), new_key()

    async def main() -> None:
        pin = await store.pin(CLUSTER, 1_000, "the driver")
        pin.verify(first)
        assert not record_file(store).exists()  # nothing written during key exchange
        await pin.save()
        assert store.recorded(CLUSTER)["key"] == key_text(first)  # type: ignore[index]
        before = record_file(store).read_bytes()

        pin = await store.pin(CLUSTER, 1_000, "the driver")
        with pytest.raises(HostKeyChanged):
            pin.verify(second)
        await pin.save()
        assert record_file(store).read_bytes() == before

    asyncio.run(main())


def test_async_api_does_its_file_work_off_the_event_loop(
    store: HostKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[tuple[str, int]] = []
    real_load, real_save = HostKeyStore._load, HostKeyStore._save

    def load(self: HostKeyStore, name: str) -> object:
        threads.append(("load", threading.get_ident()))
        return real_load(self, name)

    def save(self: HostKeyStore, name: str, text: str, start: int | None) -> None:
        threads.append(("save", threading.get_ident()))
        real_save(self, name, text, start)

    monkeypatch.setattr(HostKeyStore, "_load", load)
    monkeypatch.setattr(HostKeyStore, "_save", save)
    key = new_key()

    async def main() -> int:
        await store.acheck(CLUSTER, key, 1_000)
        assert (await store.arecorded(CLUSTER))["key"] == key_text(key)  # type: ignore[index]
        await store.aforget(CLUSTER)
        assert await store.arecorded(CLUSTER) is None
        pin = await store.pin(CLUSTER, 1_000, "the driver")
        pin.verify(key)
        await pin.save()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert {what for what, _ in threads} == {"load", "save"}
    assert all(thread != loop_thread for _, thread in threads), threads


# --------------------------------------------------------------------------------------------
# A malformed record is a changed key; pins per workspace and cluster (issue 13, finding 8)


@pytest.mark.parametrize("text", ["{not json", '{"key": 42}', "[]", "", '{"key": "ssh-ed25519"}'])
def test_a_malformed_record_is_refused_not_re_pinned(store: HostKeyStore, text: str) -> None:
    store.folder.mkdir(parents=True)
    record_file(store).write_text(text)
    with pytest.raises(HostKeyChanged, match="cannot be read"):
        store.check(CLUSTER, new_key(), 1_000)
    pin = asyncio.run(store.pin(CLUSTER, 1_000, "the driver"))
    with pytest.raises(HostKeyChanged, match="cannot be read"):
        pin.verify(new_key())
    assert record_file(store).read_text() == text  # left for the user to look at
    store.forget(CLUSTER)  # the documented way out
    store.check(CLUSTER, new_key(), 1_000)


def test_pins_are_kept_per_workspace_and_cluster(tmp_path: Path) -> None:
    a = HostKeyStore(tmp_path / "state", workspace="https://adb-1.azuredatabricks.net/")
    b = HostKeyStore(tmp_path / "state", workspace="https://dbc-2.cloud.databricks.com")
    key_a, key_b = new_key(), new_key()
    a.check(CLUSTER, key_a, 1_000)
    b.check(CLUSTER, key_b, 1_000)  # the same id in another workspace: its own first use
    with pytest.raises(HostKeyChanged):
        a.check(CLUSTER, key_b, 1_000)  # b's key is no excuse in a
    assert a.recorded(CLUSTER)["key"] == key_text(key_a)  # type: ignore[index]
    assert a.path(CLUSTER) != b.path(CLUSTER)
    assert a.path(CLUSTER).parent.parent == b.path(CLUSTER).parent.parent == a.folder


def test_an_old_cluster_only_record_moves_to_its_workspace(tmp_path: Path) -> None:
    legacy = HostKeyStore(tmp_path / "state")
    key = new_key()
    legacy.check(CLUSTER, key, 1_000)
    old_file = legacy.path(CLUSTER)
    store = HostKeyStore(tmp_path / "state", workspace="https://adb-1.azuredatabricks.net")
    store.check(CLUSTER, key, 1_000)  # the old pin still holds...
    with pytest.raises(HostKeyChanged):
        store.check(CLUSTER, new_key(), 1_000)  # ...and still refuses a changed key
    assert not old_file.exists() and store.path(CLUSTER).exists()
    other = HostKeyStore(tmp_path / "state", workspace="https://dbc-2.cloud.databricks.com")
    other.check(CLUSTER, new_key(), 1_000)  # claimed by the first workspace that asked


def test_for_profile_reads_the_workspace_of_the_profile(tmp_path: Path) -> None:
    from databrickslabs_jupyterlab.settings import DriverSettings

    cfg = tmp_path / "databrickscfg"
    cfg.write_text("[demo]\nhost = https://adb-1.azuredatabricks.net\ntoken = x\n")
    settings = DriverSettings(state_dir=str(tmp_path / "state"), databricks_config_file=str(cfg))
    store = HostKeyStore.for_profile(settings, "demo")
    assert store.workspace == "adb-1.azuredatabricks.net"
    assert HostKeyStore.for_profile(settings, "absent").workspace is None
