/**
 * The Playwright configuration of a browser test with its own servers
 * (servers.py hub|gateway as the web server): the Chromium settings of
 * playwright.config.js, plain Playwright pages (galata's page fixture expects a
 * JupyterLab without a login in front), one port, a password or token and an
 * info file per run.
 */
const crypto = require('crypto');
const os = require('os');
const path = require('path');
const lab = require('./playwright.config.js');

module.exports = function serversConfig(which, readyPath) {
  process.env.DBJL_UI_SERVER_INFO =
    process.env.DBJL_UI_SERVER_INFO ||
    path.join(os.tmpdir(), `dbjl-ui-${which}-${process.pid}.json`);
  process.env.DBJL_UI_PASSWORD =
    process.env.DBJL_UI_PASSWORD || crypto.randomBytes(12).toString('hex');
  const port = (process.env.DBJL_UI_PORT = process.env.DBJL_UI_PORT || '8765');
  return {
    testDir: `./${which}-tests`,
    outputDir: `./test-results-${which}`,
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
      command: `python servers.py ${which}`,
      url: `http://127.0.0.1:${port}${readyPath}`,
      timeout: 180 * 1000,
      reuseExistingServer: false,
      // SIGTERM, not the default SIGKILL: servers.py then stops what it started in sessions
      // of their own (hub, proxy, gateway, servers, kernels, simulators).
      gracefulShutdown: { signal: 'SIGTERM', timeout: 90 * 1000 },
      stdout: 'pipe',
      stderr: 'pipe'
    }
  };
};
