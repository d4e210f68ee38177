"""Import a Databricks HTML notebook export as a Jupyter notebook (experimental; the CLI's ``-n``).

An HTML export carries the notebook as a script assignment,
``window.__DATABRICKS_NOTEBOOK_MODEL = '<base64>'``, where the base64 text encodes the
URI-encoded (``encodeURIComponent``) JSON model: ``name``, the default ``language`` (python,
sql, scala or r) and ``commands``, each with its text (``command``) and ``position``.

Commands become cells in the order of their position. A first line ``%python``, ``%sql``,
``%scala``, ``%r``, ``%md`` or ``%sh`` overrides the default language; SQL is split into one
``%%sql`` cell per statement (at ``;`` outside quotes and comments), Scala, R and shell become
``%%scala``, ``%%R`` and ``%%sh`` cells, markdown a markdown cell, Python a plain code cell.
Other magics (``%pip``, ``%run``, ``%fs``...) are kept as written. A markdown banner comes first:
the import is experimental and names its source.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import nbformat

from . import __version__
from .debuglog import log_request, safe_url
from .idioms import split_sql  # the same statements the kernel's %%sql will run

MODEL_PATTERN = re.compile(
    r"__DATABRICKS_NOTEBOOK_MODEL\s*=\s*(?:'([A-Za-z0-9+/=\s]*)'|\"([A-Za-z0-9+/=\s]*)\")"
)
_MAGIC = re.compile(r"[ \t]*%([A-Za-z][\w-]*)[ \t]*(.*)")
#: Databricks language (default or magic) -> Jupyter cell magic; None: a plain Python cell.
CELL_MAGICS: dict[str, str | None] = {"python": None, "scala": "%%scala", "r": "%%R", "sh": "%%sh"}
MARKDOWN = ("md", "md-sandbox")
#: Largest download accepted (exports with plots can be tens of MB).
MAX_BYTES = 256 * 1024 * 1024
_UNSAFE_FILE_CHARS = re.compile(r"[\x00-\x1f/\\:*?\"<>|]+")


class NotebookImportError(Exception):
    """A sentence for the user; ``kind`` is ``not_found``, ``usage`` or ``failed``."""

    def __init__(self, message: str, kind: str = "failed") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


# --------------------------------------------------------------------------------------------
# Reading the export


def is_url(source: str) -> bool:
    return "://" in source


def shown_source(source: str) -> str:
    """The source as it may be shown and stored: URLs without credentials or signatures."""
    return safe_url(source) if is_url(source) else source


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return (
        scheme,
        (parts.hostname or "").lower(),
        parts.port or {"http": 80, "https": 443}.get(scheme),
    )


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects to http(s) only, never from https to http, and the Authorization header (the
    URL's user:password) only within the origin it was given for."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str):
        old, new = _origin(req.full_url), _origin(newurl)
        if new[0] not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, "redirect to a non-HTTP URL", headers, fp)
        if old[0] == "https" and new[0] == "http":
            raise NotebookImportError(
                f"{safe_url(req.full_url)} redirects from https to http "
                f"({safe_url(newurl)}); refused so that nothing is sent unencrypted."
            )
        redirected = super().redirect_request(req, fp, code, msg, headers, newurl)
        if redirected is not None and old != new:
            redirected.remove_header("Authorization")
        return redirected


def fetch(url: str, timeout: float) -> str:
    """The page at an http(s) URL, as text."""
    shown = safe_url(url)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise NotebookImportError(
            f"Only http(s) URLs and local files can be imported, not {shown}.", "usage"
        )
    opener = urllib.request.build_opener(_SafeRedirects)
    parts = urllib.parse.urlsplit(url)
    headers = {"User-Agent": f"databrickslabs-jupyterlab/{__version__}"}
    if parts.username is not None:  # user:password@host: HTTP basic auth, as browsers do
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{user}:{password}".encode()
        ).decode("ascii")
        netloc = parts.netloc.rsplit("@", 1)[-1]
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    request = urllib.request.Request(url, headers=headers)
    began = time.perf_counter()
    try:
        with opener.open(request, timeout=timeout) as response:
            data = response.read(MAX_BYTES + 1)
            charset = response.headers.get_content_charset() or "utf-8"
            log_request("GET", url, f"{response.status} {response.reason}", began)
    except urllib.error.HTTPError as err:
        log_request("GET", url, f"{err.code} {err.reason}", began)
        kind = "not_found" if err.code in (404, 410) else "failed"
        raise NotebookImportError(
            f"{shown} answered {err.code} {err.reason} instead of a notebook export.", kind
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
        log_request("GET", url, type(err).__name__, began)
        reason = getattr(err, "reason", err)
        if isinstance(reason, TimeoutError):
            raise NotebookImportError(f"{shown} did not answer within {timeout:g} s.") from None
        raise NotebookImportError(f"{shown} cannot be reached: {reason}.") from None
    if len(data) > MAX_BYTES:
        raise NotebookImportError(f"{shown} is larger than {MAX_BYTES // 2**20} MiB.")
    return data.decode(charset, errors="replace")


def read_file(path: str) -> str:
    file = Path(path).expanduser()
    try:
        return file.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise NotebookImportError(f"There is no file {path}.", "not_found") from None
    except IsADirectoryError:
        raise NotebookImportError(f"{path} is a folder, not an HTML export.", "usage") from None
    except OSError as err:
        raise NotebookImportError(f"{path} cannot be read: {err.strerror or err}.") from None


def decode_model(html: str, source: str = "the page") -> dict[str, Any]:
    """The notebook model of an HTML export (base64, then URI-decoded JSON)."""
    match = MODEL_PATTERN.search(html)
    if match is None:
        raise NotebookImportError(
            f"{source} is not a Databricks HTML notebook export "
            "(it has no __DATABRICKS_NOTEBOOK_MODEL)."
        )
    encoded = "".join((match.group(1) or match.group(2) or "").split())
    broken = f"The notebook model in {source} cannot be decoded."
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8")
        # encodeURIComponent output is ASCII; a model that was not URI-encoded starts with "{".
        model = json.loads(text if text.lstrip().startswith("{") else urllib.parse.unquote(text))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise NotebookImportError(broken) from None
    if not isinstance(model, dict) or not isinstance(model.get("commands"), list):
        raise NotebookImportError(broken)
    return model


# --------------------------------------------------------------------------------------------
# Converting


def _split_magic(text: str) -> tuple[str | None, str]:
    """(magic without %, body) of a command; text after the magic on its line starts the body."""
    first, newline, rest = text.partition("\n")
    match = _MAGIC.fullmatch(first)
    if match is None:
        return None, text
    inline = match.group(2).strip()
    return match.group(1).lower(), (inline + newline + rest if inline else rest)


def command_cells(text: str, default_language: str) -> list[Any]:
    """The cells of one command."""
    magic, body = _split_magic(text)
    language = magic or default_language
    body = body.strip("\n").rstrip()
    if language == "sql":
        return [nbformat.v4.new_code_cell(f"%%sql\n{s}") for s in split_sql(body)]
    if language in MARKDOWN:
        return [nbformat.v4.new_markdown_cell(body)] if body.strip() else []
    if language in CELL_MAGICS:
        cell_magic = CELL_MAGICS[language]
        if not body.strip():
            return []
        return [nbformat.v4.new_code_cell(f"{cell_magic}\n{body}" if cell_magic else body)]
    # %pip, %run, %fs and the like: kept as written, for the user to adapt.
    kept = text.strip("\n").rstrip()
    return [nbformat.v4.new_code_cell(kept)] if kept.strip() else []


def _position(command: dict[str, Any], index: int) -> tuple[float, int]:
    value = command.get("position")
    number = (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    )
    return (number if number is not None and math.isfinite(number) else math.inf, index)


def banner(name: str, source: str) -> str:
    return (
        f"**Experimental import** of the Databricks notebook *{name}* from `{source}` "
        f"(databrickslabs-jupyterlab {__version__}).\n\n"
        "Databricks' `%sql`, `%scala`, `%r` and `%sh` commands became `%%sql`, `%%scala`, `%%R` "
        "and `%%sh` cells (SQL one statement per cell); other magics are kept as written. "
        "Check the cells before running them."
    )


def convert(model: dict[str, Any], source: str) -> Any:
    """A version 4 notebook from a Databricks notebook model."""
    name = str(model.get("name") or "notebook")
    language = str(model.get("language") or "python").lower()
    commands = [c for c in model["commands"] if isinstance(c, dict)]
    ordered = [c for _, c in sorted((_position(c, i), c) for i, c in enumerate(commands))]
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(banner(name, source)))
    for command in ordered:
        text = command.get("command")
        if isinstance(text, str):
            nb.cells.extend(command_cells(text, language))
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["databricks_import"] = {"name": name, "language": language, "source": source}
    nbformat.validate(nb)
    return nb


# --------------------------------------------------------------------------------------------
# The whole import


def load(source: str, *, timeout: float = 20.0) -> tuple[Any, str]:
    """(notebook, notebook name) from an http(s) URL or a local file."""
    shown = shown_source(source)
    html = fetch(source, timeout) if is_url(source) else read_file(source)
    model = decode_model(html, shown)
    return convert(model, shown), str(model.get("name") or "")


def file_name(name: str, fallback: str = "notebook") -> str:
    """``<name>.ipynb`` with the characters that are unsafe in file names replaced."""
    safe = _UNSAFE_FILE_CHARS.sub("_", name).strip(" ._")[:200] or fallback
    return f"{safe}.ipynb"


def fallback_name(source: str) -> str:
    """A notebook name from the source, for models without one."""
    path = urllib.parse.urlsplit(source).path if is_url(source) else source
    return Path(path).stem or "notebook"


def write(nb: Any, path: Path) -> None:
    nbformat.write(nb, str(path))
