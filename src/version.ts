/**
 * The version handshake between this frontend and the server extension.
 *
 * The Python package and the npm package carry the same version; the server
 * publishes its own as `info.version` of `GET {base}/openapi.json`, which is
 * "1." (the REST API's major version) followed by the package version. A
 * page loaded before an upgrade, or a labextension left behind by another
 * install, talks to a server it was not built for: say so once per page.
 */
import type { IDatabricksApi } from './api';

/**
 * The version of this frontend: package.json's "version" (a jest test keeps
 * the two equal; the build does not bundle package.json).
 */
export const FRONTEND_VERSION = '3.0.0';

/** Major version of the REST API that this frontend speaks. */
export const API_MAJOR = '1';

/** The server's `info.version` this frontend expects. */
export function expectedApiVersion(frontendVersion = FRONTEND_VERSION): string {
  return `${API_MAJOR}.${frontendVersion}`;
}

/** Shows the warning (Notification.warning in the application). */
export type Warn = (message: string) => void;

let warned = false;

/**
 * Compare the server's version with this frontend's and warn once per page
 * on a mismatch. Resolves with true when they match, false when they differ,
 * and null when the server's version could not be read (no server extension:
 * the status item stays hidden then, no warning).
 */
export async function checkServerVersion(
  api: Pick<IDatabricksApi, 'getApiVersion'>,
  warn: Warn,
  translate: (text: string, ...args: string[]) => string = (text, ...args) =>
    args.reduce((out, arg, i) => out.replace(`%${i + 1}`, arg), text),
  frontendVersion = FRONTEND_VERSION
): Promise<boolean | null> {
  let server: string;
  try {
    server = await api.getApiVersion();
  } catch (error) {
    console.warn('databrickslabs-jupyterlab: cannot read the server version', error);
    return null;
  }
  const expected = expectedApiVersion(frontendVersion);
  if (server === expected) {
    return true;
  }
  if (!warned) {
    warned = true;
    const serverVersion = server.startsWith(`${API_MAJOR}.`)
      ? server.slice(API_MAJOR.length + 1)
      : server;
    warn(
      translate(
        'The databrickslabs-jupyterlab server extension (%1) and this page (%2) have different versions. Reload the page; if this stays, reinstall the package.',
        serverVersion,
        frontendVersion
      )
    );
  }
  return false;
}

/** For tests: forget that the warning was shown. */
export function resetVersionWarning(): void {
  warned = false;
}
