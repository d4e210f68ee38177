/**
 * How a cluster is reached, as the details dialog shows it: the transport the server chose
 * (classic SSH, the Databricks SSH tunnel, the Command Execution API) and why.
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import React from 'react';

import type { IClusterStatus, Transport } from './api';

export function transportLabel(transport: Transport, trans: TranslationBundle): string {
  switch (transport) {
    case 'ssh':
      return trans.__('SSH to the driver');
    case 'ssh-tunnel':
      return trans.__('Databricks SSH tunnel');
    case 'command-api':
      return trans.__('Command Execution API (no SSH)');
  }
}

/** A table row with the transport and its reason; nothing before the first read. */
export function TransportRow(props: {
  cluster: Pick<IClusterStatus, 'transport' | 'transport_reason'>;
  trans: TranslationBundle;
}): JSX.Element | null {
  const { cluster, trans } = props;
  if (!cluster.transport) {
    return null;
  }
  return (
    <tr>
      <th>{trans.__('Transport')}</th>
      <td className="jp-DatabricksDetails-transport">
        {transportLabel(cluster.transport, trans)}
        {cluster.transport_reason && (
          <span className="jp-DatabricksDetails-muted">
            {' — '}
            {cluster.transport_reason}
          </span>
        )}
      </td>
    </tr>
  );
}
