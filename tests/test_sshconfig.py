"""The ~/.ssh/config editor keeps everything it does not own and backs the file up first."""

from __future__ import annotations

import stat
from pathlib import Path

from databrickslabs_jupyterlab.sshconfig import (
    BACKUPS_KEPT,
    SshConfig,
    host_options,
    remove_host,
    update_host,
)

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
