/**
 * The model of the Databricks panel: profiles, their clusters, and what the
 * user asked of a cluster. The list is read on open and after every action;
 * a cluster the user acted on is followed with the status long poll (the one
 * the status model uses) until it settles, and the status model's own answers
 * update the row of the current kernel's cluster without a request.
 */
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import {
  IClusterStatus,
  IClusterSummary,
  IKernelspecAnswer,
  IPanelApi,
  IProfile,
  operationRunning
} from './api';

/** A cluster of the panel: the listing's row and the latest status, if any. */
export interface IClusterRow extends IClusterSummary {
  profile: string;
  /** The latest status of the long poll (or the status model), or null. */
  status: IClusterStatus | null;
  /** The last failure of an action or of following it, or null. */
  error: string | null;
}

export interface IProfileGroup {
  profile: IProfile;
  clusters: IClusterRow[];
  /** Why the clusters could not be listed, or null. */
  error: string | null;
}

/** What a row shows as its state (the server's vocabulary where known). */
export type RowState =
  | 'unknown'
  | 'running'
  | 'connected'
  | 'starting'
  | 'configuring'
  | 'installing'
  | 'restarting-kernels'
  | 'terminating'
  | 'terminated'
  | 'unreachable'
  | 'error';

const FROM_DATABRICKS: { [state: string]: RowState } = {
  RUNNING: 'running',
  RESIZING: 'running',
  PENDING: 'starting',
  RESTARTING: 'starting',
  TERMINATING: 'terminating',
  TERMINATED: 'terminated',
  ERROR: 'error',
  UNKNOWN: 'unknown'
};

/** The state a row shows: the running operation's step, the server's state, or Databricks'. */
export function rowState(row: IClusterRow): RowState {
  const status = row.status;
  if (status) {
    const op = status.operation;
    if (op && operationRunning(status) && status.state !== 'error') {
      return op.step === 'done' ? 'connected' : (op.step as RowState);
    }
    return status.state as RowState;
  }
  return FROM_DATABRICKS[row.state ?? ''] ?? 'unknown';
}

/** Whether Start makes sense: the cluster is down or its connection failed. */
export function canStart(row: IClusterRow): boolean {
  return ['terminated', 'error', 'unreachable', 'unknown'].includes(rowState(row));
}

/** Whether Terminate makes sense: the cluster runs or comes up, no operation runs. */
export function canTerminate(row: IClusterRow): boolean {
  const state = rowState(row);
  if (row.status && operationRunning(row.status)) {
    return false;
  }
  return state !== 'terminated' && state !== 'terminating' && !(state === 'unknown' && !row.state);
}

/** Words for the access mode (`data_security_mode`), or '' when not set. */
export function accessModeLabel(mode: string | null | undefined): string {
  switch (mode) {
    case null:
    case undefined:
    case '':
    case 'NONE':
      return mode === 'NONE' ? 'No isolation' : '';
    case 'SINGLE_USER':
    case 'DATA_SECURITY_MODE_DEDICATED':
    case 'LEGACY_SINGLE_USER':
      return 'Dedicated';
    case 'USER_ISOLATION':
    case 'DATA_SECURITY_MODE_STANDARD':
    case 'LEGACY_TABLE_ACL':
      return 'Standard';
    case 'DATA_SECURITY_MODE_AUTO':
      return 'Auto';
    default:
      return mode;
  }
}

/** The runtime, e.g. "16.4.x-scala2.12" → "16.4" (the whole string when it has no version). */
export function runtimeLabel(sparkVersion: string | null | undefined): string {
  if (!sparkVersion) {
    return '';
  }
  const match = /^(\d+\.\d+)/.exec(sparkVersion);
  const ml = /-ml-|-gpu-ml-/.test(sparkVersion) ? ' ML' : '';
  return match ? match[1] + ml : sparkVersion;
}

/** Minutes of auto-termination, or null for never (0) and unknown. */
export function autoTermination(minutes: number | null | undefined): number | null {
  return typeof minutes === 'number' && minutes > 0 ? minutes : null;
}

/** Whether a followed cluster reached where the action leads. */
export type Goal = (status: IClusterStatus) => boolean;

export const STARTED: Goal = status =>
  !operationRunning(status) &&
  ['connected', 'unreachable', 'error', 'terminated'].includes(status.state) &&
  !(status.state === 'terminated' && status.operation);

export const TERMINATED: Goal = status =>
  status.state === 'terminated' || (status.state === 'error' && !operationRunning(status));

function errorMessage(error: unknown): string {
  return (error as Error)?.message ?? String(error);
}

function isAbort(error: unknown): boolean {
  return (error as { name?: string })?.name === 'AbortError';
}

export function rowKey(profile: string, clusterId: string): string {
  return `${profile}/${clusterId}`;
}

export namespace PanelModel {
  export interface IOptions {
    api: IPanelApi;
    /** Seconds the server may hold a long poll, default 25 (as the status model). */
    longPollWait?: number;
    /** Pause before a failed long poll is asked again (ms), default 2 s. */
    retryDelay?: number;
    /** Failed long polls in a row after which following stops, default 5. */
    maxRetries?: number;
  }
}

export class PanelModel implements IDisposable {
  constructor(options: PanelModel.IOptions) {
    this._api = options.api;
    this._wait = options.longPollWait ?? 25;
    this._retryDelay = options.retryDelay ?? 2000;
    this._maxRetries = options.maxRetries ?? 5;
  }

  /** Emitted whenever anything the view shows may have changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get groups(): readonly IProfileGroup[] {
    return this._groups;
  }

  /** Whether the list is being read. */
  get loading(): boolean {
    return this._loading;
  }

  /** Why the profiles could not be read, or null. */
  get error(): string | null {
    return this._error;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Whether a request for this cluster is on its way (its buttons are off). */
  isBusy(profile: string, clusterId: string): boolean {
    return this._busy.has(rowKey(profile, clusterId));
  }

  /** Whether this cluster is being followed with the long poll. */
  isFollowing(profile: string, clusterId: string): boolean {
    return this._following.has(rowKey(profile, clusterId));
  }

  row(profile: string, clusterId: string): IClusterRow | undefined {
    return this._groups
      .find(g => g.profile.name === profile)
      ?.clusters.find(c => c.cluster_id === clusterId);
  }

  /** Read the profiles and the clusters of each (on open, and on the refresh button). */
  async refresh(): Promise<void> {
    this._loading = true;
    this._emit();
    try {
      const profiles = await this._api.listProfiles();
      const groups = await Promise.all(profiles.map(p => this._group(p)));
      if (!this._disposed) {
        this._groups = groups;
        this._error = null;
      }
    } catch (error) {
      this._error = errorMessage(error);
    } finally {
      this._loading = false;
      this._emit();
    }
  }

  /** Start the cluster (the status model's start operation) and follow it. */
  async start(profile: string, clusterId: string): Promise<void> {
    await this._act(profile, clusterId, STARTED, async () => {
      const answer = await this._api.startCluster(profile, clusterId);
      return answer.status;
    });
  }

  /** Terminate the cluster (the caller has asked the user) and follow it. */
  async terminate(profile: string, clusterId: string): Promise<void> {
    await this._act(profile, clusterId, TERMINATED, () =>
      this._api.terminateCluster(profile, clusterId)
    );
  }

  /** Create the cluster's kernelspec on the server; the caller opens a notebook with it. */
  async createKernelspec(profile: string, clusterId: string): Promise<IKernelspecAnswer> {
    return this._request(profile, clusterId, () =>
      this._api.createKernelspec(profile, clusterId)
    );
  }

  /** A status seen elsewhere (the status model's long poll) updates its row. */
  noteStatus(status: IClusterStatus | null): void {
    if (status && this._apply(status)) {
      this._emit();
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    for (const controller of this._following.values()) {
      controller.abort();
    }
    this._following.clear();
    Signal.clearData(this);
  }

  private async _group(profile: IProfile): Promise<IProfileGroup> {
    try {
      const listed = await this._api.listClusters(profile.name);
      const clusters = listed.map(c => {
        const old = this.row(profile.name, c.cluster_id);
        // A status stays while it is followed or agrees with the listing's Databricks state.
        const keep =
          old?.status &&
          (this.isFollowing(profile.name, c.cluster_id) || old.status.cluster_state === c.state);
        return {
          ...c,
          profile: profile.name,
          status: keep ? old!.status : null,
          error: old?.error ?? null
        };
      });
      return { profile, clusters, error: null };
    } catch (error) {
      return { profile, clusters: [], error: errorMessage(error) };
    }
  }

  private async _act(
    profile: string,
    clusterId: string,
    goal: Goal,
    request: () => Promise<IClusterStatus>
  ): Promise<void> {
    if (this.isBusy(profile, clusterId)) {
      return;
    }
    const status = await this._request(profile, clusterId, request);
    this._apply(status);
    this._emit();
    await this._follow(profile, clusterId, status, goal);
  }

  /** One request for a cluster: its buttons are off meanwhile, a failure shows in its row. */
  private async _request<T>(
    profile: string,
    clusterId: string,
    request: () => Promise<T>
  ): Promise<T> {
    const key = rowKey(profile, clusterId);
    this._busy.add(key);
    this._setError(profile, clusterId, null);
    try {
      return await request();
    } catch (error) {
      this._setError(profile, clusterId, errorMessage(error));
      throw error;
    } finally {
      this._busy.delete(key);
      this._emit();
    }
  }

  /** Long-poll the cluster until `goal` holds, then read the list of its profile again. */
  private async _follow(
    profile: string,
    clusterId: string,
    first: IClusterStatus,
    goal: Goal
  ): Promise<void> {
    const key = rowKey(profile, clusterId);
    this._following.get(key)?.abort();
    const controller = new AbortController();
    this._following.set(key, controller);
    let status = first;
    let failures = 0;
    try {
      while (!goal(status) && !controller.signal.aborted) {
        try {
          status = await this._api.getCluster(profile, clusterId, {
            wait: this._wait,
            since: status.version,
            signal: controller.signal
          });
          failures = 0;
        } catch (error) {
          if (isAbort(error) || controller.signal.aborted) {
            return;
          }
          if (++failures >= this._maxRetries) {
            this._setError(profile, clusterId, errorMessage(error));
            return;
          }
          await new Promise(resolve => setTimeout(resolve, this._retryDelay));
          continue;
        }
        if (this._apply(status)) {
          this._emit();
        }
      }
    } finally {
      if (this._following.get(key) === controller) {
        this._following.delete(key);
      }
    }
    if (!controller.signal.aborted && !this._disposed) {
      await this._relist(profile);
    }
  }

  private async _relist(profile: string): Promise<void> {
    const index = this._groups.findIndex(g => g.profile.name === profile);
    if (index < 0) {
      return;
    }
    const group = await this._group(this._groups[index].profile);
    if (this._disposed) {
      return;
    }
    this._groups = this._groups.map(g => (g.profile.name === profile ? group : g));
    this._emit();
  }

  /** Put a status into its row; whether anything changed. */
  private _apply(status: IClusterStatus): boolean {
    const row = this.row(status.profile, status.cluster_id);
    if (!row || (row.status && row.status.version > status.version)) {
      return false;
    }
    if (row.status === status) {
      return false;
    }
    row.status = status;
    if (status.cluster_state) {
      row.state = status.cluster_state;
    }
    if (status.transport) {
      row.transport = status.transport;
    }
    return true;
  }

  private _setError(profile: string, clusterId: string, error: string | null): void {
    const row = this.row(profile, clusterId);
    if (row) {
      row.error = error;
    }
  }

  private _emit(): void {
    if (!this._disposed) {
      this._changed.emit();
    }
  }

  private _api: IPanelApi;
  private _wait: number;
  private _retryDelay: number;
  private _maxRetries: number;
  private _groups: IProfileGroup[] = [];
  private _loading = false;
  private _error: string | null = null;
  private _busy = new Set<string>();
  private _following = new Map<string, AbortController>();
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
}
