"""The ssh config module: the editor keeps everything it does not own and backs the file up
first; the reader (shared with the editor) resolves options the way OpenSSH's `ssh -G` does."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from databrickslabs_jupyterlab.sshconfig import (
    SshConfig,
    expand_tokens,
    host_matches,
    host_options,
    read_host_entry,
    split_args,
)
from databrickslabs_jupyterlab.sshconfigfile import BACKUPS_KEPT, remove_host, update_host

SSH = "/usr/bin/ssh"

USER_CONFIG = """\
# my own settings
Include ~/.ssh/config.d/*

Host bastion
    HostName bastion.example.com   # the jump host
    User me

Host web1 web2
  User deploy

# everything else
Host *
    ServerAliveInterval 60
    User nobody
"""

OPTIONS = host_options(
    hostname="ec2-1-2-3-4.compute.amazonaws.com",
    port=2200,
    user="ubuntu",
    identity_file="~/.ssh/id_demo",
    keepalive_interval=5,
    keepalive_count_max=2,
    connect_timeout=10,
)


def test_new_block_goes_before_the_wildcard_and_keeps_everything_else(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(USER_CONFIG)
    backups = tmp_path / "backups"
    change = update_host(path, "0101-abc", OPTIONS, backup_dir=backups)

    assert change.changed and not change.created
    text = path.read_text()
    # nothing of the user's file is lost, in the same order
    remaining = [line for line in text.splitlines() if line]
    original = [line for line in USER_CONFIG.splitlines() if line]
    it = iter(remaining)
    assert all(line in it for line in original)
    # the new block precedes "Host *" (OpenSSH takes the first value it finds)
    assert text.index("Host 0101-abc") < text.index("Host *")
    assert text.index("Host 0101-abc") > text.index("Host web1 web2")
    assert "# everything else\nHost *\n" in text
    cfg = SshConfig(text)
    assert cfg.options("0101-abc")["hostname"] == "ec2-1-2-3-4.compute.amazonaws.com"
    assert cfg.options("0101-abc")["port"] == "2200"
    assert cfg.options("0101-abc")["identityfile"] == "~/.ssh/id_demo"
    # backup holds the old text, the new file is private
    assert change.backup is not None and change.backup.read_text() == USER_CONFIG
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "+Host 0101-abc" in change.diff


def test_update_in_place_keeps_comments_and_user_choices(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        "Host 0101-abc\n"
        "  # driver of my cluster\n"
        "  HostName=old.example.com\n"
        "  Port 2222\n"
        "  ForwardAgent no\n"
        "\n"
        "# next one\n"
        "Host other\n"
        "  User x\n"
    )
    change = update_host(
        path, "0101-abc", OPTIONS, backup_dir=tmp_path / "b", keep={"port", "user"}
    )
    text = path.read_text()
    assert change.changed
    assert "  HostName=ec2-1-2-3-4.compute.amazonaws.com\n" in text  # separator kept
    assert "  Port 2222\n" in text  # kept: the user's choice
    assert "  # driver of my cluster\n" in text and "  ForwardAgent no\n" in text
    assert text.count("Host ") == 2
    # missing keys were added inside the block, before the comment that introduces "other"
    block = text.split("# next one")[0]
    assert "IdentityFile ~/.ssh/id_demo" in block and "User ubuntu" in block
    assert text.endswith("# next one\nHost other\n  User x\n")

    # a second run changes nothing and writes no backup
    again = update_host(path, "0101-abc", OPTIONS, backup_dir=tmp_path / "b", keep={"port"})
    assert not again.changed and again.backup is None


def test_hostname_is_left_alone_behind_a_proxy(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host 0101-abc\n    HostName localhost\n    ProxyJump bastion\n")
    update_host(path, "0101-abc", OPTIONS, backup_dir=tmp_path / "b")
    assert "HostName localhost" in path.read_text()


def test_shared_host_line_gets_a_dedicated_block(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host 0101-abc other\n    User someone\n")
    update_host(path, "0101-abc", OPTIONS, backup_dir=tmp_path / "b")
    text = path.read_text()
    assert text.index("Host 0101-abc\n") < text.index("Host 0101-abc other")
    assert SshConfig(text).options("0101-abc")["user"] == "ubuntu"


def test_missing_file_is_created_without_backup(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config"
    change = update_host(path, "c1", OPTIONS, backup_dir=tmp_path / "b")
    assert change.created and change.backup is None
    assert path.read_text().startswith("Host c1\n    HostName ")


def test_remove_keeps_neighbours(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(USER_CONFIG)
    update_host(path, "c1", OPTIONS, backup_dir=tmp_path / "b")
    remove_host(path, "c1", backup_dir=tmp_path / "b")
    assert path.read_text() == USER_CONFIG
    remove_host(path, "web1", backup_dir=tmp_path / "b")
    assert "Host web2\n" in path.read_text()


def test_backups_are_pruned(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host a\n  User x\n")
    for i in range(BACKUPS_KEPT + 3):
        update_host(path, "c1", {**OPTIONS, "Port": str(3000 + i)}, backup_dir=tmp_path / "b")
    assert len(list((tmp_path / "b").iterdir())) == BACKUPS_KEPT


# --------------------------------------------------------------------------------------------
# Reading: OpenSSH's matching, shared by the reader and the editor


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        (["web?"], "web1", True),
        (["web?"], "web12", False),
        (["web*", "!web3"], "web3", False),  # a matching negation vetoes the line
        (["!web3", "web*"], "web3", False),  # wherever it stands
        (["!web3"], "other", False),  # negations alone never select
        (["*"], "anything", True),
        (["FOO"], "foo", False),  # case-sensitive, as `ssh -G` shows
        (["[ab]"], "a", False),  # `[` is no wildcard in OpenSSH (it is in fnmatch)
        (["[ab]"], "[ab]", True),
        (["*.example.com"], "a.b.example.com", True),
        (["0123-*"], "0123-456789-abcdef12", True),
    ],
)
def test_host_matches(patterns: list[str], name: str, expected: bool) -> None:
    assert host_matches(patterns, name) is expected
    header = "Host " + " ".join(patterns) + "\n  Port 1\n"
    assert SshConfig(header).blocks()[0].matches(name) is expected


def test_split_args_quotes_escapes_and_comments() -> None:
    assert split_args('a "b c" \'d e\' f\\ g # comment "x"') == ["a", "b c", "d e", "f g"]
    assert split_args("#all comment") == []
    assert split_args('x"y z"w') == ["xy zw"]


def test_reader_follows_openssh_and_ignores_catch_all_by_default(isolated_home: Path) -> None:
    ssh_dir = isolated_home / ".ssh"
    (ssh_dir / "inc").mkdir()
    (ssh_dir / "inc" / "b.conf").write_text("Port 2002\nHost c1\n  User second-file\n")
    (ssh_dir / "inc" / "a.conf").write_text("Host c1\n  User first-file\n")
    (ssh_dir / "elsewhere").write_text("Port 3003\nHost c1\n  HostName never.example.com\n")
    config = ssh_dir / "config"
    config.write_text(
        "User global\n"
        "Host other\n"
        "  Include elsewhere\n"  # inside a block that does not apply: adds nothing
        "Match host c1\n"
        "  HostName from-match.example.com\n"  # Match blocks are skipped
        "Host c1\n"
        "  Include inc/*.conf\n"  # sorted, relative to ~/.ssh, its top lines apply to c1
        "  ProxyJump jump1\n"
        "  ProxyCommand never used\n"  # ProxyJump came first
        "Host * !c2\n"
        "  HostName star.example.com\n"
    )
    assert read_host_entry(config, "c1") == {
        "user": "first-file",
        "port": "2002",
        "proxyjump": "jump1",
    }
    assert read_host_entry(config, "c1", catch_all=True)["hostname"] == "star.example.com"
    assert read_host_entry(config, "c2", catch_all=True) == {"user": "global"}
    assert read_host_entry(config, "c2") == {}
    # the editor resolves the same way
    text = config.read_text()
    for name in ("c1", "c2", "other"):
        for catch_all in (False, True):
            assert SshConfig(text).options(name, catch_all=catch_all) == read_host_entry(
                config, name, catch_all=catch_all
            )


def test_recursive_include_stops(isolated_home: Path) -> None:
    config = isolated_home / ".ssh" / "config"
    config.write_text(f"Include {config}\nHost c1\n  Port 7\n")
    assert read_host_entry(config, "c1") == {"port": "7"}


def test_update_host_edits_the_block_the_reader_uses(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("Host 0101-*\n  User wild\n  ProxyJump bastion\n")
    update_host(path, "0101-abc", OPTIONS, backup_dir=tmp_path / "b")
    entry = read_host_entry(path, "0101-abc")
    assert entry["user"] == "ubuntu" and entry["hostname"] == OPTIONS["HostName"]
    assert entry["proxyjump"] == "bastion"  # the wildcard block still adds what it alone has


# --------------------------------------------------------------------------------------------
# Against the real OpenSSH client: `ssh -F FILE -G NAME` prints what ssh would use


GOLDEN = [
    ("Host FOO\n  Port 1111\nHost foo\n  Port 2222\n", ["foo", "FOO", "Foo"]),
    (
        "Host web? !web3\n  Port 5\n  User w\n"
        "Host *.example.com !bastion.example.com\n  User corp\n"
        "Host !nobody\n  Port 7\n"
        "Host [ab]\n  Port 8\n"
        "Host *\n  User star\n  Port 9\n",
        ["web1", "web3", "web12", "a.example.com", "bastion.example.com", "nobody", "a"],
    ),
    (
        "port = 2022\n"
        "Host=c1 c2 # comment\n"
        "  USER 'c-user'\n"
        "  HostName %h.internal\n"
        "  ProxyJump j1,j2\n"
        "  ProxyCommand nc %h %p\n"
        "Host c2 c3\n"
        "  ProxyCommand nc x %% # kept: a command is the rest of its line\n"
        "  Port 3\n"
        '  HostName "c3.example.com"\n',
        ["c1", "c2", "c3", "c4"],
    ),
    (
        "Include {dir}/inc/*.conf\n"
        "Host other\n  Include {dir}/never.conf\n"
        "Host in-block\n  Include {dir}/block.conf\n  User after\n",
        ["t1", "t2", "in-block", "other"],
    ),
]
INCLUDED = {
    "inc/1.conf": "Host t1\n  Port 11\n",
    "inc/2.conf": "Host t1 t2\n  Port 12\n  User inc2\n",
    "never.conf": "Port 99\nHost other in-block\n  User never\n",
    "block.conf": "Port 44\nUser from-block\n",
}


def _ssh_g(config: Path, name: str) -> dict[str, str]:
    done = subprocess.run(
        [SSH, "-F", str(config), "-G", name],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key, value)
    return out


@pytest.mark.skipif(not os.access(SSH, os.X_OK), reason=f"{SSH} is not installed")
@pytest.mark.parametrize(("text", "names"), GOLDEN)
def test_resolution_agrees_with_ssh_G(tmp_path: Path, text: str, names: list[str]) -> None:
    for rel, content in INCLUDED.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)
    config = tmp_path / "config"
    config.write_text(text.format(dir=tmp_path))
    local = pwd.getpwuid(os.getuid()).pw_name
    for name in names:
        ours = read_host_entry(config, name, catch_all=True)
        theirs = _ssh_g(config, name)
        hostname = expand_tokens(ours.get("hostname", "%h"), {"h": name}).lower()
        assert theirs["hostname"] == hostname, name
        assert theirs["port"] == ours.get("port", "22"), name
        assert theirs["user"] == ours.get("user", local), name
        for key in ("proxycommand", "proxyjump"):
            assert theirs.get(key) == ours.get(key), (name, key)
