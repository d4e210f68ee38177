/**
 * The restart prompt, the details dialog and the reconfigure confirmation.
 * They run through `StatusModel.runDialog`, so they never stack. Nothing
 * that restarts a kernel holding variables runs without a confirmation that
 * names the kernels, and no such button is a dialog's default.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import type { IClusterStatus } from './api';
import { DetailsView } from './details';
import { StatusModel } from './model';
import { KernelNamer, reconfigureText } from './restarts';
import { clusterTitle } from './statusbar';

function errorMessage(error: unknown): string {
  return (error as Error)?.message ?? String(error);
}

/** Run "Restart cluster" and report a failure with the server's message. */
export async function restartCluster(
  model: StatusModel,
  trans: TranslationBundle
): Promise<void> {
  try {
    const answer = await model.restart();
    if (!answer.started) {
      Notification.info(
        trans.__(
          'The cluster %1 is running and connected: nothing to restart.',
          clusterTitle(answer.status)
        ),
        { autoClose: 5000 }
      );
    }
  } catch (error) {
    Notification.error(
      trans.__('Could not restart the cluster: %1', errorMessage(error)),
      { autoClose: false }
    );
  }
}

/**
 * Ask before a reconfigure, then run it with `restart_kernels:
 * "if-installed"`: the cluster's running kernels restart only when a driver
 * library had to be installed. Reports a failure with the server's message.
 */
export async function reconfigureCluster(
  model: StatusModel,
  trans: TranslationBundle,
  nameKernel: KernelNamer
): Promise<void> {
  if (!(await confirmReconfigure(model, trans, nameKernel))) {
    return;
  }
  try {
    await model.reconfigure('if-installed');
  } catch (error) {
    Notification.error(
      trans.__('Could not reconfigure the cluster: %1', errorMessage(error)),
      { autoClose: false }
    );
  }
}

/** A dialog body: each string becomes paragraphs (one per line), each array a list. */
function promptBody(parts: Array<string | string[]>, className: string): Widget {
  const node = document.createElement('div');
  node.className = className;
  for (const part of parts) {
    if (Array.isArray(part)) {
      const list = document.createElement('ul');
      list.className = 'jp-DatabricksKernels';
      for (const item of part) {
        const li = document.createElement('li');
        li.textContent = item;
        list.appendChild(li);
      }
      node.appendChild(list);
      continue;
    }
    for (const line of part.split('\n')) {
      if (line) {
        const p = document.createElement('p');
        p.textContent = line;
        node.appendChild(p);
      }
    }
  }
  return new Widget({ node });
}

/** The confirmation of a reconfigure; Cancel is its default button. */
async function confirmReconfigure(
  model: StatusModel,
  trans: TranslationBundle,
  nameKernel: KernelNamer
): Promise<boolean> {
  const result = await showDialog({
    title: trans.__('Reconfigure the cluster %1?', clusterTitle(model.cluster)),
    body: promptBody(
      reconfigureText(model, trans, nameKernel),
      'jp-DatabricksConfirm'
    ),
    buttons: [
      Dialog.cancelButton({ label: trans.__('Cancel') }),
      Dialog.warnButton({ label: trans.__('Reconfigure') })
    ],
    defaultButton: 0
  });
  return result.button.accept;
}

/** The palette command "Reconfigure": the confirmation, unless a dialog is open. */
export async function reconfigureCommand(
  model: StatusModel,
  trans: TranslationBundle,
  nameKernel: KernelNamer
): Promise<void> {
  await model.runDialog(() => reconfigureCluster(model, trans, nameKernel));
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
    const terminated = status.state === 'terminated';
    const title = terminated
      ? trans.__('Cluster terminated')
      : trans.__('Cluster not reachable');
    const lead = terminated
      ? trans.__('The Databricks cluster %1 has been terminated.', name)
      : trans.__('The driver of the Databricks cluster %1 does not answer over SSH.', name);
    const restarts = model.restartNamesKernel
      ? trans.__(
          "Restart the cluster? This notebook's kernel restarts when the cluster is ready (its variables were lost with the driver)."
        )
      : trans.__(
          'Restart the cluster? Kernels that lost their connection restart when the cluster is ready; running kernels are left alone.'
        );
    const result = await showDialog({
      title,
      body: promptBody([lead, status.message, restarts], 'jp-DatabricksPrompt'),
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
 * actions the state allows. Close is the default button (Enter closes);
 * Reconfigure asks for a confirmation first. Does nothing while another
 * dialog is open.
 */
export async function showDetails(
  model: StatusModel,
  trans: TranslationBundle,
  nameKernel: KernelNamer
): Promise<void> {
  await model.runDialog(async () => {
    const buttons: Dialog.IButton[] = [
      Dialog.cancelButton({ label: trans.__('Close') })
    ];
    if (model.canReconfigure) {
      buttons.push(
        Dialog.warnButton({ label: trans.__('Reconfigure'), actions: ['reconfigure'] })
      );
    }
    if (model.canRestart) {
      buttons.push(
        Dialog.okButton({ label: trans.__('Restart cluster'), actions: ['restart'] })
      );
    }
    const body = new DetailsView(model, trans, nameKernel);
    const result = await showDialog({
      title: trans.__('Databricks cluster %1', clusterTitle(model.cluster)),
      body,
      buttons,
      defaultButton: 0,
      hasClose: true
    });
    body.dispose();
    const actions = result.button.actions;
    if (actions.includes('restart')) {
      await restartCluster(model, trans);
    } else if (actions.includes('reconfigure')) {
      await reconfigureCluster(model, trans, nameKernel);
    }
  });
}
