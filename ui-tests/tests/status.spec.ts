/**
 * The status-bar item in a real browser against JupyterLab with the server
 * extension, the kernel provisioner and the workspace simulator
 * (see ../jupyter_server_test_config.py).
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { APIRequestContext, Locator } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

interface IInfo {
  simulator_url: string;
  simulator_token: string;
  profile: string;
  cluster_id: string;
  cluster_name: string;
  kernel_name: string;
  kernel_display_name: string;
}

const IMAGES = path.resolve(__dirname, '..', '..', 'docs', 'images');

function info(): IInfo {
  const file = process.env.DBJL_UI_INFO;
  if (!file) {
    throw new Error('DBJL_UI_INFO is not set (see playwright.config.js)');
  }
  return JSON.parse(fs.readFileSync(file, 'utf-8'));
}

/** Call a control endpoint of the simulator. */
async function simulator(
  request: APIRequestContext,
  endpoint: string,
  data: unknown = {}
): Promise<void> {
  const sim = info();
  const response = await request.post(`${sim.simulator_url}/_sim/${endpoint}`, {
    headers: { Authorization: `Bearer ${sim.simulator_token}` },
    data
  });
  expect(response.ok(), `simulator ${endpoint}: ${response.status()}`).toBeTruthy();
}

function statusItem(page: IJupyterLabPageFixture): Locator {
  return page.locator('#jp-main-statusbar .jp-DatabricksStatus-item');
}

async function stateOf(page: IJupyterLabPageFixture): Promise<string | null> {
  return page.locator('.jp-DatabricksStatus').first().getAttribute('data-state');
}

/** Screenshot of the left part of the status bar, where the item sits. */
async function shootStatus(page: IJupyterLabPageFixture, name: string): Promise<void> {
  const bar = page.locator('#jp-main-statusbar');
  const box = await bar.boundingBox();
  if (!box) {
    return;
  }
  fs.mkdirSync(IMAGES, { recursive: true });
  await page.screenshot({
    path: path.join(IMAGES, name),
    clip: { x: box.x, y: box.y, width: Math.min(box.width, 960), height: box.height }
  });
}

/**
 * Record every state the item shows from now on (a MutationObserver in the
 * page, so that short states are not missed between two polls of the test).
 */
async function recordStates(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(() => {
    const w = window as any;
    w.__dbjlStates = [];
    const node = document.querySelector('.jp-DatabricksStatus') as HTMLElement;
    const push = () => {
      const item = node.querySelector('.jp-DatabricksStatus-item');
      const entry = [node.dataset.state ?? '', item?.textContent ?? ''].join('|');
      const states: string[] = w.__dbjlStates;
      if (states[states.length - 1] !== entry) {
        states.push(entry);
      }
    };
    push();
    new MutationObserver(push).observe(node, {
      attributes: true,
      childList: true,
      subtree: true,
      characterData: true
    });
  });
}

async function recordedStates(page: IJupyterLabPageFixture): Promise<string[]> {
  return page.evaluate(() => (window as any).__dbjlStates as string[]);
}

/** The current kernel's state in the browser and on the server (for failure reports). */
async function kernelDiagnosis(page: IJupyterLabPageFixture): Promise<string> {
  return page.evaluate(async () => {
    const app = (window as any).jupyterapp;
    const kernel = app?.shell?.currentWidget?.sessionContext?.session?.kernel;
    let server = '';
    if (kernel) {
      const answer = await fetch(`/databrickslabs-jupyterlab/api/v1/kernels/${kernel.id}`);
      server = (await answer.text()).slice(0, 1500);
    }
    return JSON.stringify({
      status: kernel?.status,
      connectionStatus: kernel?.connectionStatus,
      states: (window as any).__dbjlStates,
      server
    });
  });
}

/** Our restart prompt (JupyterLab's own "Kernel Restarting" dialog may show too). */
function restartPrompt(page: IJupyterLabPageFixture): Locator {
  return page.locator('.jp-Dialog', { has: page.locator('.jp-DatabricksPrompt') });
}

/** Close JupyterLab's own dialogs (e.g. "Kernel Restarting" after the driver went away). */
async function dismissOtherDialogs(page: IJupyterLabPageFixture): Promise<void> {
  const others = page.locator('.jp-Dialog', {
    hasNot: page.locator('.jp-DatabricksPrompt, .jp-DatabricksDetails')
  });
  for (let i = 0; i < 5 && (await others.count()) > 0; i++) {
    await others.first().locator('.jp-Dialog-footer button').last().click();
    await page.waitForTimeout(200);
  }
}

/** Write a one-cell notebook for a kernelspec into the test folder and open it. */
async function openNotebook(
  page: IJupyterLabPageFixture,
  folder: string,
  name: string,
  kernelName: string,
  displayName: string
): Promise<void> {
  const notebook = {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {
      kernelspec: { name: kernelName, display_name: displayName, language: 'python' }
    },
    cells: [
      { cell_type: 'code', metadata: {}, source: '', outputs: [], execution_count: null }
    ]
  };
  const file = `${folder}/${name}`;
  expect(await page.contents.uploadContent(JSON.stringify(notebook), 'text', file)).toBeTruthy();
  expect(await page.notebook.openByPath(file)).toBeTruthy();
  await page.notebook.activate(name);
}

async function openDatabricksNotebook(
  page: IJupyterLabPageFixture,
  folder: string,
  name: string
): Promise<void> {
  const sim = info();
  await openNotebook(page, folder, name, sim.kernel_name, sim.kernel_display_name);
  await expect(statusItem(page)).toBeVisible({ timeout: 60 * 1000 });
}

test.describe.configure({ mode: 'serial' });

test.use({ autoGoto: true });

test.describe('Databricks status bar item', () => {
  test('shows connected for a notebook on a simulated cluster', async ({ page, tmpPath }) => {
    const sim = info();
    await openDatabricksNotebook(page, tmpPath, 'connected.ipynb');
    const item = statusItem(page);
    await expect(item).toContainText(sim.cluster_name);
    await expect(item).toContainText('connected');
    expect(await stateOf(page)).toBe('connected');
    await expect(item).toHaveClass(/jp-mod-connected/);

    // The kernel runs on the simulated driver.
    await page.notebook.setCell(0, 'code', 'print(6 * 7)');
    await page.notebook.runCell(0);
    expect((await page.notebook.getCellTextOutput(0))?.join('')).toContain('42');

    await shootStatus(page, 'status-connected.png');
    fs.mkdirSync(IMAGES, { recursive: true });
    await page.screenshot({ path: path.join(IMAGES, 'notebook-connected.png') });
  });

  test('clicking the item opens the details dialog', async ({ page, tmpPath }) => {
    const sim = info();
    await openDatabricksNotebook(page, tmpPath, 'details.ipynb');
    await statusItem(page).click();
    const dialog = page.locator('.jp-Dialog', { has: page.locator('.jp-DatabricksDetails') });
    await expect(dialog).toBeVisible();
    await expect(dialog).toContainText(sim.cluster_id);
    await expect(dialog).toContainText(sim.profile);
    await expect(dialog.locator('.jp-DatabricksDetails-events li').first()).toBeVisible();
    // A running, connected cluster can be reconfigured, not restarted.
    await expect(dialog.getByRole('button', { name: 'Reconfigure' })).toBeVisible();
    await expect(dialog.getByRole('button', { name: 'Restart cluster' })).toHaveCount(0);
    await dialog.screenshot({ path: path.join(IMAGES, 'details-dialog.png') });
    await dialog.getByRole('button', { name: 'Close' }).first().click();
    await expect(dialog).toHaveCount(0);
  });

  test('termination opens one dialog; "Restart cluster" walks to connected and a cell runs', async ({
    page,
    request,
    tmpPath
  }) => {
    test.setTimeout(240 * 1000);
    const sim = info();
    await openDatabricksNotebook(page, tmpPath, 'restart.ipynb');
    await expect(statusItem(page)).toHaveClass(/jp-mod-connected/);
    await recordStates(page);

    await simulator(request, `clusters/${sim.cluster_id}/terminate`);
    const dialog = restartPrompt(page);
    // The dialog appears within 5 s of the termination request.
    await expect(dialog).toBeVisible({ timeout: 5000 });
    // The driver's SSH may drop a moment before Databricks reports the
    // termination: the prompt is then "not reachable", and no second one follows.
    await expect(dialog).toContainText(/Cluster (terminated|not reachable)/);
    await expect(statusItem(page)).toHaveClass(/jp-mod-terminated/);
    await dialog.screenshot({ path: path.join(IMAGES, 'restart-dialog.png') });
    await shootStatus(page, 'status-terminated.png');

    // Never stacked, never repeated: still exactly one dialog a while later.
    await page.waitForTimeout(2500);
    await expect(dialog).toHaveCount(1);

    // Slow the workspace API a little so that each step stays on screen.
    await simulator(request, 'latency', { seconds: 0.4 });
    await dialog.getByRole('button', { name: 'Restart cluster' }).click();
    await expect(dialog).toHaveCount(0);

    const item = statusItem(page);
    try {
      await expect(item).toHaveClass(/jp-mod-starting/, { timeout: 10 * 1000 });
      await shootStatus(page, 'status-starting.png');
    } catch {
      // Too fast to catch on screen: the recorded states below still tell.
    }
    try {
      await expect(item).toHaveClass(/jp-mod-(connected|running-spark)/, { timeout: 150 * 1000 });
    } catch (error) {
      console.log('kernel as seen by the browser and the server:', await kernelDiagnosis(page));
      throw error;
    }
    await simulator(request, 'latency', { seconds: 0 });

    const states = (await recordedStates(page)).map(s => s.split('|')[0]);
    const order = states.filter((s, i) => s !== states[i - 1]);
    // terminated -> starting -> configuring (-> installing) -> connected, in this order.
    const at = (s: string) => order.indexOf(s);
    expect(at('terminated')).toBeGreaterThanOrEqual(0);
    expect(at('starting')).toBeGreaterThan(at('terminated'));
    expect(order.slice(0, at('terminated'))).not.toContain('starting');
    expect(at('configuring')).toBeGreaterThan(at('starting'));
    expect(order.lastIndexOf('connected')).toBeGreaterThan(at('configuring'));
    // The step counter was shown while the operation ran.
    expect((await recordedStates(page)).some(s => /step \d\/\d/.test(s))).toBeTruthy();
    // No second restart prompt came up on the way.
    await expect(restartPrompt(page)).toHaveCount(0);
    await dismissOtherDialogs(page);

    // The kernel is back on the restarted driver: a cell executes.
    await page.notebook.setCell(0, 'code', 'print(sum(range(10)))');
    await page.notebook.runCell(0);
    expect((await page.notebook.getCellTextOutput(0))?.join('')).toContain('45');
    await shootStatus(page, 'status-connected-after-restart.png');
  });

  test('a non-Databricks kernel shows no item, and the item follows tab switches', async ({
    page,
    tmpPath
  }) => {
    await openDatabricksNotebook(page, tmpPath, 'databricks.ipynb');
    await openNotebook(page, tmpPath, 'plain.ipynb', 'python3', 'Python 3 (ipykernel)');
    await page.notebook.setCell(0, 'code', 'print("local")');
    await page.notebook.runCell(0);
    expect((await page.notebook.getCellTextOutput(0))?.join('')).toContain('local');
    await expect(statusItem(page)).toHaveCount(0);
    await expect(page.locator('.jp-DatabricksStatus')).toBeHidden();

    // Back to the Databricks notebook: the item comes back at once.
    await page.notebook.activate('databricks.ipynb');
    await expect(statusItem(page)).toBeVisible({ timeout: 5000 });
    await expect(statusItem(page)).toHaveClass(/jp-mod-connected/);
  });
});

