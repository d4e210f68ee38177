"""The workspace's OAuth: OIDC discovery and the token endpoint, as databricks-sdk uses them.

Machine-to-machine: a service principal's client id and secret buy an access token
(``client_credentials``). User-to-machine: ``databricks-cli``'s login leaves a refresh token in
the SDK's token cache, which buys new access tokens (``refresh_token``); the browser step is not
modelled. Access tokens are HS256 JWTs signed with a key of the simulator, valid for
``token_lifetime`` seconds of real time (Databricks: one hour); the REST API refuses them after.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any

import tornado.web

if TYPE_CHECKING:
    from . import Simulator

#: The public client databricks-sdk and the Databricks CLI log users in with.
CLI_CLIENT_ID = "databricks-cli"
SCOPES = ("all-apis", "offline_access", "sql", "openid", "profile", "email")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OAuthError(Exception):
    """An RFC 6749 error answer: ``{"error": ..., "error_description": ...}``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


class Issuer:
    """Service principals, refresh tokens and signed access tokens of one workspace."""

    def __init__(self, token_lifetime: float = 3600.0) -> None:
        if token_lifetime <= 0:
            raise ValueError("token_lifetime must be positive")
        self.token_lifetime = float(token_lifetime)
        self._key = secrets.token_bytes(32)
        self.service_principals: dict[str, str] = {}  # client id -> secret
        self._refresh: dict[str, tuple[str, str]] = {}  # refresh token -> (client id, user)
        #: Access tokens issued, by grant type: tests see refreshes happen.
        self.issued: dict[str, int] = {"client_credentials": 0, "refresh_token": 0}

    # -- principals and sessions -------------------------------------------------------------
    def add_service_principal(self) -> tuple[str, str]:
        """A new service principal with an OAuth secret: ``(client_id, client_secret)``."""
        client_id = str(uuid.uuid4())
        secret = "dose" + secrets.token_hex(32)
        self.service_principals[client_id] = secret
        return client_id, secret

    def add_user_session(self, user: str, client_id: str = CLI_CLIENT_ID) -> str:
        """What a finished browser login leaves: a refresh token for ``user``."""
        refresh = "doau" + secrets.token_hex(32)
        self._refresh[refresh] = (client_id, user)
        return refresh

    # -- tokens ------------------------------------------------------------------------------
    def access_token(
        self, subject: str, client_id: str, scope: str, issuer: str, lifetime: float | None = None
    ) -> str:
        now = int(time.time())
        lifetime = self.token_lifetime if lifetime is None else lifetime
        header = {"alg": "HS256", "typ": "JWT", "kid": "sim"}
        claims = {
            "iss": issuer,
            "aud": client_id,
            "sub": subject,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
        }
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = hmac.new(self._key, signing.encode(), hashlib.sha256).digest()
        return f"{signing}.{_b64(signature)}"

    def check(self, credential: str) -> str:
        """``valid``, ``expired`` or ``invalid`` (not a token of this workspace)."""
        parts = credential.split(".")
        if len(parts) != 3:
            return "invalid"
        signing = f"{parts[0]}.{parts[1]}".encode()
        expected = _b64(hmac.new(self._key, signing, hashlib.sha256).digest())
        if not hmac.compare_digest(expected.encode(), parts[2].encode()):
            return "invalid"
        try:
            claims = json.loads(_unb64(parts[1]))
            expiry = float(claims["exp"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return "invalid"
        return "valid" if time.time() < expiry else "expired"

    def grant(self, form: dict[str, str], basic: tuple[str, str] | None, issuer: str) -> dict:
        """The token endpoint's answer to one request (form fields, HTTP Basic credentials)."""
        grant_type = form.get("grant_type", "")
        client_id = basic[0] if basic else form.get("client_id", "")
        client_secret = basic[1] if basic else form.get("client_secret", "")
        scope = form.get("scope") or "all-apis"
        unknown = [s for s in scope.split() if s not in SCOPES]
        if unknown:
            raise OAuthError(400, "invalid_scope", f"Invalid scope: {unknown[0]}")
        if grant_type == "client_credentials":
            known = self.service_principals.get(client_id)
            if known is None or not hmac.compare_digest(known.encode(), client_secret.encode()):
                raise OAuthError(401, "invalid_client", "Client authentication failed")
            self.issued[grant_type] += 1
            return {
                "access_token": self.access_token(client_id, client_id, scope, issuer),
                "token_type": "Bearer",
                "expires_in": int(self.token_lifetime),
                "scope": scope,
            }
        if grant_type == "refresh_token":
            session = self._refresh.get(form.get("refresh_token", ""))
            if session is None or session[0] != client_id:
                raise OAuthError(400, "invalid_grant", "Refresh token is invalid or expired")
            self.issued[grant_type] += 1
            return {
                "access_token": self.access_token(session[1], client_id, scope, issuer),
                "token_type": "Bearer",
                "expires_in": int(self.token_lifetime),
                "scope": scope,
                # The same refresh token again: the SDK keeps the one it is given.
                "refresh_token": form["refresh_token"],
            }
        raise OAuthError(
            400, "unsupported_grant_type", f"Unsupported grant type: {grant_type or '(none)'}"
        )


def discovery(base_url: str) -> dict[str, Any]:
    """The workspace's ``/oidc/.well-known/oauth-authorization-server`` document."""
    oidc = f"{base_url}/oidc"
    return {
        "issuer": oidc,
        "authorization_endpoint": f"{oidc}/v1/authorize",
        "token_endpoint": f"{oidc}/v1/token",
        "jwks_uri": f"{oidc}/jwks.json",
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code", "id_token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "request_uri_parameter_supported": False,
    }


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    if not sep:
        return None
    return urllib.parse.unquote(user), urllib.parse.unquote(password)


def make_handlers(base: type[tornado.web.RequestHandler]) -> tuple[type, type]:
    """The discovery and token handlers on the simulator's base handler (counting, failures,
    latency), without its Bearer check: neither endpoint takes an access token."""

    class Discovery(base):  # type: ignore[misc,valid-type]
        sim: Simulator

        async def prepare(self) -> None:
            await self.count_and_fail()

        def get(self) -> None:
            self.finish(json.dumps(discovery(self.sim.url)))

    class TokenEndpoint(base):  # type: ignore[misc,valid-type]
        sim: Simulator

        async def prepare(self) -> None:
            await self.count_and_fail()

        def post(self) -> None:
            form = {
                k: v[-1].decode(errors="replace") for k, v in self.request.body_arguments.items()
            }
            basic = _basic(self.request.headers.get("Authorization", ""))
            try:
                answer = self.sim.oidc.grant(form, basic, f"{self.sim.url}/oidc")
            except OAuthError as exc:
                self.set_status(exc.status)
                self.set_header("Cache-Control", "no-store")
                self.finish(json.dumps({"error": exc.error, "error_description": exc.description}))
                return
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps(answer))

    return Discovery, TokenEndpoint
