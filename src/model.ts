/**
 * State of the status item: which kernel is current, what the server says
 * about its cluster, and when to offer a restart. No DOM here: the view and
 * the dialogs render this model, the unit tests drive it with a fake API.
 */
import { IDisposable } from '@lumino/disposable';
import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import {
  ClusterState,
  IClusterStatus,
  IDatabricksApi,
  IKernelStatus,
  IOperationAnswer,
  KernelState,
  OperationStep,
  operationRunning,
  RestartKernels
} from './api';
import { LocalKernelStatus, ReconnectPolicy } from './reconnect';
import {
  DEFAULT_SETTINGS,
  IStatusSettings,
  MIN_REFRESH_INTERVAL,
  normalizeSettings
} from './settings';

export { DEFAULT_SETTINGS, MIN_REFRESH_INTERVAL, operationRunning };
export type { IStatusSettings, LocalKernelStatus };

/**
 * What the item shows: a cluster state, refined by the kernel's state, or
 * the step of a running operation (never plain `connected` meanwhile).
 */
export type DisplayState =
  | ClusterState
  | 'running-spark'
  | 'kernel-disconnected'
  | 'restarting-kernels';

/** The state shown for each step of a running operation. */
const STEP_STATES: { [step in OperationStep]: DisplayState | null } = {
  starting: 'starting',
  configuring: 'configuring',
  installing: 'installing',
  'restarting-kernels': 'restarting-kernels',
  done: null
};

/** Kernel states in which a kernel still holds its variables. */
const LIVE_KERNEL_STATES: ReadonlySet<KernelState> = new Set<KernelState>([
  'starting',
  'running',
  'running-spark'
]);

/** States in which the cluster needs a start: they trigger the restart dialog. */
const PROMPT_STATES: ReadonlySet<ClusterState> = new Set<ClusterState>([
  'terminated',
  'unreachable'
]);

export namespace StatusModel {
  export interface IOptions {
    api: IDatabricksApi;
    settings?: Partial<IStatusSettings>;
    /** Seconds the server may hold a long poll (`wait`), default 25. */
    longPollWait?: number;
    /** Largest pause between requests while the server fails (ms), default 30 s. */
    maxBackoff?: number;
    /**
     * Shows the restart dialog. The model calls it at most once per
     * transition and never while another dialog of the model is open.
     */
    prompt?: (model: StatusModel, status: IClusterStatus) => Promise<void>;
    /**
     * Reconnects the browser to the current kernel. Called when the server
     * reports the kernel running on a connected cluster while the browser's
     * connection gave up (e.g. after the cluster restarted the kernel).
     */
    reconnect?: () => void;
    /**
     * Whether the browser's connection to the current kernel has a websocket
     * handshake in progress (undefined when that cannot be told). Such an
     * attempt is not interrupted before `HANDSHAKE_GRACE` (reconnect.ts).
     */
    handshaking?: () => boolean | undefined;
  }
}

/**
 * Whether an error is an answer of the server (as thrown by `requestAPI`).
 */
function httpStatus(error: unknown): number | null {
  const status = (error as { status?: unknown })?.status;
  return typeof status === 'number' ? status : null;
}

function isAbort(error: unknown): boolean {
  return (error as { name?: string })?.name === 'AbortError';
}

function clusterKey(status: { profile: string; cluster_id: string }): string {
  return `${status.profile}/${status.cluster_id}`;
}

export class StatusModel implements IDisposable {
  constructor(options: StatusModel.IOptions) {
    this._api = options.api;
    this._settings = StatusModel.normalize(options.settings ?? {});
    this._wait = options.longPollWait ?? 25;
    this._maxBackoff = options.maxBackoff ?? 30 * 1000;
    this._prompt = options.prompt ?? null;
    const reconnect = options.reconnect;
    this._reconnect = reconnect
      ? new ReconnectPolicy({
          reconnect,
          handshaking: options.handshaking,
          situation: () => ({
            localStatus: this._localStatus,
            cluster: this._cluster,
            kernelState: this._kernel?.kernel_state
          })
        })
      : null;
    this._poll = new Poll<void, unknown>({
      name: 'databrickslabs-jupyterlab:status',
      factory: () => this._tick(),
      frequency: this._frequency(),
      // Nothing to poll without a Databricks kernel; with one, lumino stands
      // by (after lingering a little) while the page is hidden.
      standby: () =>
        this._kernelId === null || this._notOurs ? true : 'when-hidden'
    });
    // The constructor raises `max` to lumino's default (30 s); the setter
    // keeps the configured one.
    this._poll.frequency = this._frequency();
    void this._poll.start();
  }

  /** Clamp user settings into the accepted ranges. */
  static normalize(settings: Partial<IStatusSettings>): IStatusSettings {
    return normalizeSettings(settings);
  }

  /** Emitted whenever anything the view shows may have changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The poll, for tests and diagnostics. */
  get poll(): Poll<void, unknown> {
    return this._poll;
  }

  get settings(): IStatusSettings {
    return this._settings;
  }

  /** Id of the current kernel, or null when the current widget has none. */
  get kernelId(): string | null {
    return this._kernelId;
  }

  /** The server's answer about the current kernel, or null. */
  get kernel(): IKernelStatus | null {
    return this._kernel;
  }

  /** The latest status of the cluster of the current kernel, or null. */
  get cluster(): IClusterStatus | null {
    return this._cluster;
  }

  /** The message of the last failed request, cleared by the next success. */
  get failure(): string | null {
    return this._failure;
  }

  /** Whether a dialog of this model (prompt or details) is open. */
  get dialogOpen(): boolean {
    return this._dialogOpen;
  }

  /** Whether a start or reconfigure request is on its way. */
  get busy(): boolean {
    return this._busy;
  }

  /** Whether the item is shown: only for kernels the server knows as ours. */
  get visible(): boolean {
    return this._kernelId !== null && this._cluster !== null && !this._notOurs;
  }

  /** The state the item shows, or null when hidden. */
  get displayState(): DisplayState | null {
    if (!this.visible || !this._cluster) {
      return null;
    }
    const state = this._cluster.state;
    const op = this._cluster.operation;
    if (op && operationRunning(this._cluster) && state !== 'error') {
      // The operation's step, whatever the cluster's state: during the
      // restart of its kernels the cluster is already connected.
      return STEP_STATES[op.step] ?? state;
    }
    if (state !== 'connected') {
      return state;
    }
    const kernelState: KernelState | undefined = this._kernel?.kernel_state;
    if (
      kernelState === 'disconnected' ||
      kernelState === 'dead' ||
      this._localStatus === 'dead' ||
      this._localStatus === 'disconnected'
    ) {
      return 'kernel-disconnected';
    }
    if (kernelState === 'running-spark') {
      return 'running-spark';
    }
    return 'connected';
  }

  /** Whether "Restart cluster" makes sense now. */
  get canRestart(): boolean {
    const c = this._cluster;
    if (!this.visible || !c || this._busy || operationRunning(c)) {
      return false;
    }
    return ['terminated', 'unreachable', 'error'].includes(c.state);
  }

  /** Whether "Reconfigure" makes sense now (the cluster runs). */
  get canReconfigure(): boolean {
    const c = this._cluster;
    if (!this.visible || !c || this._busy || operationRunning(c)) {
      return false;
    }
    return (
      c.cluster_state === 'RUNNING' ||
      c.cluster_state === 'RESIZING' ||
      c.state === 'connected'
    );
  }

  /**
   * The cluster's kernels that still hold their variables: the ones a
   * reconfigure may restart.
   */
  get liveKernels(): string[] {
    return (this._cluster?.kernels ?? [])
      .filter(k => LIVE_KERNEL_STATES.has(k.kernel_state))
      .map(k => k.kernel_id);
  }

  /**
   * Whether "Restart cluster" names the current kernel for a restart: only
   * when it is lost anyway (terminated cluster, dead or disconnected kernel).
   * Disconnected kernels are restarted by the server in any case.
   */
  get restartNamesKernel(): boolean {
    const c = this._cluster;
    if (!c || this._kernelId === null) {
      return false;
    }
    const kernelState = this._kernel?.kernel_state;
    return (
      c.state === 'terminated' ||
      c.state === 'terminating' ||
      c.cluster_state === 'TERMINATED' ||
      kernelState === 'dead' ||
      kernelState === 'disconnected'
    );
  }

  /** Follow new settings at once. */
  updateSettings(settings: Partial<IStatusSettings>): void {
    const next = StatusModel.normalize({ ...this._settings, ...settings });
    const intervalChanged =
      next.refreshInterval !== this._settings.refreshInterval;
    this._settings = next;
    if (intervalChanged) {
      this._poll.frequency = this._frequency();
    }
    this._changed.emit();
  }

  /**
   * Follow another kernel (tab switch, kernel change) or none (null).
   */
  setKernel(kernelId: string | null): void {
    if (kernelId === this._kernelId) {
      return;
    }
    this._abortRequest();
    this._reconnect?.reset();
    this._kernelId = kernelId;
    this._kernel = null;
    this._cluster = null;
    this._notOurs = false;
    this._kernelDirty = true;
    this._failure = null;
    this._localStatus = 'unknown';
    this._changed.emit();
    if (kernelId !== null) {
      this._refreshNow();
    }
  }

  /**
   * The local kernel's status changed (idle, busy, restarting, dead,
   * connection changes). Restarts and reconnects ask the server again, as
   * does the end of an execution (a cell may have started Spark).
   */
  setLocalStatus(status: LocalKernelStatus): void {
    const previous = this._localStatus;
    if (status === previous) {
      return;
    }
    this._localStatus = status;
    this._reconnect?.noteLocalStatus(status);
    if (this._kernelId === null) {
      return;
    }
    const refresh =
      status === 'restarting' ||
      status === 'autorestarting' ||
      status === 'connected' ||
      status === 'dead' ||
      status === 'disconnected' ||
      (status === 'idle' && previous !== 'unknown');
    if (refresh) {
      // A restarted kernel may become ours again (or stop being ours).
      this._notOurs = false;
      this._kernelDirty = true;
      this._refreshSoon();
    }
    this._reconnect?.check();
    this._changed.emit();
  }

  /** Ask the server now, interrupting a pending long poll. */
  refresh(): void {
    if (this._kernelId === null) {
      return;
    }
    this._notOurs = false;
    this._kernelDirty = true;
    this._refreshNow();
  }

  /**
   * Start the cluster (or re-run the set-up when it runs). The current
   * kernel is named for a restart only when it is lost anyway
   * (`restartNamesKernel`); running kernels are left alone. `started` is
   * false when the server had nothing to do. Throws the server's error.
   */
  async restart(): Promise<IOperationAnswer> {
    const kernelId = this.restartNamesKernel ? this._kernelId : null;
    return this._operate('start', kernelId, 'never');
  }

  /**
   * Reconfigure the running cluster; `restartKernels` says which running
   * kernels may restart (the server's default: none). Throws the server's
   * error.
   */
  async reconfigure(
    restartKernels: RestartKernels = 'never'
  ): Promise<IOperationAnswer> {
    return this._operate('reconfigure', null, restartKernels);
  }

  /**
   * Run a dialog unless another dialog of this model is open: dialogs never
   * stack. Resolves with undefined when it did not run.
   */
  async runDialog<T>(show: () => Promise<T>): Promise<T | undefined> {
    if (this._dialogOpen) {
      return undefined;
    }
    this._dialogOpen = true;
    try {
      return await show();
    } finally {
      this._dialogOpen = false;
    }
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._abortRequest();
    clearTimeout(this._soonTimer);
    this._reconnect?.dispose();
    this._poll.dispose();
    Signal.clearData(this);
  }

  private _frequency(): IPoll.Frequency {
    const interval = this._settings.refreshInterval;
    return {
      interval,
      backoff: true,
      max: Math.max(interval, this._maxBackoff)
    };
  }

  /** One poll tick: look the kernel up if needed, then long-poll its cluster. */
  private async _tick(): Promise<void> {
    const kernelId = this._kernelId;
    if (kernelId === null || this._notOurs) {
      return;
    }
    const controller = new AbortController();
    this._controller = controller;
    const current = () =>
      !this._isDisposed &&
      this._kernelId === kernelId &&
      this._controller === controller;
    try {
      if (this._kernelDirty || !this._cluster) {
        let kernel: IKernelStatus;
        try {
          kernel = await this._api.getKernel(kernelId, controller.signal);
        } catch (error) {
          if (current() && httpStatus(error) === 404) {
            // Not one of ours, or no server extension at all: hide.
            this._notOurs = true;
            this._kernel = null;
            this._cluster = null;
            this._failure = null;
            this._changed.emit();
            return;
          }
          throw error;
        }
        if (!current()) {
          return;
        }
        this._kernelDirty = false;
        this._kernel = kernel;
        this._applyCluster(kernel.cluster);
      }
      const known = this._cluster!;
      const status = await this._api.getCluster(
        known.profile,
        known.cluster_id,
        { wait: this._wait, since: known.version, signal: controller.signal }
      );
      if (!current()) {
        return;
      }
      if (status.version !== known.version) {
        // Something changed: the kernel's view may have too (e.g. restarted).
        this._kernelDirty = true;
      }
      this._applyCluster(status);
    } catch (error) {
      if (isAbort(error) || !current()) {
        return;
      }
      const message = (error as Error)?.message ?? String(error);
      if (this._failure !== message) {
        this._failure = message;
        this._changed.emit();
      }
      if (httpStatus(error) === 404) {
        // The cluster or profile vanished on the server: look up again.
        this._kernelDirty = true;
      }
      // Rejecting makes the poll back off.
      throw error;
    } finally {
      if (this._controller === controller) {
        this._controller = null;
      }
    }
  }

  /** Take a new cluster status and offer a restart when it calls for one. */
  private _applyCluster(status: IClusterStatus): void {
    this._cluster = status;
    this._failure = null;
    if (this._kernel && clusterKey(this._kernel) === clusterKey(status)) {
      const mine = status.kernels?.find(k => k.kernel_id === this._kernelId);
      this._kernel = {
        ...this._kernel,
        kernel_state: mine?.kernel_state ?? this._kernel.kernel_state,
        cluster: status
      };
    }
    this._changed.emit();
    this._checkPrompt(status);
    this._reconnect?.check();
  }

  /**
   * The dialog-once rule: one prompt per transition into `terminated` or
   * `unreachable` of a cluster, remembered across tabs; a state outside those
   * two ends the transition. A transition seen while a dialog is open, or
   * with the prompt switched off, counts as handled.
   */
  private _checkPrompt(status: IClusterStatus): void {
    const key = clusterKey(status);
    if (!PROMPT_STATES.has(status.state) || operationRunning(status)) {
      if (status.state !== 'unknown') {
        this._prompted.delete(key);
      }
      return;
    }
    if (this._prompted.get(key) === status.state) {
      return;
    }
    this._prompted.set(key, status.state);
    if (!this._settings.autoPrompt || !this._prompt || this._dialogOpen) {
      return;
    }
    const prompt = this._prompt;
    void this.runDialog(() => prompt(this, status)).catch(error => {
      console.error('databrickslabs-jupyterlab: restart dialog failed', error);
    });
  }

  private async _operate(
    kind: 'start' | 'reconfigure',
    restartKernel: string | null,
    restartKernels: RestartKernels
  ): Promise<IOperationAnswer> {
    const cluster = this._cluster;
    if (!cluster) {
      throw new Error('No Databricks cluster for the current kernel.');
    }
    const kernelId = this._kernelId;
    const request = { kernelId: restartKernel, restartKernels };
    this._busy = true;
    this._changed.emit();
    try {
      const answer =
        kind === 'start'
          ? await this._api.startCluster(cluster.profile, cluster.cluster_id, request)
          : await this._api.reconfigureCluster(
              cluster.profile,
              cluster.cluster_id,
              request
            );
      if (this._kernelId === kernelId && !this._isDisposed) {
        this._abortRequest();
        this._applyCluster(answer.status);
        this._kernelDirty = true;
        this._refreshNow();
      }
      return answer;
    } finally {
      this._busy = false;
      this._changed.emit();
    }
  }

  private _abortRequest(): void {
    const controller = this._controller;
    this._controller = null;
    controller?.abort();
  }

  /** Start a new tick at once; a pending tick's answer is then ignored. */
  private _refreshNow(): void {
    clearTimeout(this._soonTimer);
    this._abortRequest();
    if (this._isDisposed) {
      return;
    }
    // `Poll.refresh()` is a no-op while a refreshed tick is pending, so
    // schedule directly: the new tick supersedes the pending one.
    void this._poll.schedule({
      interval: Poll.IMMEDIATE,
      phase: 'refreshed'
    });
  }

  /** Coalesce bursts of kernel events into one refresh. */
  private _refreshSoon(): void {
    clearTimeout(this._soonTimer);
    this._soonTimer = setTimeout(() => this._refreshNow(), 300);
  }

  private _api: IDatabricksApi;
  private _settings: IStatusSettings;
  private _wait: number;
  private _maxBackoff: number;
  private _prompt:
    | ((model: StatusModel, status: IClusterStatus) => Promise<void>)
    | null;
  private _reconnect: ReconnectPolicy | null;
  private _poll: Poll<void, unknown>;
  private _changed = new Signal<this, void>(this);
  private _kernelId: string | null = null;
  private _kernel: IKernelStatus | null = null;
  private _cluster: IClusterStatus | null = null;
  private _notOurs = false;
  private _kernelDirty = true;
  private _failure: string | null = null;
  private _localStatus: LocalKernelStatus = 'unknown';
  private _controller: AbortController | null = null;
  private _prompted = new Map<string, ClusterState>();
  private _dialogOpen = false;
  private _busy = false;
  private _soonTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  private _isDisposed = false;
}
