/**
 * Playwright configuration of the galata UI tests: Debian's Chromium (no
 * browser download), one worker, no video (that would need a downloaded ffmpeg).
 */
const os = require('os');
const path = require('path');
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

// The server config writes where the simulator listens into this file.
process.env.DBJL_UI_INFO =
  process.env.DBJL_UI_INFO ||
  path.join(os.tmpdir(), `dbjl-ui-info-${process.pid}.json`);

const allowRoot =
  typeof process.getuid === 'function' && process.getuid() === 0 ? ' --allow-root' : '';

module.exports = {
  ...baseConfig,
  testDir: './tests',
  outputDir: './test-results',
  timeout: 120 * 1000,
  expect: { timeout: 15 * 1000 },
  retries: 0,
  workers: 1,
  fullyParallel: false,
  reporter: [[process.env.CI ? 'line' : 'list'], ['html', { open: 'never' }]],
  use: {
    ...baseConfig.use,
    baseURL: 'http://localhost:8888',
    video: 'off',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    viewport: { width: 1280, height: 800 },
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run'
      ]
    }
  },
  projects: [
    {
      name: 'chromium',
      use: { browserName: 'chromium' }
    }
  ],
  webServer: {
    command: `jupyter lab --config jupyter_server_test_config.py${allowRoot}`,
    url: 'http://localhost:8888/lab',
    timeout: 180 * 1000,
    reuseExistingServer: false,
    stdout: 'pipe',
    stderr: 'pipe'
  }
};
