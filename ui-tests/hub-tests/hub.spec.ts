/**
 * JupyterLab through a real JupyterHub under /hub-prefix/ (../hub_server.py):
 * each user logs in at the hub's login page; alice's status item shows her
 * cluster connected and her cell runs on it; bob's browser sees only his own
 * workspace and is refused at alice's server.
 */
import { expect, Page, test } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

interface IPerson {
  profile: string;
  cluster_id: string;
  cluster: string;
}

/** What ../hub_server.py wrote once both servers ran and alice's cluster was connected. */
interface IHubInfo {
  prefix: string;
  notebook: string;
  people: { alice: IPerson; bob: IPerson };
}

const IMAGES = path.resolve(__dirname, '..', '..', 'docs', 'images');
const API = 'databrickslabs-jupyterlab/api/v1';

async function hubInfo(): Promise<IHubInfo> {
  const file = process.env.DBJL_HUB_INFO as string;
  // The hub answers before both servers are spawned and alice's cluster is up.
  await expect
    .poll(() => fs.existsSync(file), { timeout: 240 * 1000, intervals: [500] })
    .toBe(true);
  return JSON.parse(fs.readFileSync(file, 'utf-8'));
}

async function logIn(page: Page, info: IHubInfo, user: string): Promise<void> {
  await page.goto(`${info.prefix}hub/login`);
  await page.locator('#username_input').fill(user);
  await page.locator('#password_input').fill(process.env.DBJL_HUB_PASSWORD as string);
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
  const info = await hubInfo();
  const alice = info.people.alice;
  await logIn(page, info, 'alice');
  await page.goto(`${info.prefix}user/alice/lab/tree/${info.notebook}`);
  expect(new URL(page.url()).pathname.startsWith(`${info.prefix}user/alice/lab`)).toBeTruthy();

  const item = page.locator('#jp-main-statusbar .jp-DatabricksStatus-item');
  await expect(item).toBeVisible({ timeout: 120 * 1000 });
  await expect(item).toHaveClass(/jp-mod-connected/, { timeout: 120 * 1000 });
  await expect(item).toContainText(alice.cluster);

  // The cell runs on alice's simulated driver.
  await page.locator('.jp-Notebook .jp-Cell .cm-content').first().click();
  await page.keyboard.press('Shift+Enter');
  await expect(page.locator('.jp-Notebook .jp-OutputArea-output').first()).toContainText('42', {
    timeout: 120 * 1000
  });

  // The extension's API under her prefix, with the browser's hub login.
  expect(await profilesOf(page, info, 'alice')).toEqual([alice.profile]);
  const status = await page.request.get(
    `${info.prefix}user/alice/${API}/clusters/${alice.profile}/${alice.cluster_id}`
  );
  expect(status.status()).toBe(200);
  expect((await status.json()).state).toBe('connected');

  // JupyterLab's question about its news is no part of the picture.
  const news = page.locator('.jp-toast-button', { hasText: 'No' });
  if (await news.count()) {
    await news.first().click();
    await expect(page.locator('.Toastify__toast')).toHaveCount(0);
  }
  fs.mkdirSync(IMAGES, { recursive: true });
  await page.screenshot({ path: path.join(IMAGES, 'hub-alice.png') });
});

test('bob: only his own workspace, and no way into alice server', async ({ browser }) => {
  const info = await hubInfo();
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
