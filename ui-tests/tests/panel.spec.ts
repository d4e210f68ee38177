/**
 * The Databricks panel in a real browser: it lists the simulated workspace's
 * clusters, starts one, opens a notebook on it (the server writes the
 * kernelspec; no CLI) whose cell runs on the cluster, and terminates it after
 * the confirmation.
 *
 * The panel's cluster is its own (created through the workspace API with the
 * standard access mode, so its kernel uses the Command Execution API): the
 * kernelspec the panel writes replaces the earlier spec of the same cluster,
 * and the other specs' cluster keeps its specs.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { APIRequestContext, Locator } from '@playwright/test';

import { info, shootElement, simulator } from './helpers';

test.use({ autoGoto: true });

const PANEL_CLUSTER = 'ui-panel-cluster';

/** Create the panel's cluster in the simulated workspace (or find it); its id. */
async function panelCluster(request: APIRequestContext): Promise<string> {
  const sim = info();
  const headers = { Authorization: `Bearer ${sim.simulator_token}` };
  const listed = await request.get(`${sim.simulator_url}/api/2.1/clusters/list`, { headers });
  expect(listed.ok()).toBeTruthy();
  const found = ((await listed.json()).clusters ?? []).find(
    (c: { cluster_name: string }) => c.cluster_name === PANEL_CLUSTER
  );
  if (found) {
    return found.cluster_id;
  }
  const created = await request.post(`${sim.simulator_url}/api/2.1/clusters/create`, {
    headers,
    data: {
      cluster_name: PANEL_CLUSTER,
      spark_version: '16.4.x-scala2.12',
      data_security_mode: 'USER_ISOLATION',
      autotermination_minutes: 45,
      num_workers: 0
    }
  });
  expect(created.ok(), `clusters/create: ${created.status()}`).toBeTruthy();
  return (await created.json()).cluster_id;
}

/** Databricks' state of a cluster, read from the simulated workspace. */
async function databricksState(request: APIRequestContext, clusterId: string): Promise<string> {
  const sim = info();
  const response = await request.get(
    `${sim.simulator_url}/api/2.1/clusters/get?cluster_id=${clusterId}`,
    { headers: { Authorization: `Bearer ${sim.simulator_token}` } }
  );
  return (await response.json()).state;
}

async function openPanel(page: IJupyterLabPageFixture): Promise<Locator> {
  const panel = page.locator('#databrickslabs-jupyterlab-panel');
  if (!(await panel.isVisible())) {
    // a click on the tab of an open panel would close it
    await page.locator('.lm-TabBar-tab[data-id="databrickslabs-jupyterlab-panel"]').click();
  }
  await expect(panel).toBeVisible();
  return panel;
}

test('the panel starts a cluster, opens a notebook on it and terminates it', async ({
  page,
  request
}) => {
  test.setTimeout(240 * 1000);
  const sim = info();
  const clusterId = await panelCluster(request);
  // The panel's Start is what brings it up: take it down first.
  await expect
    .poll(() => databricksState(request, clusterId), { timeout: 60 * 1000 })
    .toMatch(/RUNNING|TERMINATED/);
  if ((await databricksState(request, clusterId)) !== 'TERMINATED') {
    await simulator(request, `clusters/${clusterId}/terminate`);
  }
  await expect
    .poll(() => databricksState(request, clusterId), { timeout: 60 * 1000 })
    .toBe('TERMINATED');

  const panel = await openPanel(page);
  await expect(panel.locator(`[data-profile="${sim.profile}"] h3`)).toHaveText(sim.profile);
  // Both clusters of the profile are listed, with the listing's facts.
  await expect(panel.locator(`[data-cluster-id="${sim.cluster_id}"]`)).toContainText(
    sim.cluster_name
  );
  const row = panel.locator(`[data-cluster-id="${clusterId}"]`);
  await expect(row).toContainText(PANEL_CLUSTER);
  await expect(row).toHaveAttribute('data-state', 'terminated');
  await expect(row.locator('.jp-DatabricksPanel-facts')).toHaveText(
    '16.4 · Standard · Command Execution API (no SSH) · terminates after 45 min idle'
  );
  await expect(row.getByRole('button', { name: 'Terminate' })).toBeDisabled();

  // Start: the long poll walks the row to connected.
  await row.getByRole('button', { name: 'Start' }).click();
  await expect(row).toHaveAttribute('data-state', /starting|configuring|installing/, {
    timeout: 10 * 1000
  });
  await expect(row).toHaveAttribute('data-state', 'connected', { timeout: 120 * 1000 });
  expect(await databricksState(request, clusterId)).toBe('RUNNING');
  await expect(row.getByRole('button', { name: 'Start' })).toBeDisabled();
  await shootElement(panel, 'panel.png');

  // New notebook: the server writes the kernelspec and the notebook opens with it.
  await row.getByRole('button', { name: 'New notebook' }).click();
  await expect(page.locator('.jp-NotebookPanel').last()).toBeVisible({ timeout: 30 * 1000 });
  await expect(
    page.locator('.jp-NotebookPanel .jp-Toolbar-kernelName').last()
  ).toContainText(PANEL_CLUSTER, { timeout: 30 * 1000 });
  await page.notebook.setCell(0, 'code', 'import os\nprint(6 * 7, os.getpid() > 0)');
  await page.notebook.runCell(0);
  expect(((await page.notebook.getCellTextOutput(0)) ?? []).join('')).toContain('42 True');
  const kernelspecs = await (await request.get('/api/kernelspecs')).json();
  const ours = Object.values(kernelspecs.kernelspecs as object).filter(
    (s: any) => s.spec?.metadata?.databricks?.cluster_id === clusterId
  );
  expect(ours.length).toBe(1);

  // Terminate asks first, and says what running notebooks lose.
  await openPanel(page);
  await row.getByRole('button', { name: 'Terminate' }).click();
  const dialog = page.locator('.jp-Dialog');
  await expect(dialog).toContainText(`Terminate cluster ${PANEL_CLUSTER}?`);
  await expect(dialog).toContainText('lose their state');
  // The harmless button is the default.
  await expect(dialog.locator('.jp-Dialog-footer button').first()).toBeFocused();
  await shootElement(dialog.locator('.jp-Dialog-content'), 'panel-terminate.png');
  await dialog.getByRole('button', { name: 'Terminate' }).click();
  await expect(dialog).toHaveCount(0);
  await expect(row).toHaveAttribute('data-state', 'terminated', { timeout: 60 * 1000 });
  expect(await databricksState(request, clusterId)).toBe('TERMINATED');
  await expect(row.getByRole('button', { name: 'Start' })).toBeEnabled();
});
