/**
 * An in-memory stand-in for the REST API with the contract's long-poll
 * semantics, for unit tests of the model only. The tests run with jest's
 * fake timers: `advance` and `waitFor` move the clock, nothing sleeps.
 */
import type {
  ClusterState,
  IClusterStatus,
  IDatabricksApi,
  IKernelStatus,
  IOperation,
  IOperationAnswer,
  IOperationRequest,
  IStatusQuery,
  KernelState
} from '../api';

export class FakeApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly error = ''
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

function abortError(): Error {
  const error = new Error('The operation was aborted.');
  error.name = 'AbortError';
  return error;
}

export interface ICall {
  method: string;
  args: any[];
  at: number;
}

export class FakeApi implements IDatabricksApi {
  clusters = new Map<string, IClusterStatus>();
  kernels = new Map<string, { profile: string; cluster_id: string; kernel_state: KernelState }>();
  calls: ICall[] = [];
  /** Errors thrown by the next calls of getCluster/getKernel (FIFO). */
  failures: Error[] = [];
  /** Error for start/reconfigure, if set. */
  operationError: Error | null = null;
  /** Aborted requests seen. */
  aborted = 0;
  /** `info.version` of the OpenAPI document, or an error to throw. */
  apiVersion: string | Error = '1.3.0.0';

  addCluster(
    cluster_id: string,
    state: ClusterState,
    extra: Partial<IClusterStatus> = {}
  ): IClusterStatus {
    const status: IClusterStatus = {
      profile: 'demo',
      cluster_id,
      cluster_name: `name-${cluster_id}`,
      state,
      cluster_state: state === 'terminated' ? 'TERMINATED' : 'RUNNING',
      message: `${state} message`,
      operation: null,
      version: 1,
      events: [],
      ...extra
    };
    this.clusters.set(this._key(status.profile, cluster_id), status);
    return status;
  }

  addKernel(
    kernel_id: string,
    cluster_id: string,
    kernel_state: KernelState = 'running'
  ): void {
    this.kernels.set(kernel_id, { profile: 'demo', cluster_id, kernel_state });
  }

  /** Change a cluster like the server does: bump the version, wake long polls. */
  update(
    cluster_id: string,
    state: ClusterState,
    extra: Partial<IClusterStatus> = {},
    profile = 'demo'
  ): IClusterStatus {
    const key = this._key(profile, cluster_id);
    const old = this.clusters.get(key)!;
    const next: IClusterStatus = {
      ...old,
      state,
      message: `${state} message`,
      ...extra,
      version: old.version + 1,
      events: [
        ...old.events,
        { at: new Date().toISOString(), state, message: `${state} message` }
      ]
    };
    this.clusters.set(key, next);
    for (const waiter of [...this._waiters]) {
      waiter();
    }
    return next;
  }

  setKernelState(kernel_id: string, kernel_state: KernelState): void {
    this.kernels.get(kernel_id)!.kernel_state = kernel_state;
  }

  count(method: string): number {
    return this.calls.filter(c => c.method === method).length;
  }

  /** Long polls currently held by the fake server. */
  get pending(): number {
    return this._waiters.size;
  }

  async getKernel(kernelId: string, signal?: AbortSignal): Promise<IKernelStatus> {
    this.calls.push({ method: 'getKernel', args: [kernelId], at: Date.now() });
    await Promise.resolve();
    if (signal?.aborted) {
      this.aborted++;
      throw abortError();
    }
    const failure = this.failures.shift();
    if (failure) {
      throw failure;
    }
    const kernel = this.kernels.get(kernelId);
    if (!kernel) {
      throw new FakeApiError('not ours', 404, 'not_a_databricks_kernel');
    }
    return {
      kernel_id: kernelId,
      ...kernel,
      cluster: this.clusters.get(this._key(kernel.profile, kernel.cluster_id))!
    };
  }

  getCluster(
    profile: string,
    clusterId: string,
    query: IStatusQuery = {}
  ): Promise<IClusterStatus> {
    this.calls.push({
      method: 'getCluster',
      args: [profile, clusterId, { wait: query.wait, since: query.since }],
      at: Date.now()
    });
    const failure = this.failures.shift();
    if (failure) {
      return Promise.reject(failure);
    }
    const key = this._key(profile, clusterId);
    const current = () => this.clusters.get(key)!;
    if (
      query.wait === undefined ||
      query.since === undefined ||
      current().version > query.since
    ) {
      return Promise.resolve(current());
    }
    return new Promise<IClusterStatus>((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        this._waiters.delete(check);
        query.signal?.removeEventListener('abort', onAbort);
      };
      const check = () => {
        if (current().version > query.since!) {
          finish();
          resolve(current());
        }
      };
      const onAbort = () => {
        finish();
        this.aborted++;
        reject(abortError());
      };
      const timer = setTimeout(() => {
        finish();
        resolve(current());
      }, query.wait! * 1000);
      this._waiters.add(check);
      query.signal?.addEventListener('abort', onAbort);
    });
  }

  async startCluster(
    profile: string,
    clusterId: string,
    request: IOperationRequest = {}
  ): Promise<IOperationAnswer> {
    this.calls.push({ method: 'startCluster', args: [profile, clusterId, request], at: Date.now() });
    if (this.operationError) {
      throw this.operationError;
    }
    const current = this.clusters.get(this._key(profile, clusterId))!;
    if (current.state === 'connected' && !current.operation) {
      // The server's 200: nothing to do on a connected cluster.
      return { status: current, started: false };
    }
    const status = this.update(clusterId, 'starting', {
      operation: this.operation('start', 'starting', 1)
    }, profile);
    return { status, started: true };
  }

  async reconfigureCluster(
    profile: string,
    clusterId: string,
    request: IOperationRequest = {}
  ): Promise<IOperationAnswer> {
    this.calls.push({ method: 'reconfigureCluster', args: [profile, clusterId, request], at: Date.now() });
    if (this.operationError) {
      throw this.operationError;
    }
    const status = this.update(clusterId, 'configuring', {
      operation: this.operation('reconfigure', 'configuring', 2)
    }, profile);
    return { status, started: true };
  }

  async getApiVersion(): Promise<string> {
    this.calls.push({ method: 'getApiVersion', args: [], at: Date.now() });
    if (this.apiVersion instanceof Error) {
      throw this.apiVersion;
    }
    return this.apiVersion;
  }

  operation(
    kind: 'start' | 'reconfigure',
    step: IOperation['step'],
    step_index: number,
    detail: string | null = null
  ): IOperation {
    return { kind, step, step_index, step_count: 5, detail };
  }

  /** Wake and drop every held long poll (like a server shutting down). */
  dispose(): void {
    this._waiters.clear();
  }

  private _key(profile: string, clusterId: string): string {
    return `${profile}/${clusterId}`;
  }

  private _waiters = new Set<() => void>();
}

/**
 * Advance jest's fake clock by `ms`, running the timers and the promise
 * callbacks they release on the way.
 */
export async function advance(ms: number): Promise<void> {
  await jest.advanceTimersByTimeAsync(ms);
}

/**
 * Advance the fake clock in 10 ms steps until `predicate` holds; fail after
 * `timeout` ms of fake time.
 */
export async function waitFor(
  predicate: () => boolean,
  timeout = 3000,
  what = 'condition'
): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeout) {
      throw new Error(`timed out after ${timeout} ms (fake time) waiting for ${what}`);
    }
    await advance(10);
  }
}
