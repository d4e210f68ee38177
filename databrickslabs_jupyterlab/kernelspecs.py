"""Kernelspecs for remote kernels on Databricks cluster drivers.

A spec names its cluster in ``metadata.databricks`` (profile, cluster id, and ``spark``: whether
the provisioner attaches Spark with ``dbcontext()`` once the kernel runs, default true); that is
what the provisioner and the server read. The display name keeps the reference's grammar,
``SSH <cluster_id> <profile>:<cluster_name> (<env>[/Spark])``, for people, and nothing parses it
back. ``<env>`` is the local Python environment (venv or conda folder name) and is left out when
it equals the cluster name, so ``SSH 0806-143104-skirt84 demo:ds (Spark)`` means "cluster ds,
env ds, with Spark" and ``SSH 0806-143104-skirt84 demo:ds`` the same without Spark.

``transport`` (``metadata.databricks.transport``) is ``ssh`` (the default) or ``command-api``: a
kernel without SSH whose cells run in a REST 1.2 execution context (``commandkernel``), with its
own provisioner and the display name ``Command API <cluster_id> <profile>:<cluster_name> (...)``.

The spec holds neither the workspace host nor a token: ``argv`` is only a template that the
provisioner replaces by its own remote command. Its ``env`` (the CLI's ``-e NAME=VALUE``) reaches
the remote kernel through the JSON the provisioner writes on the SSH channel's stdin, so a value
needs no quoting. Jupyter expands ``$NAME`` in kernelspec env values from the local environment;
:func:`kernel_json` writes a ``$`` as ``$$`` so that a value arrives as it was given.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from .commandkernel import KERNEL_MODULE
from .commandkernel import PROVISIONER_NAME as COMMAND_PROVISIONER_NAME
from .commandkernel import TRANSPORT as COMMAND_API
from .provisioner import PROVISIONER_NAME
from .vocabulary import is_cluster_id, is_env_name, is_profile, secret_like

log = logging.getLogger(__name__)
NAME_PREFIX = "ssh__"
COMMAND_NAME_PREFIX = "dbcmd__"
SSH = "ssh"
#: Kernel transports a spec can name (``--transport`` of the CLI).
TRANSPORTS = (SSH, COMMAND_API)
_PROVISIONERS = {SSH: PROVISIONER_NAME, COMMAND_API: COMMAND_PROVISIONER_NAME}
_LABELS = {SSH: "SSH", COMMAND_API: "Command API"}
_NAME_DROP = re.compile(r"[^A-Za-z0-9._-]")
#: Set by the provisioner or by Jupyter for every remote kernel; a spec cannot choose them.
RESERVED_ENV = frozenset({"PYSPARK_PYTHON", "JPY_SESSION_NAME", "PYTHONEXECUTABLE"})
RESERVED_ENV_PREFIX = "DBJL_"


@dataclass(frozen=True)
class DatabricksKernelSpec:
    name: str
    display_name: str
    profile: str
    cluster_id: str
    resource_dir: str
    spark: bool = True
    transport: str = SSH


def environment_name(environ: dict[str, str] | None = None) -> str:
    """Name of the local Python environment, for the display name.

    A venv or conda folder name when there is one; otherwise ``python<major>.<minor>``. It never
    fails outside conda (the reference raised a KeyError there).
    """
    env = os.environ if environ is None else environ
    virtual_env = env.get("VIRTUAL_ENV")
    if virtual_env:
        return Path(virtual_env).name
    conda_env = env.get("CONDA_DEFAULT_ENV")
    if conda_env:
        return Path(conda_env).name
    prefix = Path(sys.prefix)
    if sys.prefix != sys.base_prefix or (prefix / "conda-meta").is_dir():
        return prefix.name
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def display_name(
    cluster_id: str,
    profile: str,
    cluster_name: str,
    env: str | None = None,
    spark: bool = False,
    transport: str = SSH,
) -> str:
    """``SSH <cluster_id> <profile>:<cluster_name> (<env>[/Spark])``; ``Command API`` instead
    of ``SSH`` for the ``command-api`` transport.

    The env part is left out when it equals the cluster name (spaces read as underscores); with
    Spark what remains in the parentheses is then ``(Spark)``.
    """
    env = environment_name() if env is None else env
    same = env in (cluster_name, cluster_name.replace(" ", "_"))
    parts = [] if same or not env else [env]
    if spark:
        parts.append("Spark")
    base = f"{_LABELS[transport]} {cluster_id} {profile}:{cluster_name}"
    return f"{base} ({'/'.join(parts)})" if parts else base


def env_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a variable of a remote kernel's env, or None when it can."""
    if not is_env_name(name):
        return f"{name!r} is not a valid environment variable name (letters, digits, _)"
    if name.upper().startswith(RESERVED_ENV_PREFIX) or name.upper() in RESERVED_ENV:
        return f"{name} is set by databrickslabs-jupyterlab itself for every remote kernel"
    if secret_like(name):
        return (
            f"{name} looks like a secret, and secrets do not belong in a kernelspec "
            "(use Databricks secrets on the cluster)"
        )
    return None


def parse_env(assignments: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings to a dict, split at the first ``=``; the value is kept verbatim.

    Raises ValueError with a sentence for the first bad entry. A name given twice keeps its
    last value.
    """
    env: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Environment variables are given as NAME=VALUE, not {item!r}.")
        problem = env_name_problem(name)
        if problem:
            raise ValueError(problem + ".")
        env[name] = value
    return env


def kernel_name(display: str, transport: str = SSH) -> str:
    """Spec folder name: ``ssh__`` (``dbcmd__`` for ``command-api``) + the display name without
    unsafe characters, lower-cased."""
    prefix = COMMAND_NAME_PREFIX if transport == COMMAND_API else NAME_PREFIX
    return (prefix + _NAME_DROP.sub("", display)).lower()


def _check_transport(transport: object) -> str:
    if transport not in TRANSPORTS:
        raise ValueError(
            f"Unknown kernel transport {transport!r} (expected one of {', '.join(TRANSPORTS)})"
        )
    return str(transport)


def _validate(profile: str, cluster_id: str) -> None:
    if not is_profile(profile):
        raise ValueError(f"Invalid profile name {profile!r}")
    if not is_cluster_id(cluster_id):
        raise ValueError(f"Invalid cluster id {cluster_id!r}")


def kernel_json(
    profile: str,
    cluster_id: str,
    cluster_name: str,
    env: str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    spark: bool = True,
    kernel_env: dict[str, str] | None = None,
    transport: str = SSH,
) -> dict[str, Any]:
    """The kernel.json content for one cluster (no host, no token).

    ``kernel_env``: variables for the remote kernel, checked with :func:`env_name_problem`;
    each ``$`` of a value is doubled so that Jupyter's ``$NAME`` expansion gives it back as is.
    ``transport``: ``ssh`` or ``command-api`` (then ``kernel_env`` is set in the execution
    context's ``os.environ``).
    """
    _validate(profile, cluster_id)
    transport = _check_transport(transport)
    for name in kernel_env or {}:
        problem = env_name_problem(name)
        if problem:
            raise ValueError(problem + ".")
    if not isinstance(spark, bool):
        raise ValueError(f"spark must be true or false, not {spark!r}")
    databricks: dict[str, Any] = {"profile": profile, "cluster_id": cluster_id, "spark": spark}
    databricks.update(
        {
            k: v
            for k, v in (overrides or {}).items()
            if v is not None and k not in ("spark", "transport")
        }
    )
    if transport == COMMAND_API:
        databricks["transport"] = transport
        # Template only: the provisioner runs its own Python with this module, locally.
        argv = ["python", "-m", KERNEL_MODULE, "-f", "{connection_file}"]
    else:
        # Template only: the provisioner runs <driver python> -m ipykernel_launcher remotely.
        argv = ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    return {
        "argv": argv,
        "display_name": display_name(
            cluster_id, profile, cluster_name, env, spark=spark, transport=transport
        ),
        "language": "python",
        # SSH: signals sent on the driver by the provisioner (kill -INT <pid>); command-api: a
        # SIGINT of the local kernel, which cancels the running command.
        "interrupt_mode": "signal",
        "env": {k: str(v).replace("$", "$$") for k, v in (kernel_env or {}).items()},
        "metadata": {
            "kernel_provisioner": {"provisioner_name": _PROVISIONERS[transport], "config": {}},
            "databricks": databricks,
        },
    }


def create_kernelspec(
    profile: str,
    cluster_id: str,
    cluster_name: str,
    env: str | None = None,
    *,
    manager: KernelSpecManager | None = None,
    user: bool = True,
    prefix: str | None = None,
    overrides: dict[str, Any] | None = None,
    spark: bool = True,
    kernel_env: dict[str, str] | None = None,
    transport: str = SSH,
) -> str:
    """Install (or replace) the spec for a cluster; returns the kernel name.

    ``transport``: ``ssh`` (the default) or ``command-api`` (a kernel without SSH, see
    ``commandkernel``). One spec per cluster and profile: a spec of the other transport is
    replaced too.

    With ``spark`` (the default) the provisioner runs ``dbcontext()`` in the kernel once it is
    up, and the display name ends in ``/Spark``; ``spark=False`` is the CLI's ``-N/--no-spark``.
    ``kernel_env`` is the CLI's ``-e NAME=VALUE``: variables set in the remote kernel.
    """
    spec = kernel_json(
        profile,
        cluster_id,
        cluster_name,
        env,
        overrides,
        spark=spark,
        kernel_env=kernel_env,
        transport=transport,
    )
    name = kernel_name(spec["display_name"], transport)
    ksm = manager or KernelSpecManager()
    # Earlier specs of the same cluster and profile (other cluster name or env) are replaced.
    for old in list_kernelspecs(ksm):
        if (old.profile, old.cluster_id) == (profile, cluster_id) and old.name != name:
            ksm.remove_kernel_spec(old.name)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "kernel.json").write_text(json.dumps(spec, indent=1))
        where = ksm.install_kernel_spec(tmp, name, user=user and prefix is None, prefix=prefix)
    log.debug("kernelspec %s installed in %s: %s", name, where, json.dumps(spec))
    return name


def list_kernelspecs(manager: KernelSpecManager | None = None) -> list[DatabricksKernelSpec]:
    """Every installed spec that names a Databricks cluster in its metadata."""
    ksm = manager or KernelSpecManager()
    found = []
    for name, entry in sorted(ksm.get_all_specs().items()):
        spec = entry.get("spec") or {}
        databricks = (spec.get("metadata") or {}).get("databricks") or {}
        provisioner = ((spec.get("metadata") or {}).get("kernel_provisioner") or {}).get(
            "provisioner_name"
        )
        if provisioner not in _PROVISIONERS.values() or not databricks.get("cluster_id"):
            continue
        transport = COMMAND_API if provisioner == COMMAND_PROVISIONER_NAME else SSH
        found.append(
            DatabricksKernelSpec(
                name=name,
                display_name=spec.get("display_name", name),
                profile=str(databricks.get("profile", "")),
                cluster_id=str(databricks["cluster_id"]),
                resource_dir=entry.get("resource_dir", ""),
                spark=databricks.get("spark", True) is not False,
                transport=transport,
            )
        )
    return found


def delete_kernelspec(name: str, manager: KernelSpecManager | None = None) -> bool:
    """Remove one of our specs by name; False when there is none of that name."""
    ksm = manager or KernelSpecManager()
    if name not in {s.name for s in list_kernelspecs(ksm)}:
        return False
    try:
        ksm.remove_kernel_spec(name)
    except (NoSuchKernel, KeyError):
        return False
    return True


def delete_kernelspecs(
    profile: str | None = None,
    cluster_id: str | None = None,
    manager: KernelSpecManager | None = None,
) -> list[str]:
    """Remove our specs, optionally only those of a profile and/or cluster; returns the names."""
    ksm = manager or KernelSpecManager()
    removed = []
    for spec in list_kernelspecs(ksm):
        if profile is not None and spec.profile != profile:
            continue
        if cluster_id is not None and spec.cluster_id != cluster_id:
            continue
        ksm.remove_kernel_spec(spec.name)
        removed.append(spec.name)
    return removed


def cluster_of(spec: Any) -> tuple[str, str] | None:
    """(profile, cluster_id) of a ``KernelSpec`` or kernel.json dict, or None if not ours."""
    metadata = spec.get("metadata") if isinstance(spec, dict) else getattr(spec, "metadata", None)
    databricks = (metadata or {}).get("databricks") or {}
    profile, cluster_id = databricks.get("profile"), databricks.get("cluster_id")
    if isinstance(profile, str) and isinstance(cluster_id, str):
        return profile, cluster_id
    return None
