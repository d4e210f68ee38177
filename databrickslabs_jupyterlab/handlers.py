"""REST API v1: thin handlers that validate input and read (or wait for) the registry."""

from __future__ import annotations

import asyncio
import json
import re
from http.client import responses
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import url_path_join

from . import gatewaykernels, kernelstate, transport, vocabulary
from .operations import Conflict
from .registry import ClusterRegistry
from .settings import DriverSettings
from .transport import TRANSPORTS
from .workspace import WorkspaceError, key_installed, public_key_for

AUTH_RESOURCE = "databrickslabs-jupyterlab"
API_PREFIX = "databrickslabs-jupyterlab/api/v1"
MAX_WAIT = 60.0


class ApiError(tornado.web.HTTPError):
    """An HTTP error with the API's snake_case ``error`` name."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(status, "%s", message, reason=responses.get(status))
        self.error = error
        self.message = message


def _snake(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "error"


class BaseHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def registry(self) -> ClusterRegistry:
        return self.settings["databrickslabs_jupyterlab_registry"]

    @property
    def driver_settings(self) -> DriverSettings:
        return self.registry.settings.driver

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error leaves as ``{"message", "reason", "error"}``."""
        reason = responses.get(status_code, "Unknown Error")
        body = {"message": reason, "reason": reason, "error": _snake(reason)}
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            body = {"message": exc.message, "reason": exc.reason or reason, "error": exc.error}
        elif isinstance(exc, tornado.web.HTTPError):
            if exc.log_message:
                body["message"] = exc.log_message % exc.args if exc.args else exc.log_message
            body["reason"] = exc.reason or reason
        elif exc is not None:
            body = {
                "message": "The server hit an unexpected error; its log has the details.",
                "reason": reason,
                "error": "internal_error",
            }
        if status_code == 405:  # RFC 9110: a 405 lists the methods the resource has
            self.set_header("Allow", ", ".join(self._methods()))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    @classmethod
    def _methods(cls) -> list[str]:
        base = tornado.web.RequestHandler
        return [
            m
            for m in cls.SUPPORTED_METHODS
            if getattr(cls, m.lower(), None) is not getattr(base, m.lower(), None)
        ]

    def write_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(body if isinstance(body, str) else json.dumps(body))

    # ------------------------------------------------------------- validation
    async def check_profile(self, profile: str | None) -> str:
        if not vocabulary.is_profile(profile):
            raise ApiError(400, "invalid_profile", "The profile name is missing or malformed.")
        if not await self.registry.profile_exists(profile):
            raise ApiError(
                404,
                "no_such_profile",
                f"There is no profile {profile!r} in the Databricks config file.",
            )
        return profile

    def check_cluster_id(self, cluster_id: str) -> str:
        if not vocabulary.is_cluster_id(cluster_id):
            raise ApiError(
                400,
                "invalid_cluster_id",
                "A cluster id consists of letters, digits and dashes (at most 100).",
            )
        return cluster_id

    async def connection(self, profile: str, cluster_id: str) -> Any:
        """The cluster's connection; known ones skip the (already done) profile check."""
        self.check_cluster_id(cluster_id)
        conn = self.registry.get(profile, cluster_id)
        if conn is None or conn.not_found:
            await self.check_profile(profile)
        try:
            return await self.registry.connection(profile, cluster_id)
        except WorkspaceError as err:
            raise ApiError(err.status, err.code, err.message) from None


class ProfilesHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        profiles = await self.registry.profiles()

        def keys() -> list[str]:
            return [
                "ok"
                if self.driver_settings.identity_file_for(p.name).is_file()
                and public_key_for(self.driver_settings.identity_file_for(p.name))
                else "missing"
                for p in profiles
            ]

        states = await asyncio.to_thread(keys)
        self.write_json(
            {
                "profiles": [
                    {"name": p.name, "host": p.host, "auth_type": p.auth_type, "ssh_key": key}
                    for p, key in zip(profiles, states, strict=True)
                ]
            }
        )


class ClustersHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        profile = await self.check_profile(self.get_query_argument("profile", None, strip=False))
        try:
            workspace = await self.registry.workspace(profile)
            clusters = await workspace.list_clusters()
        except WorkspaceError as err:
            raise ApiError(err.status, err.code, err.message) from None
        identity = self.driver_settings.identity_file_for(profile)
        public_key = await asyncio.to_thread(public_key_for, identity)
        routes = await asyncio.to_thread(_transports, clusters, self.driver_settings)
        self.write_json(
            {
                "clusters": [
                    {
                        "cluster_id": c.cluster_id,
                        "cluster_name": c.cluster_name,
                        "state": c.state,
                        "ssh_key_installed": key_installed(public_key, c.ssh_public_keys),
                        "spark_version": c.spark_version,
                        "data_security_mode": transport.access_mode(c),
                        "autotermination_minutes": c.autotermination_minutes,
                        "transport": route,
                    }
                    for c, route in zip(clusters, routes, strict=True)
                ]
            }
        )


def _transports(clusters: list[Any], settings: DriverSettings) -> list[str | None]:
    """The transport a kernel of each cluster would use, as ``dj -k`` chooses it (blocking)."""
    routes: list[str | None] = []
    for info in clusters:
        try:
            routes.append(transport.choose(info, settings).transport)
        except Exception:  # noqa: BLE001 - an unreadable SSH config: the status says why
            routes.append(None)
    return routes


class ClusterStatusHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, profile: str, cluster_id: str) -> None:
        wait_arg = self.get_query_argument("wait", None, strip=False)
        since_arg = self.get_query_argument("since", None, strip=False)
        wait = since = None
        if wait_arg is not None or since_arg is not None:
            try:
                wait = float(wait_arg) if wait_arg is not None else MAX_WAIT
                since = int(since_arg) if since_arg is not None else None
            except ValueError:
                raise ApiError(
                    400, "invalid_query", "wait must be a number of seconds and since a version."
                ) from None
            if not 0 <= wait <= MAX_WAIT or wait != wait:
                raise ApiError(400, "invalid_query", f"wait must be between 0 and {MAX_WAIT:g}.")
        conn = await self.connection(profile, cluster_id)
        if wait and since is not None and conn.version <= since:
            self._waiting = asyncio.ensure_future(conn.wait_for_change(since, wait))
            try:
                await self._waiting
            except asyncio.CancelledError:
                if self._gone:
                    return  # the client went away: nobody to answer
                raise
            finally:
                self._waiting = None
        self.write_json(conn.snapshot_json())

    _waiting: asyncio.Future[bool] | None = None
    _gone = False

    def on_connection_close(self) -> None:
        """A long-poll client that goes away ends its wait at once."""
        self._gone = True
        if self._waiting is not None:
            self._waiting.cancel()


class OperationHandler(BaseHandler):
    kind = "start"

    @tornado.web.authenticated
    @authorized
    async def post(self, profile: str, cluster_id: str) -> None:
        kernel_id, restart_kernels, transport = self._body()
        conn = await self.connection(profile, cluster_id)
        if kernel_id is not None and kernel_id not in self.kernel_manager:
            raise ApiError(404, "no_such_kernel", f"There is no kernel {kernel_id}.")
        try:
            await conn.check_transport(transport)
            running = conn.request(self.kind, kernel_id, restart_kernels, transport)
        except Conflict as err:
            raise ApiError(409, err.code, err.message) from None
        # 202: an operation runs (new or already running); 200: nothing to do (connected).
        self.write_json(conn.snapshot_json(), status=202 if running else 200)

    def _body(self) -> tuple[str | None, str, str | None]:
        """``kernel_id``, ``restart_kernels`` and ``transport`` of the optional JSON body."""
        raw = self.request.body
        if not raw or not raw.strip():
            return None, "never", None
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_body", "The request body is not JSON.") from None
        if body is None:
            return None, "never", None
        if not isinstance(body, dict) or set(body) - {"kernel_id", "restart_kernels", "transport"}:
            raise ApiError(
                400,
                "invalid_body",
                'The body must be a JSON object like {"kernel_id": "...", '
                '"restart_kernels": "never"}.',
            )
        kernel_id = body.get("kernel_id")
        if kernel_id is not None and not vocabulary.is_kernel_id(kernel_id):
            raise ApiError(400, "invalid_body", "kernel_id must be a kernel id string.")
        choice = body.get("restart_kernels", "never")
        if choice not in vocabulary.RESTART_CHOICES:
            raise ApiError(
                400,
                "invalid_body",
                f"restart_kernels must be one of {', '.join(vocabulary.RESTART_CHOICES)}.",
            )
        transport = body.get("transport")
        if transport is not None and transport not in TRANSPORTS:
            raise ApiError(
                400, "invalid_body", f"transport must be one of {', '.join(TRANSPORTS)}."
            )
        return kernel_id, choice, transport


class StartHandler(OperationHandler):
    kind = "start"


class ReconfigureHandler(OperationHandler):
    kind = "reconfigure"


class KernelHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        manager = self.kernel_manager
        if not vocabulary.is_kernel_id(kernel_id) or kernel_id not in manager:
            raise ApiError(404, "no_such_kernel", f"There is no kernel {kernel_id}.")
        kernel = manager.get_kernel(kernel_id)
        if gatewaykernels.is_gateway_kernel(kernel):  # its spec is the gateway's
            metadata = await gatewaykernels.spec_metadata(kernel, self.kernel_spec_manager)
            databricks = _databricks_of(metadata)
        else:
            databricks = await asyncio.to_thread(_databricks_metadata, kernel)
        if not databricks:
            raise ApiError(
                404,
                "not_a_databricks_kernel",
                f"Kernel {kernel_id} does not run on a Databricks cluster.",
            )
        profile, cluster_id = str(databricks["profile"]), str(databricks["cluster_id"])
        record = kernelstate.board.get(kernel_id)
        conn = await self.connection(profile, cluster_id)
        kernel_state = record.state if record else "starting"
        head = json.dumps(
            {
                "kernel_id": kernel_id,
                "profile": profile,
                "cluster_id": cluster_id,
                "kernel_state": kernel_state,
            }
        )
        # The cluster's snapshot is already JSON: splice it in rather than parse it again.
        self.write_json(head[:-1] + ', "cluster": ' + conn.snapshot_json() + "}")


def _databricks_metadata(kernel: Any) -> dict[str, Any] | None:
    """``metadata.databricks`` of a kernel's spec, when it names a profile and a cluster."""
    try:
        spec = kernel.kernel_spec
    except Exception:  # noqa: BLE001 - a kernel whose spec vanished is not one of ours
        return None
    return _databricks_of(getattr(spec, "metadata", None))


def _databricks_of(metadata: Any) -> dict[str, Any] | None:
    databricks = metadata.get("databricks") if isinstance(metadata, dict) else None
    if isinstance(databricks, dict) and databricks.get("profile") and databricks.get("cluster_id"):
        return databricks
    return None


class OpenApiHandler(BaseHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        from .openapi import openapi_json

        self.write_json(openapi_json())


def handlers() -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """Routes relative to the server's base_url (ExtensionApp prefixes it)."""
    from .panelapi import KernelspecHandler, TerminateHandler

    base = url_path_join("/", API_PREFIX)
    part = r"([^/]+)"
    return [
        (url_path_join(base, "profiles"), ProfilesHandler),
        (url_path_join(base, "clusters"), ClustersHandler),
        (url_path_join(base, "clusters", part, part), ClusterStatusHandler),
        (url_path_join(base, "clusters", part, part, "start"), StartHandler),
        (url_path_join(base, "clusters", part, part, "reconfigure"), ReconfigureHandler),
        (url_path_join(base, "clusters", part, part, "terminate"), TerminateHandler),
        (url_path_join(base, "clusters", part, part, "kernelspec"), KernelspecHandler),
        (url_path_join(base, "kernels", part), KernelHandler),
        (url_path_join(base, "openapi.json"), OpenApiHandler),
    ]
