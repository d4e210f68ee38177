"""Every CLI flag against the workspace simulator (real HTTP, real SSH) in a temporary HOME.

The CLI runs in-process through ``main([...])``; prompts read the patched standard input.
A few runs go through a subprocess to check the entry point and the error output as a user
sees it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from databrickslabs_jupyterlab import __version__, cli, kernelspecs, mirror
from databrickslabs_jupyterlab.cli import profiles, setup
from databrickslabs_jupyterlab.simulator import make_keypair
from tests.fixtures.cli import one_sentence_error
from tests.fixtures.wheels import build_wheel


@pytest.fixture(autouse=True)
def private_jupyter(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = isolated_home / ".local" / "share" / "jupyter"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(isolated_home / ".jupyter"))
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return data


# --------------------------------------------------------------------------------------------
# No workspace needed


def test_help_lists_the_reference_flags_and_exit_codes(dj) -> None:
    run = dj("-h")
    assert run.code == 0
    for flag in (
        "-b",
        "-d",
        "-m",
        "-c",
        "-i CLUSTER_ID",
        "-k",
        "-N",
        "-l",
        "-o ORGANISATION",
        "-p",
        "-r",
        "-s",
        "-v",
        "-V {all,diff,same}",
        "-w",
        "-W",
        "-B",
        "-D",
        "-e K=V",
        "-n URL|FILE",
        "--yes",
        "--json",
    ):
        assert flag in run.out, flag  # fmt: skip
    assert "exit status:" in run.out and "3    not found" in run.out
    assert dj("-V", "bogus").code == cli.EXIT_USAGE


def test_version(dj) -> None:
    run = dj("-v")
    assert (run.code, run.out.strip()) == (0, __version__)


def test_print_lists(dj) -> None:
    white = dj("-W")
    assert white.code == 0 and white.out.split() == list(mirror.WHITELIST)
    black = dj("-B", "--json")
    assert black.json() == list(mirror.BLACKLIST)
    assert dj("-W", "-B").code == cli.EXIT_USAGE


def test_actions_need_a_profile(dj) -> None:
    run = dj("-k")
    assert run.code == cli.EXIT_USAGE
    assert "Name a profile" in one_sentence_error(run)
    assert dj("demo", "-k", "-r").code == cli.EXIT_USAGE


def test_azure_org_id() -> None:
    assert profiles.azure_org_id("https://adb-1234567890123456.7.azuredatabricks.net") == (
        "1234567890123456"
    )
    assert profiles.azure_org_id("https://adb-1234567890123456.7.azuredatabricks.net/") is not None
    assert profiles.azure_org_id("https://eastus2.azuredatabricks.net") is None
    assert profiles.azure_org_id("https://eastus2.azuredatabricks.net", "42") == "42"
    with pytest.raises(cli.CliError):
        profiles.azure_org_id(None, "not-a-number")


def test_bootstrap_reports_extensions(dj) -> None:
    run = dj("-b", "--json", "--yes")
    report = run.json()
    checks = {c["check"]: c for c in report["checks"]}
    assert run.code == (0 if report["ok"] else 1)
    assert checks["server extension"]["ok"], checks["server extension"]
    assert checks["kernel provisioner"]["ok"]
    assert "lab extension" in checks
    text = dj("-b", "--yes")
    assert "server extension" in text.out and "lab extension" in text.out


def test_clipboard_missing_is_one_sentence(dj, sim_profile, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    run = dj("demo", "-c")
    assert run.code == cli.EXIT_FAILURE
    assert "No clipboard is available here" in one_sentence_error(run)


def test_clipboard_copies_the_token_through_stdin(dj, sim_profile, monkeypatch, tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sink = tmp_path / "clipboard"
    tool = bin_dir / "xclip"
    tool.write_text(f'#!/bin/sh\necho "$@" > {sink}.args\ncat > {sink}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("DISPLAY", ":99")
    run = dj("demo", "-c")
    assert run.code == 0, run
    token = sim_profile.simulator.token
    assert sink.read_text() == token
    assert "clipboard" in (sink.parent / "clipboard.args").read_text()
    assert token not in run.out + run.err


# --------------------------------------------------------------------------------------------
# Profiles


def test_profiles_table(dj, sim_profile) -> None:
    with open(sim_profile.config_file, "a") as f:
        f.write("[azure]\nhost = https://adb-1234567890123456.7.azuredatabricks.net\ntoken = x\n")
    run = dj("-p")
    assert run.code == 0
    rows = {line.split()[0]: line.split() for line in run.out.splitlines()[1:] if line.strip()}
    assert rows["demo"][1:] == [sim_profile.host, "pat", "OK"]
    assert rows["azure"][3] == "MISSING"
    assert "token" not in run.out and sim_profile.simulator.token not in run.out
    data = {p["profile"]: p for p in dj("-p", "--json").json()}
    assert data["demo"]["ssh_key_status"] == "ok"
    assert data["azure"]["azure_org_id"] == "1234567890123456"


def test_profile_info_and_organisation(dj, sim_profile) -> None:
    run = dj("demo", "-o", "987654", "-i", sim_profile.cluster_id)
    assert run.code == 0
    assert "azure org id  987654" in run.out
    assert f"?o=987654#setting/clusters/{sim_profile.cluster_id}/configuration" in run.out
    assert dj("demo", "--json").json()["ssh_key_status"] == "ok"


def test_wrong_profile(dj, sim_profile) -> None:
    run = dj("nope", "-k", "-i", sim_profile.cluster_id, "--yes")
    assert run.code == cli.EXIT_NOT_FOUND
    assert "There is no profile 'nope'" in one_sentence_error(run)


def test_unreachable_workspace(dj, isolated_home) -> None:
    (isolated_home / ".databrickscfg").write_text("[dead]\nhost = http://127.0.0.1:9\ntoken = x\n")
    make_keypair(isolated_home / ".ssh" / "id_dead")
    run = dj("dead", "-k", "-i", "0101-000000-abcdefgh", "--yes", "--api-timeout", "1")
    assert run.code == cli.EXIT_WORKSPACE, run
    assert "cannot be reached" in one_sentence_error(run) or "did not answer" in run.err


def test_wrong_token(dj, sim_profile) -> None:
    text = sim_profile.config_file.read_text().replace(sim_profile.simulator.token, "dapiwrong")
    sim_profile.config_file.write_text(text)
    run = dj("demo", "-k", "-i", sim_profile.cluster_id, "--yes")
    assert run.code == cli.EXIT_WORKSPACE, run
    assert "refused the credentials" in one_sentence_error(run)
    assert "dapiwrong" not in run.err


# --------------------------------------------------------------------------------------------
# -s


def _add_profile(sim_profile, name: str) -> None:
    with open(sim_profile.config_file, "a") as f:
        f.write(sim_profile.simulator.profile_text(name))


def test_ssh_config_creates_key_adds_it_and_writes_ssh_config(dj, sim_profile, isolated_home):
    sim = sim_profile.simulator
    _add_profile(sim_profile, "fresh")
    other = sim.add_cluster("other")
    before = sim_profile.ssh_config.read_text()

    declined = dj("fresh", "-s", "-i", other, stdin="n\n")
    assert declined.code == cli.EXIT_FAILURE
    assert "applies from its next start" in declined.err
    key = isolated_home / ".ssh" / "id_fresh"
    assert key.exists() and (key.stat().st_mode & 0o077) == 0
    public = key.with_name("id_fresh.pub").read_text().strip()
    assert public.startswith("ssh-ed25519 ")
    assert sim.cluster(other).ssh_public_keys == []

    run = dj("fresh", "-s", "-i", other, "--yes")
    assert run.code == 0, run
    assert public in sim.cluster(other).ssh_public_keys
    text = sim_profile.ssh_config.read_text()
    assert text.startswith(before)  # the existing entry is untouched
    assert f"Host {other}\n" in text and "IdentityFile ~/.ssh/id_fresh" in text
    assert "Port 2200" in text and "User ubuntu" in text
    backups = list((isolated_home / ".databrickslabs_jupyterlab" / "ssh_config_backup").iterdir())
    assert [b.read_text() for b in backups] == [before]

    again = dj("fresh", "-s", "-i", other, "--yes")
    assert again.code == 0 and "already carries" in again.err and "up to date" in again.err


def test_ssh_config_on_a_running_cluster_warns_of_the_restart(dj, sim_profile, isolated_home):
    sim = sim_profile.simulator
    _add_profile(sim_profile, "fresh")
    running = sim.add_cluster("busy", state="RUNNING")
    run = dj("fresh", "-s", "-i", running, "--yes")
    assert run.code == 0, run
    assert "RESTARTS" in run.err
    assert sim.cluster(running).state in ("RESTARTING", "RUNNING")
    sim.wait_state(running, "RUNNING")
    text = (isolated_home / ".ssh" / "config").read_text()
    assert f"Host {running}\n    HostName 127.0.0.1\n    Port 2200\n" in text


def test_ssh_config_unknown_cluster(dj, sim_profile) -> None:
    run = dj("demo", "-s", "-i", "0101-000000-missing0", "--yes")
    assert run.code == cli.EXIT_NOT_FOUND
    assert "does not exist" in one_sentence_error(run)
    assert dj("demo", "-s").code == cli.EXIT_USAGE


# --------------------------------------------------------------------------------------------
# -k, -d


def test_kernelspec_non_interactive(dj, sim_profile, private_jupyter) -> None:
    run = dj("demo", "-k", "-i", sim_profile.cluster_id, "--yes", "--json")
    assert run.code == 0, run
    data = run.json()
    assert data["cluster_id"] == sim_profile.cluster_id
    assert data["display_name"].startswith(f"SSH {sim_profile.cluster_id} demo:sim-cluster")
    spec = json.loads(
        (private_jupyter / "kernels" / data["kernel_name"] / "kernel.json").read_text()
    )
    assert spec["metadata"]["databricks"] == {
        "profile": "demo",
        "cluster_id": sim_profile.cluster_id,
        "spark": True,
    }
    assert data["display_name"].endswith("Spark)")
    assert sim_profile.simulator.token not in json.dumps(spec)

    # -N: the same cluster without Spark replaces the spec
    plain = dj("demo", "-k", "-N", "-i", sim_profile.cluster_id, "--yes", "--json").json()
    assert "Spark" not in plain["display_name"]
    path = private_jupyter / "kernels" / plain["kernel_name"] / "kernel.json"
    assert json.loads(path.read_text())["metadata"]["databricks"]["spark"] is False
    assert [s.name for s in kernelspecs.list_kernelspecs()] == [plain["kernel_name"]]
    assert dj("demo", "-N").code == cli.EXIT_USAGE


def test_kernelspec_interactive_offers_only_clusters_with_the_key(dj, sim_profile) -> None:
    sim = sim_profile.simulator
    sim.add_cluster("no-key-cluster")
    run = dj("demo", "-k", stdin="7\n0\n")
    assert run.code == 0, run
    assert "0: 'sim-cluster'" in run.out and "no-key-cluster" not in run.out
    assert "Please answer with a number" in run.out
    assert [s.cluster_id for s in kernelspecs.list_kernelspecs()] == [sim_profile.cluster_id]
    # no answer at all (no standard input): a usage error, not a hang
    assert dj("demo", "-k", stdin="").code == cli.EXIT_USAGE
    assert dj("demo", "-k", "--yes").code == cli.EXIT_USAGE


def test_kernelspec_error_cases(dj, sim_profile) -> None:
    sim = sim_profile.simulator
    other = sim.add_cluster("no-key-cluster")
    run = dj("demo", "-k", "-i", other, "--yes")
    assert run.code == cli.EXIT_SSH
    assert "does not carry the public key" in one_sentence_error(run)

    run = dj("demo", "-k", "-i", "0101-000000-missing0", "--yes")
    assert run.code == cli.EXIT_NOT_FOUND

    sim_profile.identity_file.unlink()
    run = dj("demo", "-k", "-i", sim_profile.cluster_id, "--yes")
    assert run.code == cli.EXIT_SSH
    assert "There is no SSH key ~/.ssh/id_demo" in one_sentence_error(run)


def test_delete_kernelspecs(dj, sim_profile) -> None:
    cid = sim_profile.cluster_id
    assert dj("demo", "-k", "-i", cid, "--yes").code == 0
    assert dj("-d", stdin="n\n").code == 0
    assert len(kernelspecs.list_kernelspecs()) == 1
    run = dj("-d", stdin="y\n")
    assert run.code == 0 and "Deleted kernelspec" in run.out
    assert kernelspecs.list_kernelspecs() == []

    assert dj("demo", "-k", "-i", cid, "--yes").code == 0
    assert dj("-d", "--yes").code == cli.EXIT_USAGE  # refuses to delete everything blindly
    run = dj("-d", "--yes", "-i", cid, "--json")
    assert run.code == 0 and [d["cluster_id"] for d in run.json()["deleted"]] == [cid]
    assert dj("-d", "--yes", "-i", cid).code == cli.EXIT_NOT_FOUND


# --------------------------------------------------------------------------------------------
# -e, -D


@pytest.mark.timeout(180)
def test_kernelspec_env_reaches_the_remote_kernel_verbatim(dj, sim_profile) -> None:
    cid = sim_profile.cluster_id
    text = dj("demo", "-k", "-i", cid, "--yes", "-e", "A=x=1 y", "-e", 'B=$HOME "q"')
    assert "  env A='x=1 y'" in text.out and """  env B='$HOME "q"'""" in text.out
    # the same spec again, replaced; several values after one -e
    run = dj("demo", "-k", "-i", cid, "--yes", "-e", "A=x=1 y", "-e", 'B=$HOME "q"', "C=", "--json")
    assert run.code == 0, run
    data = run.json()
    assert data["env"] == {"A": "x=1 y", "B": '$HOME "q"', "C": ""}

    async def scenario() -> dict[str, str]:
        from jupyter_client.manager import AsyncKernelManager

        from databrickslabs_jupyterlab.workspace import Workspace

        ws = await Workspace.for_profile("demo")
        await ws.start_cluster(cid)
        await asyncio.to_thread(sim_profile.simulator.wait_state, cid, "RUNNING", 30)
        km = AsyncKernelManager(kernel_name=data["kernel_name"])
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            outputs: list[str] = []
            code = "import json, os\nprint(json.dumps({k: os.environ.get(k) for k in 'ABC'}))"
            reply = await kc.execute_interactive(
                code,
                timeout=30,
                output_hook=lambda m: outputs.append(m["content"].get("text", "")),
            )
            assert reply["content"]["status"] == "ok", reply
            return json.loads("".join(outputs))
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    assert asyncio.run(scenario()) == {"A": "x=1 y", "B": '$HOME "q"', "C": ""}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("1A=x", "not a valid environment variable name"),
        ("A-B=x", "not a valid environment variable name"),
        ("=x", "not a valid environment variable name"),
        ("NOVALUE", "NAME=VALUE"),
        ("MY_TOKEN=x", "looks like a secret"),
        ("aws_secret_access_key=x", "looks like a secret"),
        ("DBJL_PROFILE=x", "set by databrickslabs-jupyterlab itself"),
        ("PYSPARK_PYTHON=/usr/bin/python3", "set by databrickslabs-jupyterlab itself"),
    ],
)
def test_kernelspec_env_bad_names_are_usage_errors(dj, sim_profile, value, why) -> None:
    run = dj("demo", "-k", "-i", sim_profile.cluster_id, "--yes", "-e", "OK=1", value)
    assert run.code == cli.EXIT_USAGE, run
    assert why in one_sentence_error(run)
    assert kernelspecs.list_kernelspecs() == []


def test_env_only_applies_to_kernelspec(dj, sim_profile) -> None:
    run = dj("demo", "-r", "-i", sim_profile.cluster_id, "-e", "A=1")
    assert run.code == cli.EXIT_USAGE
    assert "-e only applies to -k" in one_sentence_error(run)
    # -e takes every value after it, the profile too: the error says so
    run = dj("-k", "-e", "A=1", "demo")
    assert run.code == cli.EXIT_USAGE
    assert "(name the profile before -e: it takes every K=V after it)." in one_sentence_error(run)


def test_debug_logs_requests_but_never_the_token(dj, sim_profile, monkeypatch) -> None:
    token = sim_profile.simulator.token
    monkeypatch.setenv("DATABRICKS_DEBUG_HEADERS", "true")  # the SDK must still not log headers
    listing = dj("-D", "-p")
    assert listing.code == 0, listing
    assert "'profiles': True" in listing.err and "1 profiles in " in listing.err
    assert "demo" in listing.out

    run = dj("-D", "demo", "-k", "-i", sim_profile.cluster_id, "--yes")
    assert run.code == 0, run
    request = re.compile(
        rf"GET {re.escape(sim_profile.host)}/api/2\.1/clusters/get\?cluster_id="
        rf"{sim_profile.cluster_id} -> 200 OK \(\d+ ms\)"
    )
    assert request.search(run.err), run.err
    assert "kernelspec ssh__" in run.err  # what the CLI did, not only HTTP
    for text in (listing.out, listing.err, run.out, run.err):
        assert token not in text
        assert "Bearer" not in text and "Authorization" not in text
    # without -D nothing of this is printed
    quiet = dj("demo", "-k", "-i", sim_profile.cluster_id, "--yes")
    assert "DEBUG" not in quiet.err and "clusters/get" not in quiet.err


@pytest.mark.simulator(token="plain-secret-value-42")
def test_debug_masks_a_token_of_any_shape(dj, sim_profile, monkeypatch) -> None:
    """Not only dapi... tokens: the profile's literal secret values are masked too."""
    monkeypatch.setenv("DATABRICKS_DEBUG_HEADERS", "true")
    run = dj("-D", "demo", "-k", "-i", sim_profile.cluster_id, "--yes")
    assert run.code == 0, run
    assert "clusters/get" in run.err
    assert "plain-secret-value-42" not in run.out + run.err


def test_debug_filter_redacts_credentials() -> None:
    from databrickslabs_jupyterlab import debuglog

    text = (
        "> * Authorization: Bearer abcdefgh12345678\n"
        "{'Authorization': 'Basic dG9rZW46ZGFwaTEyMw=='}\n"
        '"token_value": "t0ps3cret", password=hunter22&x=1\n'
        "https://user:pw@example.com/x dapi0123456789abcdef0123456789abcdef own-s3cret"
    )
    redacted = debuglog.redact(text, ("own-s3cret",))
    for secret in ("abcdefgh12345678", "dG9rZW46", "t0ps3cret", "hunter22", "user:pw", "dapi0"):
        assert secret not in redacted, secret
    assert "own-s3cret" not in redacted and "x=1" in redacted
    assert debuglog.safe_url("https://u:p@h/x?cluster_id=1&sig=abc&access_token=t") == (
        "https://h/x?cluster_id=1&sig=***&access_token=***"
    )


# --------------------------------------------------------------------------------------------
# -r, -l, -V, -m


def test_reconfigure_starts_the_cluster_and_installs_driver_libraries(
    dj, sim_profile, monkeypatch, tmp_path
) -> None:
    sim = sim_profile.simulator
    cid = sim_profile.cluster_id
    module = f"dbjl_cli_probe_{os.getpid()}_{id(tmp_path) % 100000}"
    wheels = build_wheel(tmp_path / "wheels", module).parent
    monkeypatch.setenv("DBJL_DRIVER_REQUIREMENTS", f"ipykernel>=6 {module}==1.0")
    monkeypatch.setenv("DBJL_PIP_ARGS", f"--no-index --find-links {wheels}")
    assert sim.cluster(cid).state == "TERMINATED"

    run = dj("demo", "-r", "-i", cid)
    assert run.code == 0, run
    assert f"Starting cluster {cid}" in run.err and "is RUNNING" in run.err
    assert "SSH login works" in run.err
    assert "pip:" in run.err  # pip's lines are shown while installing
    assert f"installed {module}==1.0" in run.out
    assert sim.cluster(cid).state == "RUNNING"

    again = dj("demo", "-r", "-i", cid, "--json")
    assert again.code == 0 and again.json()["installed"] == []

    # -V sees the probe on the driver only
    diff = dj("demo", "-V", "diff", "-i", cid, "--json")
    assert diff.code == 0, diff
    rows = {r["package"]: r for r in diff.json()["packages"]}
    assert rows[module.replace("_", "-")] == {
        "package": module.replace("_", "-"),
        "local": None,
        "remote": "1.0",
    }
    same = dj("demo", "-V", "same", "-i", cid)
    assert same.code == 0 and same.out.splitlines()[1].split() == ["Package", "local", "remote"]
    assert any(line.split()[0] == "pytest" for line in same.out.splitlines()[2:])

    # -m: the blacklist keeps the probe, the whitelist does not
    black = dj("demo", "-m", "-i", cid, "--dry-run", "--json")
    assert f"{module.replace('_', '-')}==1.0" in black.json()["requirements"]
    assert not any(r.startswith("pip==") for r in black.json()["requirements"])
    white = dj("demo", "-m", "-w", "-i", cid, "--dry-run")
    assert white.code == 0 and module.replace("_", "-") not in white.out
    assert dj("demo", "-w", "-i", cid).code == cli.EXIT_USAGE

    # a real -m: the venv is created, then pip fails offline; one sentence, exit 1
    target = tmp_path / "mirror-env"
    failed = dj(
        "demo", "-m", "-i", cid, "--yes", "--env-path", str(target), "--pip-args=--no-index"
    )
    assert failed.code == cli.EXIT_FAILURE, failed
    assert "Installing the mirrored packages failed" in one_sentence_error(failed)
    assert mirror.venv_python(target).exists()
    assert f"{module.replace('_', '-')}==1.0" in (target / "requirements-mirror.txt").read_text()


def test_lab_checks_then_runs_jupyterlab(dj, sim_profile) -> None:
    cid = sim_profile.cluster_id
    run = dj("demo", "-l", "-i", cid, "--dry-run", "--", "--port", "9999")
    assert run.code == 0, run
    assert "SSH login works" in run.err
    assert "No kernelspec for this cluster yet" in run.out
    assert "-m jupyterlab --port 9999" in run.out


def test_ssh_refused_and_cluster_without_key(dj, sim_profile) -> None:
    sim = sim_profile.simulator
    cid = sim_profile.cluster_id
    assert dj("demo", "-r", "-i", cid).code == 0
    sim.set_ssh_mode(cid, "refuse")
    run = dj("demo", "-r", "-i", cid)
    assert run.code == cli.EXIT_SSH, run
    one_sentence_error(run)
    sim.set_ssh_mode(cid, "ok")


def test_mirror_with_conda_missing(dj, sim_profile, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CONDA_EXE", raising=False)
    run = dj("demo", "-m", "--conda", "-i", sim_profile.cluster_id, "--yes")
    assert run.code == cli.EXIT_FAILURE
    assert "conda is not installed" in one_sentence_error(run)


# --------------------------------------------------------------------------------------------
# As a user runs it


def _subprocess(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "databrickslabs_jupyterlab", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env or dict(os.environ),
        timeout=120,
    )


def test_subprocess_profiles_and_errors(sim_profile) -> None:
    proc = _subprocess("-p")
    assert proc.returncode == 0 and "demo" in proc.stdout and "OK" in proc.stdout
    proc = _subprocess("nope", "-r", "-i", sim_profile.cluster_id)
    assert proc.returncode == cli.EXIT_NOT_FOUND
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    proc = _subprocess("demo", "-k", "-i", sim_profile.cluster_id, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "Created kernelspec" in proc.stdout


def test_entry_points_exist() -> None:
    from importlib import metadata

    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts["databrickslabs-jupyterlab"] == "databrickslabs_jupyterlab.cli:main"
    assert scripts["dj"] == "databrickslabs_jupyterlab.cli:main"


def test_bootstrap_enables_a_disabled_server_extension(dj, isolated_home, monkeypatch) -> None:
    # In a virtual environment jupyter_core would rank the environment's config (which enables
    # the extension) above the user's; this test is about the user's own setting.
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    config = isolated_home / ".jupyter" / "jupyter_server_config.d"
    config.mkdir(parents=True)
    (config / "databrickslabs_jupyterlab.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"databrickslabs_jupyterlab": False}}})
    )
    assert setup.server_extension_state() == (False, "disabled")
    declined = dj("-b", stdin="n\n")
    assert "MISSING  server extension" in declined.out and declined.code == cli.EXIT_FAILURE
    run = dj("-b", "--yes", "--json")
    checks = {c["check"]: c for c in run.json()["checks"]}
    assert checks["server extension"]["ok"], checks
    assert "enabled now" in checks["server extension"]["detail"]
    assert setup.server_extension_state()[0]


def test_dj_script(sim_profile) -> None:
    import shutil

    script = shutil.which("dj")
    if script is None:
        pytest.skip("the dj script is not on PATH (package not installed)")
    proc = subprocess.run([script, "-v"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == __version__


def test_a_host_entry_key_wins_over_the_profile_key(dj, sim_profile, isolated_home) -> None:
    sim = sim_profile.simulator
    other_key = isolated_home / ".ssh" / "work_key"
    public = make_keypair(other_key)
    cid = sim.add_cluster("own-key", ssh_public_keys=[public])
    with open(sim_profile.ssh_config, "a") as f:
        f.write(sim.ssh_config_entry(cid, str(other_key)))
    run = dj("demo", "-k", "-i", cid, "--yes")
    assert run.code == 0, run
    listed = dj("demo", "-k", stdin="0\n")
    assert "'own-key'" in listed.out and "'sim-cluster'" in listed.out
