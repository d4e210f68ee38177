"""SSH to cluster drivers, in three parts:

- :mod:`.connection`: where to connect (``Host <cluster_id>`` entries of ``~/.ssh/config`` win),
  whom to trust (one pinned host key per driver start), logging in through jump hosts or a
  ProxyCommand, and the ``SshError`` sentences every failure becomes;
- :mod:`.commands`: one command-line builder (every word quoted, ``sudo -n`` when asked), run and
  stream with time limits, local port forwards, upload through stdin, the reachability check;
- :mod:`.processes`: the remote kernel's processes (start, signal, alive, stop, remove), the only
  place that touches them.

Callers import this package (``from . import ssh``) and use the names below.
"""

import logging

from ..hostkeys import HostKeyStore
from ..sshconfig import read_host_entry
from .commands import (
    RunResult,
    build_command,
    check_reachable,
    forward_local,
    run,
    stream,
    upload,
)
from .connection import (
    HostKeyChanged,
    SshAuthFailed,
    SshError,
    SshTarget,
    SshUnreachable,
    cluster_identity_file,
    connect,
    resolve_target,
)
from .processes import (
    SIGNAL_NAMES,
    is_run_dir,
    process_alive,
    remove_process,
    remove_run_dir,
    signal_process,
    start_process,
    stop_process,
)

__all__ = [
    "SIGNAL_NAMES",
    "HostKeyChanged",
    "HostKeyStore",
    "RunResult",
    "SshAuthFailed",
    "SshError",
    "SshTarget",
    "SshUnreachable",
    "build_command",
    "check_reachable",
    "cluster_identity_file",
    "connect",
    "forward_local",
    "is_run_dir",
    "process_alive",
    "read_host_entry",
    "remove_process",
    "remove_run_dir",
    "resolve_target",
    "run",
    "signal_process",
    "start_process",
    "stop_process",
    "stream",
    "upload",
]

# asyncssh logs every connection and channel at INFO: runners that show INFO on the console
# (papermill) printed them among the notebook's progress. Unless someone set its level, only
# its warnings show (the CLI's -D sets its own levels).
if logging.getLogger("asyncssh").level == logging.NOTSET:
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
