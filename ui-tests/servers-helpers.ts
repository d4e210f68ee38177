/**
 * Helpers of the browser tests with their own servers (hub-tests/,
 * gateway-tests/; servers.py): what the servers wrote, and the page as the
 * person sees it.
 */
import { expect, Page } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

export const IMAGES = path.resolve(__dirname, '..', 'docs', 'images');
export const API = 'databrickslabs-jupyterlab/api/v1';

/** What servers.py wrote to DBJL_UI_SERVER_INFO once everything was up. */
export async function serverInfo<T>(): Promise<T> {
  const file = process.env.DBJL_UI_SERVER_INFO as string;
  // The web server answers before the rest is ready (spawns, a cluster start).
  await expect
    .poll(() => fs.existsSync(file), { timeout: 240 * 1000, intervals: [500] })
    .toBe(true);
  return JSON.parse(fs.readFileSync(file, 'utf-8')) as T;
}

/** The status item, once it shows its cluster connected. */
export async function expectConnected(page: Page, cluster: string): Promise<void> {
  const item = page.locator('#jp-main-statusbar .jp-DatabricksStatus-item');
  await expect(item).toBeVisible({ timeout: 120 * 1000 });
  await expect(item).toHaveClass(/jp-mod-connected/, { timeout: 120 * 1000 });
  await expect(item).toContainText(cluster);
}

/** Run the open notebook's first cell with the keyboard; wait for `text` in its output. */
export async function runFirstCell(page: Page, text: string): Promise<void> {
  await page.locator('.jp-Notebook .jp-Cell .cm-content').first().click();
  await page.keyboard.press('Shift+Enter');
  await expect(page.locator('.jp-Notebook .jp-OutputArea-output').first()).toContainText(text, {
    timeout: 120 * 1000
  });
}

/** A screenshot of the page into docs/images, without JupyterLab's question about its news. */
export async function shootPage(page: Page, name: string): Promise<void> {
  const news = page.locator('.jp-toast-button', { hasText: 'No' });
  if (await news.count()) {
    await news.first().click();
    await expect(news).toHaveCount(0);
  }
  fs.mkdirSync(IMAGES, { recursive: true });
  await page.screenshot({ path: path.join(IMAGES, name) });
}
