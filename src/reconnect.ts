/**
 * When to reconnect the browser to a kernel that the server restarted.
 *
 * After a cluster restart (or a dropped SSH link) the server starts the
 * kernel again under the same id, while the browser's connection has given
 * up or backs off for minutes. The policy asks for a reconnect once the
 * server reports the kernel running on a connected cluster with no operation
 * at work, leaves the browser's own attempt its time first, and retries every
 * few seconds while the browser stays disconnected.
 */
import { IDisposable } from '@lumino/disposable';

import { IClusterStatus, KernelState, operationRunning } from './api';

/** Local connection states of the kernel (from the session context). */
export type LocalKernelStatus =
  | 'unknown'
  | 'starting'
  | 'idle'
  | 'busy'
  | 'terminating'
  | 'restarting'
  | 'autorestarting'
  | 'dead'
  | 'connected'
  | 'connecting'
  | 'disconnected';

/** Pause between two attempts to reconnect the browser to a kernel (ms). */
export const RECONNECT_PAUSE = 3000;

/**
 * How long a websocket handshake still in progress is left alone (ms):
 * jupyter_server answers it once the kernel replies to `kernel_info`, waiting
 * up to its `kernel_info_timeout` (60 s by default), and a kernel busy with a
 * cell (or attaching Spark) replies only after it.
 */
export const HANDSHAKE_GRACE = 65 * 1000;

/** What the policy looks at: the browser's side and the server's side. */
export interface IReconnectSituation {
  localStatus: LocalKernelStatus;
  cluster: IClusterStatus | null;
  kernelState: KernelState | undefined;
}

/**
 * Whether the browser's connection should be brought back: the browser lost
 * it (or is still trying) while the server says the kernel runs on a
 * connected cluster and no operation is at work.
 */
export function wantsReconnect(situation: IReconnectSituation): boolean {
  const { localStatus, cluster, kernelState } = situation;
  return (
    ['disconnected', 'connecting', 'dead'].includes(localStatus) &&
    !!cluster &&
    cluster.state === 'connected' &&
    !operationRunning(cluster) &&
    (kernelState === 'running' || kernelState === 'running-spark')
  );
}

export namespace ReconnectPolicy {
  export interface IOptions {
    /** The current situation, read at every check (also on retries). */
    situation: () => IReconnectSituation;
    /** Reconnects the browser to the current kernel. */
    reconnect: () => void;
    /**
     * Whether the browser's connection has a websocket handshake in progress
     * (undefined when that cannot be told).
     */
    handshaking?: () => boolean | undefined;
  }
}

/**
 * The timing rules of the reconnect:
 * - a connection that went `connecting` gets `RECONNECT_PAUSE` for the
 *   browser's own attempt: closing a websocket in its handshake (as after
 *   every kernel start) makes jupyter_server fail that request;
 * - a handshake still in progress is left alone up to `HANDSHAKE_GRACE`;
 * - after a reconnect, the next one comes `RECONNECT_PAUSE` later at the
 *   earliest, and only while the situation still asks for it.
 */
export class ReconnectPolicy implements IDisposable {
  constructor(options: ReconnectPolicy.IOptions) {
    this._situation = options.situation;
    this._reconnect = options.reconnect;
    this._handshaking = options.handshaking ?? null;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Record a change of the browser's connection state (before `check`). */
  noteLocalStatus(status: LocalKernelStatus): void {
    if (status === 'connecting') {
      this._connectingSince = Date.now();
    }
  }

  /** Forget the previous kernel's timings (the current kernel changed). */
  reset(): void {
    clearTimeout(this._timer);
    this._lastReconnect = 0;
    this._connectingSince = 0;
  }

  /** Reconnect now, later, or not at all, as the situation asks. */
  check(): void {
    clearTimeout(this._timer);
    if (this._isDisposed) {
      return;
    }
    const situation = this._situation();
    if (!wantsReconnect(situation)) {
      return;
    }
    const connecting = situation.localStatus === 'connecting';
    const since = connecting
      ? Math.max(this._lastReconnect, this._connectingSince)
      : this._lastReconnect;
    let wait = since + RECONNECT_PAUSE - Date.now();
    if (connecting && wait <= 0 && this._handshaking?.() === true) {
      // The server is still waiting for the kernel: check again later.
      const cap = since + HANDSHAKE_GRACE - Date.now();
      wait = cap > 0 ? Math.min(RECONNECT_PAUSE, cap) : 0;
    }
    if (wait > 0) {
      this._timer = setTimeout(() => this.check(), wait);
      return;
    }
    this._lastReconnect = Date.now();
    try {
      this._reconnect();
    } catch (error) {
      console.error('databrickslabs-jupyterlab: kernel reconnect failed', error);
    }
    this._timer = setTimeout(() => this.check(), RECONNECT_PAUSE);
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    clearTimeout(this._timer);
  }

  private _situation: () => IReconnectSituation;
  private _reconnect: () => void;
  private _handshaking: (() => boolean | undefined) | null;
  private _lastReconnect = 0;
  /** When the local status last became 'connecting' (ms). */
  private _connectingSince = 0;
  private _timer: ReturnType<typeof setTimeout> | undefined = undefined;
  private _isDisposed = false;
}
