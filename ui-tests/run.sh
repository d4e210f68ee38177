#!/usr/bin/env bash
# Run the galata UI tests in Debian's Chromium against JupyterLab with the extension and the
# workspace simulator. Expects the Python package (with its built labextension) installed,
# e.g. `pip install -e ".[test]"`. Extra arguments go to `playwright test`.
set -euo pipefail
cd "$(dirname "$0")"

export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_PATH" ]; then
  echo "Chromium not found at $CHROMIUM_PATH (apt-get install chromium, or set CHROMIUM_PATH)" >&2
  exit 1
fi
# Never download browsers: the tests use the system's Chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [ ! -d node_modules/@jupyterlab/galata ]; then
  # The lock file pins galata 5.6.4 and everything under it.
  npm ci --no-audit --no-fund
fi

if ! jupyter labextension list 2>&1 | grep -q "databrickslabs-jupyterlab.*enabled.*OK"; then
  echo "The databrickslabs-jupyterlab labextension is not installed: pip install -e . first" >&2
  exit 1
fi

npx playwright test "$@"

# The browser test through a real JupyterHub (its own hub as the web server): with the whole
# run only, not when a single spec is asked for; SKIP_HUB=1 skips it like the pytest one.
if [ $# -eq 0 ] && [ -z "${SKIP_HUB:-}" ]; then
  npx playwright test -c playwright.hub.config.js
fi
# The browser test behind a real kernel gateway only when asked for (DBJL_UI_GATEWAY=1): its first
# cell stayed unanswered in 2 of about 35 runs on a heavily loaded machine, for a reason not yet
# found (the REST and websocket test behind the gateway, tests/test_kernel_gateway.py, is in pytest).
if [ $# -eq 0 ] && [ -n "${DBJL_UI_GATEWAY:-}" ]; then
  npx playwright test -c playwright.gateway.config.js
fi
