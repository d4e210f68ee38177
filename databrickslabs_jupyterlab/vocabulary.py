"""The project's shared words: what a valid cluster id, profile or kernel id is, the states of
the REST API and of Databricks, and which variable names hold secrets.

Every module checks input through these helpers, so that the server, the provisioner and the
CLI accept and refuse exactly the same things. Patterns are applied with ``fullmatch``.
"""

from __future__ import annotations

import ipaddress
import re

#: A Databricks cluster id, as the REST API accepts it (shared/API.md).
CLUSTER_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,99}")
#: A Databricks CLI profile: a config-file section name without control characters, path
#: separators or brackets (a bracket would end the section header).
PROFILE = re.compile(r"[^\x00-\x1f\x7f/\\\[\]]{1,100}")
#: A Jupyter kernel id (a UUID in practice).
KERNEL_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,99}")
#: One label of a DNS host name (RFC 1123; ``_`` tolerated, as cloud resolvers hand it out).
HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
#: A login name on a driver (``User`` of the SSH config, the ``%r`` token).
SSH_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}")
#: A POSIX environment variable name.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Names whose values are secrets: never logged, never sent to a driver.
SECRET_NAME = re.compile(r".*(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|_KEY$).*", re.IGNORECASE)

#: ``state`` of a ClusterStatus (shared/API.md), the only values.
STATES = (
    "unknown",
    "terminated",
    "terminating",
    "starting",
    "configuring",
    "installing",
    "connected",
    "unreachable",
    "error",
)
#: Steps of an operation, in order.
STEPS = ("starting", "configuring", "installing", "restarting-kernels", "done")
#: Kinds of operation.
OPERATIONS = ("start", "reconfigure")
#: ``kernel_state`` of a KernelStatus.
KERNEL_STATES = ("starting", "running", "running-spark", "disconnected", "dead")
#: What an operation does with the cluster's running kernels (``restart_kernels`` in a POST body).
RESTART_CHOICES = ("never", "if-installed", "always")

#: Databricks cluster states in which the driver runs.
RUNNING = frozenset({"RUNNING", "RESIZING"})
#: Databricks cluster states on the way to RUNNING.
COMING_UP = frozenset({"PENDING", "RESTARTING"})
#: Databricks cluster states that last (slow refresh).
STEADY = frozenset({"RUNNING", "TERMINATED"})


def is_cluster_id(text: object) -> bool:
    return isinstance(text, str) and CLUSTER_ID.fullmatch(text) is not None


def is_profile(text: object) -> bool:
    return isinstance(text, str) and PROFILE.fullmatch(text) is not None and text.strip() == text


def is_kernel_id(text: object) -> bool:
    return isinstance(text, str) and KERNEL_ID.fullmatch(text) is not None


def is_hostname(text: object) -> bool:
    """A DNS name or an IPv4/IPv6 address: what a driver's ``public_dns`` may be before it goes
    into ``~/.ssh/config`` or a ``ProxyCommand`` (no blanks, quotes, shell or line breaks)."""
    if not isinstance(text, str) or not text or len(text) > 253:
        return False
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    return all(HOST_LABEL.fullmatch(label) for label in text.split("."))


def is_ssh_user(text: object) -> bool:
    return isinstance(text, str) and SSH_USER.fullmatch(text) is not None


def is_env_name(text: object) -> bool:
    return isinstance(text, str) and ENV_NAME.fullmatch(text) is not None


def secret_like(name: str) -> bool:
    """True for a variable name that looks like it holds a secret (``DATABRICKS_TOKEN``,
    ``AWS_SECRET_ACCESS_KEY``, ``MY_API_KEY``, ``DB_PASSWORD`` ...)."""
    return SECRET_NAME.fullmatch(name) is not None
