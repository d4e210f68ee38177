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

export interface IOperation {
  kind: 'start' | 'reconfigure';
  step: OperationStep;
  step_index: number;
  step_count: number;
  detail?: string | null;
  started_at?: string;
}

export interface IClusterEvent {
  at: string;
  state: string;
  message: string;
}

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
    kernelId?: string | null
  ): Promise<IClusterStatus>;
  reconfigureCluster(
    profile: string,
    clusterId: string,
    kernelId?: string | null
  ): Promise<IClusterStatus>;
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
  return data as T;
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
export class DatabricksApi implements IDatabricksApi {
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
    kernelId?: string | null
  ): Promise<IClusterStatus> {
    return requestAPI<IClusterStatus>(
      URLExt.join(clusterPath(profile, clusterId), 'start'),
      {
        method: 'POST',
        body: JSON.stringify(kernelId ? { kernel_id: kernelId } : {})
      },
      this.serverSettings
    );
  }

  reconfigureCluster(
    profile: string,
    clusterId: string,
    kernelId?: string | null
  ): Promise<IClusterStatus> {
    return requestAPI<IClusterStatus>(
      URLExt.join(clusterPath(profile, clusterId), 'reconfigure'),
      {
        method: 'POST',
        body: JSON.stringify(kernelId ? { kernel_id: kernelId } : {})
      },
      this.serverSettings
    );
  }
}
