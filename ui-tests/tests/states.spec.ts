/**
 * The states of the status item that need trouble on the workspace or the
 * driver, made with the simulator's controls: SSH refused (unreachable), a
 * driver library to install (installing), a failing workspace API (error),
 * dropped SSH connections (kernel disconnected). Each test ends with the
 * cluster connected again.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { promisify } from 'util';

import {
  detailsDialog,
  dismissOtherDialogs,
  expectItemState,
  IMAGES,
  info,
  openConnected,
  reconfigureConfirmation,
  recordedLooks,
  restartPrompt,
  runFirstCell,
  serverStatus,
  shootElement,
  shootStatus,
  simulator,
  stateSequence,
  statusItem
} from './helpers';

const run = promisify(execFile);

const CONNECTED = /jp-mod-(connected|running-spark)\b/;
const CONNECTED_STATES = ['connected', 'running-spark'];

/**
 * Every recorded look of the item in `state` (once rendered: its text holds
 * `label`) had this icon and the colour of the theme variable `colour`.
 */
async function expectLook(
  page: IJupyterLabPageFixture,
  state: string,
  label: string,
  icon: string,
  colour: string
): Promise<void> {
  const looks = (await recordedLooks(page)).filter(
    look => look.state === state && look.text.includes(label)
  );
  expect(looks.length, `the item never showed "${label}"`).toBeGreaterThan(0);
  const themed = await page.evaluate(variable => {
    const probe = document.createElement('span');
    probe.style.color = `var(${variable})`;
    document.body.appendChild(probe);
    const value = getComputedStyle(probe).color;
    probe.remove();
    return value;
  }, colour);
  for (const look of looks) {
    expect(look.icon, `icon of ${state}`).toBe(`ui-components:${icon}`);
    expect(look.colour, `colour of ${state} (${colour})`).toBe(themed);
  }
}

/**
 * Screenshot of the status bar into docs/images, kept only if the item showed
 * `state` the whole time (the recorded looks did not move on meanwhile), so
 * that a short state never leaves a picture of another one behind. Returns
 * whether it was kept.
 */
async function shootState(
  page: IJupyterLabPageFixture,
  state: string,
  name: string
): Promise<boolean> {
  const before = (await recordedLooks(page)).length;
  const draft = `draft-${name}`;
  await shootStatus(page, draft);
  const during = (await recordedLooks(page)).slice(before - 1);
  const held = during.every(look => look.state === state);
  if (held) {
    fs.renameSync(path.join(IMAGES, draft), path.join(IMAGES, name));
  } else {
    fs.rmSync(path.join(IMAGES, draft), { force: true });
    console.log(`${name} not taken: the item left ${state} during the screenshot`);
  }
  return held;
}

/** Wait until the server published a newer cluster status than `version`. */
async function nextVersion(
  page: IJupyterLabPageFixture,
  version: number
): Promise<number> {
  let latest = version;
  await expect
    .poll(async () => (latest = (await serverStatus(page.request)).version), {
      timeout: 30 * 1000
    })
    .toBeGreaterThan(version);
  // The browser's long poll answers at once on a new version; give it a moment.
  await page.waitForTimeout(1500);
  return latest;
}

// Each test waits for the server's steady SSH check (10 s) or a kernel restart.
test.describe.configure({ mode: 'serial', timeout: 180 * 1000 });

test.use({ autoGoto: true });

test.afterEach(async ({ request }) => {
  // Whatever a failed test left behind, the next one starts from a healthy workspace.
  const sim = info();
  await simulator(request, `clusters/${sim.cluster_id}/ssh`, { mode: 'ok' });
  await simulator(request, 'fail', {}, 'DELETE');
  await simulator(request, 'latency', { seconds: 0 });
});

test.describe('Databricks status bar item in trouble', () => {
  test('SSH refused: unreachable, one restart prompt, connected again on its own', async ({
    page,
    request,
    tmpPath
  }) => {
    const sim = info();
    await openConnected(page, tmpPath, 'unreachable.ipynb');

    await simulator(request, `clusters/${sim.cluster_id}/ssh`, { mode: 'refuse' });
    // A steady cluster's SSH is checked every 10 s.
    await expectItemState(page, /jp-mod-unreachable\b/, 30 * 1000);
    await expect(statusItem(page)).toContainText('unreachable');
    await expectLook(page, 'unreachable', 'unreachable', 'offline-bolt', '--jp-error-color1');
    const prompt = restartPrompt(page);
    await expect(prompt).toBeVisible({ timeout: 5000 });
    await expect(prompt).toContainText('Cluster not reachable');
    await expect(prompt).toContainText('does not answer over SSH');
    expect(await shootState(page, 'unreachable', 'status-unreachable.png')).toBe(true);

    // Newer statuses (each SSH check is one) bring no second prompt...
    let version = (await serverStatus(request)).version;
    version = await nextVersion(page, version);
    await expect(page.locator('.jp-Dialog')).toHaveCount(1);
    // ... nor do they once the person said "Not now".
    await prompt.getByRole('button', { name: 'Not now' }).click();
    await expect(prompt).toHaveCount(0);
    await nextVersion(page, version);
    await expect(restartPrompt(page)).toHaveCount(0);
    expect((await serverStatus(request)).state).toBe('unreachable');
    await expect(statusItem(page)).toHaveClass(/jp-mod-unreachable\b/);

    // SSH answers again: connected without any click, and the kernel still runs.
    await simulator(request, `clusters/${sim.cluster_id}/ssh`, { mode: 'ok' });
    await expectItemState(page, CONNECTED, 30 * 1000);
    const order = await stateSequence(page);
    const after = order.slice(order.indexOf('unreachable') + 1);
    expect(after.length, order.join(' -> ')).toBeGreaterThan(0);
    expect(after.every(s => CONNECTED_STATES.includes(s)), order.join(' -> ')).toBeTruthy();
    await expect(restartPrompt(page)).toHaveCount(0);
    expect(await runFirstCell(page, 'print(7 * 6)')).toContain('42');
  });

  test('workspace failing: error with the server message in the details, then connected', async ({
    page,
    request,
    tmpPath
  }) => {
    await openConnected(page, tmpPath, 'error.ipynb');

    // Every workspace API call answers 500 until the failures are cleared.
    await simulator(request, 'fail', { n: 1000, status: 500, path: '/api/' });
    await expectItemState(page, /jp-mod-error\b/, 45 * 1000);
    await expect(statusItem(page)).toContainText('error');
    await expectLook(page, 'error', 'error', 'error', '--jp-error-color1');
    expect(await shootState(page, 'error', 'status-error.png')).toBe(true);
    // No restart prompt for an error: the cluster may run fine.
    await expect(restartPrompt(page)).toHaveCount(0);

    const server = await serverStatus(request);
    expect(server.state).toBe('error');
    expect(server.message).toMatch(/^The Databricks workspace at .* keeps failing \(500\)/);
    await statusItem(page).click();
    const dialog = detailsDialog(page);
    await expect(dialog).toBeVisible();
    await expect(dialog.locator('.jp-DatabricksDetails-state')).toHaveText('error');
    await expect(dialog.locator('.jp-DatabricksDetails-message')).toHaveText(server.message);
    await expect(dialog.getByRole('button', { name: 'Restart cluster' })).toBeVisible();
    await shootElement(dialog, 'details-dialog-error.png');

    // The workspace answers again: the open dialog and the item follow.
    await simulator(request, 'fail', {}, 'DELETE');
    await expect(dialog.locator('.jp-DatabricksDetails-state')).toHaveText(
      /^(connected|running with Spark)$/,
      { timeout: 30 * 1000 }
    );
    await expectItemState(page, CONNECTED, 5000);
    await dialog.getByRole('button', { name: 'Close' }).first().click();
    await expect(dialog).toHaveCount(0);
    const order = await stateSequence(page);
    expect(order.indexOf('error'), order.join(' -> ')).toBeGreaterThan(0);
  });

  test('reconfigure installs a missing driver library: installing i/n with pip progress', async ({
    page,
    request,
    tmpPath
  }) => {
    const sim = info();
    await openConnected(page, tmpPath, 'installing.ipynb');

    // Take the library away from the driver, behind the server's back.
    await run(sim.driver_python, [
      '-m',
      'pip',
      'uninstall',
      '--yes',
      '--disable-pip-version-check',
      sim.driver_library
    ]);

    await statusItem(page).click();
    const dialog = detailsDialog(page);
    await dialog.getByRole('button', { name: 'Reconfigure' }).click();
    await expect(dialog).toHaveCount(0);
    // The confirmation names this notebook: its kernel restarts if a library is installed.
    const confirmation = reconfigureConfirmation(page);
    await expect(confirmation).toBeVisible();
    // The first list holds the running kernels (a second one those that lost their connection).
    await expect(confirmation.locator('.jp-DatabricksKernels').first()).toContainText(
      'installing.ipynb'
    );
    await confirmation.getByRole('button', { name: 'Reconfigure' }).click();
    await expect(confirmation).toHaveCount(0);

    // pip's latest line next to "installing" and the step counter.
    const installing = page.locator(
      '#jp-main-statusbar .jp-DatabricksStatus-item.jp-mod-installing',
      { has: page.locator('.jp-DatabricksStatus-detail', { hasText: /^pip: / }) }
    );
    await installing.waitFor({ timeout: 60 * 1000 });
    await expect(installing.locator('.jp-DatabricksStatus-step')).toHaveText(/^3\/5$/);
    expect(await shootState(page, 'installing', 'status-installing.png')).toBe(true);
    await expectLook(page, 'installing', 'installing', 'download', '--jp-info-color1');

    await expectItemState(page, CONNECTED, 120 * 1000);
    const order = await stateSequence(page);
    const at = (s: string) => order.indexOf(s);
    expect(at('configuring'), order.join(' -> ')).toBeGreaterThanOrEqual(0);
    expect(at('installing'), order.join(' -> ')).toBeGreaterThan(at('configuring'));
    expect(order.slice(at('installing') + 1), order.join(' -> ')).toContain('connected');
    expect(order, order.join(' -> ')).not.toContain('error');
    const pipLooks = (await recordedLooks(page)).filter(
      look => look.state === 'installing' && look.text.includes('pip: ')
    );
    const pipLines = pipLooks.map(look => look.text).join('\n');
    expect(pipLooks.some(look => look.text.includes(sim.driver_library)), pipLines).toBeTruthy();
    // pip's long lines never push the cluster name out of sight.
    expect(pipLooks.every(look => look.nameWhole), pipLines).toBeTruthy();

    // The library is on the driver again, and the restarted kernel runs cells.
    await run(sim.driver_python, ['-c', `import ${sim.driver_library.replace(/-/g, '_')}`]);
    await dismissOtherDialogs(page);
    expect(await runFirstCell(page, 'print(6 * 7)')).toContain('42');
  });

  test('dropped SSH links: kernel disconnected, then the server restarts the kernel', async ({
    page,
    request,
    tmpPath
  }) => {
    const sim = info();
    await openConnected(page, tmpPath, 'disconnected.ipynb');
    expect(await runFirstCell(page, 'print(6 * 7)')).toContain('42');

    await simulator(request, `clusters/${sim.cluster_id}/drop-ssh`);
    // The provisioner notices a dead link within 15 s (here the driver resets
    // the connections, so at once); a few more seconds for the browser.
    // jupyter_server's restarter then restarts the kernel, so the state may be
    // short: the screenshot is taken at once and kept only if it shows it.
    await page
      .locator('#jp-main-statusbar .jp-DatabricksStatus-item.jp-mod-kernel-disconnected')
      .waitFor({ timeout: 20 * 1000 });
    await shootState(page, 'kernel-disconnected', 'status-kernel-disconnected.png');
    await expectLook(
      page,
      'kernel-disconnected',
      'kernel disconnected',
      'close',
      '--jp-warn-color1'
    );

    // No click needed: the kernel is restarted on the driver and the item
    // comes back to connected; cells run again.
    await expectItemState(page, CONNECTED, 60 * 1000);
    const order = await stateSequence(page);
    expect(order.slice(order.indexOf('kernel-disconnected') + 1), order.join(' -> ')).toContain(
      'connected'
    );
    expect(order, order.join(' -> ')).not.toContain('unreachable');
    await expect(restartPrompt(page)).toHaveCount(0);
    await dismissOtherDialogs(page);
    expect(await runFirstCell(page, 'print(sum(range(10)))')).toContain('45');
  });
});
