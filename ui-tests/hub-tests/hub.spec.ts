/**
 * JupyterLab through a real JupyterHub under /hub-prefix/ (../servers.py hub):
 * each user logs in at the hub's login page; alice's status item shows her
 * cluster connected and her cell runs on it; bob's browser sees only his own
 * workspace and is refused at alice's server.
 */
import { expect, Page, test } from '@playwright/test';

import { API, expectConnected, runFirstCell, serverInfo, shootPage } from '../servers-helpers';

interface IPerson {
  profile: string;
  cluster_id: string;
  cluster: string;
}

/** What ../servers.py hub wrote once both servers ran and alice's cluster was connected. */
interface IHubInfo {
  prefix: string;
  notebook: string;
  people: { alice: IPerson; bob: IPerson };
}

async function logIn(page: Page, info: IHubInfo, user: string): Promise<void> {
  await page.goto(`${info.prefix}hub/login`);
  await page.locator('#username_input').fill(user);
  await page.locator('#password_input').fill(process.env.DBJL_UI_PASSWORD as string);
  await page.locator('#login_submit').click();
  await page.waitForURL(url => !url.pathname.endsWith('/hub/login'));
}

async function profilesOf(page: Page, info: IHubInfo, user: string): Promise<string[]> {
  const response = await page.request.get(`${info.prefix}user/${user}/${API}/profiles`);
  expect(response.status()).toBe(200);
  return ((await response.json()).profiles as { name: string }[]).map(p => p.name);
}

test.describe.configure({ mode: 'serial' });

test('alice: the status item and her kernel work under /hub-prefix/user/alice/', async ({
  page
}) => {
  const info = await serverInfo<IHubInfo>();
  const alice = info.people.alice;
  await logIn(page, info, 'alice');
  await page.goto(`${info.prefix}user/alice/lab/tree/${info.notebook}`);
  expect(new URL(page.url()).pathname.startsWith(`${info.prefix}user/alice/lab`)).toBeTruthy();

  await expectConnected(page, alice.cluster);
  await runFirstCell(page, '42'); // on alice's simulated driver

  // The extension's API under her prefix, with the browser's hub login.
  expect(await profilesOf(page, info, 'alice')).toEqual([alice.profile]);
  const status = await page.request.get(
    `${info.prefix}user/alice/${API}/clusters/${alice.profile}/${alice.cluster_id}`
  );
  expect(status.status()).toBe(200);
  expect((await status.json()).state).toBe('connected');

  await shootPage(page, 'hub-alice.png');
});

test('bob: only his own workspace, and no way into alice server', async ({ browser }) => {
  const info = await serverInfo<IHubInfo>();
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await logIn(page, info, 'bob');
    await page.goto(`${info.prefix}user/bob/lab`);
    await expect(page.locator('#jp-main-statusbar')).toBeVisible({ timeout: 120 * 1000 });
    expect(await profilesOf(page, info, 'bob')).toEqual([info.people.bob.profile]);

    // alice's server does not take bob's login: no profile of hers reaches his browser
    const hers = await page.request.get(`${info.prefix}user/alice/${API}/profiles`, {
      maxRedirects: 0
    });
    expect(hers.status(), await hers.text()).not.toBe(200);
    expect(await hers.text()).not.toContain(info.people.alice.profile);
  } finally {
    await context.close();
  }
});
