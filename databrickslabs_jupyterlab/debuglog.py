"""Debug logging for the CLI's ``-D/--debug``: what the CLI does and every HTTP request it makes.

The reference turned on ``http.client``'s header echo, which printed the Authorization header
and with it the token. Here the log goes through Python logging to stderr, and one filter on the
handler rewrites every record before it is written: Authorization values, ``Bearer``/``Basic``
credentials, Databricks personal access tokens, ``secret-name=value`` pairs, and the literal
secret values of the Databricks config file's profiles all become ``***``. databricks-sdk never
logs headers (the workspace client is built with ``debug_headers=False``), and its request and
response dumps are left out (bodies can hold cluster settings with credentials in them).

Each HTTP request (databricks-sdk, the notebook import) gets one line on the
``databrickslabs_jupyterlab.http`` logger: method, URL, status and duration.
"""

from __future__ import annotations

import configparser
import logging
import re
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

HTTP_LOGGER = "databrickslabs_jupyterlab.http"
#: Loggers shown with ``-D`` and their levels (asyncssh's DEBUG is packet-level noise).
LOGGERS = {"databrickslabs_jupyterlab": logging.DEBUG, "databricks": logging.DEBUG}
QUIET_LOGGERS = {"asyncssh": logging.INFO}
MASK = "***"
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"

_SECRET_WORD = (
    r"(?:token|secret|password|passwd|pwd|credential|api[-_]?key|code_verifier"
    r"|metadata_service_url)"
)
_SECRET_NAME = rf"[A-Za-z0-9_.-]*{_SECRET_WORD}[A-Za-z0-9_.-]*|[A-Za-z0-9_.-]*_key"
_SECRET_KEY = re.compile(rf"(?i){_SECRET_WORD}|_key$")
_NOT_NAME = r"(?<![A-Za-z0-9_.-])"


def _keep_quotes(m: re.Match[str]) -> str:
    """``name`` + separator + the value masked (in its quotes when it had them)."""
    quote = m.group("q") or ""
    return f"{m.group('name')}{m.group('sep')}{quote}{MASK}{quote}"


_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    # "Authorization: Bearer x", "'Authorization': 'Basic x'", "authorization=x"
    (
        re.compile(r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,}]+"),
        rf"\g<1>{MASK}",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\g<1> {MASK}"),
    # signed URLs: ?sig=..., &X-Amz-Signature=...; an OAuth authorization code (?code=, &code=;
    # not a bare "code=", which is mostly an exit code)
    (
        re.compile(r"(?i)([?&](?:sig|signature|x-amz-signature|code)=)[^&\s\"']+"),
        rf"\g<1>{MASK}",
    ),
    # https://user:password@host, https://token@host (user info is a credential either way)
    (re.compile(r"(://)[^/\s@]+@"), rf"\g<1>{MASK}@"),
    (re.compile(r"\bdapi[0-9a-f]{16,}(?:-\d+)?"), MASK),
    # token=x, "client_secret": "x y", password: x, x-api-key: x. A value in quotes is masked to
    # its closing quote, any other to a delimiter: a password may hold blanks, and masking too
    # much is harmless where too little is not.
    (
        re.compile(
            rf"(?i){_NOT_NAME}(?P<name>{_SECRET_NAME})(?P<sep>[\"']?\s*[:=]\s*)"
            rf"(?:(?P<q>[\"'])(?:\\.|(?!(?P=q)).)*(?P=q)|[^\"'\r\n,&;}}\])]+)"
        ),
        _keep_quotes,
    ),
    # ('token', 'x') in a repr of pairs
    (
        re.compile(
            rf"(?i)(?P<name>([\"'])(?:{_SECRET_NAME})\2)(?P<sep>\s*,\s*)"
            rf"(?P<q>[\"'])(?:\\.|(?!(?P=q)).)*(?P=q)"
        ),
        _keep_quotes,
    ),
    # URL-encoded inside another URL: token%3Dx%26next...
    (
        re.compile(rf"(?i)(?P<name>{_SECRET_NAME})(?P<sep>%3D)(?P<q>)(?:(?!%26)[^&\s\"'])+"),
        _keep_quotes,
    ),
]


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every known secret value and every credential-looking part masked."""
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def secret_name(name: str) -> bool:
    """Whether a setting or variable of this name holds a secret (token, client_secret...)."""
    return bool(_SECRET_KEY.search(name))


def config_secrets(path: str | Path) -> tuple[str, ...]:
    """Values of the secret-named keys (token, password, client_secret...) of every profile."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError):
        return ()
    found = set()
    for section in [parser.defaults(), *(parser[s] for s in parser.sections())]:
        for key, value in section.items():
            if secret_name(key) and value and len(value.strip()) >= 4:
                found.add(value.strip())
    return tuple(found)


class RedactingFilter(logging.Filter):
    """Rewrites each record (message, arguments and traceback) with :func:`redact`.

    databricks-sdk's request and response dumps are dropped: bodies hold cluster settings such
    as ``spark_env_vars`` and ``spark_conf``, where people keep credentials under names no
    pattern can know, and the ``http`` logger already has a line per request.
    """

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("databricks.sdk") and record.funcName == "_record_request_log":
            return False
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def safe_url(url: str) -> str:
    """The URL without user info, and with the values of secret-named query parameters masked."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(
        f"{k}={MASK if secret_name(k) or k.lower() in ('sig', 'signature') else v}" if sep else k
        for k, sep, v in (p.partition("=") for p in parts.query.split("&") if p)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def log_request(method: str, url: str, outcome: str, began: float) -> None:
    """One line per HTTP request: ``GET https://host/path -> 200 OK (12 ms)``."""
    elapsed = (time.perf_counter() - began) * 1000
    logging.getLogger(HTTP_LOGGER).debug(
        "%s %s -> %s (%.0f ms)", method, safe_url(url), outcome, elapsed
    )


def _patch_requests() -> Any:
    """Time and log every ``requests`` request of this process; returns the undo function."""
    import requests

    original = requests.Session.send

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            response = original(self, request, **kwargs)
        except Exception as err:
            log_request(str(request.method), str(request.url), type(err).__name__, began)
            raise
        outcome = f"{response.status_code} {response.reason or ''}".strip()
        log_request(str(request.method), str(request.url), outcome, began)
        return response

    requests.Session.send = send  # type: ignore[method-assign]

    def undo() -> None:
        requests.Session.send = original  # type: ignore[method-assign]

    return undo


@contextmanager
def debug_logging(stream: TextIO, secrets: tuple[str, ...] = ()) -> Iterator[logging.Handler]:
    """Log our, databricks-sdk's and asyncssh's records to ``stream``, redacted, for a while.

    Levels, handlers and ``propagate`` of those loggers are restored afterwards, and so is
    ``requests``; records reach the handler only once (``propagate`` is off meanwhile).
    """
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    handler.addFilter(RedactingFilter(secrets))
    saved = []
    for name, level in {**LOGGERS, **QUIET_LOGGERS}.items():
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate, list(logger.handlers)))
        logger.setLevel(level)
        logger.propagate = False
        logger.handlers = [handler]
    undo = _patch_requests()
    try:
        yield handler
    finally:
        undo()
        for logger, level, propagate, handlers in saved:
            logger.setLevel(level)
            logger.propagate = propagate
            logger.handlers = handlers
        handler.flush()
