"""The workspace REST subset, as databricks-sdk calls it, plus ``/_sim`` controls.

Paths, verbs, query parameters, bodies and error shapes are those of the Databricks REST API
2.0/2.1 (``{"error_code": ..., "message": ...}``), so that the product talks to the simulator
through the unmodified SDK.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import TYPE_CHECKING, Any

import asyncssh
import tornado.web

from . import oidc, tunnel
from .commands import ALL_LANGUAGES, LANGUAGES, CommandError
from .lifecycle import ACCESS_MODES, ClusterStateError
from .policies import violations

if TYPE_CHECKING:
    from . import Simulator

_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    409: "RESOURCE_CONFLICT",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_STATUS_MESSAGES = {
    429: "Too many requests. Please wait a moment and try again.",
    500: "Internal error. Please try again later.",
    502: "Bad gateway.",
    503: "The service is temporarily unavailable. Please try again later.",
    504: "The request timed out.",
}


class ApiError(Exception):
    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


class _Base(tornado.web.RequestHandler):
    """Auth, latency, injected failures and call counting for every simulator endpoint."""

    is_api = True

    def initialize(self, sim: Simulator) -> None:
        self.sim = sim

    def check_xsrf_cookie(self) -> None:  # an API, not a browser form
        return None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Server", "databricks-simulator")

    async def prepare(self) -> None:
        if self.is_api:
            await self.count_and_fail()
        header = self.request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential:
            raise ApiError(
                401,
                "UNAUTHENTICATED",
                "Credential was not sent or was of an unsupported type for this API.",
            )
        # The personal access token, or an OAuth access token of the workspace's issuer.
        if self.sim._token_matches(credential.strip()):
            return
        verdict = self.sim.oidc.check(credential.strip())
        if verdict == "expired":
            raise ApiError(401, "UNAUTHENTICATED", "Token expired.")
        if verdict != "valid":
            raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")

    async def count_and_fail(self) -> None:
        self.sim.calls[f"{self.request.method} {self.request.path}"] += 1
        if self.sim.latency > 0:
            await asyncio.sleep(self.sim.latency)
        failure = self.sim._take_failure(self.request.path)
        if failure is not None:
            raise ApiError(
                failure,
                _STATUS_CODES.get(failure, "INTERNAL_ERROR"),
                _STATUS_MESSAGES.get(failure, "Simulated failure."),
            )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            body = {"error_code": exc.error_code, "message": exc.message}
            if exc.status in (429, 503):
                self.set_header("Retry-After", str(self.sim.retry_after))
        elif status_code in (404, 405):
            self.set_status(404)
            body = {
                "error_code": "ENDPOINT_NOT_FOUND",
                "message": f"No API found for '{self.request.method} {self.request.path}'",
            }
        else:
            body = {
                "error_code": _STATUS_CODES.get(status_code, "INTERNAL_ERROR"),
                "message": self._reason,
            }
        self.finish(json.dumps(body))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            return
        super().log_exception(typ, value, tb)

    # -- request helpers ---------------------------------------------------------------------
    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ApiError(
                400,
                "MALFORMED_REQUEST",
                "Invalid JSON given in the body of the request - expected a map",
            )
        return data

    def cluster_id(self, source: dict[str, Any] | None) -> str:
        if source is None:
            value = self.get_query_argument("cluster_id", None)
        else:
            value = source.get("cluster_id")
        if not value or not isinstance(value, str):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Missing required field: cluster_id")
        return value

    def cluster(self, cluster_id: str) -> Any:
        cluster = self.sim._clusters.get(cluster_id)
        if cluster is None:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Cluster {cluster_id} does not exist")
        return cluster

    def reply(self, data: Any) -> None:
        self.finish(json.dumps(data))


class WellKnownHandler(_Base):
    is_api = False

    async def prepare(self) -> None:  # no auth, like the real discovery endpoint
        return None

    def get(self) -> None:
        self.reply(
            {
                "workspace_id": self.sim.workspace_id,
                "cloud": "aws",
                "oidc_endpoint": f"{self.sim.url}/oidc",
            }
        )


class ClustersGet(_Base):
    def get(self) -> None:
        self.reply(self.cluster(self.cluster_id(None)).to_json())


class ClustersList(_Base):
    def get(self) -> None:
        clusters = sorted(self.sim._clusters.values(), key=lambda c: c.name)
        offset = 0
        token = self.get_query_argument("page_token", None)
        if token:
            try:
                offset = int(base64.urlsafe_b64decode(token.encode()).decode())
            except ValueError as exc:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "Invalid page token") from exc
        size_arg = self.get_query_argument("page_size", None)
        size = int(size_arg) if size_arg and size_arg.isdigit() and int(size_arg) > 0 else 100
        page = clusters[offset : offset + size]
        data: dict[str, Any] = {"clusters": [c.to_json() for c in page]}
        if offset + size < len(clusters):
            data["next_page_token"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        if offset > 0:
            data["prev_page_token"] = base64.urlsafe_b64encode(
                str(max(offset - size, 0)).encode()
            ).decode()
        self.reply(data)


class ClustersStart(_Base):
    def post(self) -> None:
        cluster = self.cluster(self.cluster_id(self.body()))
        try:
            cluster.start()
        except ClusterStateError as exc:
            raise ApiError(400, "INVALID_STATE", str(exc)) from exc
        self.reply({})


class ClustersRestart(_Base):
    def post(self) -> None:
        cluster = self.cluster(self.cluster_id(self.body()))
        try:
            cluster.restart()
        except ClusterStateError as exc:
            raise ApiError(400, "INVALID_STATE", str(exc)) from exc
        self.reply({})


class ClustersDelete(_Base):
    """``clusters/delete`` terminates (the cluster stays listed, as in a real workspace)."""

    async def post(self) -> None:
        cluster = self.cluster(self.cluster_id(self.body()))
        cluster._begin_terminate("USER_REQUEST")
        self.reply({})


def _check_spec(sim: Any, body: dict[str, Any], current: dict[str, Any]) -> None:
    """What create and edit both refuse: a bad access mode, bad keys, a policy's rules."""
    if not body.get("spark_version"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "Missing required field: spark_version")
    mode = body.get("data_security_mode")
    if mode is not None and mode not in ACCESS_MODES:
        raise ApiError(
            400,
            "INVALID_PARAMETER_VALUE",
            f"Invalid data_security_mode: {mode!r} (expected one of {', '.join(ACCESS_MODES)}).",
        )
    policy_id = body.get("policy_id", current.get("policy_id"))
    if policy_id:
        policy = sim.policies.get(policy_id)
        if policy is None:
            raise ApiError(
                400, "INVALID_PARAMETER_VALUE", f"Cluster policy {policy_id} does not exist"
            )
        problems = violations(policy.definition, {**current, **body})
        if problems:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "; ".join(problems))


class ClustersCreate(_Base):
    """``clusters/create``: the new cluster starts at once (PENDING, then RUNNING)."""

    def post(self) -> None:
        body = self.body()
        if not body.get("cluster_name"):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Missing required field: cluster_name")
        self.check_keys(body)
        _check_spec(self.sim, body, {})
        keywords = {
            k: body[k]
            for k in (
                "spark_version",
                "ssh_public_keys",
                "num_workers",
                "data_security_mode",
                "single_user_name",
                "policy_id",
            )
            if k in body
        }
        if "autotermination_minutes" in body:
            keywords["autotermination_minutes"] = int(body["autotermination_minutes"])
        # Without an access mode the API's legacy default applies: no isolation.
        keywords.setdefault("data_security_mode", "NONE")
        keywords.setdefault("single_user_name", None)
        cluster_id = self.sim.add_cluster(str(body["cluster_name"]), state="PENDING", **keywords)
        self.reply({"cluster_id": cluster_id})

    def check_keys(self, body: dict[str, Any]) -> None:
        keys = body.get("ssh_public_keys")
        if keys is not None:
            if not isinstance(keys, list) or len(keys) > 10:
                raise ApiError(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    "ssh_public_keys must be a list of at most 10 keys",
                )
            for key in keys:
                try:
                    asyncssh.import_public_key(str(key))
                except (asyncssh.KeyImportError, ValueError) as exc:
                    raise ApiError(
                        400, "INVALID_PARAMETER_VALUE", "Invalid SSH public key in ssh_public_keys"
                    ) from exc


class ClustersEdit(ClustersCreate):
    def post(self) -> None:
        body = self.body()
        cluster = self.cluster(self.cluster_id(body))
        self.check_keys(body)
        _check_spec(self.sim, body, cluster.spec)
        try:
            cluster.edit(body)
        except ClusterStateError as exc:
            raise ApiError(400, "INVALID_STATE", str(exc)) from exc
        self.reply({})


class ClustersEvents(_Base):
    def post(self) -> None:
        body = self.body()
        cluster = self.cluster(self.cluster_id(body))
        # The index breaks ties between events of the same millisecond.
        events = [dict(e, _i=i) for i, e in enumerate(cluster.events)]
        if body.get("start_time") is not None:
            events = [e for e in events if e["timestamp"] >= int(body["start_time"])]
        if body.get("end_time") is not None:
            events = [e for e in events if e["timestamp"] <= int(body["end_time"])]
        if body.get("event_types"):
            wanted = set(body["event_types"])
            events = [e for e in events if e["type"] in wanted]
        order = str(body.get("order") or "DESC").upper()
        if order not in ("ASC", "DESC"):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid order: {order}")
        events.sort(key=lambda e: (e["timestamp"], e["_i"]), reverse=order == "DESC")
        for event in events:
            del event["_i"]
        total = len(events)
        if body.get("page_token") is not None or body.get("page_size") is not None:
            size = int(body.get("page_size") or 50)
            offset = 0
            if body.get("page_token"):
                try:
                    offset = int(
                        base64.urlsafe_b64decode(str(body["page_token"]).encode()).decode()
                    )
                except ValueError as exc:
                    raise ApiError(400, "INVALID_PARAMETER_VALUE", "Invalid page token") from exc
            page = events[offset : offset + size]
            nxt = offset + size if offset + size < total else None
            prev = max(offset - size, 0) if offset > 0 else None
            self.reply(
                {
                    "events": page,
                    "next_page_token": _token(nxt),
                    "prev_page_token": _token(prev),
                    "total_count": 0,
                }
            )
            return
        limit = int(body.get("limit") or 50)
        if not 0 < limit <= 500:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "limit must be between 1 and 500")
        offset = int(body.get("offset") or 0)
        page = events[offset : offset + limit]
        data: dict[str, Any] = {"events": page, "total_count": total}
        if offset + limit < total:
            data["next_page"] = {**body, "offset": offset + limit, "limit": limit}
        self.reply(data)


def _token(offset: int | None) -> str:
    if offset is None:
        return ""
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


class PoliciesGet(_Base):
    def get(self) -> None:
        policy_id = self.get_query_argument("policy_id", None)
        if not policy_id:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Missing required field: policy_id")
        policy = self.sim.policies.get(policy_id)
        if policy is None:
            raise ApiError(
                404, "RESOURCE_DOES_NOT_EXIST", f"Cluster policy {policy_id} does not exist"
            )
        self.reply(policy.to_json())


class LibrariesStatus(_Base):
    def get(self) -> None:
        cluster_id = self.cluster_id(None)
        cluster = self.cluster(cluster_id)
        data: dict[str, Any] = {"cluster_id": cluster_id}
        if cluster.libraries:
            data["library_statuses"] = [dict(lib) for lib in cluster.libraries]
        self.reply(data)


class LibrariesInstall(_Base):
    def post(self) -> None:
        body = self.body()
        cluster = self.cluster(self.cluster_id(body))
        libraries = body.get("libraries")
        if not isinstance(libraries, list) or not all(isinstance(x, dict) for x in libraries):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Missing required field: libraries")
        cluster.install_libraries(libraries)
        self.reply({})


# -- Command Execution API (REST 1.2) ---------------------------------------------------------
class _Api12(_Base):
    """``clusterId``/``contextId``/``commandId`` in the body (POST) or the query (GET), as
    databricks-sdk's ``command_execution`` sends them; the driver must be RUNNING."""

    def field(self, source: dict[str, Any] | None, name: str) -> str:
        value = self.get_query_argument(name, None) if source is None else source.get(name)
        if not value or not isinstance(value, str):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Missing required field: {name}")
        return value

    def runtime(self, source: dict[str, Any] | None) -> Any:
        cluster_id = self.field(source, "clusterId")
        cluster = self.cluster(cluster_id)
        if cluster.state != "RUNNING" or not cluster.runtime.up:
            raise ApiError(
                400,
                "INVALID_STATE",
                f"Cluster {cluster_id} is not running (state {cluster.state.capitalize()}).",
            )
        return cluster.runtime

    def language(self, value: Any, default: str | None = None) -> str:
        if value is None and default is not None:
            return default
        language = str(value or "").lower()
        if language in LANGUAGES:
            return language
        if language in ALL_LANGUAGES:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Language {language} is not supported by the simulated driver "
                f"(supported: {', '.join(LANGUAGES)}).",
            )
        raise ApiError(
            400,
            "INVALID_PARAMETER_VALUE",
            f"Invalid language: {value!r} (expected one of {', '.join(ALL_LANGUAGES)}).",
        )

    def command_error(self, exc: CommandError) -> ApiError:
        return ApiError(exc.status, exc.error_code, exc.message)


class ContextsCreate(_Api12):
    def post(self) -> None:
        body = self.body()
        runtime = self.runtime(body)
        language = self.language(body.get("language"), default="python")
        self.reply({"id": runtime.create_context(language).id})


class ContextsStatus(_Api12):
    def get(self) -> None:
        runtime = self.runtime(None)
        try:
            context = runtime.context(self.field(None, "contextId"))
        except CommandError as exc:
            raise self.command_error(exc) from exc
        self.reply({"id": context.id, "status": context.status})


class ContextsDestroy(_Api12):
    def post(self) -> None:
        body = self.body()
        runtime = self.runtime(body)
        context_id = self.field(body, "contextId")
        try:
            runtime.destroy_context(context_id)
        except CommandError as exc:
            raise self.command_error(exc) from exc
        self.reply({"id": context_id})


class CommandsExecute(_Api12):
    def post(self) -> None:
        body = self.body()
        runtime = self.runtime(body)
        try:
            context = runtime.context(self.field(body, "contextId"))
        except CommandError as exc:
            raise self.command_error(exc) from exc
        language = self.language(body.get("language"), default=context.language)
        command = body.get("command")
        if not isinstance(command, str):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Missing required field: command")
        if context.status == "Error":
            raise ApiError(
                400, "INVALID_STATE", f"Execution context {context.id} is in state Error."
            )
        runtime.touch()
        self.reply({"id": context.execute(language, command).id})


class _CommandHandler(_Api12):
    def command(self, source: dict[str, Any] | None) -> Any:
        runtime = self.runtime(source)
        try:
            context = runtime.context(self.field(source, "contextId"))
        except CommandError as exc:
            raise self.command_error(exc) from exc
        command_id = self.field(source, "commandId")
        command = context.commands.get(command_id)
        if command is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Command {command_id} does not exist.")
        return context, command


class CommandsStatus(_CommandHandler):
    def get(self) -> None:
        _, command = self.command(None)
        self.reply(command.to_json())


class CommandsCancel(_CommandHandler):
    def post(self) -> None:
        context, command = self.command(self.body())
        context.cancel(command)
        self.reply({"id": command.id})


# -- controls -------------------------------------------------------------------------------
class _Control(_Base):
    is_api = False

    def control_cluster(self, cluster_id: str) -> Any:
        cluster = self.sim._clusters.get(cluster_id)
        if cluster is None:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Cluster {cluster_id} does not exist")
        return cluster


class SimTerminate(_Control):
    async def post(self, cluster_id: str) -> None:
        self.control_cluster(cluster_id)
        reason = str(self.body().get("reason") or "INACTIVITY")
        try:
            await self.sim.terminate(cluster_id, reason)
        except ValueError as exc:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", str(exc)) from exc
        self.reply(self.sim._clusters[cluster_id].to_json())


class SimFail(_Control):
    def post(self) -> None:
        body = self.body()
        try:
            n = int(body.get("n", 1))
            status = int(body.get("status", 503))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "n and status must be integers") from exc
        path = body.get("path")
        self.sim.fail_next(n, status, path if isinstance(path, str) and path else None)
        self.reply({"n": n, "status": status, "path": path})

    def delete(self) -> None:
        self.reply({"cleared": self.sim.clear_failures()})


class SimLatency(_Control):
    def post(self) -> None:
        try:
            seconds = float(self.body().get("seconds", 0))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "seconds must be a number") from exc
        if seconds < 0:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "seconds must not be negative")
        self.sim.latency = seconds
        self.reply({"seconds": seconds})


class SimSshMode(_Control):
    def post(self, cluster_id: str) -> None:
        self.control_cluster(cluster_id)
        mode = self.body().get("mode")
        try:
            self.sim.set_ssh_mode(cluster_id, str(mode))
        except ValueError as exc:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", str(exc)) from exc
        self.reply({"cluster_id": cluster_id, "mode": mode})


class SimDropSsh(_Control):
    async def post(self, cluster_id: str) -> None:
        self.control_cluster(cluster_id)
        dropped = await self.sim.drop_ssh(cluster_id)
        self.reply({"cluster_id": cluster_id, "dropped": dropped})


class SimSshTunnel(_Control):
    """Stands for what ``databricks ssh connect`` does through Jobs, Workspace and Secrets:
    start the cluster's tunnel server (once per driver start) and read its port, its user and
    the client key pair of the secret scope."""

    def post(self, cluster_id: str) -> None:
        cluster = self.control_cluster(cluster_id)
        try:
            self.reply(cluster.tunnel.start())
        except tunnel.TunnelError as exc:
            raise ApiError(exc.status, exc.error_code, exc.message) from exc


class SimCalls(_Control):
    def get(self) -> None:
        self.reply(dict(self.sim.calls))


class SimClusters(_Control):
    def get(self) -> None:
        self.reply({"clusters": [self.sim._describe(c) for c in self.sim._clusters.values()]})


class NotFound(_Base):
    def prepare(self) -> Any:
        raise tornado.web.HTTPError(404)


OidcDiscovery, OidcToken = oidc.make_handlers(_Base)


def make_app(sim: Simulator) -> tornado.web.Application:
    kw = {"sim": sim}
    cid = r"([^/]+)"
    return tornado.web.Application(
        [
            (r"/\.well-known/databricks-config", WellKnownHandler, kw),
            (
                r"/oidc/\.well-known/(?:oauth-authorization-server|openid-configuration)",
                OidcDiscovery,
                kw,
            ),
            (r"/oidc/v1/token", OidcToken, kw),
            # 2.1 is what current SDKs call; 2.0 serves older clients the same way.
            (r"/api/2\.[01]/clusters/get", ClustersGet, kw),
            (r"/api/2\.[01]/clusters/list", ClustersList, kw),
            (r"/api/2\.[01]/clusters/start", ClustersStart, kw),
            (r"/api/2\.[01]/clusters/restart", ClustersRestart, kw),
            (r"/api/2\.[01]/clusters/delete", ClustersDelete, kw),
            (r"/api/2\.[01]/clusters/create", ClustersCreate, kw),
            (r"/api/2\.[01]/clusters/edit", ClustersEdit, kw),
            (r"/api/2\.0/policies/clusters/get", PoliciesGet, kw),
            (r"/api/2\.[01]/clusters/events", ClustersEvents, kw),
            (r"/api/2\.0/libraries/cluster-status", LibrariesStatus, kw),
            (r"/api/2\.0/libraries/install", LibrariesInstall, kw),
            (r"/api/1\.2/contexts/create", ContextsCreate, kw),
            (r"/api/1\.2/contexts/status", ContextsStatus, kw),
            (r"/api/1\.2/contexts/destroy", ContextsDestroy, kw),
            (r"/api/1\.2/commands/execute", CommandsExecute, kw),
            (r"/api/1\.2/commands/status", CommandsStatus, kw),
            (r"/api/1\.2/commands/cancel", CommandsCancel, kw),
            (rf"/_sim/clusters/{cid}/terminate", SimTerminate, kw),
            (rf"/_sim/clusters/{cid}/ssh", SimSshMode, kw),
            (rf"/_sim/clusters/{cid}/drop-ssh", SimDropSsh, kw),
            (rf"/_sim/clusters/{cid}/ssh-tunnel", SimSshTunnel, kw),
            *tunnel.routes(sim),
            (r"/_sim/fail", SimFail, kw),
            (r"/_sim/latency", SimLatency, kw),
            (r"/_sim/calls", SimCalls, kw),
            (r"/_sim/clusters", SimClusters, kw),
            (r".*", NotFound, kw),
        ],
        default_handler_class=NotFound,
        default_handler_args=kw,
        log_function=lambda handler: None,
    )
