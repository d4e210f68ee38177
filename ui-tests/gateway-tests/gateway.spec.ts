/**
 * JupyterLab with --gateway-url in front of a real Jupyter Kernel Gateway
 * (../servers.py gateway): the notebook's Databricks kernel runs in the
 * gateway, on the simulated driver; the status item shows its cluster
 * connected, and the extension's API knows the gateway's kernel as running.
 */
import { expect, test } from '@playwright/test';

import { API, expectConnected, runFirstCell, serverInfo, shootPage } from '../servers-helpers';

/** What ../servers.py gateway wrote once JupyterLab and the gateway answered. */
interface IGatewayInfo {
  notebook: string;
  profile: string;
  cluster_id: string;
  cluster: string;
  gateway_url: string;
  gateway_token: string;
}

test('a notebook runs behind the gateway and its status item works', async ({ page }) => {
  const info = await serverInfo<IGatewayInfo>();
  const token = process.env.DBJL_UI_PASSWORD as string;
  // The token in the URL once: the server sets its login cookie and drops it from the URL.
  await page.goto(`/lab/tree/${info.notebook}?token=${token}`);

  await expectConnected(page, info.cluster);
  await runFirstCell(page, '42');

  // The server's sessions name the gateway's kernel; the extension reports it running.
  const sessions = await (await page.request.get('/api/sessions')).json();
  const session = (sessions as { path: string; kernel: { id: string } }[]).find(s =>
    s.path.endsWith(info.notebook)
  );
  expect(session, JSON.stringify(sessions)).toBeTruthy();
  const kernelId = session!.kernel.id;
  await expect
    .poll(
      async () => {
        const response = await page.request.get(`/${API}/kernels/${kernelId}`);
        return response.ok() ? (await response.json()).kernel_state : response.status();
      },
      { timeout: 60 * 1000, intervals: [500] }
    )
    .toBe('running');
  // It is the gateway's kernel, under the same id.
  const onGateway = await page.request.get(`${info.gateway_url}/api/kernels/${kernelId}`, {
    headers: { Authorization: `token ${info.gateway_token}` }
  });
  expect(onGateway.status()).toBe(200);
  expect((await onGateway.json()).id).toBe(kernelId);

  await shootPage(page, 'gateway-notebook.png');
});
