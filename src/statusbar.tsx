/**
 * The status-bar item: it renders the model and nothing else. The labels of
 * the states are shared with the details view (details.tsx).
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
  'kernel-disconnected': closeIcon,
  'restarting-kernels': refreshIcon
};

/** States with work in progress: their icon spins. */
const BUSY_STATES: ReadonlySet<DisplayState> = new Set<DisplayState>([
  'starting',
  'configuring',
  'installing',
  'restarting-kernels',
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
    case 'restarting-kernels':
      return trans.__('restarting kernels');
  }
  return state;
}

/** "i/n" (the step of a running operation), or an empty string. */
export function stepText(
  cluster: IClusterStatus | null,
  trans: TranslationBundle
): string {
  const op = cluster?.operation;
  if (!cluster || !op || !op.step_count || !operationRunning(cluster)) {
    return '';
  }
  return trans.__('%1/%2', op.step_index, op.step_count);
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
    const detail = operationRunning(cluster) ? cluster.operation?.detail ?? '' : '';
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
        {detail && (
          <span className="jp-DatabricksStatus-detail">{detail}</span>
        )}
      </div>
    );
  }
}
