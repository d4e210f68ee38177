/**
 * One cluster of the Databricks panel, rendered from its row (plain React, so
 * that it renders in Node for the unit tests).
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import React from 'react';

import {
  accessModeLabel,
  autoTermination,
  canStart,
  canTerminate,
  IClusterRow,
  rowState,
  RowState,
  runtimeLabel
} from './panelmodel';
import { transportLabel } from './transport';

export function stateLabel(state: RowState, trans: TranslationBundle): string {
  const labels: { [state in RowState]: string } = {
    unknown: trans.__('unknown'),
    running: trans.__('running'),
    connected: trans.__('connected'),
    starting: trans.__('starting'),
    configuring: trans.__('configuring'),
    installing: trans.__('installing'),
    'restarting-kernels': trans.__('restarting kernels'),
    terminating: trans.__('terminating'),
    terminated: trans.__('terminated'),
    unreachable: trans.__('unreachable'),
    error: trans.__('error')
  };
  return labels[state];
}

/** What a cluster's buttons do. */
export interface IClusterActions {
  trans: TranslationBundle;
  start: (row: IClusterRow) => void;
  terminate: (row: IClusterRow) => void;
  newNotebook: (row: IClusterRow) => void;
}

/** One cluster: name, state, runtime, access mode, transport, auto-termination, buttons. */
export function ClusterItem(props: {
  row: IClusterRow;
  busy: boolean;
  options: IClusterActions;
}): JSX.Element {
  const { row, busy, options } = props;
  const { trans } = options;
  const state = rowState(row);
  const minutes = autoTermination(row.autotermination_minutes);
  const facts = [
    runtimeLabel(row.spark_version),
    accessModeLabel(row.data_security_mode),
    row.transport ? transportLabel(row.transport, trans) : '',
    minutes === null
      ? trans.__('no auto-termination')
      : trans.__('terminates after %1 min idle', minutes)
  ].filter(Boolean);
  return (
    <li
      className="jp-DatabricksPanel-cluster"
      data-cluster-id={row.cluster_id}
      data-state={state}
    >
      <div className="jp-DatabricksPanel-head">
        <span className="jp-DatabricksPanel-name" title={row.cluster_id}>
          {row.cluster_name || row.cluster_id}
        </span>
        <span className={`jp-DatabricksPanel-state jp-mod-${state}`}>
          {stateLabel(state, trans)}
        </span>
      </div>
      <div className="jp-DatabricksPanel-facts">{facts.join(' · ')}</div>
      {row.status?.message && (
        <div className="jp-DatabricksPanel-message">{row.status.message}</div>
      )}
      {row.error && <div className="jp-DatabricksPanel-error">{row.error}</div>}
      <div className="jp-DatabricksPanel-actions">
        <button
          className="jp-Button jp-mod-styled jp-mod-accept jp-DatabricksPanel-start"
          disabled={busy || !canStart(row)}
          onClick={() => options.start(row)}
        >
          {trans.__('Start')}
        </button>
        <button
          className="jp-Button jp-mod-styled jp-mod-warn jp-DatabricksPanel-terminate"
          disabled={busy || !canTerminate(row)}
          onClick={() => options.terminate(row)}
        >
          {trans.__('Terminate')}
        </button>
        <button
          className="jp-Button jp-mod-styled jp-mod-reject jp-DatabricksPanel-notebook"
          disabled={busy}
          onClick={() => options.newNotebook(row)}
          title={trans.__('Create the kernelspec of this cluster and open a new notebook with it')}
        >
          {trans.__('New notebook')}
        </button>
      </div>
    </li>
  );
}
