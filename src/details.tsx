/**
 * The body of the details dialog: cluster, profile, states, the link to the
 * cluster's Spark UI, the running operation and the event history. It
 * renders the model (and follows it while open) and nothing else; the buttons
 * are the dialog's (dialogs.ts).
 */
import { ReactWidget } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import React from 'react';

import { StatusModel } from './model';
import type { KernelNamer } from './restarts';
import { SparkUiRow } from './sparkui';
import { clusterTitle, stateLabel, stepText } from './statusbar';
import { TransportRow } from './transport';

export class DetailsView extends ReactWidget {
  constructor(
    readonly model: StatusModel,
    private readonly _trans: TranslationBundle,
    private readonly _nameKernel: KernelNamer = id => id
  ) {
    super();
    this.addClass('jp-DatabricksDetails');
    this.model.changed.connect(this._onChange, this);
  }

  dispose(): void {
    this.model.changed.disconnect(this._onChange, this);
    super.dispose();
  }

  private _onChange(): void {
    this.update();
  }

  protected render(): JSX.Element {
    const trans = this._trans;
    const model = this.model;
    const cluster = model.cluster;
    const state = model.displayState;
    if (!cluster || !state) {
      return (
        <p>{trans.__('The current kernel does not run on a Databricks cluster.')}</p>
      );
    }
    const op = cluster.operation;
    const events = [...(cluster.events ?? [])].reverse();
    const step = stepText(cluster, trans);
    return (
      <div>
        <table className="jp-DatabricksDetails-table">
          <tbody>
            <tr>
              <th>{trans.__('Cluster')}</th>
              <td>
                {clusterTitle(cluster)}{' '}
                <code className="jp-DatabricksDetails-id">{cluster.cluster_id}</code>
              </td>
            </tr>
            <tr>
              <th>{trans.__('Profile')}</th>
              <td>{cluster.profile}</td>
            </tr>
            <tr>
              <th>{trans.__('State')}</th>
              <td>
                <span className={`jp-DatabricksDetails-state jp-mod-${state}`}>
                  {stateLabel(state, trans)}
                </span>
                {cluster.cluster_state && (
                  <span className="jp-DatabricksDetails-muted">
                    {' '}
                    {trans.__('(Databricks: %1)', cluster.cluster_state)}
                  </span>
                )}
              </td>
            </tr>
            <tr>
              <th>{trans.__('Kernel')}</th>
              <td>{model.kernel?.kernel_state ?? trans.__('unknown')}</td>
            </tr>
            <TransportRow cluster={cluster} trans={trans} />
            {cluster.ssh && cluster.transport !== 'command-api' && (
              <tr>
                <th>{trans.__('SSH')}</th>
                <td>
                  {cluster.ssh.reachable === true
                    ? trans.__('reachable')
                    : cluster.ssh.reachable === false
                      ? trans.__('not reachable')
                      : trans.__('not checked')}
                  {cluster.ssh.error ? ` — ${cluster.ssh.error}` : ''}
                </td>
              </tr>
            )}
            <SparkUiRow url={cluster.spark_ui_url} trans={trans} />
            <tr>
              <th>{trans.__('Message')}</th>
              <td className="jp-DatabricksDetails-message">{cluster.message}</td>
            </tr>
            {op && (
              <tr>
                <th>{trans.__('Operation')}</th>
                <td className="jp-DatabricksDetails-operation">
                  {op.kind === 'start' ? trans.__('start') : trans.__('reconfigure')}
                  {': '}
                  {op.step}
                  {step ? ` (${step})` : ''}
                  {op.detail ? ` — ${op.detail}` : ''}
                </td>
              </tr>
            )}
            {op && op.kernels && op.kernels.length > 0 && (
              <tr>
                <th>{trans.__('Restarting')}</th>
                <td className="jp-DatabricksDetails-restarting">
                  {op.kernels.map(this._nameKernel).join('; ')}
                </td>
              </tr>
            )}
            {model.failure && (
              <tr>
                <th>{trans.__('Server')}</th>
                <td className="jp-DatabricksDetails-error">{model.failure}</td>
              </tr>
            )}
          </tbody>
        </table>
        <h3 className="jp-DatabricksDetails-heading">{trans.__('Events')}</h3>
        {events.length === 0 ? (
          <p className="jp-DatabricksDetails-muted">{trans.__('No events yet.')}</p>
        ) : (
          <ul className="jp-DatabricksDetails-events">
            {events.map((event, i) => (
              <li key={`${event.at}-${i}`}>
                <span className="jp-DatabricksDetails-time">
                  {new Date(event.at).toLocaleString()}
                </span>{' '}
                <span className="jp-DatabricksDetails-eventState">{event.state}</span>{' '}
                {event.message}
              </li>
            ))}
          </ul>
        )}
      </div>
    );
  }
}
