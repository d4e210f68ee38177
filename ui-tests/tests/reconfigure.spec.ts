/**
 * No silent kernel loss: the details dialog's default button is harmless, and a
 * Reconfigure that has nothing to install leaves the notebook's kernel (and its
 * variables) alone after a confirmation that named the notebook.
 */
import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';

import {
  detailsDialog,
  expectItemState,
  openConnected,
  operationFinished,
  reconfigureConfirmation,
  restartPrompt,
  runFirstCell,
  serverStatus,
  shootElement,
  stateSequence,
  statusItem
} from './helpers';

const CONNECTED = /jp-mod-(connected|running-spark)\b/;

test.describe.configure({ mode: 'serial', timeout: 180 * 1000 });

test.use({ autoGoto: true });

/** The id of the kernel of the notebook in front, as the browser knows it. */
async function kernelId(page: IJupyterLabPageFixture): Promise<string> {
  return page.evaluate(
    () => (window as any).jupyterapp.shell.currentWidget.sessionContext.session.kernel.id
  );
}

test.describe('Reconfigure keeps the kernels', () => {
  test('Enter closes the details; Reconfigure asks, names the notebook, and the kernel survives', async ({
    page,
    request,
    tmpPath
  }) => {
    await openConnected(page, tmpPath, 'keep.ipynb');
    expect(await runFirstCell(page, 'x = 41; print("set")')).toContain('set');
    const kernel = await kernelId(page);
    const before = (await serverStatus(request)) as { operation: unknown; events: unknown[] };
    expect(before.operation).toBeNull();

    // Enter in the details dialog: the default button, Close. Nothing starts.
    await statusItem(page).click();
    const dialog = detailsDialog(page);
    await expect(dialog).toBeVisible();
    await expect(dialog.getByRole('button', { name: 'Reconfigure' })).toBeVisible();
    // The dialog focuses its default button once its body has rendered; a key pressed
    // before that goes to the status bar item, as it would for a user.
    const close = dialog.locator('.jp-Dialog-footer button').first();
    await expect(close).toHaveText('Close');
    await expect(close).toBeFocused();
    await page.keyboard.press('Enter');
    await expect(dialog).toHaveCount(0);
    await expect(reconfigureConfirmation(page)).toHaveCount(0);
    await page.waitForTimeout(2000);
    expect(((await serverStatus(request)) as { operation: unknown }).operation).toBeNull();
    await expect(statusItem(page)).toHaveClass(CONNECTED);
    expect(await runFirstCell(page, 'print(x + 1)')).toContain('42');

    // Reconfigure: a confirmation that lists this notebook, Cancel by default.
    await statusItem(page).click();
    await dialog.getByRole('button', { name: 'Reconfigure' }).click();
    await expect(dialog).toHaveCount(0);
    const confirmation = reconfigureConfirmation(page);
    await expect(confirmation).toBeVisible();
    // The first list holds the running kernels (a second one those that lost their connection).
    await expect(confirmation.locator('.jp-DatabricksKernels').first()).toContainText(
      'keep.ipynb'
    );
    await expect(confirmation).toContainText(
      /If a library must be installed, (this kernel restarts|these kernels restart)/
    );
    await expect(confirmation.locator('.jp-Dialog-footer button').first()).toBeFocused();
    await expect(confirmation.locator('.jp-Dialog-footer button').first()).toHaveText('Cancel');
    await shootElement(confirmation, 'reconfigure-confirmation.png');
    await confirmation.getByRole('button', { name: 'Reconfigure' }).click();
    await expect(confirmation).toHaveCount(0);

    // The operation runs (configuring ...) and ends; nothing was missing on the driver.
    await operationFinished(request, 120 * 1000);
    await expectItemState(page, CONNECTED, 30 * 1000);
    const order = await stateSequence(page);
    expect(order, order.join(' -> ')).toContain('configuring');
    expect(order, order.join(' -> ')).not.toContain('kernel-disconnected');
    await expect(restartPrompt(page)).toHaveCount(0);

    // Same kernel, variables intact.
    expect(await kernelId(page)).toBe(kernel);
    expect(await runFirstCell(page, 'print(x + 1)')).toContain('42');
  });
});
