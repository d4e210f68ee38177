"""Security findings of issue 13 that have no better home: each test fails without its fix."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from databrickslabs_jupyterlab import debuglog, kernelstate, vocabulary
from databrickslabs_jupyterlab.ssh.connection import SshError, SshTarget, _proxy_argv
from databrickslabs_jupyterlab.sshconfigfile import SshConfigError, locked, remove_host, update_host
from databrickslabs_jupyterlab.workspace import ClusterInfo, NoSuchCluster, WorkspaceError
from tests.test_clusters import make, until

# --------------------------------------------------------------------------------------------
# 4. Values written into ~/.ssh/config and expanded into ProxyCommand

INJECTIONS = [
    "ec2-1-2-3-4.example.com\n    ProxyCommand sh -c 'touch /tmp/pwned'",
    "ec2-1-2-3-4.example.com\r\nProxyCommand x",
    'ec2.example.com" ProxyCommand "x',
    "ec2.example.com\0",
    "$(touch /tmp/pwned).example.com",
    "a;b",
    "host name",
    "-oProxyCommand=x",
    "",
]


@pytest.mark.parametrize("dns", INJECTIONS)
def test_public_dns_that_is_not_a_hostname_is_dropped(dns: str) -> None:
    info = ClusterInfo.from_dict({"cluster_id": "c1", "driver": {"public_dns": dns}})
    assert info.public_dns is None


@pytest.mark.parametrize(
    "dns", ["ec2-3-1-2-3.compute-1.amazonaws.com", "10.0.0.12", "fe80::1", "localhost", "a.b"]
)
def test_real_hostnames_are_kept(dns: str) -> None:
    assert vocabulary.is_hostname(dns)
    assert ClusterInfo.from_dict({"driver": {"public_dns": dns}}).public_dns == dns


@pytest.mark.parametrize("bad", ["x\nProxyCommand y", "x\ry", 'x"y', "x\0y"])
def test_ssh_config_writer_refuses_line_breaks_quotes_and_nul(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "config"
    path.write_text("Host other\n    User me\n")
    with pytest.raises(SshConfigError):
        update_host(path, "0101-abc", {"HostName": bad}, backup_dir=tmp_path / "b")
    with pytest.raises(SshConfigError):
        update_host(path, "0101-abc", {bad.split("\n")[0] + "\n": "x"}, backup_dir=tmp_path / "b")
    with pytest.raises(SshConfigError):
        update_host(path, bad, {"HostName": "h.example.com"}, backup_dir=tmp_path / "b")
    assert path.read_text() == "Host other\n    User me\n"
    assert not (tmp_path / "b").exists()


def _target(**kw: str) -> SshTarget:
    base = dict(cluster_id="0101-abc", host="h.example.com", port=22, user="ubuntu")
    return SshTarget(**{**base, **kw}, identity_file="/k", proxy_command="nc %h %p")


@pytest.mark.parametrize(
    "field, value",
    [
        ("host", "h.example.com; touch /tmp/pwned"),
        ("host", "$(id)"),
        ("host", "h\nx"),
        ("user", "u; id"),
        ("cluster_id", "c1\n"),
    ],
)
def test_proxy_command_tokens_are_validated_before_the_shell(field: str, value: str) -> None:
    assert _proxy_argv(_target())[-1] == "exec nc h.example.com 22"
    with pytest.raises(SshError, match="ProxyCommand"):
        _proxy_argv(_target(**{field: value}))


# --------------------------------------------------------------------------------------------
# 10. ~/.ssh/config: a symlink stays one, two editors take turns


def test_symlinked_ssh_config_stays_a_symlink(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "ssh_config"
    real.write_text("Host other\n    User me\n")
    link = tmp_path / "config"
    link.symlink_to(real)
    change = update_host(link, "0101-abc", {"HostName": "h.example.com"}, backup_dir=tmp_path / "b")
    assert change.changed and change.backup is not None
    assert link.is_symlink() and link.resolve() == real
    assert "Host 0101-abc\n    HostName h.example.com\n" in real.read_text()
    assert change.backup.read_text() == "Host other\n    User me\n"
    remove_host(link, "0101-abc", backup_dir=tmp_path / "b")
    assert link.is_symlink() and real.read_text().strip() == "Host other\n    User me"
    # a dangling link gets its target created
    (tmp_path / "new").symlink_to(dotfiles / "fresh")
    update_host(tmp_path / "new", "c1", {"HostName": "h.example.com"}, backup_dir=tmp_path / "b")
    assert (tmp_path / "new").is_symlink() and "Host c1" in (dotfiles / "fresh").read_text()


def test_an_edit_waits_for_the_lock_of_another_editor(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host other\n    User me\n")
    done = threading.Event()

    def edit() -> None:
        update_host(path, "c1", {"HostName": "h.example.com"}, backup_dir=tmp_path / "b")
        done.set()

    with locked(path):
        worker = threading.Thread(target=edit)
        worker.start()
        assert not done.wait(0.5)  # blocked while another run holds the lock
        assert "c1" not in path.read_text()
    assert done.wait(30)
    worker.join()
    assert "Host c1" in path.read_text()


# --------------------------------------------------------------------------------------------
# 7. Debug-log masking: the secret part is absent, the rest of the line stays readable

MASKED = [
    ("GET https://s3cr3t@host.example/x -> 200", "host.example/x"),
    ("GET https://user:s3cr3t@host.example/x -> 200", "host.example/x"),
    ('{"password": "correct s3cr3t horse"}', "password"),
    ("password=correct s3cr3t horse", "password"),
    ("password: 's3cr3t with spaces'", "password"),
    ("x-api-key: s3cr3t", "x-api-key"),
    ("X-API-Key=s3cr3t", "X-API-Key"),
    ("GET /v1?apikey=s3cr3t&page=2", "page=2"),
    ("GET /v1?api-key=s3cr3t&page=2", "page=2"),
    ("api_key = s3cr3t", "api_key"),
    ("connect pwd=s3cr3t host=h", "connect"),
    (
        "POST /oidc/v1/token grant_type=authorization_code&code=s3cr3t&code_verifier=s3cr3t2",
        "grant_type",
    ),
    ("GET /callback?code=s3cr3t&state=abc", "state=abc"),
    ('{"code_verifier": "s3cr3t"}', "code_verifier"),
    ("next=%2Fhome%3Ftoken%3Ds3cr3t%26page%3D2", "next="),
    ("next=%2Fhome%3fpassword%3ds3cr3t", "next="),
    ("items [('token', 's3cr3t'), ('host', 'h')]", "('host', 'h')"),
    ('items [("client_secret", "s3cr3t value")]', "client_secret"),
    ("metadata_service_url=http://localhost:8080/s3cr3t", "metadata_service_url"),
    ('{"metadata_service_url": "http://127.0.0.1/s3cr3t"}', "metadata_service_url"),
    ("Authorization: Bearer s3cr3t-token-value", "Authorization"),
]


@pytest.mark.parametrize("line, kept", MASKED)
def test_debug_log_masks_the_secret_part(line: str, kept: str) -> None:
    masked = debuglog.redact(line)
    assert "s3cr3t" not in masked, masked
    assert kept in masked, masked


@pytest.mark.parametrize("name", ["x-api-key", "apikey", "api-key", "pwd", "metadata_service_url"])
def test_secret_names_cover_api_keys_and_the_metadata_service(name: str) -> None:
    assert debuglog.secret_name(name)


def test_harmless_lines_stay_as_they_are() -> None:
    for line in (
        "error_code: RESOURCE_DOES_NOT_EXIST",
        "GET https://host/api/2.1/clusters/get",
        "pip exited with code=1",
    ):
        assert debuglog.redact(line) == line


# --------------------------------------------------------------------------------------------
# 3. Watched clusters are bounded; unknown ids cost at most one upstream read per interval


def test_watched_clusters_are_capped_and_error_entries_go_first(tmp_path: Path) -> None:
    async def main() -> None:
        registry, workspace, _, _ = make(tmp_path, state="RUNNING", max_clusters=3)
        for cid in ("c1", "c2"):
            await registry.connection("demo", cid)
        workspace.fail = WorkspaceError(
            "Forbidden.", status=403, code="workspace_permission_denied"
        )
        errored = await registry.connection("demo", "e1")
        assert errored.state == "error" and errored.info is None
        workspace.fail = None
        await registry.connection("demo", "c3")  # full: the error-only entry makes room
        assert registry.get("demo", "e1") is None
        assert sorted(c.cluster_id for c in registry.connections()) == ["c1", "c2", "c3"]
        for cid in ("c2", "c3"):
            registry.board.set(f"k-{cid}", "demo", cid, "running")
        await registry.connection("demo", "c4")  # full again: the one without kernels goes
        assert sorted(c.cluster_id for c in registry.connections()) == ["c2", "c3", "c4"]
        registry.board.set("k-c4", "demo", "c4", "running")
        with pytest.raises(WorkspaceError) as caught:  # all in use: a clear refusal
            await registry.connection("demo", "c5")
        assert caught.value.status == 429 and caught.value.code == "too_many_clusters"
        assert len(list(registry.connections())) == 3
        await registry.stop()

    asyncio.run(main())


def test_idle_entries_are_evicted_unless_kernels_use_them(tmp_path: Path) -> None:
    async def main() -> None:
        registry, _, _, _ = make(tmp_path, state="RUNNING", idle_evict=0.2, idle_pause=0.1)
        await registry.connection("demo", "idle")
        busy = await registry.connection("demo", "busy")
        registry.board.set("k1", "demo", "busy", "running")
        await until(lambda: registry.get("demo", "idle") is None, timeout=10)
        assert registry.get("demo", "busy") is busy
        await registry.stop()

    asyncio.run(main())


def test_unknown_ids_cost_one_upstream_read_per_interval(tmp_path: Path) -> None:
    async def main() -> None:
        registry, workspace, _, _ = make(tmp_path, state="RUNNING", unknown_read_interval=30.0)
        for _ in range(50):
            with pytest.raises(NoSuchCluster):
                await registry.connection("demo", "missing")
        assert workspace.calls.count("get") == 1
        workspace.fail = WorkspaceError(
            "Forbidden.", status=403, code="workspace_permission_denied"
        )
        conn = await registry.connection("demo", "denied")
        before = len(workspace.calls)
        for _ in range(50):
            await registry.connection("demo", "denied")
        await asyncio.sleep(0.3)  # thirty refresh intervals of a known cluster
        assert len(workspace.calls) - before <= 1 and conn.state == "error"
        await registry.stop()

    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# 9. The kernel board forgets dead kernels


def test_dead_kernels_leave_the_board_after_their_time(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(kernelstate.time, "monotonic", lambda: now[0])
    board = kernelstate.KernelBoard(dead_ttl=60.0, max_dead=3)
    board.set("alive", "demo", "c1", "running")
    board.set("k0", "demo", "c1", "dead", "exited")
    assert {r.kernel_id for r in board.for_cluster("demo", "c1")} == {"alive", "k0"}
    now[0] += 61
    assert [r.kernel_id for r in board.for_cluster("demo", "c1")] == ["alive"]
    assert board.get("k0") is None
    for i in range(1, 10):  # many kernels die within the time: only the newest few are kept
        board.set(f"k{i}", "demo", "c1", "dead")
    assert board.count() == 1 + 3
    assert {r.kernel_id for r in board.for_cluster("demo", "c1")} == {"alive", "k7", "k8", "k9"}
    now[0] += 3600
    assert board.get("alive") is not None  # a live kernel stays however old


def test_simulator_write_profile_backs_up_the_users_files(tmp_path: Path) -> None:
    from databrickslabs_jupyterlab.simulator.__main__ import write_profile, write_ssh_config

    backups = tmp_path / "backups"
    cfg = tmp_path / "databrickscfg"
    cfg.write_text("[work]\nhost = https://adb-1.azuredatabricks.net\ntoken = mine\n")
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "ssh_config").write_text("Host work\n    User me\n")
    ssh_config = tmp_path / "config"
    ssh_config.symlink_to(dotfiles / "ssh_config")

    write_profile(cfg, "demo", "[demo]\nhost = http://127.0.0.1:1\ntoken = t\n", backup_dir=backups)
    write_ssh_config(ssh_config, "Host 0101-abc\n    HostName 127.0.0.1\n", backup_dir=backups)

    assert "[work]" in cfg.read_text() and "[demo]" in cfg.read_text()
    assert ssh_config.is_symlink() and "Host work" in (dotfiles / "ssh_config").read_text()
    saved = {p.read_text() for p in backups.iterdir()}
    assert saved == {
        "[work]\nhost = https://adb-1.azuredatabricks.net\ntoken = mine\n",
        "Host work\n    User me\n",
    }
    assert all(p.stat().st_mode & 0o077 == 0 for p in backups.iterdir())


@pytest.mark.parametrize(
    "run_dir",
    ["/home/ubuntu", "/", "/tmp/../home/dbjl-kernel-x", "/tmp\r/dbjl-kernel-x", "dbjl-kernel-x"],
)
def test_every_remote_cleanup_checks_the_run_folder_first(run_dir: str) -> None:
    """The stale-kernel cleanup (remove_process) refuses a folder that is not a kernel run
    folder before it signals or removes anything (conn=None: any remote call would fail
    differently)."""
    from databrickslabs_jupyterlab import ssh

    assert not ssh.is_run_dir(run_dir)
    with pytest.raises(ValueError, match="not a kernel run folder"):
        asyncio.run(ssh.remove_process(None, 1234, run_dir))  # type: ignore[arg-type]
    assert ssh.is_run_dir("/tmp/dbjl-kernel-a1_b2")
