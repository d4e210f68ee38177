#!/usr/bin/env bash
# Install what a fresh Debian machine lacks, then run every test suite of the project:
# ruff, pytest (simulator over real HTTP and SSH, OpenSSH sshd, jupyter_server), jest, and the
# galata UI tests in Debian's Chromium. Safe to run again: installed parts are skipped.
#
#   scripts/test.sh            everything
#   SKIP_UI_TESTS=1 scripts/test.sh    without the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- Debian packages: OpenSSH sshd for the SSH tests, Chromium for the UI tests ---------------
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || [ -n "${SKIP_UI_TESTS:-}" ] || missing+=(chromium)
command -v git >/dev/null || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then
  step "Installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Python package with its test extras (builds the frontend through hatch-jupyter-builder) --
step "Installing databrickslabs-jupyterlab with its test dependencies"
python -m pip install --disable-pip-version-check -q -e ".[test]"

step "ruff"
python -m ruff check databrickslabs_jupyterlab tests benchmarks

step "pytest"
python -m pytest -q -p no:cacheprovider

step "jest"
jlpm install
jlpm test

if [ -z "${SKIP_UI_TESTS:-}" ]; then
  step "galata UI tests in Chromium"
  bash ui-tests/run.sh
fi
step "All test suites passed"
