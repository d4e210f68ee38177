"""OpenAPI 3 description of REST API v1, served at ``{base}/openapi.json``.

Built in Python so that the state and step vocabularies come from the code that uses them;
the test suite validates real responses against it.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from . import __version__
from .vocabulary import CLUSTER_ID, KERNEL_STATES, RESTART_CHOICES, STATES, STEPS

_NULLABLE_STR = {"type": "string", "nullable": True}
_TIME = {"type": "string", "format": "date-time"}


def _error(description: str, codes: list[str]) -> dict[str, Any]:
    return {
        "description": description + " (`error`: " + ", ".join(f"`{c}`" for c in codes) + ")",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_COMMON = {
    "403": _error("Not logged in or not authorized", ["forbidden"]),
    "429": _error(
        "The server already watches max_clusters clusters, all in use", ["too_many_clusters"]
    ),
    "503": _error("The workspace API is unreachable or keeps failing", ["workspace_unavailable"]),
    "502": _error(
        "The workspace refused the profile's credentials or answered with an unexpected error",
        ["workspace_auth_failed", "workspace_permission_denied", "workspace_error"],
    ),
}

# Tornado refuses a body it cannot parse (a form without its boundary) before any handler runs,
# on every route and before the login is read.
_MALFORMED = _error("A request body that cannot be parsed", ["bad_request"])

_PROFILE_PARAM = {
    "name": "profile",
    "in": "path",
    "required": True,
    "description": "A profile of the Databricks config file.",
    "schema": {"type": "string"},
}
_CLUSTER_PARAM = {
    "name": "cluster_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{CLUSTER_ID.pattern}$"},
}


def build_openapi() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["message", "reason", "error"],
            "properties": {
                "message": {"type": "string", "description": "One human sentence."},
                "reason": {"type": "string", "nullable": True},
                "error": {"type": "string", "pattern": "^[a-z0-9_]+$"},
            },
        },
        "Ssh": {
            "type": "object",
            "required": ["reachable", "checked_at", "error"],
            "properties": {
                "reachable": {"type": "boolean"},
                "checked_at": {**_TIME, "nullable": True},
                "error": _NULLABLE_STR,
            },
        },
        "Operation": {
            "type": "object",
            "nullable": True,
            "required": ["kind", "step", "step_index", "step_count", "started_at"],
            "properties": {
                "kind": {"type": "string", "enum": ["start", "reconfigure"]},
                "step": {"type": "string", "enum": list(STEPS)},
                "step_index": {"type": "integer", "minimum": 1, "maximum": len(STEPS)},
                "step_count": {"type": "integer", "enum": [len(STEPS)]},
                "detail": {**_NULLABLE_STR, "description": "Latest progress line."},
                "started_at": _TIME,
                "restart_kernels": {
                    "type": "string",
                    "enum": list(RESTART_CHOICES),
                    "description": "The request's choice for the cluster's running kernels "
                    "(extension of v1).",
                },
                "kernels": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Ids of the kernels the restarting-kernels step restarts "
                    "(extension of v1; present from that step on).",
                },
            },
        },
        "Event": {
            "type": "object",
            "required": ["at", "state", "message"],
            "properties": {
                "at": _TIME,
                "state": {"type": "string", "enum": list(STATES)},
                "message": {"type": "string"},
            },
        },
        "ClusterKernel": {
            "type": "object",
            "required": ["kernel_id", "kernel_state"],
            "properties": {
                "kernel_id": {"type": "string"},
                "kernel_state": {"type": "string", "enum": list(KERNEL_STATES)},
            },
        },
        "ClusterStatus": {
            "type": "object",
            "required": [
                "profile",
                "cluster_id",
                "cluster_name",
                "state",
                "cluster_state",
                "message",
                "ssh",
                "operation",
                "version",
                "updated_at",
                "events",
            ],
            "properties": {
                "profile": {"type": "string"},
                "cluster_id": {"type": "string"},
                "cluster_name": _NULLABLE_STR,
                "state": {
                    "type": "string",
                    "enum": list(STATES),
                    "description": "unknown: not read yet; terminated/terminating: as Databricks "
                    "says; starting: PENDING/RESTARTING or a start waiting for RUNNING; "
                    "configuring/installing: an operation prepares SSH / driver libraries; "
                    "connected: running, SSH login works, libraries present; unreachable: "
                    "running but SSH fails; error: the last operation failed, the API answers "
                    "with an error, or the driver lacks libraries (see message).",
                },
                "cluster_state": {**_NULLABLE_STR, "description": "Databricks state as last read."},
                "message": {"type": "string"},
                "ssh": {"$ref": "#/components/schemas/Ssh"},
                "transport": {
                    "type": "string",
                    "enum": ["ssh", "ssh-tunnel", "command-api", None],
                    "nullable": True,
                    "description": "How the cluster is reached: ssh (a Host entry named after "
                    "the cluster, or the driver's public DNS on the SSH port), ssh-tunnel (the "
                    "Databricks SSH tunnel's Host entry), command-api (the Command Execution "
                    "API, no SSH). Null before the first read.",
                },
                "transport_reason": {
                    **_NULLABLE_STR,
                    "description": "One sentence: why this transport.",
                },
                "spark_ui_url": {
                    **_NULLABLE_STR,
                    "description": "The cluster's Spark UI in the workspace (https://<host>/"
                    "?o=<workspace id>#setting/clusters/<cluster id>/sparkUi; without ?o= when "
                    "the workspace id is unknown); null until the workspace was read "
                    "(extension of v1).",
                },
                "operation": {"$ref": "#/components/schemas/Operation"},
                "version": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Grows on every change of this status, except that a new "
                    "ssh.checked_at alone (a routine SSH check with the same outcome) is served "
                    "without a new version and wakes no long poll.",
                },
                "updated_at": _TIME,
                "events": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Event"},
                    "description": "Newest last, bounded.",
                },
                "kernels": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/ClusterKernel"},
                    "description": "Kernels of this server on this cluster (extension of v1).",
                },
            },
        },
        "KernelStatus": {
            "type": "object",
            "required": ["kernel_id", "profile", "cluster_id", "kernel_state", "cluster"],
            "properties": {
                "kernel_id": {"type": "string"},
                "profile": {"type": "string"},
                "cluster_id": {"type": "string"},
                "kernel_state": {"type": "string", "enum": list(KERNEL_STATES)},
                "cluster": {"$ref": "#/components/schemas/ClusterStatus"},
            },
        },
        "Profiles": {
            "type": "object",
            "required": ["profiles"],
            "properties": {
                "profiles": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "host", "auth_type", "ssh_key"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "host": _NULLABLE_STR,
                            "auth_type": {"type": "string"},
                            "ssh_key": {"type": "string", "enum": ["ok", "missing"]},
                        },
                    },
                }
            },
        },
        "Clusters": {
            "type": "object",
            "required": ["clusters"],
            "properties": {
                "clusters": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["cluster_id", "cluster_name", "state", "ssh_key_installed"],
                        "properties": {
                            "cluster_id": {"type": "string"},
                            "cluster_name": _NULLABLE_STR,
                            "state": _NULLABLE_STR,
                            "ssh_key_installed": {"type": "boolean"},
                            "spark_version": {
                                **_NULLABLE_STR,
                                "description": "The Databricks runtime (extension of v1).",
                            },
                            "data_security_mode": {
                                **_NULLABLE_STR,
                                "description": "The access mode (extension of v1).",
                            },
                            "autotermination_minutes": {
                                "type": "integer",
                                "nullable": True,
                                "description": "Minutes of inactivity before Databricks "
                                "terminates the cluster, 0 for never (extension of v1).",
                            },
                            "transport": {
                                "type": "string",
                                "enum": ["ssh", "ssh-tunnel", "command-api"],
                                "nullable": True,
                                "description": "The transport a kernel of this cluster would "
                                "use (extension of v1).",
                            },
                        },
                    },
                }
            },
        },
        "StartBody": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "kernel_id": {
                    "type": "string",
                    "description": "A kernel to restart at the end (it lost its driver).",
                },
                "restart_kernels": {
                    "type": "string",
                    "enum": list(RESTART_CHOICES),
                    "default": "never",
                    "description": "What happens to the cluster's running kernels (extension "
                    "of v1): never (default; only disconnected kernels and kernel_id restart), "
                    "if-installed (they restart when a library was installed on the driver), "
                    "always.",
                },
                "transport": {
                    "type": "string",
                    "enum": ["ssh", "ssh-tunnel", "command-api"],
                    "description": "The transport to use (extension of v1; default: the first "
                    "that applies, see ClusterStatus.transport). One that cannot work on this "
                    "cluster answers 409 transport_impossible before anything changes.",
                },
            },
        },
        "KernelspecBody": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "transport": {
                    "type": "string",
                    "enum": ["ssh", "ssh-tunnel", "command-api"],
                    "description": "The kernel's transport (default: the first that applies, "
                    "as `dj -k` chooses it).",
                },
                "spark": {
                    "type": "boolean",
                    "default": True,
                    "description": "Whether the kernel sets up spark and dbutils (`dj -N` is "
                    "false).",
                },
            },
        },
        "Kernelspec": {
            "type": "object",
            "required": ["kernel_name", "display_name", "profile", "cluster_id", "transport"],
            "properties": {
                "kernel_name": {"type": "string"},
                "display_name": {"type": "string"},
                "profile": {"type": "string"},
                "cluster_id": {"type": "string"},
                "transport": {"type": "string", "enum": ["ssh", "ssh-tunnel", "command-api"]},
                "transport_reason": {"type": "string"},
                "spark": {"type": "boolean"},
            },
        },
    }
    cluster_params = [_PROFILE_PARAM, _CLUSTER_PARAM]
    bad_input = _error(
        "Bad input",
        ["invalid_profile", "invalid_cluster_id", "invalid_body", "invalid_query", "bad_request"],
    )
    unknown = _error("Unknown profile, cluster or kernel", ["no_such_profile", "no_such_cluster"])

    def operation(kind: str, extra: dict[str, Any], summary: str) -> dict[str, Any]:
        return {
            "post": {
                "operationId": kind + "Cluster",
                "summary": summary,
                "parameters": cluster_params,
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/StartBody"}}
                    },
                },
                "responses": {
                    "202": _ok("The operation runs (or already ran)", "ClusterStatus"),
                    "400": bad_input,
                    "404": _error(
                        "Unknown profile, cluster or kernel",
                        ["no_such_profile", "no_such_cluster", "no_such_kernel"],
                    ),
                    **extra,
                    **_COMMON,
                },
            }
        }

    paths = {
        "/profiles": {
            "get": {
                "operationId": "listProfiles",
                "summary": "Profiles of the Databricks config file (never a token)",
                "responses": {
                    "200": _ok("Profiles", "Profiles"),
                    "400": _MALFORMED,
                    "403": _COMMON["403"],
                },
            }
        },
        "/clusters": {
            "get": {
                "operationId": "listClusters",
                "parameters": [
                    {
                        "name": "profile",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _ok("Clusters of the profile's workspace", "Clusters"),
                    "400": bad_input,
                    "404": unknown,
                    **_COMMON,
                },
            }
        },
        "/clusters/{profile}/{cluster_id}": {
            "get": {
                "operationId": "getClusterStatus",
                "summary": "The cluster's status; with wait and since, a long poll",
                "parameters": [
                    *cluster_params,
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "number", "minimum": 0, "maximum": 60},
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer"},
                    },
                ],
                "responses": {
                    "200": _ok(
                        "Status (answered once version > since, or after wait s)", "ClusterStatus"
                    ),
                    "400": bad_input,
                    "404": unknown,
                    **_COMMON,
                },
            }
        },
        "/clusters/{profile}/{cluster_id}/start": operation(
            "start",
            {
                "200": _ok(
                    "The cluster is already connected and none of its kernels is "
                    "disconnected: nothing was started and no kernel restarts (the current "
                    "status)",
                    "ClusterStatus",
                ),
                "409": _error(
                    "The transport asked for cannot work on this cluster",
                    ["transport_impossible"],
                ),
            },
            "Start the cluster and prepare SSH and the driver (single-flight); on a "
            "connected cluster it only restarts the disconnected kernels (a no-op without any)",
        ),
        "/clusters/{profile}/{cluster_id}/reconfigure": operation(
            "reconfigure",
            {
                "409": _error(
                    "The cluster is not running, or the transport asked for cannot work on it",
                    ["cluster_not_running", "transport_impossible"],
                )
            },
            "Check SSH and the driver libraries again, installing what is missing "
            "(single-flight); running kernels restart only as restart_kernels says",
        ),
        "/clusters/{profile}/{cluster_id}/terminate": {
            "post": {
                "operationId": "terminateCluster",
                "summary": "Terminate the cluster (Databricks clusters/delete); its kernels lose "
                "their state. No body (an empty JSON object is accepted)",
                "parameters": cluster_params,
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "additionalProperties": False}
                        }
                    },
                },
                "responses": {
                    "202": _ok("Termination was asked of Databricks", "ClusterStatus"),
                    "200": _ok(
                        "The cluster already terminates or is terminated: nothing was done",
                        "ClusterStatus",
                    ),
                    "400": bad_input,
                    "404": unknown,
                    "409": _error(
                        "A start or reconfigure of the cluster is under way",
                        ["operation_running"],
                    ),
                    **_COMMON,
                },
            }
        },
        "/clusters/{profile}/{cluster_id}/kernelspec": {
            "post": {
                "operationId": "createKernelspec",
                "summary": "Create (or replace) the cluster's kernelspec, as `dj PROFILE -k -i "
                "CLUSTER_ID` does; the driver is prepared when a kernel starts",
                "parameters": cluster_params,
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/KernelspecBody"}
                        }
                    },
                },
                "responses": {
                    "201": _ok("The kernelspec was written", "Kernelspec"),
                    "400": bad_input,
                    "404": unknown,
                    "409": _error(
                        "The transport asked for cannot work on this cluster",
                        ["transport_impossible"],
                    ),
                    **_COMMON,
                },
            }
        },
        "/kernels/{kernel_id}": {
            "get": {
                "operationId": "getKernelStatus",
                "parameters": [
                    {
                        "name": "kernel_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _ok("The kernel and its cluster", "KernelStatus"),
                    "400": _MALFORMED,
                    "404": _error(
                        "Unknown kernel or not a Databricks kernel",
                        ["no_such_kernel", "not_a_databricks_kernel", "no_such_cluster"],
                    ),
                    **_COMMON,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "responses": {
                    "200": {
                        "description": "This document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": _MALFORMED,
                    "403": _COMMON["403"],
                },
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "databrickslabs-jupyterlab REST API",
            "version": "1." + __version__,
            "description": "Cluster status and operations for Jupyter kernels on Databricks drivers. "
            "Every endpoint needs the Jupyter login (token header or cookie); POSTs are "
            "XSRF-protected like every Jupyter POST.",
        },
        "servers": [{"url": "/databrickslabs-jupyterlab/api/v1"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "Authorization"}
            },
        },
        "security": [{"token": []}],
        "paths": paths,
    }


@functools.lru_cache(maxsize=1)
def openapi_json() -> str:
    return json.dumps(build_openapi())
