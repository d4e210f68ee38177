"""benchmarks/soak.py with tiny settings: it runs to the end, and the bounds that catch a hang,
an error, a leak of connections or a long poll that wakes for nothing hold (generously)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_soak_small_run_has_no_errors_and_releases_connections(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--duration=6",
            "--long-pollers=10",
            "--short-pollers=2",
            "--short-interval=1",
            "--baseline=2",
            "--settle=3",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads(proc.stdout)
    assert result["errors"] == 0, result["error_samples"]
    assert result["state_after_start"] == "connected"
    assert result["upstream_calls"].get("POST /api/2.1/clusters/start") == 1
    # each long-poller woke at least for the termination and the start
    assert result["long_poll_answers_after_the_first"] >= 2 * 10
    assert result["short_poll_answers"] >= 2
    fds = result["server"]["open_fds"]
    assert fds["peak"] >= fds["start"] + 10  # the clients' connections were open
    assert fds["end"] <= fds["start"] + 2  # and are gone again
    assert result["server"]["rss_mb"]["growth"] < 50
    # a long poll that woke on every routine refresh would answer many times a minute
    assert result["steady_answers_per_long_poller_per_min"] <= 12
