"""``-n``: Databricks HTML exports to Jupyter notebooks, from a file and over HTTP.

The exports are made here by a small generator that encodes a notebook model the way
Databricks' page script expects it (``encodeURIComponent`` of the JSON, then base64), so no real
export is needed.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import socket
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from databrickslabs_jupyterlab import cli, notebooks

# --------------------------------------------------------------------------------------------
# A Databricks-like HTML export


def command(text: str, position: float) -> dict[str, Any]:
    return {
        "version": "CommandV1",
        "subtype": "command",
        "commandType": "auto",
        "position": position,
        "command": text,
        "commandTitle": "",
        "hideCommandCode": False,
        "results": None,
    }


def export_html(model: dict[str, Any], quote: str = "'") -> str:
    """An HTML page carrying ``model`` like an export: base64 of the URI-encoded JSON."""
    uri_encoded = urllib.parse.quote(json.dumps(model), safe="-_.!~*'()")
    payload = base64.b64encode(uri_encoded.encode("ascii")).decode("ascii")
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{model.get('name', '')}</title>\n"
        '<script>\nwindow.settings = {"enableNotebookExport": true};\n</script>\n'
        f"<script>\n  window.__DATABRICKS_NOTEBOOK_MODEL = {quote}{payload}{quote};\n</script>\n"
        "</head>\n<body><div id='content'></div></body>\n</html>\n"
    )


# The case of the reference's fixture: default language SQL, four commands (listed out of order).
REFERENCE_CASE = {
    "version": "NotebookV1",
    "name": "test-db-jlab",
    "language": "sql",
    "commands": [
        command("select 1 as one;\n\nselect 2 as two", 2.0),
        command("%python\nprint('hello from python')", 1.0),
        command("%scala\nval x = 21 * 2\nprintln(x)", 4.0),
        command("%sql\n\nselect 3 as three;\nselect 4 as four;\n", 3.0),
    ],
}

MIXED_CASE = {
    "name": "mixed/notebook: v2",
    "language": "python",
    "commands": [
        command("%md # Title\nSome *text*.", 0.5),
        command("x = 1\nprint(x)", 1.0),
        command("%sh\nls -l /", 2.0),
        command("%r\nprint(1 + 1)", 3.0),
        command("%sql select 'a;b' as s; -- done;\n/* ; */ select 2", 4.0),
        command("%pip install requests", 5.0),
        command("   \n", 6.0),
        command("%md-sandbox\n<b>bold</b>", 7.0),
        command("%scala", 8.0),
    ],
}


@pytest.fixture
def dj(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Any:
    """The CLI in-process with the current folder at tmp_path/work; returns (code, out, err)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server for the files of tmp_path/site: (base URL, folder)."""
    site = tmp_path / "site"
    site.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("databrickslabs-jupyterlab:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def sources(nb: Any) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


# --------------------------------------------------------------------------------------------
# Conversion


def test_reference_case_from_a_file(dj, tmp_path: Path) -> None:
    export = tmp_path / "export.html"
    export.write_text(export_html(REFERENCE_CASE))
    code, out, err = dj("-n", str(export))
    assert code == 0, err
    assert err.startswith("=> Experimental: importing the Databricks HTML export")
    assert "Imported test-db-jlab as test-db-jlab.ipynb (7 cells" in out
    path = Path.cwd() / "test-db-jlab.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    cells = sources(nb)
    assert len(cells) == 7
    kind, banner = cells[0]
    assert kind == "markdown" and "Experimental import" in banner and str(export) in banner
    assert cells[1:] == [
        ("code", "print('hello from python')"),
        ("code", "%%sql\nselect 1 as one"),
        ("code", "%%sql\nselect 2 as two"),
        ("code", "%%sql\nselect 3 as three"),
        ("code", "%%sql\nselect 4 as four"),
        ("code", "%%scala\nval x = 21 * 2\nprintln(x)"),
    ]
    assert nb.metadata["databricks_import"]["language"] == "sql"


def test_markdown_shell_r_and_other_magics() -> None:
    html = export_html(MIXED_CASE, quote='"')
    nb = notebooks.convert(notebooks.decode_model(html), "mixed.html")
    assert sources(nb)[1:] == [
        ("markdown", "# Title\nSome *text*."),
        ("code", "x = 1\nprint(x)"),
        ("code", "%%sh\nls -l /"),
        ("code", "%%R\nprint(1 + 1)"),
        ("code", "%%sql\nselect 'a;b' as s"),
        ("code", "%%sql\n-- done;\n/* ; */ select 2"),
        ("code", "%pip install requests"),
        ("markdown", "<b>bold</b>"),
    ]
    nbformat.validate(nb)
    assert notebooks.file_name(MIXED_CASE["name"]) == "mixed_notebook_ v2.ipynb"


def test_a_model_that_is_not_uri_encoded_and_split_over_lines() -> None:
    payload = base64.encodebytes(json.dumps(REFERENCE_CASE).encode()).decode()
    html = f"<script>window.__DATABRICKS_NOTEBOOK_MODEL = '{payload}';</script>"
    assert notebooks.decode_model(html)["name"] == "test-db-jlab"


def test_existing_notebook_is_kept_unless_yes(dj, tmp_path: Path) -> None:
    export = tmp_path / "export.html"
    export.write_text(export_html(REFERENCE_CASE))
    target = Path.cwd() / "test-db-jlab.ipynb"
    target.write_text("mine")
    code, _, err = dj("-n", str(export))
    assert code == cli.EXIT_FAILURE
    assert "already exists (--yes overwrites it)" in error_line(err)
    assert target.read_text() == "mine"
    code, _, err = dj("-n", str(export), stdin="y\n")
    assert code == 0, err
    target.write_text("mine")
    code, out, err = dj("-n", str(export), "--yes", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data == {
        "notebook": str(target),
        "name": "test-db-jlab",
        "source": str(export),
        "cells": 7,
    }
    assert len(nbformat.read(target, as_version=4).cells) == 7


# --------------------------------------------------------------------------------------------
# Over HTTP


def test_import_over_http_with_the_debug_log(dj, served) -> None:
    base, site = served
    (site / "export.html").write_text(export_html(REFERENCE_CASE))
    code, out, err = dj("-D", "-n", f"{base}/export.html")
    assert code == 0, err
    assert f"GET {base}/export.html -> 200 OK" in err
    nb = nbformat.read(Path.cwd() / "test-db-jlab.ipynb", as_version=4)
    assert len(nb.cells) == 7 and f"{base}/export.html" in nb.cells[0].source


def test_url_credentials_are_sent_but_stay_out_of_the_notebook(dj, served, monkeypatch) -> None:
    base, site = served
    (site / "export.html").write_text(export_html(REFERENCE_CASE))
    seen: list[str | None] = []
    handler = http.server.SimpleHTTPRequestHandler
    original = handler.send_head

    def send_head(self: Any) -> Any:
        seen.append(self.headers.get("Authorization"))
        return original(self)

    monkeypatch.setattr(handler, "send_head", send_head)
    host = base.removeprefix("http://")
    code, out, err = dj("-D", "-n", f"http://user:p%40ss@{host}/export.html?sig=abc123")
    assert code == 0, err
    assert seen == ["Basic " + base64.b64encode(b"user:p@ss").decode()]
    text = (Path.cwd() / "test-db-jlab.ipynb").read_text()
    for secret in ("p%40ss", "p@ss", "abc123", "dXNlcjpwQHNz"):
        assert secret not in text and secret not in out + err, secret


# --------------------------------------------------------------------------------------------
# Errors: one sentence, a documented exit status


def test_missing_file(dj, tmp_path: Path) -> None:
    code, _, err = dj("-n", str(tmp_path / "nope.html"))
    assert code == cli.EXIT_NOT_FOUND
    assert "There is no file" in error_line(err)


def test_not_an_export(dj, tmp_path: Path, served) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html><body>Hello</body></html>")
    code, _, err = dj("-n", str(page))
    assert code == cli.EXIT_FAILURE
    assert "is not a Databricks HTML notebook export" in error_line(err)

    broken = tmp_path / "broken.html"
    broken.write_text("<script>window.__DATABRICKS_NOTEBOOK_MODEL = 'bm90IGpzb24=';</script>")
    code, _, err = dj("-n", str(broken))
    assert code == cli.EXIT_FAILURE
    assert "cannot be decoded" in error_line(err)

    base, site = served
    (site / "page.html").write_text("<html><body>Hello</body></html>")
    code, _, err = dj("-n", f"{base}/page.html")
    assert code == cli.EXIT_FAILURE
    assert "is not a Databricks HTML notebook export" in error_line(err)
    assert list(Path.cwd().iterdir()) == []


def test_http_errors(dj, served) -> None:
    base, _ = served
    code, _, err = dj("-n", f"{base}/missing.html")
    assert code == cli.EXIT_NOT_FOUND
    assert "answered 404" in error_line(err)

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    code, _, err = dj("-n", f"http://127.0.0.1:{port}/export.html")
    assert code == cli.EXIT_FAILURE
    assert "cannot be reached" in error_line(err)

    code, _, err = dj("-n", "ftp://example.com/export.html")
    assert code == cli.EXIT_USAGE
    assert "Only http(s) URLs and local files" in error_line(err)


@pytest.mark.timeout(30)
def test_silent_server_times_out(dj) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        code, _, err = dj("-n", f"http://127.0.0.1:{port}/x.html", "--api-timeout", "1")
    assert code == cli.EXIT_FAILURE
    assert "did not answer within 1 s" in error_line(err)


# --------------------------------------------------------------------------------------------
# Redirects: credentials stay with their origin, no https -> http


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers from ``routes`` (path -> (status, Location or page)); records each request's
    path and Authorization header in ``seen``."""

    routes: dict[str, tuple[int, str]] = {}
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        status, payload = self.routes.get(self.path, (404, ""))
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", payload)
            payload = ""
        body = payload.encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def origins(tmp_path: Path) -> Iterator[Any]:
    """``start(tls=False)`` -> (base URL, routes, seen): a recording server on its own port;
    ``tls=True`` serves https with a certificate the client trusts (SSL_CERT_FILE)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(tls: bool = False) -> tuple[str, dict[str, tuple[int, str]], list[Any]]:
        handler = type("Handler", (_Recorder,), {"routes": {}, "seen": []})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls:
            import ssl

            cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
            if not cert.exists():
                subprocess.run(
                    ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                     "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                     "-keyout", str(key), "-out", str(cert)],
                    check=True, capture_output=True,
                )  # fmt: skip
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        scheme = "https" if tls else "http"
        return f"{scheme}://127.0.0.1:{server.server_address[1]}", handler.routes, handler.seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_credentials_are_not_sent_to_another_origin(dj, origins) -> None:
    page = export_html(REFERENCE_CASE)
    a, a_routes, a_seen = origins()
    b, b_routes, b_seen = origins()
    a_routes["/start.html"] = (302, "/moved.html")  # same origin: still authorised
    a_routes["/moved.html"] = (307, f"{b}/export.html")  # another port: another origin
    b_routes["/export.html"] = (302, f"{a}/back.html")  # and back: the header stays dropped
    a_routes["/back.html"] = (200, page)
    host = a.removeprefix("http://")
    code, out, err = dj("-n", f"http://user:secret@{host}/start.html")
    assert code == 0, err
    auth = "Basic " + base64.b64encode(b"user:secret").decode()
    assert a_seen == [("/start.html", auth), ("/moved.html", auth), ("/back.html", None)]
    assert b_seen == [("/export.html", None)]


def test_a_redirect_from_https_to_http_is_refused(dj, origins, tmp_path, monkeypatch) -> None:
    secure, routes, seen = origins(tls=True)
    plain, plain_routes, plain_seen = origins()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    routes["/export.html"] = (301, f"{plain}/export.html")
    plain_routes["/export.html"] = (200, export_html(REFERENCE_CASE))
    host = secure.removeprefix("https://")
    code, _, err = dj("-n", f"https://user:secret@{host}/export.html")
    assert code == cli.EXIT_FAILURE, err
    assert "from https to http" in error_line(err) and "secret" not in err
    assert seen == [("/export.html", "Basic " + base64.b64encode(b"user:secret").decode())]
    assert plain_seen == []
    assert list(Path.cwd().iterdir()) == []
