"""Schemathesis fuzzes REST API v1 through a real Jupyter server against the document it serves.

The server (pytest-jupyter, this extension, the simulator over real HTTP and SSH) runs in the
test's event loop; schemathesis's CLI runs as a subprocess against its port, so the loop keeps
serving. Every operation, positive and negative inputs: no answer may be a 5xx, and every answer
must conform to the document (status code listed, content type, body schema, headers). Profile
and cluster id are drawn half of the time from the real ones (``demo`` and the simulator's
cluster), so that the fuzzer reaches past the input checks into the registry, the workspace and
the start/reconfigure operations; the other half are random strings. A second run without the
token checks that every operation refuses it with a documented 401/403.

The seed is fixed and generation deterministic; ``--max-examples`` bounds the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests.test_api import server_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("error::jupyter_server.utils.JupyterServerAuthWarning"),
]

pytest.importorskip("schemathesis")

API = ("databrickslabs-jupyterlab", "api", "v1")
MAX_EXAMPLES = 10
SEED = 20261202


@pytest.fixture
def jp_server_config(sim_profile):
    return server_config(sim_profile)


def _config(path: Path, cluster_id: str) -> Path:
    """A schemathesis.toml drawing profile and cluster id from the real ones half the time."""
    path.write_text(
        "[dictionaries.profiles]\n"
        'values = ["demo"]\n'
        "[dictionaries.clusters]\n"
        f"values = [{json.dumps(cluster_id)}]\n"
        "[dictionaries.versions]\n"
        "values = [0, -1]\n"
        "[parameters]\n"
        '"path.profile" = { dictionary = "profiles", probability = 0.5 }\n'
        '"query.profile" = { dictionary = "profiles", probability = 0.5 }\n'
        '"path.cluster_id" = { dictionary = "clusters", probability = 0.5 }\n'
        # a since ahead of the version would hold the answer for wait s (up to 60)
        '"query.since" = { dictionary = "versions", probability = 1.0 }\n'
    )
    return path


async def _schemathesis(
    config: Path, report: Path, *args: str, phases: str = "examples,coverage,fuzzing"
) -> tuple[int, str]:
    """Run ``st run``; its exit code and output (killed after 240 s: a hang fails the test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    env.update(NO_COLOR="1", COLUMNS="120", SCHEMATHESIS_HOOKS="")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        f"--config-file={config}",
        "run",
        *args,
        f"--seed={SEED}",
        "--generation-deterministic",
        "--workers=1",
        "--request-timeout=60",
        "--max-response-time=60",
        "--no-shrink",
        f"--phases={phases}",
        "--report=ndjson",
        f"--report-ndjson-path={report}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=config.parent,  # its cache folder (.schemathesis) stays out of the checkout
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


def _statuses(report: Path) -> dict[str, set[int]]:
    """Status codes seen per "METHOD /path" (the method as sent), from the NDJSON report."""
    seen: dict[str, set[int]] = {}

    def walk(node: Any, path: str | None) -> None:
        if isinstance(node, dict):
            label = node.get("label")
            if isinstance(label, str) and " " in label:
                path = label.split(" ", 1)[1]
            request, response = node.get("request"), node.get("response")
            if isinstance(request, dict) and isinstance(response, dict):
                key = f"{request.get('method')} {path}"
                seen.setdefault(key, set()).add(response.get("status_code"))
            for value in node.values():
                walk(value, path)
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    for line in report.read_text().splitlines():
        if line.strip():
            walk(json.loads(line), None)
    return seen


async def test_fuzz_every_operation_against_the_served_document(
    jp_fetch, jp_http_port, jp_base_url, jp_auth_header, sim_profile, tmp_path
):
    # the document as served (the anonymous run could not load it from the server)
    response = await jp_fetch(*API, "openapi.json")
    document = tmp_path / "openapi.json"
    document.write_bytes(response.body)
    operations = {
        (method.upper(), path)
        for path, item in json.loads(response.body)["paths"].items()
        for method in item
    }
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}databrickslabs-jupyterlab/api/v1"
    config = _config(tmp_path / "schemathesis.toml", sim_profile.cluster_id)

    report = tmp_path / "authenticated.ndjson"
    code, out = await _schemathesis(
        config,
        report,
        str(document),
        f"--url={base}",
        f"--header=Authorization:{jp_auth_header['Authorization']}",
        f"--max-examples={MAX_EXAMPLES}",
        "--checks=all",
        # a random profile is a valid string and rightly answers 404
        # Jupyter answers 403 without the login (the anonymous run below checks it), the check
        # wants 401
        "--exclude-checks=positive_data_acceptance,missing_required_header",
    )
    assert code == 0, out[-20000:]
    statuses = _statuses(report)
    tested = {tuple(key.split(" ", 1)) for key in statuses}
    assert operations <= tested, (operations - tested, out[-5000:])
    assert all(s < 500 for codes in statuses.values() for s in codes), statuses
    # the real profile and cluster were reached: 200 and 202 (a start) among the answers
    assert any(200 in statuses[f"GET {p}"] for p in ("/profiles", "/clusters")), statuses
    assert any(s in (200, 202) for s in statuses["POST /clusters/{profile}/{cluster_id}/start"])
    assert sim_profile.simulator.calls().get("POST /api/2.1/clusters/start", 0) >= 1

    # two findings of the fuzzer, fixed: a 405 names the allowed methods (RFC 9110), and the
    # 400 Tornado gives a form body it cannot parse is documented on every operation
    for method, path in (("PUT", "profiles"), ("GET", "clusters/demo/x/start")):
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch(*API, path, method=method, body="", allow_nonstandard_methods=True)
        assert err.value.code == 405 and err.value.response is not None
        assert err.value.response.headers["Allow"] in ("GET, OPTIONS", "POST, OPTIONS")
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(
            *API,
            "profiles",
            body="",
            method="GET",
            allow_nonstandard_methods=True,
            headers={"Content-Type": "multipart/form-data"},
        )
    assert err.value.code == 400 and err.value.response is not None
    assert json.loads(err.value.response.body)["error"] == "bad_request"
    assert "400" in json.loads(document.read_text())["paths"]["/profiles"]["get"]["responses"]

    # without the login (no token, then a wrong one): every operation refuses, as documented
    for name, header in (("anonymous", []), ("wrong-token", ["--header=Authorization:token x"])):
        report = tmp_path / f"{name}.ndjson"
        code, out = await _schemathesis(
            config,
            report,
            str(document),
            f"--url={base}",
            *header,
            "--max-examples=3",
            "--checks=not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance",
            phases="coverage,fuzzing",
        )
        assert code == 0, out[-20000:]
        statuses = _statuses(report)
        assert {tuple(key.split(" ", 1)) for key in statuses} >= operations, statuses
        for method, path in operations:
            # 400: Tornado refuses a malformed form body before the login is read
            assert statuses[f"{method} {path}"] <= {400, 401, 403}, (method, path, statuses)
        # only jupyter_server's CORS preflight (OPTIONS, no body) answers without the login
        for key, codes in statuses.items():
            assert key.startswith("OPTIONS ") or not codes & {200, 201, 202, 204}, (key, codes)
