/**
 * The status-bar item in a real browser against JupyterLab with the server
 * extension, the kernel provisioner and the workspace simulator
 * (see ../jupyter_server_test_config.py).
 */
import { expect, test } from '@jupyterlab/galata';

import {
  detailsDialog,
  dismissOtherDialogs,
  expectItemState,
  info,
  openConnected,
  openDatabricksNotebook,
  openNotebook,
  recordedStates,
  restartPrompt,
  runFirstCell,
  shootElement,
  shootStatus,
  shutdownKernelOf,
  simulator,
  stateOf,
  stateSequence,
  statusItem
} from './helpers';

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
    expect(await runFirstCell(page, 'print(6 * 7)')).toContain('42');

    await shootStatus(page, 'status-connected.png');
    await shootElement(page, 'notebook-connected.png');
  });

  test('clicking the item opens the details dialog', async ({ page, tmpPath }) => {
    const sim = info();
    await openDatabricksNotebook(page, tmpPath, 'details.ipynb');
    await statusItem(page).click();
    const dialog = detailsDialog(page);
    await expect(dialog).toBeVisible();
    await expect(dialog).toContainText(sim.cluster_id);
    await expect(dialog).toContainText(sim.profile);
    await expect(dialog.locator('.jp-DatabricksDetails-events li').first()).toBeVisible();
    // A running, connected cluster can be reconfigured, not restarted.
    await expect(dialog.getByRole('button', { name: 'Reconfigure' })).toBeVisible();
    await expect(dialog.getByRole('button', { name: 'Restart cluster' })).toHaveCount(0);
    // The harmless button is the default: it has the focus, not Reconfigure.
    await expect(dialog.locator('.jp-Dialog-footer button').first()).toBeFocused();
    await expect(dialog.locator('.jp-Dialog-footer button').first()).toHaveText('Close');
    await shootElement(dialog, 'details-dialog.png');
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
    await openConnected(page, tmpPath, 'restart.ipynb');

    await simulator(request, `clusters/${sim.cluster_id}/terminate`);
    const dialog = restartPrompt(page);
    // The dialog appears within 5 s of the termination request.
    await expect(dialog).toBeVisible({ timeout: 5000 });
    // The driver's SSH may drop a moment before Databricks reports the
    // termination: the prompt is then "not reachable", and no second one follows.
    await expect(dialog).toContainText(/Cluster (terminated|not reachable)/);
    // It says what happens to the kernel: restarted if lost (its variables are gone anyway).
    await expect(dialog).toContainText(
      /This notebook's kernel restarts|Kernels that lost their connection restart/
    );
    await expect(statusItem(page)).toHaveClass(/jp-mod-terminated/);
    await shootElement(dialog, 'restart-dialog.png');
    await shootStatus(page, 'status-terminated.png');

    // Never stacked, never repeated: still exactly one dialog a while later.
    await page.waitForTimeout(2500);
    await expect(dialog).toHaveCount(1);

    // Slow the workspace API a little so that each step stays on screen.
    await simulator(request, 'latency', { seconds: 0.4 });
    await dialog.getByRole('button', { name: 'Restart cluster' }).click();
    await expect(dialog).toHaveCount(0);

    // Too fast to catch on screen is fine: the recorded states below still tell.
    const starting = await page
      .locator('#jp-main-statusbar .jp-DatabricksStatus-item.jp-mod-starting')
      .waitFor({ timeout: 10 * 1000 })
      .then(
        () => true,
        () => false
      );
    if (starting) {
      await shootStatus(page, 'status-starting.png');
    }
    await expectItemState(page, /jp-mod-(connected|running-spark)/, 150 * 1000);
    await simulator(request, 'latency', { seconds: 0 });

    const order = await stateSequence(page);
    // terminated -> starting -> configuring (-> installing) -> connected, in this order.
    const at = (s: string) => order.indexOf(s);
    expect(at('terminated')).toBeGreaterThanOrEqual(0);
    expect(at('starting')).toBeGreaterThan(at('terminated'));
    expect(order.slice(0, at('terminated'))).not.toContain('starting');
    // The steps seen come in the operation's order. A step shorter than one long-poll round
    // trip (configuring is an SSH login, which the workspace latency above does not stretch)
    // may pass unseen on a loaded machine; the step counter below shows the operation ran.
    const steps = ['starting', 'configuring', 'installing'];
    const seen = order.slice(at('starting')).filter(s => steps.includes(s));
    expect(seen).toEqual(steps.filter(s => seen.includes(s)));
    expect(order.lastIndexOf('connected')).toBeGreaterThan(at('starting'));
    // The step counter was shown while the operation ran, next to the step's name.
    const during = (await recordedStates(page)).filter(s => /\d\/\d/.test(s));
    expect(during.length).toBeGreaterThan(0);
    // Never "connected" next to a step counter (it read "connected step 4/5" while the
    // kernels restarted). The text is what the person sees; `data-state` may run one
    // render ahead of it in the recording.
    const texts = during.map(s => s.split('|')[1]);
    // Step 4 may pass between two polls (a kernel restart is quick); whenever it was seen,
    // it read as the operation's step.
    expect(
      texts.filter(t => /4\/5/.test(t)).every(t => /restarting kernels ?4\/5/.test(t)),
      during.join('\n')
    ).toBeTruthy();
    expect(texts.every(t => !/connected ?\d\/\d/.test(t)), during.join('\n')).toBeTruthy();
    // No second restart prompt came up on the way.
    await expect(restartPrompt(page)).toHaveCount(0);
    await dismissOtherDialogs(page);

    // The kernel is back on the restarted driver: a cell executes.
    expect(await runFirstCell(page, 'print(sum(range(10)))')).toContain('45');
    await shootStatus(page, 'status-connected-after-restart.png');
  });

  test('a non-Databricks kernel shows no item, and the item follows tab switches', async ({
    page,
    tmpPath
  }) => {
    await openDatabricksNotebook(page, tmpPath, 'databricks.ipynb');
    await openNotebook(page, tmpPath, 'plain.ipynb', 'python3', 'Python 3 (ipykernel)');
    expect(await runFirstCell(page, 'print("local")')).toContain('local');
    await expect(statusItem(page)).toHaveCount(0);
    await expect(page.locator('.jp-DatabricksStatus')).toBeHidden();

    // Back to the Databricks notebook: the item comes back at once.
    await page.notebook.activate('databricks.ipynb');
    await expect(statusItem(page)).toBeVisible({ timeout: 5000 });
    await expect(statusItem(page)).toHaveClass(/jp-mod-connected/);
  });

  test('a kernel with pyspark shows running with Spark and runs a Spark job', async ({
    page,
    request,
    tmpPath
  }) => {
    const sim = info();
    test.skip(!sim.spark_kernel_name, 'no pyspark or no Java (DBJL_TEST_PYSPARK_PATH)');
    test.setTimeout(180 * 1000);
    const name = sim.spark_kernel_name;
    await openNotebook(page, tmpPath, 'spark.ipynb', name, sim.spark_kernel_display_name);
    const item = statusItem(page);
    await expect(item).toBeVisible({ timeout: 60 * 1000 });
    // Spark attaches in the background once the kernel is up.
    await expectItemState(page, /jp-mod-running-spark\b/, 120 * 1000);
    await expect(item).toContainText('running with Spark');
    const job = 'print(spark.range(10).count(), type(dbutils).__name__)';
    expect(await runFirstCell(page, job)).toContain('10 LocalDbUtils');
    await shootStatus(page, 'status-running-spark.png');
    await shutdownKernelOf(request, 'spark.ipynb');
  });
});

