/**
 * The status-bar item and the live details view: they render the model and
 * nothing else.
 */
import { ReactWidget } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import {
  checkIcon,
  circleEmptyIcon,
  closeIcon,
  downloadIcon,
  errorIcon,
  LabIcon,
  offlineBoltIcon,
  refreshIcon,
  runningIcon,
  settingsIcon,
  stopIcon
} from '@jupyterlab/ui-components';
import React from 'react';

import type { IClusterStatus } from './api';
import { DisplayState, operationRunning, StatusModel } from './model';

/** Icon per displayed state. */
const ICONS: { [state in DisplayState]: LabIcon } = {
  unknown: circleEmptyIcon,
  connected: checkIcon,
  'running-spark': runningIcon,
  starting: refreshIcon,
  configuring: settingsIcon,
  installing: downloadIcon,
  terminating: stopIcon,
  terminated: stopIcon,
  unreachable: offlineBoltIcon,
  error: errorIcon,
  'kernel-disconnected': closeIcon
};

/** States with work in progress: their icon spins. */
const BUSY_STATES: ReadonlySet<DisplayState> = new Set<DisplayState>([
  'starting',
  'configuring',
  'installing',
  'terminating'
]);

/** The translated label of a displayed state. */
export function stateLabel(
  state: DisplayState,
  trans: TranslationBundle
): string {
  switch (state) {
    case 'unknown':
      return trans.__('checking');
    case 'connected':
      return trans.__('connected');
    case 'running-spark':
      return trans.__('running with Spark');
    case 'starting':
      return trans.__('starting');
    case 'configuring':
      return trans.__('configuring');
    case 'installing':
      return trans.__('installing');
    case 'terminating':
      return trans.__('terminating');
    case 'terminated':
      return trans.__('terminated');
    case 'unreachable':
      return trans.__('unreachable');
    case 'error':
      return trans.__('error');
    case 'kernel-disconnected':
      return trans.__('kernel disconnected');
  }
}

/** "step i/n" of a running operation, or an empty string. */
export function stepText(
  cluster: IClusterStatus | null,
  trans: TranslationBundle
): string {
  const op = cluster?.operation;
  if (!cluster || !op || !op.step_count || !operationRunning(cluster)) {
    return '';
  }
  return trans.__('step %1/%2', op.step_index, op.step_count);
}

export function clusterTitle(cluster: IClusterStatus | null): string {
  if (!cluster) {
    return '';
  }
  return cluster.cluster_name || cluster.cluster_id;
}

/**
 * The status-bar item: icon, cluster name, state (with step and detail
 * while an operation runs). Clicking it opens the details dialog.
 */
export class StatusItem extends ReactWidget {
  constructor(
    readonly model: StatusModel,
    private readonly _trans: TranslationBundle,
    private readonly _onClick: () => void
  ) {
    super();
    this.addClass('jp-DatabricksStatus');
    this.model.changed.connect(this._onChange, this);
  }

  dispose(): void {
    this.model.changed.disconnect(this._onChange, this);
    super.dispose();
  }

  private _onChange(): void {
    this.update();
  }

  protected render(): JSX.Element | null {
    const model = this.model;
    const state = model.displayState;
    const cluster = model.cluster;
    // Keep the state on the node itself so that tests and themes can see it.
    this.node.dataset.state = state ?? 'hidden';
    if (!state || !cluster) {
      return null;
    }
    const trans = this._trans;
    const Icon = ICONS[state];
    const step = stepText(cluster, trans);
    const detail = cluster.operation?.detail ?? '';
    const label = stateLabel(state, trans);
    const tooltip = [
      trans.__('Databricks cluster %1 (profile %2)', clusterTitle(cluster), cluster.profile),
      cluster.message,
      detail,
      model.failure ? trans.__('Status not updated: %1', model.failure) : '',
      trans.__('Click for details')
    ]
      .filter(line => !!line)
      .join('\n');
    return (
      <div
        className={`jp-DatabricksStatus-item jp-mod-${state}${
          model.failure ? ' jp-mod-stale' : ''
        }`}
        title={tooltip}
        role="button"
        tabIndex={0}
        onClick={this._onClick}
        onKeyDown={event => {
          if (event.key === 'Enter' || event.key === ' ') {
            this._onClick();
          }
        }}
      >
        <Icon.react
          tag="span"
          className={`jp-DatabricksStatus-icon${
            BUSY_STATES.has(state) ? ' jp-mod-spin' : ''
          }`}
          stylesheet="statusBar"
        />
        <span className="jp-DatabricksStatus-name">{clusterTitle(cluster)}</span>
        <span className="jp-DatabricksStatus-state">{label}</span>
        {step && <span className="jp-DatabricksStatus-step">{step}</span>}
        {detail && state === 'installing' && (
          <span className="jp-DatabricksStatus-detail">{detail}</span>
        )}
      </div>
    );
  }
}

/**
 * The body of the details dialog; it follows the model while open.
 */
export class DetailsView extends ReactWidget {
  constructor(
    readonly model: StatusModel,
    private readonly _trans: TranslationBundle
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
            {cluster.ssh && (
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
            <tr>
              <th>{trans.__('Message')}</th>
              <td className="jp-DatabricksDetails-message">{cluster.message}</td>
            </tr>
            {op && (
              <tr>
                <th>{trans.__('Operation')}</th>
                <td>
                  {op.kind === 'start' ? trans.__('start') : trans.__('reconfigure')}
                  {': '}
                  {op.step} ({stepText(cluster, trans)})
                  {op.detail ? ` — ${op.detail}` : ''}
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
