/**
 * A notebook on a simulated cluster whose driver runs the cluster's own
 * Spark application: the kernel attaches to it (gateway hand-off), and
 * `%sql`, `%fs`, `display()` and a Spark job with its progress line run in
 * the browser; the details dialog links the cluster's Spark UI. Screenshots
 * go to docs/images for the README.
 */
import { expect, test } from '@jupyterlab/galata';
import type { APIRequestContext } from '@playwright/test';

import * as fs from 'fs';
import * as path from 'path';

import {
  detailsDialog,
  expectItemState,
  IMAGES,
  info,
  openNotebook,
  shootElement,
  shutdownKernelOf,
  statusItem
} from './helpers';

test.use({ autoGoto: true });

const NOTEBOOK = 'spark-idioms.ipynb';

/** The cells of the notebook, in order. */
const CELLS = [
  '%%sql\n' +
    'CREATE OR REPLACE TEMP VIEW squares AS\n' +
    '  SELECT id AS n, id * id AS square FROM range(1, 11);\n' +
    'SELECT n, square FROM squares WHERE n % 2 = 0 ORDER BY n',
  '%%fs\n' +
    'mkdirs /tmp/dbjl-ui-spark/data\n' +
    'put -f /tmp/dbjl-ui-spark/data/hello.txt "hello from the driver"\n' +
    'ls /tmp/dbjl-ui-spark/data',
  'display(spark.table("squares").selectExpr("count(*) AS n", "sum(square) AS total"))',
  // About four seconds: eight rows sleeping 1 s each on two partitions (collected: a count
  // would not need the column, and Spark would not run the sleeps).
  "len(spark.sql(\"SELECT reflect('java.lang.Thread', 'sleep', CAST(1000 AS BIGINT)) \"\n" +
    '              "FROM range(0, 8, 1, 2)").collect())'
];

/** Start the Spark cluster through the workspace API, as a user would. */
async function startCluster(request: APIRequestContext, clusterId: string): Promise<void> {
  const sim = info();
  const response = await request.post(`${sim.simulator_url}/api/2.1/clusters/start`, {
    headers: { Authorization: `Bearer ${sim.simulator_token}` },
    data: { cluster_id: clusterId }
  });
  expect(response.ok(), `cluster start: ${response.status()}`).toBeTruthy();
  await expect
    .poll(
      async () => {
        const answer = await request.get(
          `/databrickslabs-jupyterlab/api/v1/clusters/${sim.profile}/${clusterId}`
        );
        return (await answer.json()).cluster_state;
      },
      { timeout: 120 * 1000, intervals: [500] }
    )
    .toBe('RUNNING');
}

function output(page: any, index: number) {
  return page.locator('.jp-Notebook .jp-Cell').nth(index).locator('.jp-OutputArea');
}

test('the notebook idioms run on the cluster’s Spark in the browser', async ({
  page,
  request,
  tmpPath
}) => {
  const sim = info();
  test.skip(!sim.spark_cluster_kernel_name, 'no pyspark or no Java (DBJL_TEST_PYSPARK_PATH)');
  test.setTimeout(300 * 1000);
  await startCluster(request, sim.spark_cluster_id);

  const notebook = {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {
      kernelspec: {
        name: sim.spark_cluster_kernel_name,
        display_name: sim.spark_cluster_kernel_display_name,
        language: 'python'
      }
    },
    cells: CELLS.map(source => ({
      cell_type: 'code',
      metadata: {},
      source,
      outputs: [],
      execution_count: null
    }))
  };
  const file = `${tmpPath}/${NOTEBOOK}`;
  expect(await page.contents.uploadContent(JSON.stringify(notebook), 'text', file)).toBeTruthy();
  expect(await page.notebook.openByPath(file)).toBeTruthy();
  await page.notebook.activate(NOTEBOOK);

  // The kernel attaches to the cluster's application (not a Spark of its own).
  const item = statusItem(page);
  await expect(item).toBeVisible({ timeout: 60 * 1000 });
  await expectItemState(page, /jp-mod-running-spark\b/, 150 * 1000);
  await expect(item).toContainText('running with Spark');

  // %sql: an HTML table, the last statement's result
  await page.notebook.runCell(0);
  const sql = output(page, 0);
  await expect(sql.locator('table th').first()).toHaveText('n', { timeout: 60 * 1000 });
  await expect(sql.locator('tbody tr')).toHaveCount(5);
  await expect(sql).toContainText('5 rows');

  // %fs on the driver: the folder's listing as a table
  await page.notebook.runCell(1);
  const listing = output(page, 1);
  await expect(listing.getByRole('cell', { name: 'hello.txt', exact: true })).toBeVisible({
    timeout: 60 * 1000
  });

  // display() of a Spark DataFrame
  await page.notebook.runCell(2);
  const shown = output(page, 2);
  await expect(shown.locator('tbody td').nth(1)).toHaveText('385', { timeout: 60 * 1000 });

  // A job longer than a second shows its progress line under the cell while it runs.
  await page.notebook.selectCells(3);
  await page.keyboard.press('Control+Enter');
  const job = output(page, 3);
  const running = /Spark: \d+ jobs? running, stage \d+: \d+\/\d+ tasks/;
  await expect(job).toContainText(running, { timeout: 60 * 1000 });
  // For the README, a picture of the line while a stage runs: taken at once (an element
  // screenshot would wait for the line to settle) and kept if the line still ran afterwards.
  for (let i = 0; i < 10; i++) {
    const cell = await page.locator('.jp-Notebook .jp-Cell').nth(3).boundingBox();
    if (!cell || !running.test(await job.innerText())) {
      break;
    }
    const shot = await page.screenshot({ clip: cell });
    if (running.test(await job.innerText())) {
      fs.writeFileSync(path.join(IMAGES, 'notebook-spark-progress.png'), shot);
      break;
    }
  }
  await expect(job).toContainText(/Spark: \d+ jobs? finished/, { timeout: 60 * 1000 });
  await expect(job.locator('.jp-OutputArea-executeResult')).toContainText('8');
  await page.notebook.save();
  await page.notebook.selectCells(0);
  await page.locator('.jp-Notebook').first().evaluate(node => node.scrollTo(0, 0));
  await shootElement(page.locator('.jp-NotebookPanel').first(), 'notebook-spark.png');

  // The details dialog links the cluster's Spark UI in the workspace.
  await item.click();
  const dialog = detailsDialog(page);
  await expect(dialog).toBeVisible();
  const link = dialog.locator('a.jp-DatabricksDetails-sparkUi');
  await expect(link).toHaveAttribute(
    'href',
    new RegExp(`^${sim.simulator_url}/\\?o=\\d+#setting/clusters/${sim.spark_cluster_id}/sparkUi$`)
  );
  await expect(link).toHaveAttribute('target', '_blank');
  await shootElement(dialog.locator('.jp-Dialog-content'), 'details-dialog-spark-ui.png');
  await dialog.getByRole('button', { name: 'Close' }).first().click();

  await shutdownKernelOf(request, NOTEBOOK);
});
