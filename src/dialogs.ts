/**
 * The restart prompt and the details dialog. Both run through
 * `StatusModel.runDialog`, so they never stack.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import type { IClusterStatus } from './api';
import { StatusModel } from './model';
import { clusterTitle, DetailsView } from './statusbar';

/** Run "Restart cluster" and report a failure with the server's message. */
export async function restartCluster(
  model: StatusModel,
  trans: TranslationBundle
): Promise<void> {
  try {
    await model.restart();
  } catch (error) {
    Notification.error(
      trans.__('Could not restart the cluster: %1', errorMessage(error)),
      { autoClose: false }
    );
  }
}

/** Run "Reconfigure" and report a failure with the server's message. */
export async function reconfigureCluster(
  model: StatusModel,
  trans: TranslationBundle
): Promise<void> {
  try {
    await model.reconfigure();
  } catch (error) {
    Notification.error(
      trans.__('Could not reconfigure the cluster: %1', errorMessage(error)),
      { autoClose: false }
    );
  }
}

function errorMessage(error: unknown): string {
  return (error as Error)?.message ?? String(error);
}

function paragraph(text: string): Widget {
  const node = document.createElement('div');
  node.className = 'jp-DatabricksPrompt';
  for (const line of text.split('\n')) {
    if (line) {
      const p = document.createElement('p');
      p.textContent = line;
      node.appendChild(p);
    }
  }
  return new Widget({ node });
}

/**
 * The dialog offered when the cluster becomes terminated or unreachable.
 * Called by the model (at most once per transition).
 */
export function makeRestartPrompt(
  trans: TranslationBundle
): (model: StatusModel, status: IClusterStatus) => Promise<void> {
  return async (model, status) => {
    const name = clusterTitle(status);
    const title =
      status.state === 'terminated'
        ? trans.__('Cluster terminated')
        : trans.__('Cluster not reachable');
    const lead =
      status.state === 'terminated'
        ? trans.__('The Databricks cluster %1 has been terminated.', name)
        : trans.__('The driver of the Databricks cluster %1 does not answer over SSH.', name);
    const body = [
      lead,
      status.message,
      trans.__('Restart the cluster? The kernel of this notebook restarts when the cluster is ready.')
    ].join('\n');
    const result = await showDialog({
      title,
      body: paragraph(body),
      buttons: [
        Dialog.cancelButton({ label: trans.__('Not now') }),
        Dialog.okButton({ label: trans.__('Restart cluster') })
      ]
    });
    if (result.button.accept) {
      await restartCluster(model, trans);
    }
  };
}

/**
 * The details dialog: cluster, profile, states, event history and the
 * actions the state allows. Does nothing while another dialog is open.
 */
export async function showDetails(
  model: StatusModel,
  trans: TranslationBundle
): Promise<void> {
  await model.runDialog(async () => {
    const canRestart = model.canRestart;
    const canReconfigure = model.canReconfigure;
    const buttons: Dialog.IButton[] = [
      Dialog.cancelButton({ label: trans.__('Close') })
    ];
    if (canReconfigure) {
      buttons.push(
        Dialog.warnButton({ label: trans.__('Reconfigure'), actions: ['reconfigure'] })
      );
    }
    if (canRestart) {
      buttons.push(
        Dialog.okButton({ label: trans.__('Restart cluster'), actions: ['restart'] })
      );
    }
    const body = new DetailsView(model, trans);
    const result = await showDialog({
      title: trans.__('Databricks cluster %1', clusterTitle(model.cluster)),
      body,
      buttons,
      hasClose: true
    });
    body.dispose();
    const actions = result.button.actions;
    if (actions.includes('restart')) {
      await restartCluster(model, trans);
    } else if (actions.includes('reconfigure')) {
      await reconfigureCluster(model, trans);
    }
  });
}
