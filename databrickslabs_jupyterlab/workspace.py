"""The Databricks workspace, seen through databricks-sdk.

The SDK is synchronous and retries 429/503 and connection errors for ``retry_timeout_seconds``;
a dead host even blocks ``Config()`` that long. So every client is built in a worker thread with
bounded retry and HTTP timeouts, cached per profile, and every call runs through
``asyncio.to_thread``. SDK exceptions become :class:`WorkspaceError` subclasses whose message is a
sentence a person understands; tokens never appear in them.
"""

from __future__ import annotations

import asyncio
import configparser
import itertools
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import vocabulary

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "~/.databrickscfg"

# Fields of a cluster spec that clusters/edit does not accept (they describe the running cluster).
_READ_ONLY_FIELDS = frozenset(
    {
        "cluster_source",
        "creator_user_name",
        "default_tags",
        "disk_spec",
        "driver",
        "executors",
        "jdbc_port",
        "last_activity_time",
        "last_restarted_time",
        "last_state_loss_time",
        "spark_context_id",
        "spec",
        "start_time",
        "state",
        "state_message",
        "terminated_time",
        "termination_reason",
        "cluster_cores",
        "cluster_memory_mb",
        "cluster_log_status",
    }
)


class WorkspaceError(Exception):
    """An answer (or silence) of the workspace, as a sentence without secrets.

    ``status`` is the HTTP status the REST API answers with, ``code`` its snake_case error name.
    """

    status: int = 502
    code: str = "workspace_error"

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class NoSuchProfile(WorkspaceError):
    status = 404
    code = "no_such_profile"


class NoSuchCluster(WorkspaceError):
    status = 404
    code = "no_such_cluster"


class WorkspaceUnavailable(WorkspaceError):
    status = 503
    code = "workspace_unavailable"


@dataclass(frozen=True)
class ProfileInfo:
    name: str
    host: str | None
    auth_type: str


def config_file_path(config_file: str | None = None) -> Path:
    """The Databricks config file the SDK would read."""
    path = config_file or os.environ.get("DATABRICKS_CONFIG_FILE") or DEFAULT_CONFIG_FILE
    return Path(path).expanduser()


def _auth_type(section: configparser.SectionProxy) -> str:
    """The method databricks-sdk's unified auth picks for the profile: ``auth_type`` if set,
    else the first of its default chain whose settings the profile has."""
    explicit = section.get("auth_type")
    if explicit:
        return explicit.strip().lower()
    if section.get("token"):
        return "pat"
    if section.get("username") and section.get("password"):
        return "basic"
    if section.get("metadata_service_url"):
        return "metadata-service"
    if section.get("client_id") and section.get("client_secret"):
        return "oauth-m2m"
    if section.get("oidc_token_filepath"):
        return "file-oidc"
    if section.get("azure_client_id") and section.get("azure_client_secret"):
        return "azure-client-secret"
    if section.get("azure_workspace_resource_id") or section.get("azure_tenant_id"):
        return "azure-cli"
    if section.get("google_credentials"):
        return "google-credentials"
    if section.get("google_service_account"):
        return "google-id"
    # Nothing else: the Databricks CLI's OAuth login (`databricks auth login`) is what is left.
    return "databricks-cli"


def list_profiles(config_file: str | None = None) -> list[ProfileInfo]:
    """Profiles of the Databricks config file: name, host and how they authenticate.

    Blocking (file I/O): call it through ``asyncio.to_thread`` from the server.
    """
    path = config_file_path(config_file)
    parser = configparser.ConfigParser(interpolation=None, default_section="__no_default__")
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError):
        return []
    profiles = []
    for name in parser.sections():
        section = parser[name]
        host = section.get("host")
        profiles.append(
            ProfileInfo(
                name=name, host=host.strip() if host else None, auth_type=_auth_type(section)
            )
        )
    # DEFAULT is a real profile for the SDK; configparser hides it unless told otherwise.
    try:
        raw = configparser.ConfigParser(interpolation=None)
        raw.read(path, encoding="utf-8")
        if raw.defaults() and not any(p.name == "DEFAULT" for p in profiles):
            section = raw["DEFAULT"]
            host = section.get("host")
            profiles.insert(
                0, ProfileInfo("DEFAULT", host.strip() if host else None, _auth_type(section))
            )
    except (configparser.Error, UnicodeDecodeError, OSError):
        pass
    return profiles


def profile_exists(name: str, config_file: str | None = None) -> bool:
    return any(p.name == name for p in list_profiles(config_file))


def public_key_for(identity_file: Path) -> str | None:
    """``<type> <base64>`` of the public key next to a private key file, or None."""
    pub = identity_file.with_name(identity_file.name + ".pub")
    try:
        parts = pub.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return None
    return " ".join(parts[:2]) if len(parts) >= 2 else None


def key_installed(public_key: str | None, cluster_keys: list[str]) -> bool:
    if not public_key:
        return False
    wanted = " ".join(public_key.split()[:2])
    return any(" ".join(k.split()[:2]) == wanted for k in cluster_keys)


@dataclass
class ClusterInfo:
    cluster_id: str
    cluster_name: str | None
    state: str | None
    state_message: str | None
    public_dns: str | None
    ssh_public_keys: list[str]
    start_time: int | None
    terminated_time: int | None
    spark_version: str | None
    autotermination_minutes: int | None
    driver_start: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterInfo:
        driver = data.get("driver") or {}
        state = data.get("state")
        return cls(
            cluster_id=data.get("cluster_id", ""),
            cluster_name=data.get("cluster_name"),
            state=str(state) if state is not None else None,
            state_message=data.get("state_message") or None,
            public_dns=_hostname(driver.get("public_dns")),
            ssh_public_keys=list(data.get("ssh_public_keys") or []),
            start_time=data.get("start_time"),
            terminated_time=data.get("terminated_time"),
            spark_version=data.get("spark_version"),
            autotermination_minutes=data.get("autotermination_minutes"),
            driver_start=driver.get("start_timestamp") or data.get("start_time"),
            raw=data,
        )


def _hostname(value: object) -> str | None:
    """A driver address fit for ``~/.ssh/config`` and ``ProxyCommand``; anything else is
    dropped (with a warning), so that a newline or a shell word never reaches either."""
    if not value:
        return None
    if vocabulary.is_hostname(value):
        return str(value)
    log.warning("Ignored a driver public_dns that is not a host name: %r", str(value)[:80])
    return None


def _translate(err: BaseException, what: str, host: str | None) -> WorkspaceError:
    """Map an SDK or network exception to a WorkspaceError with a readable sentence."""
    from databricks.sdk import errors

    # Every sentence below starts with it.
    where = f"The Databricks workspace at {host}" if host else "The Databricks workspace"
    if isinstance(err, WorkspaceError):
        return err
    if isinstance(err, errors.DatabricksError):
        message = str(err).strip() or type(err).__name__
        status = getattr(err, "status_code", None) or _status_of(err)
        if "does not exist" in message.lower() or isinstance(err, errors.NotFound):
            return NoSuchCluster(f"{what}: {message}")
        if status == 401 or isinstance(err, errors.Unauthenticated):
            return WorkspaceError(
                f"{where} refused the credentials of the profile while trying to {what}: {message}",
                status=502,
                code="workspace_auth_failed",
            )
        if status == 403 or isinstance(err, errors.PermissionDenied):
            return WorkspaceError(
                f"{where} denied permission to {what}: {message}",
                status=502,
                code="workspace_permission_denied",
            )
        if (
            isinstance(err, errors.InvalidState)
            or getattr(err, "error_code", "") == "INVALID_STATE"
        ):
            return WorkspaceError(f"Could not {what}: {message}", status=409, code="invalid_state")
        if status is not None and (status >= 500 or status == 429):
            return WorkspaceUnavailable(f"{where} keeps failing ({status}) when asked to {what}.")
        return WorkspaceError(f"Could not {what}: {message}", status=502)
    if isinstance(err, TimeoutError):
        if isinstance(err.__cause__, errors.DatabricksError):
            # the SDK's retries ran out: the last answer (a 429 or 503 storm) says more
            return _translate(err.__cause__, what, host)
        return WorkspaceUnavailable(
            f"{where} did not answer in time when asked to {what}; it may be down or unreachable."
        )
    try:
        import requests

        if isinstance(err, requests.RequestException):
            return WorkspaceUnavailable(f"{where} cannot be reached to {what}.")
    except ImportError:  # pragma: no cover - requests comes with the SDK
        pass
    if isinstance(err, OSError):
        return WorkspaceUnavailable(f"{where} cannot be reached to {what}.")
    return WorkspaceError(f"Could not {what}: {type(err).__name__}.")


def _status_of(err: BaseException) -> int | None:
    from databricks.sdk import errors

    table = [
        (errors.TooManyRequests, 429),
        (errors.TemporarilyUnavailable, 503),
        (errors.InternalError, 500),
        (errors.DeadlineExceeded, 504),
        (errors.NotImplemented, 501),
        (errors.BadRequest, 400),
        (errors.NotFound, 404),
        (errors.ResourceConflict, 409),
    ]
    for kind, status in table:
        if isinstance(err, kind):
            return status
    return None


class Workspace:
    """One profile's workspace client; build it with :meth:`for_profile`."""

    #: Clients kept at most, least recently used dropped first.
    CACHE_SIZE = 16
    _cache: OrderedDict[tuple[Any, ...], Workspace] = OrderedDict()
    _locks: dict[tuple[Any, ...], asyncio.Lock] = {}

    def __init__(self, profile: str, client: Any, host: str | None) -> None:
        self.profile = profile
        self._client = client
        self.host = host

    @property
    def client(self) -> Any:
        """The profile's databricks-sdk ``WorkspaceClient`` (for calls this facade lacks, such as
        REST 1.2 command execution); call it in a thread."""
        return self._client

    @classmethod
    async def for_profile(
        cls,
        profile: str,
        *,
        config_file: str | None = None,
        retry_timeout: int = 20,
        http_timeout: float = 10,
    ) -> Workspace:
        """The cached client of a profile, built in a thread on first use.

        The cache key includes the config file's path, size and modification time, so an edited
        profile (or another HOME in tests) gets a fresh client.
        """
        path = config_file_path(config_file)
        stamp = await asyncio.to_thread(_file_stamp, path)
        key = (profile, str(path), stamp, int(retry_timeout), float(http_timeout))
        cached = cls._cached(key)
        if cached is not None:
            return cached
        lock_key = (id(asyncio.get_running_loop()), *key)
        lock = cls._locks.setdefault(lock_key, asyncio.Lock())
        try:
            async with lock:
                cached = cls._cached(key)
                if cached is not None:
                    return cached
                workspace = await asyncio.to_thread(
                    cls._build, profile, str(path), int(retry_timeout), float(http_timeout)
                )
                cls._keep(key, workspace)
                return workspace
        finally:
            cls._locks.pop(lock_key, None)  # later callers find the client in the cache

    @classmethod
    def _cached(cls, key: tuple[Any, ...]) -> Workspace | None:
        cached = cls._cache.get(key)
        if cached is not None:
            cls._cache.move_to_end(key)
        return cached

    @classmethod
    def _keep(cls, key: tuple[Any, ...], workspace: Workspace) -> None:
        """Cache a client; older ones of the same profile and file (an earlier edit of the
        file) go, and the least recently used beyond CACHE_SIZE."""
        for old in [k for k in cls._cache if k[:2] == key[:2] and k != key]:
            del cls._cache[old]
        cls._cache[key] = workspace
        while len(cls._cache) > max(1, cls.CACHE_SIZE):
            cls._cache.popitem(last=False)

    @classmethod
    def forget(cls, profile: str | None = None) -> None:
        """Drop cached clients (all, or one profile's), e.g. after the config file changed."""
        for key in list(cls._cache):
            if profile is None or key[0] == profile:
                cls._cache.pop(key, None)

    @classmethod
    def _build(
        cls, profile: str, config_file: str | None, retry_timeout: int, http_timeout: float
    ) -> Workspace:
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config

        path = str(config_file_path(config_file))
        if not profile_exists(profile, path):
            raise NoSuchProfile(f"There is no profile {profile!r} in {path}.")
        host = next((p.host for p in list_profiles(path) if p.name == profile), None)
        try:
            config = Config(
                profile=profile,
                config_file=path,
                retry_timeout_seconds=retry_timeout,
                http_timeout_seconds=http_timeout,
                # Its DEBUG log would otherwise show the Authorization header when
                # DATABRICKS_DEBUG_HEADERS is set; the CLI's -D must never print the token.
                debug_headers=False,
            )
            client = WorkspaceClient(config=config)
        except ValueError as err:
            text = str(err)
            if "profile" in text and ("not" in text or "no " in text) and "configured" in text:
                raise NoSuchProfile(f"There is no profile {profile!r} in {path}.") from None
            raise WorkspaceError(
                f"The profile {profile!r} cannot be used to reach its workspace: "
                f"{_first_sentence(text)}",
                status=502,
                code="invalid_profile_config",
            ) from None
        except Exception as err:  # noqa: BLE001 - every SDK failure becomes a sentence
            raise _translate(err, "read the workspace configuration", host) from None
        return cls(profile, client, host)

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            try:
                return fn(*args, **kwargs)
            except TimeoutError as err:
                # Read here: asyncio hands a TimeoutError out of a thread as a new one, without
                # the SDK's last answer (the 429 or 503 of a storm) as its cause.
                raise _translate(err, what, self.host) from None

        try:
            return await asyncio.to_thread(call)
        except Exception as err:  # noqa: BLE001
            raise _translate(err, what, self.host) from None

    async def get_cluster(self, cluster_id: str) -> ClusterInfo:
        def get() -> dict[str, Any]:
            return self._client.clusters.get(cluster_id=cluster_id).as_dict()

        try:
            data = await self._call(f"read cluster {cluster_id}", get)
        except NoSuchCluster:
            raise NoSuchCluster(
                f"Cluster {cluster_id} does not exist in the workspace of profile {self.profile}."
            ) from None
        return ClusterInfo.from_dict(data)

    async def list_clusters(self) -> list[ClusterInfo]:
        def listing() -> list[dict[str, Any]]:
            return [c.as_dict() for c in self._client.clusters.list()]

        return [ClusterInfo.from_dict(d) for d in await self._call("list clusters", listing)]

    async def start_cluster(self, cluster_id: str) -> None:
        def start() -> None:
            # The SDK's Wait object is not awaited: the caller follows the state itself.
            self._client.clusters.start(cluster_id=cluster_id)

        await self._call(f"start cluster {cluster_id}", start)

    async def terminate_cluster(self, cluster_id: str) -> None:
        """Terminate the cluster (clusters/delete; it stays listed and can be started again)."""

        def terminate() -> None:
            # As with start, the SDK's Wait object is not awaited: the refresh follows the state.
            self._client.clusters.delete(cluster_id=cluster_id)

        await self._call(f"terminate cluster {cluster_id}", terminate)

    async def set_ssh_public_keys(self, cluster_id: str, keys: list[str]) -> None:
        """Replace the cluster's SSH keys with clusters/edit (which needs the whole spec).

        On a running cluster Databricks restarts it to apply the change.
        """
        info = await self.get_cluster(cluster_id)
        spec = {k: v for k, v in info.raw.items() if k not in _READ_ONLY_FIELDS}
        spec["cluster_id"] = cluster_id
        spec["ssh_public_keys"] = list(keys)
        if "autoscale" in spec:
            spec.pop("num_workers", None)

        def edit() -> None:
            self._client.api_client.do("POST", "/api/2.1/clusters/edit", body=spec)

        await self._call(f"set the SSH keys of cluster {cluster_id}", edit)

    async def events(self, cluster_id: str, limit: int = 20) -> list[dict[str, Any]]:
        def events() -> list[dict[str, Any]]:
            it = self._client.clusters.events(cluster_id=cluster_id, limit=limit)
            return [e.as_dict() for e in itertools.islice(it, limit)]

        return await self._call(f"read the events of cluster {cluster_id}", events)

    async def library_statuses(self, cluster_id: str) -> list[dict[str, Any]]:
        def statuses() -> list[dict[str, Any]]:
            return [
                s.as_dict() for s in self._client.libraries.cluster_status(cluster_id=cluster_id)
            ]

        return await self._call(f"read the libraries of cluster {cluster_id}", statuses)

    def token_for_clipboard(self) -> str:
        """The profile's personal access token, for the CLI's copy-to-clipboard only."""
        token = getattr(self._client.config, "token", None)
        if not token:
            raise WorkspaceError(f"Profile {self.profile} does not use a personal access token.")
        return token


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    for stop in (". ", "; "):
        if stop in text:
            return text.split(stop, 1)[0] + "."
    return text[:300]
