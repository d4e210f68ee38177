"""SSH layer: the config reader and host-key store as units, the client against OpenSSH sshd."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from databrickslabs_jupyterlab import ssh
from databrickslabs_jupyterlab.settings import DriverSettings
from databrickslabs_jupyterlab.ssh import (
    HostKeyChanged,
    HostKeyStore,
    SshAuthFailed,
    SshError,
    SshTarget,
    SshUnreachable,
    build_command,
    resolve_target,
)
from databrickslabs_jupyterlab.ssh.connection import _parse_jump
from tests.fixtures.sshd import Sshd, write_keypair

CLUSTER = "0123-456789-abcdef12"


def settings_for(home: Path, **overrides: object) -> DriverSettings:
    values: dict[str, object] = {
        "ssh_config_file": str(home / ".ssh" / "config"),
        "state_dir": str(home / ".databrickslabs_jupyterlab"),
    }
    values.update(overrides)
    return DriverSettings(**values)  # type: ignore[arg-type]


def write_config(home: Path, text: str) -> None:
    (home / ".ssh" / "config").write_text(text)


# --------------------------------------------------------------------------------------------
# resolve_target and the config reader (units)


def test_defaults_without_config(isolated_home: Path) -> None:
    target = resolve_target(CLUSTER, "ec2-1-2-3-4.example.com", "demo", settings_for(isolated_home))
    assert target == SshTarget(
        cluster_id=CLUSTER,
        host="ec2-1-2-3-4.example.com",
        port=2200,
        user="ubuntu",
        identity_file=str(isolated_home / ".ssh" / "id_demo"),
    )


def test_host_entry_wins_over_defaults(isolated_home: Path) -> None:
    write_config(
        isolated_home,
        f"""# my config
Host other
    HostName other.example.com
    Port 1111

Host {CLUSTER}
    HostName 10.0.0.7
    Port 2222
    User alice
    IdentityFile ~/.ssh/cluster_key
""",
    )
    target = resolve_target(CLUSTER, "public.example.com", "demo", settings_for(isolated_home))
    assert (target.host, target.port, target.user) == ("10.0.0.7", 2222, "alice")
    assert target.identity_file == str(isolated_home / ".ssh" / "cluster_key")
    assert target.proxy_command is None and target.proxy_jump is None


def test_reader_survives_include_globals_garbage_and_multi_patterns(isolated_home: Path) -> None:
    ssh_dir = isolated_home / ".ssh"
    (ssh_dir / "conf.d").mkdir()
    (ssh_dir / "conf.d" / "10-clusters").write_text(
        f"host=bastion {CLUSTER}\n  hostname=tunnel.example.com\n  PORT = 2022\n"
    )
    write_config(
        isolated_home,
        f"""Include conf.d/*
Include /nonexistent/file
User global-user
IdentityFile ~/.ssh/id_global
ServerAliveInterval 30
this-line-is-garbage
=== also garbage ===

Host *
    User star-user
    Port 9999

Host !{CLUSTER} *.example.com
    User negated

Host {CLUSTER} # the driver
    User second-entry-user
    Port 1234
    IdentityFile "~/.ssh/my key"

Host {CLUSTER}
    User ignored-later
""",
    )
    target = resolve_target(CLUSTER, None, "demo", settings_for(isolated_home))
    assert target.host == "tunnel.example.com"
    assert target.port == 2022  # first obtained value wins (from the included file)
    assert target.user == "second-entry-user"  # global and `Host *` options are not used
    assert target.identity_file == str(ssh_dir / "my key")


def test_include_inside_non_matching_block_is_not_followed(isolated_home: Path) -> None:
    ssh_dir = isolated_home / ".ssh"
    (ssh_dir / "other").write_text(f"Host {CLUSTER}\n  HostName wrong.example.com\n")
    write_config(isolated_home, "Host somewhere-else\n  Include other\n")
    target = resolve_target(CLUSTER, "right.example.com", "demo", settings_for(isolated_home))
    assert target.host == "right.example.com"


def test_match_blocks_are_skipped_and_wildcards_match(isolated_home: Path) -> None:
    write_config(
        isolated_home,
        f"""Match host {CLUSTER}
    HostName from-match.example.com
Host 0123-*
    ProxyCommand nc %h %p
    ProxyJump never-used
""",
    )
    target = resolve_target(CLUSTER, None, "demo", settings_for(isolated_home))
    assert target.proxy_command == "nc %h %p"
    assert target.proxy_jump is None  # ProxyCommand came first and excludes ProxyJump
    assert target.host == CLUSTER  # no HostName and no DNS: the proxy is given the alias


def test_no_host_at_all_is_an_error(isolated_home: Path) -> None:
    with pytest.raises(SshError, match="no public DNS name"):
        resolve_target(CLUSTER, None, "demo", settings_for(isolated_home))


def test_bad_port_and_bad_cluster_id_are_errors(isolated_home: Path) -> None:
    write_config(isolated_home, f"Host {CLUSTER}\n  Port twenty\n")
    with pytest.raises(SshError, match="is not a TCP port"):
        resolve_target(CLUSTER, "h", "demo", settings_for(isolated_home))
    with pytest.raises(SshError, match="not a valid cluster id"):
        resolve_target("../etc/passwd", "h", "demo", settings_for(isolated_home))


def test_identity_setting_is_default_and_config_still_wins(isolated_home: Path) -> None:
    settings = settings_for(isolated_home, identity_file="~/keys/explicit")
    target = resolve_target(CLUSTER, "h", "demo", settings)
    assert target.identity_file == str(isolated_home / "keys" / "explicit")
    write_config(isolated_home, f"Host {CLUSTER}\n  IdentityFile %d/.ssh/id_%h\n")
    target = resolve_target(CLUSTER, "h", "demo", settings)
    assert target.identity_file == str(isolated_home / ".ssh" / "id_h")


def test_cluster_identity_file_follows_the_host_entry(isolated_home: Path) -> None:
    settings = settings_for(isolated_home)
    assert ssh.cluster_identity_file(CLUSTER, "demo", settings) == isolated_home / ".ssh/id_demo"
    write_config(isolated_home, f"Host {CLUSTER}\n  HostName 10.1.2.3\n  IdentityFile ~/k/%n\n")
    expected = isolated_home / "k" / CLUSTER
    assert ssh.cluster_identity_file(CLUSTER, "demo", settings) == expected
    assert resolve_target(CLUSTER, None, "demo", settings).identity_file == str(expected)


# --------------------------------------------------------------------------------------------
# Command lines (units)


def test_build_command_quotes_every_word() -> None:
    argv = ["printf", "%s\n", "a b", "it's", "; rm -rf /", "$(id)", "`id`"]
    command = build_command(argv)
    assert command == ("printf '%s\n' 'a b' 'it'\"'\"'s' '; rm -rf /' '$(id)' '`id`'")


def test_build_command_env_and_sudo_order() -> None:
    command = build_command(["python", "-m", "x"], sudo=True, env={"A_1": "x y", "B": "$HOME"})
    assert command == "sudo -n -- env 'A_1=x y' 'B=$HOME' python -m x"


@pytest.mark.parametrize("name", ["1A", "A-B", "A B", "", "A=B", "X;id"])
def test_build_command_rejects_bad_env_names(name: str) -> None:
    with pytest.raises(ValueError):
        build_command(["true"], env={name: "v"})


def test_build_command_rejects_empty_and_string_argv() -> None:
    with pytest.raises(ValueError):
        build_command([])
    with pytest.raises(ValueError):
        build_command("echo hi")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# ProxyJump specs (units; the host-key store has its own tests in test_hostkeys.py)


def test_parse_jump_forms(isolated_home: Path) -> None:
    settings = settings_for(isolated_home)
    hop = _parse_jump("alice@bastion.example.com:2022", settings, "/k")
    assert (hop.user, hop.host, hop.port, hop.identity_file) == (
        "alice",
        "bastion.example.com",
        2022,
        "/k",
    )
    hop = _parse_jump("ssh://bob@[::1]:23", settings, "/k")
    assert (hop.user, hop.host, hop.port) == ("bob", "::1", 23)
    write_config(isolated_home, "Host jb\n  HostName 10.1.1.1\n  User carol\n  Port 2\n")
    hop = _parse_jump("jb", settings, "/k")
    assert (hop.user, hop.host, hop.port) == ("carol", "10.1.1.1", 2)
    with pytest.raises(SshError):
        _parse_jump("x@h:notaport", settings, "/k")
    with pytest.raises(SshError):
        _parse_jump("@h", settings, "/k")
    write_config(isolated_home, "Host jb\n  IdentityFile ~/keys/%h-%r\n  User dave\n")
    hop = _parse_jump("jb", settings, "/k")
    assert hop.identity_file == str(isolated_home / "keys" / "jb-dave")


# --------------------------------------------------------------------------------------------
# Against OpenSSH sshd


def sshd_settings(home: Path, sshd: Sshd, **overrides: object) -> DriverSettings:
    values: dict[str, object] = {
        "ssh_port": sshd.port,
        "ssh_user": sshd.user,
        "identity_file": sshd.identity_file,
        "sudo": "never",
        "connect_timeout": 5.0,
    }
    values.update(overrides)
    return settings_for(home, **values)


def sshd_target(home: Path, sshd: Sshd, **overrides: object) -> tuple[SshTarget, DriverSettings]:
    settings = sshd_settings(home, sshd, **overrides)
    return resolve_target(CLUSTER, "127.0.0.1", "demo", settings), settings


async def _session(
    target: SshTarget,
    settings: DriverSettings,
    body: Callable[[asyncssh.SSHClientConnection], Awaitable[Any]],
    driver_start: int | None = None,
) -> Any:
    store = HostKeyStore(settings.state_path)
    conn = await ssh.connect(target, settings, host_keys=store, driver_start=driver_start)
    try:
        return await body(conn)
    finally:
        conn.close()
        await conn.wait_closed()


def test_run_quoting_stdin_env_and_status(isolated_home: Path, sshd: Sshd) -> None:
    target, settings = sshd_target(isolated_home, sshd)
    nasty = ["a b", "it's", 'say "hi"', "; echo injected", "$(echo injected)", "`id`", "*", ""]

    async def body(conn: asyncssh.SSHClientConnection) -> object:
        printed = await ssh.run(conn, ["printf", "[%s]\\n", *nasty])
        assert printed.exit_status == 0
        assert printed.stdout.splitlines() == [f"[{word}]" for word in nasty]

        echoed = await ssh.run(conn, ["cat"], input="secret line\nsecond\n")
        assert echoed.stdout == "secret line\nsecond\n"
        binary = await ssh.run(conn, ["od", "-An", "-tx1"], input=b"\x00\xff")
        assert binary.stdout.split() == ["00", "ff"]

        env = await ssh.run(
            conn,
            ["sh", "-c", 'printf "%s|%s" "$GREETING" "$OTHER"'],
            env={"GREETING": "a b;c", "OTHER": "$(x)"},
        )
        assert env.stdout == "a b;c|$(x)"

        failed = await ssh.run(conn, ["sh", "-c", "echo oops >&2; exit 3"])
        assert (failed.exit_status, failed.stderr) == (3, "oops\n")

        lines: list[str] = []
        streamed = await ssh.stream(
            conn,
            ["sh", "-c", "echo one; echo two >&2; echo three"],
            on_line=lines.append,
            timeout=10,
        )
        assert sorted(lines) == ["one", "three", "two"]
        assert streamed.stdout == "one\nthree\n" and streamed.exit_status == 0

    asyncio.run(_session(target, settings, body))


def test_run_timeout_closes_channel(isolated_home: Path, sshd: Sshd) -> None:
    target, settings = sshd_target(isolated_home, sshd)

    async def body(conn: asyncssh.SSHClientConnection) -> object:
        started = time.monotonic()
        with pytest.raises(SshError, match="did not finish within 0.5 s"):
            await ssh.run(conn, ["sleep", "30"], timeout=0.5)
        assert time.monotonic() - started < 3
        # The connection is still usable afterwards.
        assert (await ssh.run(conn, ["echo", "ok"])).stdout == "ok\n"
        conn.close()
        await conn.wait_closed()
        with pytest.raises(SshUnreachable, match="SSH connection failed"):
            await ssh.run(conn, ["echo", "too late"])

    asyncio.run(_session(target, settings, body))


def test_sudo_prefix_reaches_remote_sudo(isolated_home: Path, sshd: Sshd) -> None:
    target, settings = sshd_target(isolated_home, sshd)

    async def body(conn: asyncssh.SSHClientConnection) -> object:
        result = await ssh.run(
            conn, ["sh", "-c", 'echo "$X"'], sudo=True, env={"X": "through sudo"}
        )
        assert result.stdout == "through sudo\n", result.stderr
        assert sshd.sudo_log.read_text().splitlines() == [
            '-n -- env X=through sudo sh -c echo "$X"'
        ]

    asyncio.run(_session(target, settings, body))


def test_forward_local_round_trip(isolated_home: Path, sshd: Sshd) -> None:
    target, settings = sshd_target(isolated_home, sshd)

    async def body(conn: asyncssh.SSHClientConnection) -> object:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.readline()
            writer.write(b"echo:" + data)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        remote_port = server.sockets[0].getsockname()[1]
        listener = await ssh.forward_local(conn, remote_port)
        try:
            local_port = listener.get_port()
            assert local_port != remote_port
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
            writer.write(b"hello through ssh\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.readline(), 5) == b"echo:hello through ssh\n"
            writer.close()
        finally:
            listener.close()
            server.close()

    asyncio.run(_session(target, settings, body))


def test_upload_writes_private_file(isolated_home: Path, sshd: Sshd, tmp_path: Path) -> None:
    target, settings = sshd_target(isolated_home, sshd)
    remote = tmp_path / "remote dir" / "conn file.json"
    remote.parent.mkdir()

    async def body(conn: asyncssh.SSHClientConnection) -> object:
        await ssh.upload(conn, b'{"key": "s3cr3t"}', str(remote))
        local = tmp_path / "local.txt"
        local.write_text("from a file")
        await ssh.upload(conn, local, str(remote.with_suffix(".txt")), mode=0o640)
        with pytest.raises(ValueError):
            await ssh.upload(conn, b"x", "relative/path")

    asyncio.run(_session(target, settings, body))
    assert remote.read_bytes() == b'{"key": "s3cr3t"}'
    assert stat.S_IMODE(remote.stat().st_mode) == 0o600
    assert remote.with_suffix(".txt").read_text() == "from a file"
    assert stat.S_IMODE(remote.with_suffix(".txt").stat().st_mode) == 0o640


def test_host_key_first_use_same_and_changed(isolated_home: Path, sshd: Sshd) -> None:
    target, settings = sshd_target(isolated_home, sshd)
    store = HostKeyStore(settings.state_path)

    async def connect_once(driver_start: int | None) -> None:
        conn = await ssh.connect(target, settings, host_keys=store, driver_start=driver_start)
        conn.close()
        await conn.wait_closed()

    asyncio.run(connect_once(1_000))
    assert store.recorded(CLUSTER)["key"] == " ".join(sshd.host_public_key.split()[:2])  # type: ignore[index]
    asyncio.run(connect_once(1_000))  # same key again

    sshd.restart_with_new_host_key()
    for start in (None, 1_000):
        with pytest.raises(HostKeyChanged, match="changed although the driver was not restarted"):
            asyncio.run(connect_once(start))
    # The refusal happens during key exchange: no login took place.
    assert "Accepted publickey" not in sshd.log().split("Server listening")[-1]

    asyncio.run(connect_once(2_000))  # the workspace reports a newer driver: accepted
    assert store.recorded(CLUSTER)["key"] == " ".join(sshd.host_public_key.split()[:2])  # type: ignore[index]
    assert store.recorded(CLUSTER)["driver_start"] == 2_000  # type: ignore[index]


def test_check_reachable(isolated_home: Path, sshd: Sshd) -> None:
    target, settings = sshd_target(isolated_home, sshd)
    store = HostKeyStore(settings.state_path)
    assert asyncio.run(ssh.check_reachable(target, settings, host_keys=store)) is None
    sshd.stop()
    message = asyncio.run(ssh.check_reachable(target, settings, host_keys=store))
    assert message is not None and f"127.0.0.1:{sshd.port}" in message


def test_unreachable_port_fails_fast(isolated_home: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        key = isolated_home / ".ssh" / "id_demo"
        write_keypair(key)
        settings = settings_for(isolated_home, ssh_port=port)
        target = resolve_target(CLUSTER, "127.0.0.1", "demo", settings)
        started = time.monotonic()
        with pytest.raises(SshUnreachable, match="Cannot reach the driver of cluster"):
            asyncio.run(ssh.connect(target, settings, host_keys=HostKeyStore(settings.state_path)))
        assert time.monotonic() - started < 2


def test_unknown_host_name_is_unreachable(isolated_home: Path) -> None:
    write_keypair(isolated_home / ".ssh" / "id_demo")
    settings = settings_for(isolated_home)
    target = resolve_target(CLUSTER, "no-such-host.invalid", "demo", settings)
    with pytest.raises(SshUnreachable):
        asyncio.run(ssh.connect(target, settings, host_keys=HostKeyStore(settings.state_path)))


def test_wrong_key_is_auth_failure(isolated_home: Path, sshd: Sshd) -> None:
    other = isolated_home / ".ssh" / "id_other"
    write_keypair(other)
    target, settings = sshd_target(isolated_home, sshd, identity_file=str(other))
    with pytest.raises(SshAuthFailed, match="refused the SSH login"):
        asyncio.run(ssh.connect(target, settings, host_keys=HostKeyStore(settings.state_path)))
    garbage = isolated_home / ".ssh" / "id_garbage"
    garbage.write_text("not a key")
    target, settings = sshd_target(isolated_home, sshd, identity_file=str(garbage))
    with pytest.raises(SshAuthFailed, match="could not be read"):
        asyncio.run(ssh.connect(target, settings, host_keys=HostKeyStore(settings.state_path)))
    locked = isolated_home / ".ssh" / "id_locked"
    locked.write_bytes(
        asyncssh.generate_private_key("ssh-ed25519").export_private_key(
            "pkcs8-pem", passphrase="pw"
        )
    )
    target, settings = sshd_target(isolated_home, sshd, identity_file=str(locked))
    with pytest.raises(SshAuthFailed, match="protected by a passphrase"):
        asyncio.run(ssh.connect(target, settings, host_keys=HostKeyStore(settings.state_path)))
    missing = isolated_home / ".ssh" / "id_missing"
    target, settings = sshd_target(isolated_home, sshd, identity_file=str(missing))
    with pytest.raises(SshAuthFailed, match="does not exist"):
        asyncio.run(ssh.connect(target, settings, host_keys=HostKeyStore(settings.state_path)))


def test_silent_server_times_out(isolated_home: Path) -> None:
    write_keypair(isolated_home / ".ssh" / "id_demo")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # and never say a word
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        settings = settings_for(
            isolated_home, ssh_port=listener.getsockname()[1], connect_timeout=1.0
        )
        target = resolve_target(CLUSTER, "127.0.0.1", "demo", settings)
        started = time.monotonic()
        with pytest.raises(SshUnreachable, match="within 1 s"):
            asyncio.run(ssh.connect(target, settings, host_keys=HostKeyStore(settings.state_path)))
        assert time.monotonic() - started < 3
        assert accepted, "the client never reached the silent server"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


RELAY = """\
import socket, sys, threading, json
with open(sys.argv[1], "w") as f:
    json.dump(sys.argv[2:], f)
sock = socket.create_connection((sys.argv[2], int(sys.argv[3])))
def pump():
    while True:
        data = sock.recv(65536)
        if not data:
            break
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
threading.Thread(target=pump, daemon=True).start()
while True:
    data = sys.stdin.buffer.read1(65536)
    if not data:
        break
    sock.sendall(data)
"""


def test_proxy_command_with_tokens(isolated_home: Path, sshd: Sshd, tmp_path: Path) -> None:
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    seen = tmp_path / "seen.json"
    write_config(
        isolated_home,
        f"Host {CLUSTER}\n"
        f"  HostName 127.0.0.1\n"
        f"  ProxyCommand {sys.executable} {relay} {seen} %h %p %r %%\n",
    )
    target, settings = sshd_target(isolated_home, sshd)
    assert target.proxy_command is not None

    async def body(conn: asyncssh.SSHClientConnection) -> object:
        return (await ssh.run(conn, ["echo", "via proxy"])).stdout

    assert asyncio.run(_session(target, settings, body)) == "via proxy\n"
    assert json.loads(seen.read_text()) == ["127.0.0.1", str(sshd.port), sshd.user, "%"]


def test_proxy_jump_through_sshd(isolated_home: Path, sshd: Sshd) -> None:
    write_config(
        isolated_home,
        f"Host {CLUSTER}\n  HostName 127.0.0.1\n  ProxyJump {sshd.user}@127.0.0.1:{sshd.port}\n",
    )
    target, settings = sshd_target(isolated_home, sshd)
    assert target.proxy_jump == f"{sshd.user}@127.0.0.1:{sshd.port}"

    async def body(conn: asyncssh.SSHClientConnection) -> object:
        return (await ssh.run(conn, ["sh", "-c", "echo $SSH_CLIENT"])).stdout

    # Through the jump, the final login comes from the jump host's sshd (still 127.0.0.1).
    assert asyncio.run(_session(target, settings, body)).startswith("127.0.0.1 ")
    known = Path(settings.state_path) / "known_hosts"
    assert sorted(p.name for p in known.iterdir()) == sorted(
        [f"{CLUSTER}.json", f"jump-127.0.0.1-{sshd.port}.json"]
    )
    assert sshd.log().count("Accepted publickey") == 2


def test_settings_dir_perms_after_connect(isolated_home: Path, sshd: Sshd) -> None:
    target, settings = sshd_target(isolated_home, sshd)

    async def body(conn: asyncssh.SSHClientConnection) -> object:
        return None

    asyncio.run(_session(target, settings, body))
    folder = settings.state_path / "known_hosts"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keepalive_notices_a_silent_link(isolated_home: Path, sshd: Sshd) -> None:
    """A link that stops carrying packets (no FIN, no RST) must end the connection within
    keepalive_interval * (keepalive_count_max + 1), not hours later."""

    async def main() -> float:
        blackhole = asyncio.Event()

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                if not blackhole.is_set():
                    writer.write(data)
                    await writer.drain()

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", sshd.port)
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = sshd_settings(
            isolated_home, sshd, ssh_port=port, keepalive_interval=0.5, keepalive_count_max=2
        )
        target = resolve_target(CLUSTER, "127.0.0.1", "demo", settings)
        conn = await ssh.connect(target, settings, host_keys=HostKeyStore(settings.state_path))
        assert (await ssh.run(conn, ["echo", "up"])).stdout == "up\n"
        blackhole.set()
        started = time.monotonic()
        await asyncio.wait_for(conn.wait_closed(), 10)
        elapsed = time.monotonic() - started
        server.close()
        return elapsed

    assert asyncio.run(main()) < 5


def test_connect_reads_and_writes_host_keys_off_the_event_loop(
    isolated_home: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncssh judges the host key inside a synchronous callback on the loop; the record must
    have been read before and be written after, in a worker thread."""
    calls: list[tuple[str, str, int]] = []
    real_load, real_save = HostKeyStore._load, HostKeyStore._save

    def load(self: HostKeyStore, name: str) -> object:
        calls.append(("load", name, threading.get_ident()))
        return real_load(self, name)

    def save(self: HostKeyStore, name: str, text: str, start: int | None) -> None:
        calls.append(("save", name, threading.get_ident()))
        real_save(self, name, text, start)

    monkeypatch.setattr(HostKeyStore, "_load", load)
    monkeypatch.setattr(HostKeyStore, "_save", save)
    write_config(
        isolated_home,
        f"Host {CLUSTER}\n  HostName 127.0.0.1\n  ProxyJump {sshd.user}@127.0.0.1:{sshd.port}\n",
    )
    target, settings = sshd_target(isolated_home, sshd)

    async def body(conn: asyncssh.SSHClientConnection) -> int:
        assert (await ssh.run(conn, ["echo", "in"])).stdout == "in\n"
        return threading.get_ident()

    loop_thread = asyncio.run(_session(target, settings, body, driver_start=1_000))
    jump = f"jump-127.0.0.1-{sshd.port}"
    assert [(what, name) for what, name, _ in calls] == [
        ("load", jump),
        ("save", jump),
        ("load", CLUSTER),
        ("save", CLUSTER),
    ]
    assert all(thread != loop_thread for _, _, thread in calls), calls
    calls.clear()
    loop_thread = asyncio.run(_session(target, settings, body, driver_start=1_000))
    assert [what for what, _, _ in calls] == ["load", "load"]  # known keys: nothing written
    assert all(thread != loop_thread for _, _, thread in calls), calls


def test_unwritable_host_key_folder_is_an_ssh_error(isolated_home: Path, sshd: Sshd) -> None:
    target, settings = sshd_target(isolated_home, sshd)
    settings.state_path.mkdir(parents=True, exist_ok=True)
    (settings.state_path / "known_hosts").write_text("a file where the folder should be")
    with pytest.raises(SshError, match="could not be recorded in"):
        asyncio.run(ssh.connect(target, settings, host_keys=HostKeyStore(settings.state_path)))
    # Nothing was trusted: the next attempt with a usable folder is a first use again.
    (settings.state_path / "known_hosts").unlink()

    async def login(conn: asyncssh.SSHClientConnection) -> int:
        return (await ssh.run(conn, ["true"])).exit_status

    assert asyncio.run(_session(target, settings, login)) == 0
    assert HostKeyStore(settings.state_path).recorded(CLUSTER) is not None
