/**
 * The Databricks panel: its model against a fake API with the contract's
 * long-poll semantics (jest's fake clock, nothing sleeps), its pure
 * functions, and one cluster rendered to markup in plain Node.
 */
import type { TranslationBundle } from '@jupyterlab/translation';
import React from 'react';

// react-dom ships no types here (no @types/react-dom): declare the one call used.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { renderToStaticMarkup } = require('react-dom/server') as {
  renderToStaticMarkup: (element: React.ReactElement) => string;
};

import type {
  IClusterStatus,
  IClusterSummary,
  IKernelspecAnswer,
  IPanelApi,
  IProfile
} from '../api';
import { ClusterItem } from '../panelitem';
import {
  accessModeLabel,
  autoTermination,
  canStart,
  canTerminate,
  IClusterRow,
  PanelModel,
  rowState,
  runtimeLabel
} from '../panelmodel';
import { advance, FakeApi, FakeApiError, waitFor } from './fakeapi';

/** The fake REST API with the panel's calls: listing, terminate, kernelspec. */
class PanelFake extends FakeApi implements IPanelApi {
  profiles: IProfile[] = [{ name: 'demo', host: 'https://x', ssh_key: 'ok' }];
  extra: Partial<IClusterSummary> = {
    spark_version: '16.4.x-scala2.12',
    data_security_mode: 'SINGLE_USER',
    autotermination_minutes: 60,
    transport: 'ssh'
  };
  listError: Error | null = null;
  kernelspecs: string[] = [];

  async listProfiles(): Promise<IProfile[]> {
    this.calls.push({ method: 'listProfiles', args: [], at: Date.now() });
    return this.profiles;
  }

  async listClusters(profile: string): Promise<IClusterSummary[]> {
    this.calls.push({ method: 'listClusters', args: [profile], at: Date.now() });
    if (this.listError) {
      throw this.listError;
    }
    return [...this.clusters.values()]
      .filter(c => c.profile === profile)
      .map(c => ({
        cluster_id: c.cluster_id,
        cluster_name: c.cluster_name,
        state: c.cluster_state,
        ssh_key_installed: true,
        ...this.extra
      }));
  }

  async terminateCluster(profile: string, clusterId: string): Promise<IClusterStatus> {
    this.calls.push({ method: 'terminateCluster', args: [profile, clusterId], at: Date.now() });
    if (this.operationError) {
      throw this.operationError;
    }
    return this.update(clusterId, 'terminating', { cluster_state: 'TERMINATING' }, profile);
  }

  async createKernelspec(profile: string, clusterId: string): Promise<IKernelspecAnswer> {
    this.calls.push({ method: 'createKernelspec', args: [profile, clusterId], at: Date.now() });
    if (this.operationError) {
      throw this.operationError;
    }
    const name = `ssh_${clusterId}`;
    this.kernelspecs.push(name);
    return {
      kernel_name: name,
      display_name: `SSH ${clusterId}`,
      profile,
      cluster_id: clusterId,
      transport: 'ssh'
    };
  }
}

const trans = {
  __: (text: string, ...args: unknown[]) =>
    args.reduce<string>((out, arg, i) => out.replace(`%${i + 1}`, String(arg)), text)
} as unknown as TranslationBundle;

function row(extra: Partial<IClusterRow> = {}): IClusterRow {
  return {
    profile: 'demo',
    cluster_id: 'c1',
    cluster_name: 'one',
    state: 'TERMINATED',
    ssh_key_installed: true,
    status: null,
    error: null,
    ...extra
  };
}

describe('panel functions', () => {
  it('shows the Databricks state until a status is known, then the server state', () => {
    expect(rowState(row())).toBe('terminated');
    expect(rowState(row({ state: 'PENDING' }))).toBe('starting');
    expect(rowState(row({ state: 'RUNNING' }))).toBe('running');
    expect(rowState(row({ state: 'WHATEVER' }))).toBe('unknown');
    const api = new FakeApi();
    const status = api.addCluster('c1', 'connected');
    expect(rowState(row({ state: 'RUNNING', status }))).toBe('connected');
    const starting = api.update('c1', 'terminated', {
      operation: api.operation('start', 'installing', 3)
    });
    expect(rowState(row({ status: starting }))).toBe('installing');
  });

  it('offers start on a stopped cluster and terminate on a running one', () => {
    expect(canStart(row())).toBe(true);
    expect(canTerminate(row())).toBe(false);
    expect(canStart(row({ state: 'RUNNING' }))).toBe(false);
    expect(canTerminate(row({ state: 'RUNNING' }))).toBe(true);
    expect(canTerminate(row({ state: 'PENDING' }))).toBe(true);
    expect(canTerminate(row({ state: 'TERMINATING' }))).toBe(false);
    const api = new FakeApi();
    api.addCluster('c1', 'terminated');
    const busy = api.update('c1', 'starting', {
      operation: api.operation('start', 'starting', 1)
    });
    // terminate would break a running start half-way: the server refuses it too
    expect(canTerminate(row({ state: 'PENDING', status: busy }))).toBe(false);
    expect(canStart(row({ state: 'PENDING', status: busy }))).toBe(false);
  });

  it('words runtime, access mode and auto-termination', () => {
    expect(runtimeLabel('16.4.x-scala2.12')).toBe('16.4');
    expect(runtimeLabel('15.4.x-cpu-ml-scala2.12')).toBe('15.4 ML');
    expect(runtimeLabel('14.3.x-gpu-ml-scala2.12')).toBe('14.3 ML');
    expect(runtimeLabel('custom')).toBe('custom');
    expect(runtimeLabel(null)).toBe('');
    expect(accessModeLabel('SINGLE_USER')).toBe('Dedicated');
    expect(accessModeLabel('USER_ISOLATION')).toBe('Standard');
    expect(accessModeLabel('NONE')).toBe('No isolation');
    expect(accessModeLabel(null)).toBe('');
    expect(autoTermination(0)).toBeNull();
    expect(autoTermination(120)).toBe(120);
  });

  it('renders a cluster with its facts and the buttons that apply', () => {
    const noop = () => undefined;
    const html = renderToStaticMarkup(
      <ClusterItem
        row={row({
          spark_version: '16.4.x-scala2.12',
          data_security_mode: 'USER_ISOLATION',
          autotermination_minutes: 45,
          transport: 'command-api'
        })}
        busy={false}
        options={{ trans, start: noop, terminate: noop, newNotebook: noop }}
      />
    );
    expect(html).toContain('data-state="terminated"');
    expect(html).toContain('16.4 · Standard · Command Execution API (no SSH) · terminates after 45 min idle');
    expect(html).toMatch(/<button[^>]*DatabricksPanel-start"[^>]*>Start/);
    expect(html).toMatch(/<button[^>]*disabled=""[^>]*>Terminate/);
    const busy = renderToStaticMarkup(
      <ClusterItem
        row={row({ autotermination_minutes: 0 })}
        busy={true}
        options={{ trans, start: noop, terminate: noop, newNotebook: noop }}
      />
    );
    expect(busy).toContain('no auto-termination');
    expect(busy).toMatch(/<button[^>]*disabled=""[^>]*>Start/);
    expect(busy).toMatch(/<button[^>]*disabled=""[^>]*>New notebook/);
  });
});

describe('PanelModel', () => {
  let api: PanelFake;
  let model: PanelModel;

  beforeEach(() => {
    jest.useFakeTimers();
    api = new PanelFake();
    api.addCluster('c1', 'terminated');
    api.addCluster('c2', 'connected');
    model = new PanelModel({ api, longPollWait: 5, retryDelay: 100, maxRetries: 3 });
  });

  afterEach(() => {
    model.dispose();
    api.dispose();
    jest.clearAllTimers();
    jest.useRealTimers();
  });

  it('lists profiles and their clusters with the listing fields', async () => {
    await model.refresh();
    expect(model.groups.map(g => g.profile.name)).toEqual(['demo']);
    const rows = model.groups[0].clusters;
    expect(rows.map(r => [r.cluster_id, rowState(r)])).toEqual([
      ['c1', 'terminated'],
      ['c2', 'running']
    ]);
    expect(rows[0].spark_version).toBe('16.4.x-scala2.12');
    expect(api.count('getCluster')).toBe(0); // opening the panel long-polls nothing
  });

  it('shows a listing failure in its profile', async () => {
    api.listError = new FakeApiError('The workspace is down.', 503);
    await model.refresh();
    expect(model.groups[0].error).toBe('The workspace is down.');
  });

  it('follows a start with the long poll until connected, then lists again', async () => {
    await model.refresh();
    const lists = api.count('listClusters');
    const done = model.start('demo', 'c1');
    await waitFor(() => model.isFollowing('demo', 'c1'), 1000, 'following');
    expect(rowState(model.row('demo', 'c1')!)).toBe('starting');
    // the long poll is held by the server: nothing is asked meanwhile
    await advance(2000);
    expect(api.count('getCluster')).toBe(1);
    expect(api.pending).toBe(1);
    api.update('c1', 'installing', {
      cluster_state: 'RUNNING',
      operation: api.operation('start', 'installing', 3)
    });
    await waitFor(() => rowState(model.row('demo', 'c1')!) === 'installing', 1000, 'installing');
    api.update('c1', 'connected', { cluster_state: 'RUNNING', operation: null });
    await done;
    expect(model.isFollowing('demo', 'c1')).toBe(false);
    expect(api.count('listClusters')).toBe(lists + 1);
    expect(model.row('demo', 'c1')!.state).toBe('RUNNING');
    // the new listing agrees with the last status: the row stays connected
    expect(rowState(model.row('demo', 'c1')!)).toBe('connected');
    expect(canTerminate(model.row('demo', 'c1')!)).toBe(true);
  });

  it('follows a terminate until terminated', async () => {
    await model.refresh();
    const done = model.terminate('demo', 'c2');
    await waitFor(() => rowState(model.row('demo', 'c2')!) === 'terminating', 1000, 'terminating');
    expect(canTerminate(model.row('demo', 'c2')!)).toBe(false);
    api.update('c2', 'terminated', { cluster_state: 'TERMINATED' });
    await done;
    expect(api.count('terminateCluster')).toBe(1);
    expect(rowState(model.row('demo', 'c2')!)).toBe('terminated');
    expect(canStart(model.row('demo', 'c2')!)).toBe(true);
  });

  it('shows a refused action in the row and lets the user try again', async () => {
    await model.refresh();
    api.operationError = new FakeApiError('Cluster c2 is busy.', 409, 'operation_running');
    await expect(model.terminate('demo', 'c2')).rejects.toThrow('busy');
    expect(model.row('demo', 'c2')!.error).toBe('Cluster c2 is busy.');
    expect(model.isBusy('demo', 'c2')).toBe(false);
    api.operationError = null;
    const done = model.terminate('demo', 'c2');
    await waitFor(() => model.row('demo', 'c2')!.error === null, 1000, 'error cleared');
    api.update('c2', 'terminated', { cluster_state: 'TERMINATED' });
    await done;
  });

  it('retries a failed long poll, then gives up with the message', async () => {
    await model.refresh();
    let finished = false;
    void model.start('demo', 'c1').then(() => (finished = true));
    await waitFor(() => api.pending === 1, 1000, 'long poll');
    api.failures.push(
      new FakeApiError('gone', 0),
      new FakeApiError('gone', 0),
      new FakeApiError('gone', 0)
    );
    api.update('c1', 'starting', { operation: api.operation('start', 'configuring', 2) });
    // the held poll answers; the next three fail, 100 ms apart, and following ends
    await waitFor(() => finished, 1000, 'following given up');
    expect(api.count('getCluster')).toBe(4);
    expect(model.row('demo', 'c1')!.error).toBe('gone');
    expect(model.isFollowing('demo', 'c1')).toBe(false);
  });

  it('takes the status model’s answers for its rows without a request', async () => {
    await model.refresh();
    const seen: number[] = [];
    model.changed.connect(() => seen.push(1));
    const status = api.update('c2', 'unreachable', { cluster_state: 'RUNNING' });
    model.noteStatus(status);
    expect(rowState(model.row('demo', 'c2')!)).toBe('unreachable');
    expect(seen.length).toBe(1);
    // an older answer does not undo a newer one
    model.noteStatus({ ...status, state: 'connected', version: status.version - 1 });
    expect(rowState(model.row('demo', 'c2')!)).toBe('unreachable');
    expect(api.count('getCluster')).toBe(0);
  });

  it('creates the kernelspec and reports its name', async () => {
    await model.refresh();
    const spec = await model.createKernelspec('demo', 'c1');
    expect(spec.kernel_name).toBe('ssh_c1');
    expect(api.kernelspecs).toEqual(['ssh_c1']);
    expect(model.isBusy('demo', 'c1')).toBe(false);
  });

  it('stops following when disposed', async () => {
    await model.refresh();
    void model.start('demo', 'c1');
    await waitFor(() => api.pending === 1, 1000, 'long poll');
    model.dispose();
    await advance(10);
    expect(api.aborted).toBe(1);
    expect(api.pending).toBe(0);
  });
});
