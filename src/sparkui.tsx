/**
 * The link to the cluster's Spark UI in the Databricks workspace, as the
 * details dialog shows it. The server computes the address
 * (`spark_ui_url` of the cluster status); this only renders it. Kept free of
 * JupyterLab imports so that the unit tests render it in plain Node.
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import React from 'react';

/** Only http(s) addresses become links (the status comes from our server, but never a script). */
export function safeLink(url: string | null | undefined): string | null {
  if (!url) {
    return null;
  }
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? url : null;
  } catch {
    return null;
  }
}

/** The dialog row: nothing when the server does not know the workspace yet. */
export function SparkUiRow(props: {
  url: string | null | undefined;
  trans: TranslationBundle;
}): JSX.Element | null {
  const url = safeLink(props.url);
  if (!url) {
    return null;
  }
  const trans = props.trans;
  return (
    <tr>
      <th>{trans.__('Spark UI')}</th>
      <td>
        <a
          className="jp-DatabricksDetails-sparkUi"
          href={url}
          target="_blank"
          rel="noopener noreferrer"
          title={url}
        >
          {trans.__('Open the Spark UI in the workspace')}
        </a>
      </td>
    </tr>
  );
}
