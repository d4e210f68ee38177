/**
 * Every use of JupyterLab internals in one place, each behind a feature
 * check: a JupyterLab release that changes them makes these functions answer
 * "unknown" or "unsupported" (and the caller tell the person), never throw.
 * jlprivate.spec.ts covers both the present and the absent case.
 *
 * Checked against @jupyterlab/services 7.x (JupyterLab 4.0 to 4.6).
 */
import type { Kernel, Session } from '@jupyterlab/services';

/** `WebSocket.CONNECTING` (not a global in every environment). */
const WS_CONNECTING = 0;

/**
 * Whether the kernel connection has a websocket still in its handshake.
 *
 * `KernelConnection` keeps its socket in the private field `_ws`; where that
 * field is missing the answer is undefined (unknown).
 */
export function websocketHandshaking(
  kernel: Kernel.IKernelConnection | null | undefined
): boolean | undefined {
  if (!kernel || !('_ws' in kernel)) {
    return undefined;
  }
  const ws = (kernel as unknown as { _ws: unknown })._ws as {
    readyState?: unknown;
  } | null;
  if (ws === null || ws === undefined) {
    return false;
  }
  return typeof ws.readyState === 'number'
    ? ws.readyState === WS_CONNECTING
    : undefined;
}

/** What `reattachKernel` did. */
export type ReattachResult =
  /** The connection was alive: its public `reconnect()` was called. */
  | 'reconnecting'
  /** The session got a new connection to the same kernel (private API). */
  | 'reattached'
  /** The connection is dead and this JupyterLab lacks the private API. */
  | 'unsupported'
  /** No session or no kernel: nothing to do. */
  | 'nothing';

type UpdateFn = (model: Session.IModel) => void;

/** `SessionConnection.update`, if this JupyterLab has it. */
function updateOf(session: Session.ISessionConnection): UpdateFn | null {
  const update = (session as unknown as { update?: unknown }).update;
  return typeof update === 'function' ? (update as UpdateFn) : null;
}

/** Whether `reattachKernel` can replace a dead connection of this session. */
export function canReattach(
  session: Session.ISessionConnection | null | undefined
): boolean {
  return !!session && updateOf(session) !== null;
}

/**
 * Connect the browser again to the kernel of a session after the server
 * restarted it under the same id.
 *
 * A live connection reconnects through the public API. A connection the
 * browser gave up as dead (disposed, or status `dead`) cannot; no public API
 * replaces it: `changeKernel({ id })` with the same id gets the same session
 * model back, and a model naming the current kernel keeps the dead
 * connection. `update` (public on the `SessionConnection` class, not on the
 * `ISessionConnection` interface) is how the session manager applies server
 * models; a kernel model with another id (here: none, then the same) sets up
 * a new connection.
 */
export function reattachKernel(
  session: Session.ISessionConnection | null | undefined
): ReattachResult {
  const kernel = session?.kernel;
  if (!session || !kernel) {
    return 'nothing';
  }
  if (!kernel.isDisposed && kernel.status !== 'dead') {
    void kernel.reconnect().catch(reason => {
      console.warn('databrickslabs-jupyterlab: kernel reconnect failed', reason);
    });
    return 'reconnecting';
  }
  const update = updateOf(session);
  if (!update) {
    return 'unsupported';
  }
  const model = session.model;
  update.call(session, { ...model, kernel: null as unknown as Kernel.IModel });
  update.call(session, { ...model, kernel: { id: kernel.id, name: kernel.name } });
  return 'reattached';
}
