/**
 * The details dialog's link to the cluster's Spark UI in the workspace,
 * rendered to markup in plain Node.
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import React from 'react';

// react-dom ships no types here (no @types/react-dom): declare the one call used.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { renderToStaticMarkup } = require('react-dom/server') as {
  renderToStaticMarkup: (element: React.ReactElement) => string;
};

import { safeLink, SparkUiRow } from '../sparkui';

const trans = {
  __: (text: string, ...args: unknown[]) =>
    args.reduce<string>((out, arg, i) => out.replace(`%${i + 1}`, String(arg)), text)
} as unknown as TranslationBundle;

function render(url: string | null | undefined): string {
  return renderToStaticMarkup(
    <table>
      <tbody>
        <SparkUiRow url={url} trans={trans} />
      </tbody>
    </table>
  );
}

describe('Spark UI link of the details dialog', () => {
  const url =
    'https://adb-1234.5.azuredatabricks.net/?o=1234#setting/clusters/0101-000000-abc/sparkUi';

  it('links the status address in a new tab, without an opener', () => {
    const markup = render(url);
    expect(markup).toContain('<th>Spark UI</th>');
    expect(markup).toContain(`href="${url}"`);
    expect(markup).toContain('target="_blank"');
    expect(markup).toContain('rel="noopener noreferrer"');
    expect(markup).toContain('Open the Spark UI in the workspace');
  });

  it('shows no row before the server knows the workspace', () => {
    expect(render(null)).toBe('<table><tbody></tbody></table>');
    expect(render(undefined)).toBe('<table><tbody></tbody></table>');
  });

  it('never turns another scheme into a link', () => {
    expect(safeLink('javascript:alert(1)')).toBeNull();
    expect(safeLink('not a url')).toBeNull();
    expect(render('javascript:alert(1)')).not.toContain('href');
    expect(safeLink('http://127.0.0.1:8080/#setting/clusters/c/sparkUi')).not.toBeNull();
  });
});
