/**
 * The details dialog's transport row, rendered to markup in plain Node.
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import React from 'react';

// react-dom ships no types here (no @types/react-dom): declare the one call used.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { renderToStaticMarkup } = require('react-dom/server') as {
  renderToStaticMarkup: (element: React.ReactElement) => string;
};

import type { IClusterStatus } from '../api';
import { TransportRow } from '../transport';

const trans = {
  __: (text: string) => text
} as unknown as TranslationBundle;

function render(
  cluster: Pick<IClusterStatus, 'transport' | 'transport_reason'>
): string {
  return renderToStaticMarkup(
    <table>
      <tbody>
        <TransportRow cluster={cluster} trans={trans} />
      </tbody>
    </table>
  );
}

describe('transport row of the details dialog', () => {
  it('names each transport with its reason', () => {
    const tunnel = render({
      transport: 'ssh-tunnel',
      transport_reason: '~/.ssh/config has the tunnel entry Host box.'
    });
    expect(tunnel).toContain('<th>Transport</th>');
    expect(tunnel).toContain('Databricks SSH tunnel');
    expect(tunnel).toContain('Host box.');
    expect(render({ transport: 'command-api', transport_reason: null })).toContain(
      'Command Execution API (no SSH)'
    );
    expect(render({ transport: 'ssh' })).toContain('SSH to the driver');
  });

  it('shows nothing before the first read', () => {
    expect(render({ transport: null })).toBe('<table><tbody></tbody></table>');
  });
});
