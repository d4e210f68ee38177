/**
 * The one request helper of the extension, typed after the REST contract v1.
 *
 * Every non-OK answer is thrown as an `ApiError`, so that lumino's `Poll`
 * backs off on server failures and callers can show the server's sentence.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Path of the REST API below the Jupyter base URL. */
export const API_PATH = 'databrickslabs-jupyterlab/api/v1';

/** The `state` vocabulary of a ClusterStatus. */
export type ClusterState =
  | 'unknown'
  | 'terminated'
  | 'terminating'
  | 'starting'
  | 'configuring'
  | 'installing'
  | 'connected'
  | 'unreachable'
  | 'error';

/** Kernel states recorded by the provisioner. */
export type KernelState =
  | 'starting'
  | 'running'
  | 'running-spark'
  | 'disconnected'
  | 'dead';

/** Step names of a start or reconfigure operation, in order. */
export type OperationStep =
  | 'starting'
  | 'configuring'
  | 'installing'
  | 'restarting-kernels'
  | 'done';

/**
 * Which running kernels of the cluster an operation restarts (disconnected
 * or dead ones, and a kernel named in the request, restart in any case).
 */
export type RestartKernels = 'never' | 'if-installed' | 'always';

export interface IOperation {
  kind: 'start' | 'reconfigure';
  step: OperationStep;
  step_index: number;
  step_count: number;
  detail?: string | null;
  started_at?: string;
  /** The restart choice of the request that started the operation. */
  restart_kernels?: RestartKernels;
  /** Ids of the kernels being restarted, once the restarting-kernels step began. */
  kernels?: string[];
}

/** The optional body of a start or reconfigure request. */
export interface IOperationRequest {
  /** A kernel to restart at the end (e.g. the notebook's, lost with its driver). */
  kernelId?: string | null;
  /** Which running kernels may restart; the server's default is "never". */
  restartKernels?: RestartKernels;
}

/**
 * The answer to a start or reconfigure: `started` is false when the server
 * had nothing to do (HTTP 200 on a connected cluster without an operation).
 */
export interface IOperationAnswer {
  status: IClusterStatus;
  started: boolean;
}

export interface IClusterEvent {
  at: string;
  state: string;
  message: string;
}

export type Transport = 'ssh' | 'ssh-tunnel' | 'command-api';

export interface IClusterStatus {
  profile: string;
  cluster_id: string;
  cluster_name: string | null;
  state: ClusterState;
  cluster_state: string | null;
  message: string;
  ssh?: {
    reachable: boolean | null;
    checked_at: string | null;
    error: string | null;
  };
  /**
   * How the cluster is reached: classic SSH, the Databricks SSH tunnel, or the Command
   * Execution API (no SSH); null before the first read.
   */
  transport?: Transport | null;
  /** One sentence: why this transport. */
  transport_reason?: string | null;
  /** The cluster's Spark UI in the workspace (null until the workspace was read). */
  spark_ui_url?: string | null;
  operation: IOperation | null;
  /** Kernels of this cluster known to the server, with their state. */
  kernels?: Array<{ kernel_id: string; kernel_state: KernelState }>;
  version: number;
  updated_at?: string;
  events: IClusterEvent[];
}

export interface IKernelStatus {
  kernel_id: string;
  profile: string;
  cluster_id: string;
  kernel_state: KernelState;
  cluster: IClusterStatus;
}

/** Options of a (long-poll) status request. */
export interface IStatusQuery {
  /** Seconds the server may hold the request (long poll). */
  wait?: number;
  /** Answer as soon as the version is greater than this one. */
  since?: number;
  /** Aborts the request, e.g. when the current notebook changes. */
  signal?: AbortSignal;
}

/** Whether a start or reconfigure is still at work (`done` lingers a moment). */
export function operationRunning(status: IClusterStatus | null): boolean {
  return !!status?.operation && status.operation.step !== 'done';
}

/**
 * The calls the model needs. The model only sees this interface, so that unit
 * tests can give it a fake.
 */
export interface IDatabricksApi {
  getKernel(kernelId: string, signal?: AbortSignal): Promise<IKernelStatus>;
  getCluster(
    profile: string,
    clusterId: string,
    query?: IStatusQuery
  ): Promise<IClusterStatus>;
  startCluster(
    profile: string,
    clusterId: string,
    request?: IOperationRequest
  ): Promise<IOperationAnswer>;
  reconfigureCluster(
    profile: string,
    clusterId: string,
    request?: IOperationRequest
  ): Promise<IOperationAnswer>;
  /** `info.version` of the server's OpenAPI document ("1." + package version). */
  getApiVersion(): Promise<string>;
}

/** A profile of the Databricks config file (`GET {base}/profiles`). */
export interface IProfile {
  name: string;
  host: string | null;
  auth_type?: string;
  ssh_key: 'ok' | 'missing';
}

/** A row of `GET {base}/clusters?profile=P`. */
export interface IClusterSummary {
  cluster_id: string;
  cluster_name: string | null;
  /** The Databricks state (RUNNING, TERMINATED, ...). */
  state: string | null;
  ssh_key_installed: boolean;
  spark_version?: string | null;
  data_security_mode?: string | null;
  autotermination_minutes?: number | null;
  transport?: Transport | null;
}

/** The answer of `POST {base}/clusters/{profile}/{cluster_id}/kernelspec`. */
export interface IKernelspecAnswer {
  kernel_name: string;
  display_name: string;
  profile: string;
  cluster_id: string;
  transport: Transport;
  transport_reason?: string;
  spark?: boolean;
}

/** The calls of the Databricks panel (the long poll is `getCluster`). */
export interface IPanelApi {
  listProfiles(): Promise<IProfile[]>;
  listClusters(profile: string): Promise<IClusterSummary[]>;
  getCluster(
    profile: string,
    clusterId: string,
    query?: IStatusQuery
  ): Promise<IClusterStatus>;
  startCluster(profile: string, clusterId: string): Promise<IOperationAnswer>;
  terminateCluster(profile: string, clusterId: string): Promise<IClusterStatus>;
  createKernelspec(
    profile: string,
    clusterId: string,
    options?: { transport?: Transport; spark?: boolean }
  ): Promise<IKernelspecAnswer>;
}

/**
 * A failed request: HTTP status 0 means the server could not be reached.
 *
 * `error` is the snake_case code of the contract's error body (for example
 * `not_a_databricks_kernel`); it is empty when the answer is not ours, e.g.
 * the 404 page of a server without the extension.
 */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly error: string = '',
    readonly reason: string = ''
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/**
 * Make a request to the REST API and return its JSON body.
 */
export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  return (await requestWithStatus<T>(endPoint, init, settings)).data;
}

/**
 * Make a request to the REST API and return its HTTP status and JSON body
 * (for the calls whose 200 and 202 mean different things).
 */
export async function requestWithStatus<T>(
  endPoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<{ status: number; data: T }> {
  const url = URLExt.join(settings.baseUrl, API_PATH, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    if ((error as Error)?.name === 'AbortError') {
      throw error;
    }
    throw new ApiError(String((error as Error)?.message ?? error), 0);
  }
  const text = await response.text();
  let data: any = null;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const body = data && typeof data === 'object' ? data : {};
    const message =
      typeof body.message === 'string' && body.message
        ? body.message
        : `${response.status} ${response.statusText}`.trim();
    throw new ApiError(
      message,
      response.status,
      typeof body.error === 'string' ? body.error : '',
      typeof body.reason === 'string' ? body.reason : ''
    );
  }
  return { status: response.status, data: data as T };
}

function clusterPath(profile: string, clusterId: string): string {
  return URLExt.join(
    'clusters',
    encodeURIComponent(profile),
    encodeURIComponent(clusterId)
  );
}

/**
 * The REST API of the server extension, bound to one server connection.
 */
export class DatabricksApi implements IDatabricksApi, IPanelApi {
  constructor(
    readonly serverSettings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  getKernel(kernelId: string, signal?: AbortSignal): Promise<IKernelStatus> {
    return requestAPI<IKernelStatus>(
      URLExt.join('kernels', encodeURIComponent(kernelId)),
      { method: 'GET', signal },
      this.serverSettings
    );
  }

  getCluster(
    profile: string,
    clusterId: string,
    query: IStatusQuery = {}
  ): Promise<IClusterStatus> {
    const params: { [key: string]: string } = {};
    if (query.wait !== undefined && query.since !== undefined) {
      params.wait = String(query.wait);
      params.since = String(query.since);
    }
    const search = URLExt.objectToQueryString(params);
    return requestAPI<IClusterStatus>(
      clusterPath(profile, clusterId) + search,
      { method: 'GET', signal: query.signal },
      this.serverSettings
    );
  }

  startCluster(
    profile: string,
    clusterId: string,
    request: IOperationRequest = {}
  ): Promise<IOperationAnswer> {
    return this._operate('start', profile, clusterId, request);
  }

  reconfigureCluster(
    profile: string,
    clusterId: string,
    request: IOperationRequest = {}
  ): Promise<IOperationAnswer> {
    return this._operate('reconfigure', profile, clusterId, request);
  }

  async listProfiles(): Promise<IProfile[]> {
    const answer = await requestAPI<{ profiles: IProfile[] }>(
      'profiles',
      { method: 'GET' },
      this.serverSettings
    );
    return answer.profiles;
  }

  async listClusters(profile: string): Promise<IClusterSummary[]> {
    const answer = await requestAPI<{ clusters: IClusterSummary[] }>(
      'clusters' + URLExt.objectToQueryString({ profile }),
      { method: 'GET' },
      this.serverSettings
    );
    return answer.clusters;
  }

  terminateCluster(profile: string, clusterId: string): Promise<IClusterStatus> {
    return requestAPI<IClusterStatus>(
      URLExt.join(clusterPath(profile, clusterId), 'terminate'),
      { method: 'POST', body: '{}' },
      this.serverSettings
    );
  }

  createKernelspec(
    profile: string,
    clusterId: string,
    options: { transport?: Transport; spark?: boolean } = {}
  ): Promise<IKernelspecAnswer> {
    return requestAPI<IKernelspecAnswer>(
      URLExt.join(clusterPath(profile, clusterId), 'kernelspec'),
      { method: 'POST', body: JSON.stringify(options) },
      this.serverSettings
    );
  }

  async getApiVersion(): Promise<string> {
    const doc = await requestAPI<{ info?: { version?: unknown } }>(
      'openapi.json',
      { method: 'GET' },
      this.serverSettings
    );
    const version = doc?.info?.version;
    if (typeof version !== 'string') {
      throw new ApiError('The OpenAPI document has no info.version.', 200);
    }
    return version;
  }

  private async _operate(
    kind: 'start' | 'reconfigure',
    profile: string,
    clusterId: string,
    request: IOperationRequest
  ): Promise<IOperationAnswer> {
    const body: { kernel_id?: string; restart_kernels?: RestartKernels } = {};
    if (request.kernelId) {
      body.kernel_id = request.kernelId;
    }
    if (request.restartKernels) {
      body.restart_kernels = request.restartKernels;
    }
    const answer = await requestWithStatus<IClusterStatus>(
      URLExt.join(clusterPath(profile, clusterId), kind),
      { method: 'POST', body: JSON.stringify(body) },
      this.serverSettings
    );
    // 202: an operation runs (new or already running); 200: nothing to do.
    return { status: answer.data, started: answer.status !== 200 };
  }
}
