"""REST operations of the Databricks panel: terminate a cluster, and create the kernelspec of a
cluster so that a notebook can be opened on it without the CLI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized

from . import kernelspecs, transport
from .handlers import ApiError, BaseHandler
from .workspace import ClusterInfo, WorkspaceError

#: Databricks states in which a terminate has nothing to do (it answers 200, not 202).
ENDING = frozenset({"TERMINATING", "TERMINATED"})


class _ClusterAction(BaseHandler):
    async def read_cluster(self, profile: str, cluster_id: str) -> tuple[Any, ClusterInfo]:
        """The cluster's connection (404 for an unknown profile or cluster) and a fresh read."""
        conn = await self.connection(profile, cluster_id)
        try:
            workspace = await self.registry.workspace(profile)
            return conn, await workspace.get_cluster(cluster_id)
        except WorkspaceError as err:
            raise ApiError(err.status, err.code, err.message) from None

    def json_body(self, allowed: set[str], example: str) -> dict[str, Any]:
        raw = self.request.body
        if not raw or not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_body", "The request body is not JSON.") from None
        if body is None:
            return {}
        if not isinstance(body, dict) or set(body) - allowed:
            raise ApiError(400, "invalid_body", f"The body must be a JSON object like {example}.")
        return body


class TerminateHandler(_ClusterAction):
    """Terminate: 202 when asked of Databricks, 200 (nothing done) when the cluster already
    terminates or is terminated, 409 ``operation_running`` while a start or reconfigure runs."""

    @tornado.web.authenticated
    @authorized
    async def post(self, profile: str, cluster_id: str) -> None:
        self.json_body(set(), "{}")
        conn, info = await self.read_cluster(profile, cluster_id)
        if conn.op_running():
            raise ApiError(
                409,
                "operation_running",
                f"A {conn.operation['kind']} of cluster {cluster_id} is under way; "
                "terminate it once that has finished.",
            )
        asked = info.state not in ENDING
        if asked:
            try:
                workspace = await self.registry.workspace(profile)
                await workspace.terminate_cluster(cluster_id)
            except WorkspaceError as err:
                raise ApiError(err.status, err.code, err.message) from None
        conn.touch()
        await conn.refresh()  # the answer shows TERMINATING (or the state it already had)
        self.write_json(conn.snapshot_json(), status=202 if asked else 200)


class KernelspecHandler(_ClusterAction):
    """Create (or replace) the cluster's kernelspec, its transport chosen as ``dj -k`` does."""

    @tornado.web.authenticated
    @authorized
    async def post(self, profile: str, cluster_id: str) -> None:
        body = self.json_body({"transport", "spark"}, '{"transport": "ssh", "spark": true}')
        wanted = body.get("transport")
        if wanted is not None and wanted not in transport.TRANSPORTS:
            raise ApiError(
                400,
                "invalid_body",
                f"transport must be one of {', '.join(transport.TRANSPORTS)}.",
            )
        spark = body.get("spark", True)
        if not isinstance(spark, bool):
            raise ApiError(400, "invalid_body", "spark must be true or false.")
        _conn, info = await self.read_cluster(profile, cluster_id)
        try:
            route = await asyncio.to_thread(transport.choose, info, self.driver_settings, wanted)
        except transport.TransportImpossible as exc:
            raise ApiError(409, "transport_impossible", str(exc)) from None
        # The spec knows two kinds of kernel: one over SSH (plain or tunnel) and one without.
        kind = (
            kernelspecs.COMMAND_API if route.transport == transport.COMMAND_API else kernelspecs.SSH
        )
        manager = self.kernel_spec_manager
        name = await asyncio.to_thread(
            kernelspecs.create_kernelspec,
            profile,
            cluster_id,
            info.cluster_name or cluster_id,
            manager=manager,
            spark=spark,
            transport=kind,
        )
        spec = await asyncio.to_thread(manager.get_kernel_spec, name)
        self.write_json(
            {
                "kernel_name": name,
                "display_name": spec.display_name,
                "profile": profile,
                "cluster_id": cluster_id,
                "transport": route.transport,
                "transport_reason": route.why,
                "spark": spark,
            },
            status=201,
        )
