/**
 * Shared helpers of the UI tests: where the simulator is, its controls, the
 * status item and the dialogs as the person sees them, screenshots.
 */
import { expect, IJupyterLabPageFixture } from '@jupyterlab/galata';
import type { APIRequestContext, Locator } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

/** What ../jupyter_server_test_config.py set up (written to DBJL_UI_INFO). */
export interface IInfo {
  simulator_url: string;
  simulator_token: string;
  profile: string;
  cluster_id: string;
  cluster_name: string;
  kernel_name: string;
  kernel_display_name: string;
  /** The simulated driver's Python. */
  driver_python: string;
  /** A driver requirement the tests may uninstall from the driver. */
  driver_library: string;
  /** A kernelspec whose remote kernel has pyspark (empty without pyspark or Java). */
  spark_kernel_name: string;
  spark_kernel_display_name: string;
  /** A cluster whose driver runs its own Spark application (empty without pyspark or Java). */
  spark_cluster_id: string;
  spark_cluster_kernel_name: string;
  spark_cluster_kernel_display_name: string;
}

export const IMAGES = path.resolve(__dirname, '..', '..', 'docs', 'images');

export function info(): IInfo {
  const file = process.env.DBJL_UI_INFO;
  if (!file) {
    throw new Error('DBJL_UI_INFO is not set (see playwright.config.js)');
  }
  return JSON.parse(fs.readFileSync(file, 'utf-8'));
}

/** Call a control endpoint of the simulator (`/_sim/<endpoint>`). */
export async function simulator(
  request: APIRequestContext,
  endpoint: string,
  data: unknown = {},
  method: 'POST' | 'DELETE' = 'POST'
): Promise<void> {
  const sim = info();
  const response = await request.fetch(`${sim.simulator_url}/_sim/${endpoint}`, {
    method,
    headers: { Authorization: `Bearer ${sim.simulator_token}` },
    data: method === 'POST' ? data : undefined
  });
  expect(response.ok(), `simulator ${endpoint}: ${response.status()}`).toBeTruthy();
}

/** The cluster's status as the server extension reports it (REST API v1). */
export async function serverStatus(
  request: APIRequestContext
): Promise<{ state: string; message: string; version: number }> {
  const sim = info();
  const response = await request.get(
    `/databrickslabs-jupyterlab/api/v1/clusters/${sim.profile}/${sim.cluster_id}`
  );
  expect(response.ok(), `cluster status: ${response.status()}`).toBeTruthy();
  return response.json();
}

export function statusItem(page: IJupyterLabPageFixture): Locator {
  return page.locator('#jp-main-statusbar .jp-DatabricksStatus-item');
}

export async function stateOf(page: IJupyterLabPageFixture): Promise<string | null> {
  return page.locator('.jp-DatabricksStatus').first().getAttribute('data-state');
}

/** Screenshot of the left part of the status bar, where the item sits. */
export async function shootStatus(page: IJupyterLabPageFixture, name: string): Promise<void> {
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

/** Screenshot of one element (e.g. a dialog), or of the whole page, into docs/images. */
export async function shootElement(
  element: Pick<Locator, 'screenshot'>,
  name: string
): Promise<void> {
  fs.mkdirSync(IMAGES, { recursive: true });
  await element.screenshot({ path: path.join(IMAGES, name) });
}

/** What the item showed at one moment. */
export interface ILook {
  /** `data-state` of the item's widget. */
  state: string;
  text: string;
  /** `data-icon` of the icon's svg. */
  icon: string;
  /** Computed colour of the state word. */
  colour: string;
  /** Whether the cluster name is shown whole (not cut with an ellipsis). */
  nameWhole: boolean;
}

/**
 * Record every look of the item from now on (a MutationObserver in the page,
 * so that short states are not missed between two polls of the test).
 */
export async function recordStates(page: IJupyterLabPageFixture): Promise<void> {
  await page.evaluate(() => {
    const w = window as any;
    w.__dbjlLooks = [];
    const node = document.querySelector('.jp-DatabricksStatus') as HTMLElement;
    const push = () => {
      const item = node.querySelector('.jp-DatabricksStatus-item');
      const word = node.querySelector('.jp-DatabricksStatus-state');
      const name = node.querySelector('.jp-DatabricksStatus-name');
      const svg = node.querySelector('.jp-DatabricksStatus-icon svg') as SVGElement | null;
      const look = {
        state: node.dataset.state ?? '',
        text: item?.textContent ?? '',
        icon: svg?.dataset.icon ?? '',
        colour: word ? getComputedStyle(word).color : '',
        nameWhole: !!name && name.scrollWidth <= name.clientWidth
      };
      const looks: object[] = w.__dbjlLooks;
      if (JSON.stringify(looks[looks.length - 1]) !== JSON.stringify(look)) {
        looks.push(look);
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

/** The recorded looks, oldest first. */
export async function recordedLooks(page: IJupyterLabPageFixture): Promise<ILook[]> {
  return page.evaluate(() => (window as any).__dbjlLooks as ILook[]);
}

/** The recorded entries, `<data-state>|<text of the item>`. */
export async function recordedStates(page: IJupyterLabPageFixture): Promise<string[]> {
  return (await recordedLooks(page)).map(look => `${look.state}|${look.text}`);
}

/** The recorded states without repeats, in order. */
export async function stateSequence(page: IJupyterLabPageFixture): Promise<string[]> {
  const states = (await recordedStates(page)).map(s => s.split('|')[0]);
  return states.filter((s, i) => s !== states[i - 1]);
}

/** The current kernel's state in the browser and on the server (for failure reports). */
export async function kernelDiagnosis(page: IJupyterLabPageFixture): Promise<string> {
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
      looks: (window as any).__dbjlLooks,
      server
    });
  });
}

/** Wait for the item's state class; on failure, log what the browser and the server saw. */
export async function expectItemState(
  page: IJupyterLabPageFixture,
  pattern: RegExp,
  timeout: number
): Promise<void> {
  try {
    await expect(statusItem(page)).toHaveClass(pattern, { timeout });
  } catch (error) {
    console.log('kernel as seen by the browser and the server:', await kernelDiagnosis(page));
    throw error;
  }
}

/** Our restart prompt (JupyterLab's own "Kernel Restarting" dialog may show too). */
export function restartPrompt(page: IJupyterLabPageFixture): Locator {
  return page.locator('.jp-Dialog', { has: page.locator('.jp-DatabricksPrompt') });
}

/** Our details dialog. */
export function detailsDialog(page: IJupyterLabPageFixture): Locator {
  return page.locator('.jp-Dialog', { has: page.locator('.jp-DatabricksDetails') });
}

/** The confirmation a Reconfigure asks for. */
export function reconfigureConfirmation(page: IJupyterLabPageFixture): Locator {
  return page.locator('.jp-Dialog', { has: page.locator('.jp-DatabricksConfirm') });
}

/** The server's cluster status until no operation runs any more (or `timeout` ms). */
export async function operationFinished(
  request: APIRequestContext,
  timeout: number
): Promise<void> {
  await expect
    .poll(
      async () => {
        const status = (await serverStatus(request)) as { operation: { step: string } | null };
        return status.operation === null || status.operation.step === 'done';
      },
      { timeout, intervals: [500] }
    )
    .toBe(true);
}

/** Close JupyterLab's own dialogs (e.g. "Kernel Restarting" after the driver went away). */
export async function dismissOtherDialogs(page: IJupyterLabPageFixture): Promise<void> {
  const others = page.locator('.jp-Dialog', {
    hasNot: page.locator('.jp-DatabricksPrompt, .jp-DatabricksDetails, .jp-DatabricksConfirm')
  });
  for (let i = 0; i < 5 && (await others.count()) > 0; i++) {
    await others.first().locator('.jp-Dialog-footer button').last().click();
    await page.waitForTimeout(200);
  }
}

/** Write a one-cell notebook for a kernelspec into the test folder and open it. */
export async function openNotebook(
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

export async function openDatabricksNotebook(
  page: IJupyterLabPageFixture,
  folder: string,
  name: string
): Promise<void> {
  const sim = info();
  await openNotebook(page, folder, name, sim.kernel_name, sim.kernel_display_name);
  await expect(statusItem(page)).toBeVisible({ timeout: 60 * 1000 });
}

/** Run code in the first cell and return its text output. */
export async function runFirstCell(page: IJupyterLabPageFixture, code: string): Promise<string> {
  await page.notebook.setCell(0, 'code', code);
  await page.notebook.runCell(0);
  return ((await page.notebook.getCellTextOutput(0)) ?? []).join('');
}

/**
 * Open a notebook on the simulated cluster, wait until the item shows it
 * connected, and record the item's looks from then on.
 */
export async function openConnected(
  page: IJupyterLabPageFixture,
  folder: string,
  name: string
): Promise<void> {
  await openDatabricksNotebook(page, folder, name);
  await expectItemState(page, /jp-mod-(connected|running-spark)\b/, 60 * 1000);
  await recordStates(page);
}

/** Shut down the kernel of an open notebook through jupyter_server's REST API. */
export async function shutdownKernelOf(request: APIRequestContext, name: string): Promise<void> {
  const sessions = await (await request.get('/api/sessions')).json();
  for (const session of sessions as { path: string; kernel: { id: string } | null }[]) {
    if (session.kernel && session.path.endsWith(name)) {
      const response = await request.delete(`/api/kernels/${session.kernel.id}`);
      expect(response.ok(), `kernel shutdown: ${response.status()}`).toBeTruthy();
    }
  }
}
