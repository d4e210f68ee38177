import * as fs from 'fs';
import * as path from 'path';

import {
  checkServerVersion,
  expectedApiVersion,
  FRONTEND_VERSION,
  resetVersionWarning
} from '../version';
import { FakeApi } from './fakeapi';

describe('version handshake', () => {
  let api: FakeApi;
  let warnings: string[];
  const warn = (message: string) => warnings.push(message);

  beforeEach(() => {
    resetVersionWarning();
    api = new FakeApi();
    warnings = [];
  });

  it("knows package.json's version", () => {
    const pkg = JSON.parse(
      fs.readFileSync(path.resolve(__dirname, '..', '..', 'package.json'), 'utf-8')
    );
    expect(FRONTEND_VERSION).toBe(pkg.version);
    expect(expectedApiVersion()).toBe(`1.${pkg.version}`);
  });

  it('says nothing when the server has the same version', async () => {
    api.apiVersion = expectedApiVersion();
    expect(await checkServerVersion(api, warn)).toBe(true);
    expect(warnings).toEqual([]);
  });

  it('warns once per page when the versions differ', async () => {
    api.apiVersion = '1.2.9.0';
    expect(await checkServerVersion(api, warn)).toBe(false);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('(2.9.0)');
    expect(warnings[0]).toContain(`(${FRONTEND_VERSION})`);
    expect(warnings[0]).toMatch(/Reload the page/);
    // A second check (another call, same page): no second warning.
    expect(await checkServerVersion(api, warn)).toBe(false);
    expect(warnings).toHaveLength(1);
  });

  it('compares against the given frontend version', async () => {
    api.apiVersion = '1.3.1.0';
    expect(await checkServerVersion(api, warn, undefined, '3.1.0')).toBe(true);
    expect(await checkServerVersion(api, warn, undefined, '3.0.0')).toBe(false);
    expect(warnings).toHaveLength(1);
  });

  it('stays silent when the version cannot be read (no server extension)', async () => {
    const log = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    api.apiVersion = new Error('404 Not Found');
    expect(await checkServerVersion(api, warn)).toBeNull();
    expect(warnings).toEqual([]);
    log.mockRestore();
  });
});
