/**
 * Playwright configuration of the browser test through a real JupyterHub
 * (hub-tests/): the same Chromium settings as playwright.config.js, a hub from
 * hub_server.py as the web server, plain Playwright pages (galata's page
 * fixture expects a JupyterLab without a login in front).
 */
const crypto = require('crypto');
const os = require('os');
const path = require('path');
const lab = require('./playwright.config.js');

process.env.DBJL_HUB_INFO =
  process.env.DBJL_HUB_INFO || path.join(os.tmpdir(), `dbjl-hub-info-${process.pid}.json`);
process.env.DBJL_HUB_PASSWORD =
  process.env.DBJL_HUB_PASSWORD || crypto.randomBytes(12).toString('hex');
const port = (process.env.DBJL_HUB_PORT = process.env.DBJL_HUB_PORT || '8765');

module.exports = {
  testDir: './hub-tests',
  outputDir: './test-results-hub',
  timeout: 300 * 1000,
  expect: { timeout: 15 * 1000 },
  retries: 0,
  workers: 1,
  fullyParallel: false,
  reporter: lab.reporter,
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    video: 'off',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    viewport: lab.use.viewport,
    launchOptions: lab.use.launchOptions
  },
  projects: [{ name: 'chromium', use: { browserName: 'chromium' } }],
  webServer: {
    command: 'python hub_server.py',
    url: `http://127.0.0.1:${port}/hub-prefix/hub/health`,
    timeout: 180 * 1000,
    reuseExistingServer: false,
    // SIGTERM, not the default SIGKILL: hub_server.py then stops the hub (its own session)
    // with its proxy, servers, kernels and simulators.
    gracefulShutdown: { signal: 'SIGTERM', timeout: 90 * 1000 },
    stdout: 'pipe',
    stderr: 'pipe'
  }
};
