"""SSH key pairs for simulated clusters (tests, the simulator CLI, the demo)."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh


def make_keypair(path: str | Path, comment: str = "databrickslabs-jupyterlab") -> str:
    """Write a fresh ed25519 key to ``path`` (0600, OpenSSH format) and ``path.pub``.

    Returns the public key line, ready for a cluster's ``ssh_public_keys``. Blocking file I/O.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    data = key.export_private_key("openssh")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    public = key.export_public_key("openssh").decode().strip()
    Path(f"{path}.pub").write_text(public + "\n")
    return public


def read_or_make_keypair(path: str | Path) -> str:
    """The public key of an existing pair at ``path``, or of a new one."""
    path = Path(path)
    if path.exists():
        key = asyncssh.read_private_key(str(path))
        public = key.export_public_key("openssh").decode().strip()
        pub = Path(f"{path}.pub")
        if not pub.exists():
            pub.write_text(public + "\n")
        return public
    return make_keypair(path)
