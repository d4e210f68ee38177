/**
 * The Databricks panel of the left sidebar: it renders the panel model and
 * nothing else. Terminate asks first; "New notebook on this cluster" is
 * handed to the caller, which opens the notebook.
 */
import { Dialog, ReactWidget, showDialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { LabIcon, refreshIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import React from 'react';

import { ClusterItem, IClusterActions } from './panelitem';
import { IClusterRow, PanelModel } from './panelmodel';

const DATABRICKS_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">' +
  '<path class="jp-icon3" fill="#616161" d="M12 2 2 7.5l10 5.5 10-5.5L12 2zm0 13.2L4.2 10.9 2 12.1 ' +
  '12 17.6l10-5.5-2.2-1.2L12 15.2zm0 4.6-7.8-4.3L2 16.7 12 22.2l10-5.5-2.2-1.2-7.8 4.3z"/></svg>';

export const databricksIcon = new LabIcon({
  name: 'databrickslabs-jupyterlab:databricks',
  svgstr: DATABRICKS_SVG
});

/** Ask before a terminate: the notebooks running on the cluster lose their state. */
export async function confirmTerminate(
  row: IClusterRow,
  trans: TranslationBundle
): Promise<boolean> {
  const name = row.cluster_name || row.cluster_id;
  const result = await showDialog({
    title: trans.__('Terminate cluster %1?', name),
    body: trans.__(
      'Notebooks running on cluster %1 lose their state: their variables and Spark session are gone. The cluster stays in the workspace and can be started again.',
      name
    ),
    buttons: [
      Dialog.cancelButton({ label: trans.__('Cancel') }),
      Dialog.warnButton({ label: trans.__('Terminate') })
    ],
    defaultButton: 0
  });
  return result.button.accept;
}

export namespace DatabricksPanel {
  export interface IOptions extends IClusterActions {
    model: PanelModel;
  }
}

export class DatabricksPanel extends ReactWidget {
  constructor(readonly options: DatabricksPanel.IOptions) {
    super();
    this.id = 'databrickslabs-jupyterlab-panel';
    this.addClass('jp-DatabricksPanel');
    this.title.icon = databricksIcon;
    this.title.caption = options.trans.__('Databricks clusters');
    options.model.changed.connect(this.update, this);
  }

  dispose(): void {
    this.options.model.changed.disconnect(this.update, this);
    super.dispose();
  }

  /** The list is read each time the panel opens. */
  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.options.model.refresh();
  }

  protected render(): JSX.Element {
    const { model, trans } = this.options;
    return (
      <div className="jp-DatabricksPanel-body">
        <div className="jp-DatabricksPanel-toolbar">
          <span className="jp-DatabricksPanel-title">{trans.__('Databricks')}</span>
          <button
            className="jp-ToolbarButtonComponent jp-DatabricksPanel-refresh"
            title={trans.__('Read the clusters again')}
            disabled={model.loading}
            onClick={() => void model.refresh()}
          >
            <refreshIcon.react tag="span" />
          </button>
        </div>
        {model.error && <div className="jp-DatabricksPanel-error">{model.error}</div>}
        {!model.loading && !model.error && model.groups.length === 0 && (
          <div className="jp-DatabricksPanel-empty">
            {trans.__('No profile in the Databricks config file.')}
          </div>
        )}
        {model.groups.map(group => (
          <section
            key={group.profile.name}
            className="jp-DatabricksPanel-profile"
            data-profile={group.profile.name}
          >
            <h3 title={group.profile.host ?? ''}>{group.profile.name}</h3>
            {group.error && <div className="jp-DatabricksPanel-error">{group.error}</div>}
            {!group.error && group.clusters.length === 0 && (
              <div className="jp-DatabricksPanel-empty">{trans.__('No clusters.')}</div>
            )}
            <ul>
              {group.clusters.map(row => (
                <ClusterItem
                  key={row.cluster_id}
                  row={row}
                  busy={model.isBusy(row.profile, row.cluster_id)}
                  options={this.options}
                />
              ))}
            </ul>
          </section>
        ))}
      </div>
    );
  }
}

/** What `addPanel` needs of JupyterLab (a subset of `JupyterFrontEnd`). */
export interface IPanelHost {
  shell: { add: (widget: ReactWidget, area: 'left', options?: { rank?: number }) => void };
  commands: { execute: (id: string, args?: any) => Promise<unknown> };
  serviceManager: { kernelspecs: { refreshSpecs: () => Promise<void> } };
}

/**
 * Put the panel into the left sidebar. `notify` reports failures; the list
 * is read each time the panel is shown.
 */
export function addPanel(
  app: IPanelHost,
  model: PanelModel,
  trans: TranslationBundle,
  notify: (message: string) => void
): DatabricksPanel {
  const report = (what: string) => (error: unknown) =>
    notify(trans.__('%1: %2', what, (error as Error)?.message ?? String(error)));
  const panel = new DatabricksPanel({
    model,
    trans,
    start: row =>
      void model
        .start(row.profile, row.cluster_id)
        .catch(report(trans.__('Could not start the cluster'))),
    terminate: row =>
      void confirmTerminate(row, trans).then(yes =>
        yes
          ? model
              .terminate(row.profile, row.cluster_id)
              .catch(report(trans.__('Could not terminate the cluster')))
          : undefined
      ),
    newNotebook: row =>
      void (async () => {
        const spec = await model.createKernelspec(row.profile, row.cluster_id);
        // The launcher and the kernel picker learn of the new spec.
        await app.serviceManager.kernelspecs.refreshSpecs();
        await app.commands.execute('notebook:create-new', { kernelName: spec.kernel_name });
      })().catch(report(trans.__('Could not open a notebook on the cluster')))
  });
  app.shell.add(panel, 'left', { rank: 900 });
  return panel;
}
