#!/usr/bin/env bash
# Install what a fresh Debian machine lacks, then run every test suite of the project:
# ruff, pytest (simulator over real HTTP and SSH, OpenSSH sshd, jupyter_server), jest, and the
# galata UI tests in Debian's Chromium. Safe to run again: installed parts are skipped.
#
#   scripts/test.sh            everything
#   SKIP_UI_TESTS=1 scripts/test.sh    without the browser tests
#   SKIP_SPARK=1 scripts/test.sh       without a real Spark (its test is then skipped)
#   SKIP_MLFLOW=1 scripts/test.sh      without MLflow (the MLflow test then checks the store only)
#   SKIP_HUB=1 scripts/test.sh         without JupyterHub's proxy (the JupyterHub test is skipped)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- Debian packages: OpenSSH sshd for the SSH tests, Chromium for the UI tests ---------------
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || [ -n "${SKIP_UI_TESTS:-}" ] || missing+=(chromium)
command -v git >/dev/null || missing+=(git)
# Java for the real-Spark test (pyspark 4 needs Java 17 or newer)
command -v java >/dev/null || [ -n "${SKIP_SPARK:-}" ] || missing+=(default-jre-headless)
if [ ${#missing[@]} -gt 0 ]; then
  step "Installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Python package with its test extras (builds the frontend through hatch-jupyter-builder) --
step "Installing databrickslabs-jupyterlab with its test dependencies"
python -m pip install --disable-pip-version-check -q -e ".[test]"

# --- pyspark for the real-Spark test, in a folder of its own: the remote kernel on the simulated
# driver gets it on its PYTHONPATH, the way a Databricks driver has it (kept for later runs) -----
if [ -z "${SKIP_SPARK:-}" ]; then
  PYSPARK_VERSION=4.3.0
  pyspark_dir="${XDG_CACHE_HOME:-$HOME/.cache}/databrickslabs-jupyterlab-tests/pyspark-$PYSPARK_VERSION"
  if [ ! -f "$pyspark_dir/pyspark/__init__.py" ]; then
    step "Installing pyspark $PYSPARK_VERSION into $pyspark_dir"
    rm -rf "$pyspark_dir.partial"
    python -m pip install --disable-pip-version-check -q --target "$pyspark_dir.partial" \
      "pyspark==$PYSPARK_VERSION"
    rm -rf "$pyspark_dir"
    mv "$pyspark_dir.partial" "$pyspark_dir"
  fi
  export DBJL_TEST_PYSPARK_PATH="$pyspark_dir"
fi

# --- MLflow (skinny) for the MLflow test, likewise in a folder of its own (kept for later runs) -
if [ -z "${SKIP_MLFLOW:-}" ]; then
  MLFLOW_VERSION=3.17.2
  mlflow_dir="${XDG_CACHE_HOME:-$HOME/.cache}/databrickslabs-jupyterlab-tests/mlflow-skinny-$MLFLOW_VERSION"
  if [ ! -f "$mlflow_dir/mlflow/__init__.py" ]; then
    step "Installing mlflow-skinny $MLFLOW_VERSION into $mlflow_dir"
    rm -rf "$mlflow_dir.partial"
    python -m pip install --disable-pip-version-check -q --target "$mlflow_dir.partial" \
      "mlflow-skinny==$MLFLOW_VERSION"
    rm -rf "$mlflow_dir"
    mv "$mlflow_dir.partial" "$mlflow_dir"
  fi
  export DBJL_TEST_MLFLOW_PATH="$mlflow_dir"
fi

# --- configurable-http-proxy for the test behind a real JupyterHub (jupyterhub itself is in the
# test extra), from npm into a folder of its own, not globally (kept for later runs) -----------
if [ -z "${SKIP_HUB:-}" ]; then
  CHP_VERSION=5.3.0
  chp_dir="${XDG_CACHE_HOME:-$HOME/.cache}/databrickslabs-jupyterlab-tests/chp-$CHP_VERSION"
  if [ ! -x "$chp_dir/node_modules/.bin/configurable-http-proxy" ]; then
    step "Installing configurable-http-proxy $CHP_VERSION into $chp_dir"
    rm -rf "$chp_dir.partial"
    mkdir -p "$chp_dir.partial"
    npm install --prefix "$chp_dir.partial" --no-audit --no-fund --loglevel=error \
      "configurable-http-proxy@$CHP_VERSION"
    rm -rf "$chp_dir"
    mv "$chp_dir.partial" "$chp_dir"
  fi
  export DBJL_TEST_CHP="$chp_dir/node_modules/.bin/configurable-http-proxy"
fi

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
