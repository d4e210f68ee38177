/**
 * Unit tests of the status model against the fake API, on jest's fake clock:
 * `advance(ms)` and `waitFor` move time, nothing sleeps, so the timings
 * asserted here hold on a loaded machine.
 */
import type { IClusterStatus } from '../api';
import { MIN_REFRESH_INTERVAL, StatusModel } from '../model';
import { RECONNECT_PAUSE } from '../reconnect';
import { advance, FakeApi, FakeApiError, waitFor } from './fakeapi';

/** A prompt that records its calls and stays open until `close()`. */
class Prompter {
  calls: IClusterStatus[] = [];
  private _resolvers: Array<() => void> = [];
  readonly fn = (_model: StatusModel, status: IClusterStatus): Promise<void> => {
    this.calls.push(status);
    return new Promise<void>(resolve => this._resolvers.push(resolve));
  };
  close(): void {
    this._resolvers.shift()?.();
  }
  closeAll(): void {
    while (this._resolvers.length) {
      this.close();
    }
  }
}

describe('StatusModel', () => {
  let api: FakeApi;
  let prompter: Prompter;
  let model: StatusModel;

  const make = (options: Partial<StatusModel.IOptions> = {}) => {
    model = new StatusModel({
      api,
      prompt: prompter.fn,
      longPollWait: 5,
      settings: { refreshInterval: MIN_REFRESH_INTERVAL },
      ...options
    });
    return model;
  };

  beforeEach(() => {
    jest.useFakeTimers();
    api = new FakeApi();
    prompter = new Prompter();
    api.addCluster('c1', 'connected');
    api.addKernel('k1', 'c1');
  });

  afterEach(() => {
    prompter.closeAll();
    model?.dispose();
    api.dispose();
    jest.clearAllTimers();
    jest.useRealTimers();
  });

  describe('finding the cluster', () => {
    it('stays hidden and idle without a kernel', async () => {
      make();
      await advance(600);
      expect(model.visible).toBe(false);
      expect(model.displayState).toBeNull();
      expect(api.calls).toHaveLength(0);
    });

    it('looks the kernel up, shows the cluster and long-polls with wait/since', async () => {
      make();
      model.setKernel('k1');
      await waitFor(() => model.visible, 2000, 'visible');
      expect(model.displayState).toBe('connected');
      expect(model.cluster?.cluster_name).toBe('name-c1');
      await waitFor(() => api.count('getCluster') === 1, 2000, 'long poll');
      expect(api.calls[0]).toMatchObject({ method: 'getKernel', args: ['k1'] });
      expect(api.calls[1].args).toEqual(['demo', 'c1', { wait: 5, since: 1 }]);
      expect(api.pending).toBe(1);
    });

    it('hides itself for a kernel that is not a Databricks kernel and stops asking', async () => {
      make();
      model.setKernel('other');
      await waitFor(() => api.count('getKernel') === 1, 2000, 'lookup');
      await advance(800);
      expect(model.visible).toBe(false);
      expect(api.count('getKernel')).toBe(1);
      expect(api.count('getCluster')).toBe(0);
    });

    it('hides itself when the server extension is missing (plain 404)', async () => {
      api.failures.push(new FakeApiError('404 Not Found', 404));
      make();
      model.setKernel('k1');
      await waitFor(() => api.count('getKernel') === 1, 2000, 'lookup');
      await advance(500);
      expect(model.visible).toBe(false);
      expect(api.count('getKernel')).toBe(1);
    });

    it('follows a switch to another kernel at once and drops the old long poll', async () => {
      api.addCluster('c2', 'terminated');
      api.addKernel('k2', 'c2');
      make({ settings: { autoPrompt: false, refreshInterval: 5000 } });
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll on c1');
      const started = Date.now();
      model.setKernel('k2');
      expect(model.visible).toBe(false); // nothing stale is shown meanwhile
      await waitFor(() => model.cluster?.cluster_id === 'c2', 2000, 'c2');
      expect(Date.now() - started).toBeLessThan(1000);
      expect(model.displayState).toBe('terminated');
      expect(api.aborted).toBeGreaterThanOrEqual(1);
      await waitFor(() => api.pending === 1, 2000, 'long poll on c2');
      const last = api.calls[api.calls.length - 1];
      expect(last.args.slice(0, 2)).toEqual(['demo', 'c2']);
    });

    it('switching to a widget without kernel hides the item and stops requests', async () => {
      make();
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      model.setKernel(null);
      expect(model.visible).toBe(false);
      await waitFor(() => api.pending === 0, 1000, 'abort');
      const before = api.calls.length;
      await advance(600);
      expect(api.calls.length).toBe(before);
    });
  });

  describe('state transitions', () => {
    it('shows every step of a start operation as the server reports it', async () => {
      make({ settings: { autoPrompt: false, refreshInterval: MIN_REFRESH_INTERVAL } });
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      const seen: string[] = [];
      model.changed.connect(() => {
        const state = model.displayState;
        const detail = model.cluster?.operation?.detail;
        const label = `${state}${detail ? ':' + detail : ''}`;
        if (state && seen[seen.length - 1] !== label) {
          seen.push(label);
        }
      });
      const steps: Array<[IClusterStatus['state'], Partial<IClusterStatus>]> = [
        ['terminating', { cluster_state: 'TERMINATING' }],
        ['terminated', { cluster_state: 'TERMINATED' }],
        ['starting', { cluster_state: 'PENDING', operation: api.operation('start', 'starting', 1) }],
        ['configuring', { cluster_state: 'RUNNING', operation: api.operation('start', 'configuring', 2) }],
        ['installing', { operation: api.operation('start', 'installing', 3, 'pip: ipykernel 7.4.0') }],
        // The server reports the cluster connected while its kernels restart:
        // the item shows the step, not "connected".
        ['connected', { operation: api.operation('start', 'restarting-kernels', 4, 'kernel restarted') }],
        ['connected', { operation: null }]
      ];
      for (const [state, extra] of steps) {
        const sent = Date.now();
        const version = api.update('c1', state, extra).version;
        await waitFor(() => model.cluster?.version === version, 2000, state);
        // A pending long poll answers at once: far below the 2 s budget.
        expect(Date.now() - sent).toBeLessThan(600);
      }
      expect(seen).toEqual([
        'terminating',
        'terminated',
        'starting',
        'configuring',
        'installing:pip: ipykernel 7.4.0',
        'restarting-kernels:kernel restarted',
        'connected'
      ]);
    });

    it('shows a change that happens between two long polls within the refresh interval', async () => {
      make({ settings: { autoPrompt: false, refreshInterval: 1000 } });
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      api.update('c1', 'terminating');
      await waitFor(() => model.displayState === 'terminating', 2000, 'terminating');
      // The next long poll is not sent yet: change the state in the gap.
      const sent = Date.now();
      api.update('c1', 'terminated');
      await waitFor(() => model.displayState === 'terminated', 2000, 'terminated');
      expect(Date.now() - sent).toBeLessThan(2000);
      // The next request asked for versions after the last one seen.
      const polls = api.calls.filter(c => c.method === 'getCluster');
      expect(polls[polls.length - 1].args[2].since).toBeGreaterThanOrEqual(2);
    });

    it('a steady state costs one request per long-poll period', async () => {
      make({ longPollWait: 0.5 });
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      await advance(2000);
      // 2 s = at most 3 periods of 0.5 s wait + 0.25 s pause, plus the first.
      expect(api.count('getCluster')).toBeLessThanOrEqual(4);
      expect(api.count('getKernel')).toBe(1);
    });

    it('refines connected by the kernel: running with Spark, kernel disconnected', async () => {
      make();
      model.setKernel('k1');
      await waitFor(() => model.displayState === 'connected', 2000, 'connected');
      model.setLocalStatus('idle');
      model.setLocalStatus('busy');
      api.setKernelState('k1', 'running-spark');
      model.setLocalStatus('idle'); // end of an execution: ask again
      await waitFor(() => model.displayState === 'running-spark', 2000, 'spark');
      api.setKernelState('k1', 'disconnected');
      model.setLocalStatus('restarting');
      await waitFor(() => model.displayState === 'kernel-disconnected', 2000, 'disconnected');
      api.setKernelState('k1', 'running');
      model.setLocalStatus('idle');
      await waitFor(() => model.displayState === 'connected', 2000, 'connected again');
      model.setLocalStatus('dead');
      expect(model.displayState).toBe('kernel-disconnected');
    });

    it('reconnects a disconnected browser once the server reports the kernel back', async () => {
      let reconnects = 0;
      make({ reconnect: () => reconnects++, settings: { autoPrompt: false } });
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      model.setLocalStatus('idle');
      api.setKernelState('k1', 'dead');
      api.update('c1', 'terminated', { kernels: [{ kernel_id: 'k1', kernel_state: 'dead' }] });
      await waitFor(() => model.displayState === 'terminated', 2000, 'terminated');
      model.setLocalStatus('disconnected');
      await advance(400);
      api.update('c1', 'starting', { operation: api.operation('start', 'starting', 1) });
      api.update('c1', 'connected', {
        operation: api.operation('start', 'restarting-kernels', 4),
        kernels: [{ kernel_id: 'k1', kernel_state: 'starting' }]
      });
      await waitFor(() => model.cluster?.operation?.step === 'restarting-kernels', 2000, 'restarting');
      expect(reconnects).toBe(0);
      api.setKernelState('k1', 'running');
      api.update('c1', 'connected', {
        operation: null,
        kernels: [{ kernel_id: 'k1', kernel_state: 'running' }]
      });
      await waitFor(() => reconnects === 1, 2000, 'reconnect');
      expect(model.displayState).toBe('kernel-disconnected');
      model.refresh();
      await advance(300);
      expect(reconnects).toBe(1); // not on every poll
      // Still disconnected a while later: one more attempt.
      await waitFor(() => reconnects === 2, RECONNECT_PAUSE + 1000, 'retry');
      model.setLocalStatus('connected');
      model.setLocalStatus('idle');
      expect(model.displayState).toBe('connected');
      await advance(RECONNECT_PAUSE + 200);
      expect(reconnects).toBe(2); // connected again: no more attempts
    });

    it('takes the kernel state from the cluster status when the server lists it', async () => {
      make();
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      const kernelCalls = api.count('getKernel');
      api.update('c1', 'connected', { kernels: [{ kernel_id: 'k1', kernel_state: 'running-spark' }] });
      await waitFor(() => model.displayState === 'running-spark', 2000, 'spark');
      expect(api.count('getKernel')).toBeLessThanOrEqual(kernelCalls + 1);
    });

    it('the kernel state only refines a connected cluster', async () => {
      api.setKernelState('k1', 'disconnected');
      api.update('c1', 'unreachable');
      make({ settings: { autoPrompt: false } });
      model.setKernel('k1');
      await waitFor(() => model.visible, 2000, 'visible');
      expect(model.displayState).toBe('unreachable');
    });
  });

  describe('the dialog-once rule', () => {
    it('prompts once when the cluster becomes terminated, however often it is polled', async () => {
      make();
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      api.update('c1', 'terminating');
      api.update('c1', 'terminated');
      await waitFor(() => prompter.calls.length === 1, 2000, 'prompt');
      expect(prompter.calls[0].state).toBe('terminated');
      expect(model.dialogOpen).toBe(true);
      prompter.close();
      await waitFor(() => !model.dialogOpen, 1000, 'closed');
      // More news about the same terminated cluster: no second dialog.
      api.update('c1', 'terminated', { message: 'still terminated' });
      model.refresh();
      await waitFor(() => model.cluster?.message === 'still terminated', 2000, 'update');
      await advance(300);
      expect(prompter.calls).toHaveLength(1);
    });

    it('prompts again for a new transition after the cluster was up', async () => {
      make();
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      api.update('c1', 'unreachable');
      await waitFor(() => prompter.calls.length === 1, 2000, 'first prompt');
      prompter.close();
      api.update('c1', 'starting', { operation: api.operation('start', 'starting', 1) });
      api.update('c1', 'connected', { operation: null });
      await waitFor(() => model.displayState === 'connected', 2000, 'connected');
      api.update('c1', 'unreachable');
      await waitFor(() => prompter.calls.length === 2, 2000, 'second prompt');
    });

    it('never stacks dialogs: a transition while a dialog is open is not shown later', async () => {
      make();
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      api.update('c1', 'unreachable');
      await waitFor(() => prompter.calls.length === 1, 2000, 'first prompt');
      // Still open: the cluster moves on to terminated.
      api.update('c1', 'terminated');
      await waitFor(() => model.displayState === 'terminated', 2000, 'terminated');
      await advance(200);
      expect(prompter.calls).toHaveLength(1);
      prompter.close();
      await waitFor(() => !model.dialogOpen, 1000, 'closed');
      model.refresh();
      await advance(400);
      expect(prompter.calls).toHaveLength(1);
    });

    it('does not prompt again when another tab shows the same cluster', async () => {
      api.addKernel('k1b', 'c1');
      api.addKernel('plain', 'c1');
      api.kernels.delete('plain');
      make();
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      api.update('c1', 'terminated');
      await waitFor(() => prompter.calls.length === 1, 2000, 'prompt');
      prompter.close();
      model.setKernel('plain');
      await waitFor(() => api.count('getKernel') === 2, 2000, 'lookup plain');
      model.setKernel('k1b');
      await waitFor(() => model.cluster !== null && model.kernelId === 'k1b', 2000, 'k1b');
      await advance(300);
      expect(prompter.calls).toHaveLength(1);
    });

    it('a details dialog blocks the prompt (one dialog at a time)', async () => {
      make();
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      let closeDetails: () => void = () => undefined;
      const details = model.runDialog(
        () => new Promise<string>(resolve => (closeDetails = () => resolve('closed')))
      );
      expect(await model.runDialog(async () => 'second')).toBeUndefined();
      api.update('c1', 'terminated');
      await waitFor(() => model.displayState === 'terminated', 2000, 'terminated');
      await advance(100);
      expect(prompter.calls).toHaveLength(0);
      closeDetails();
      expect(await details).toBe('closed');
      expect(model.dialogOpen).toBe(false);
    });

    it('follows the autoPrompt setting live', async () => {
      make({ settings: { autoPrompt: false, refreshInterval: MIN_REFRESH_INTERVAL } });
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      api.update('c1', 'terminated');
      await waitFor(() => model.displayState === 'terminated', 2000, 'terminated');
      await advance(100);
      expect(prompter.calls).toHaveLength(0);
      model.updateSettings({ autoPrompt: true });
      api.update('c1', 'starting', { operation: api.operation('start', 'starting', 1) });
      api.update('c1', 'connected', { operation: null });
      await waitFor(() => model.displayState === 'connected', 2000, 'connected');
      api.update('c1', 'terminated');
      await waitFor(() => prompter.calls.length === 1, 2000, 'prompt after enabling');
    });
  });

  describe('actions', () => {
    it('restart of a terminated cluster names the lost kernel and shows the operation at once', async () => {
      api.update('c1', 'terminated', { cluster_state: 'TERMINATED' });
      make({ settings: { autoPrompt: false } });
      model.setKernel('k1');
      await waitFor(() => model.displayState === 'terminated', 2000, 'terminated');
      expect(model.canRestart).toBe(true);
      expect(model.canReconfigure).toBe(false);
      expect(model.restartNamesKernel).toBe(true);
      const answer = await model.restart();
      expect(api.calls.find(c => c.method === 'startCluster')?.args).toEqual([
        'demo',
        'c1',
        { kernelId: 'k1', restartKernels: 'never' }
      ]);
      expect(answer.started).toBe(true);
      expect(answer.status.operation?.kind).toBe('start');
      expect(model.displayState).toBe('starting');
      expect(model.canRestart).toBe(false); // an operation runs
      await waitFor(() => api.pending === 1, 2000, 'long poll again');
    });

    it('restart of a cluster in error does not name a kernel that still runs', async () => {
      api.update('c1', 'error', { kernels: [{ kernel_id: 'k1', kernel_state: 'running' }] });
      make({ settings: { autoPrompt: false } });
      model.setKernel('k1');
      await waitFor(() => model.displayState === 'error', 2000, 'error');
      expect(model.restartNamesKernel).toBe(false);
      await model.restart();
      expect(api.calls.find(c => c.method === 'startCluster')?.args[2]).toEqual({
        kernelId: null,
        restartKernels: 'never'
      });
    });

    it('a start answered with 200 (nothing to do) leaves the cluster connected', async () => {
      make({ settings: { autoPrompt: false } });
      model.setKernel('k1');
      await waitFor(() => model.displayState === 'connected', 2000, 'connected');
      const version = model.cluster!.version;
      const answer = await model.restart();
      expect(answer.started).toBe(false);
      expect(model.busy).toBe(false);
      expect(model.cluster?.version).toBe(version);
      expect(model.displayState).toBe('connected');
      await waitFor(() => api.pending === 1, 2000, 'long poll again');
    });

    it('reconfigure sends the restart choice and no kernel id', async () => {
      make();
      model.setKernel('k1');
      await waitFor(() => model.displayState === 'connected', 2000, 'connected');
      expect(model.canReconfigure).toBe(true);
      const answer = await model.reconfigure('if-installed');
      expect(answer.started).toBe(true);
      expect(api.calls.find(c => c.method === 'reconfigureCluster')?.args).toEqual([
        'demo',
        'c1',
        { kernelId: null, restartKernels: 'if-installed' }
      ]);
      expect(model.displayState).toBe('configuring');
    });

    it('reconfigure reports the server message on failure', async () => {
      make();
      model.setKernel('k1');
      await waitFor(() => model.displayState === 'connected', 2000, 'connected');
      api.operationError = new FakeApiError('Cluster c1 is not running.', 409, 'cluster_not_running');
      await expect(model.reconfigure('if-installed')).rejects.toThrow('Cluster c1 is not running.');
      expect(model.busy).toBe(false);
    });

    it('lists the live kernels of the cluster (the ones a reconfigure may restart)', async () => {
      api.update('c1', 'connected', {
        kernels: [
          { kernel_id: 'k1', kernel_state: 'running' },
          { kernel_id: 'k2', kernel_state: 'running-spark' },
          { kernel_id: 'k3', kernel_state: 'disconnected' },
          { kernel_id: 'k4', kernel_state: 'dead' }
        ]
      });
      make();
      model.setKernel('k1');
      await waitFor(() => model.visible, 2000, 'visible');
      expect(model.liveKernels).toEqual(['k1', 'k2']);
    });
  });

  describe('operations on screen', () => {
    it.each([
      ['starting', 'terminated', 1, 'starting'],
      ['configuring', 'configuring', 2, 'configuring'],
      ['installing', 'installing', 3, 'installing'],
      ['restarting-kernels', 'connected', 4, 'restarting-kernels']
    ] as const)(
      'shows step %s (cluster %s, step %i/5) as %s, never plain connected',
      async (step, clusterState, index, shown) => {
        make({ settings: { autoPrompt: false } });
        model.setKernel('k1');
        await waitFor(() => api.pending === 1, 2000, 'long poll');
        api.update('c1', clusterState, { operation: api.operation('reconfigure', step, index) });
        await waitFor(() => model.cluster?.operation?.step === step, 2000, step);
        expect(model.displayState).toBe(shown);
        // `done` lingers: the cluster's own state shows again.
        api.update('c1', 'connected', { operation: api.operation('reconfigure', 'done', 5) });
        await waitFor(() => model.cluster?.operation?.step === 'done', 2000, 'done');
        expect(model.displayState).toBe('connected');
      }
    );
  });

  describe('backoff', () => {
    it('backs off while the server fails and recovers at the normal pace', async () => {
      make({ maxBackoff: 1200 });
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      const intervals: number[] = [];
      model.poll.ticked.connect((_, state) => {
        if (state.phase === 'rejected') {
          intervals.push(state.interval);
        }
      });
      for (let i = 0; i < 6; i++) {
        api.failures.push(new FakeApiError('Service Unavailable', 503, 'workspace_unavailable'));
      }
      api.update('c1', 'connected', { message: 'wake up' });
      await waitFor(() => intervals.length >= 5, 8000, 'five failures');
      expect(model.failure).toBe('Service Unavailable');
      expect(intervals.every(i => i >= MIN_REFRESH_INTERVAL && i <= 1200)).toBe(true);
      // The pause grows from the base interval up to the maximum.
      expect(Math.max(...intervals)).toBeGreaterThan(MIN_REFRESH_INTERVAL);
      const failedCalls = api.calls.filter(c => c.at >= api.calls[2].at).length;
      // Without backoff, 5 failures at 250 ms would take ~1.25 s; with it, longer.
      const span = api.calls[api.calls.length - 1].at - api.calls[2].at;
      expect(span).toBeGreaterThan(5 * MIN_REFRESH_INTERVAL);
      expect(failedCalls).toBeGreaterThanOrEqual(5);
      await waitFor(() => model.poll.state.phase === 'reconnected' || api.pending === 1, 8000, 'recovery');
      await waitFor(() => model.failure === null, 3000, 'failure cleared');
      expect(model.poll.frequency.interval).toBe(MIN_REFRESH_INTERVAL);
    });

    it('shows no item when the server fails before the first answer, then recovers', async () => {
      api.failures.push(new FakeApiError('Bad Gateway', 502));
      make();
      model.setKernel('k1');
      await waitFor(() => api.count('getKernel') === 1, 2000, 'first lookup');
      expect(model.visible).toBe(false);
      await waitFor(() => model.visible, 3000, 'visible after retry');
      expect(model.displayState).toBe('connected');
    });
  });

  describe('settings', () => {
    it('applies a new refresh interval to the poll at once and clamps bad values', () => {
      make();
      expect(model.poll.frequency.interval).toBe(MIN_REFRESH_INTERVAL);
      model.updateSettings({ refreshInterval: 5000 });
      expect(model.poll.frequency.interval).toBe(5000);
      expect(model.settings.refreshInterval).toBe(5000);
      model.updateSettings({ refreshInterval: 10 });
      expect(model.poll.frequency.interval).toBe(MIN_REFRESH_INTERVAL);
      model.updateSettings({ refreshInterval: Number.NaN });
      expect(model.poll.frequency.interval).toBe(1000);
      expect(model.poll.frequency.backoff).toBe(true);
    });

    it('emits changed when settings change', () => {
      make();
      let changes = 0;
      model.changed.connect(() => changes++);
      model.updateSettings({ autoPrompt: false });
      expect(changes).toBe(1);
      expect(model.settings.autoPrompt).toBe(false);
    });

    it('stops everything when disposed', async () => {
      make();
      model.setKernel('k1');
      await waitFor(() => api.pending === 1, 2000, 'long poll');
      model.dispose();
      await waitFor(() => api.pending === 0, 1000, 'aborted');
      const before = api.calls.length;
      await advance(500);
      expect(api.calls.length).toBe(before);
      expect(model.poll.isDisposed).toBe(true);
    });
  });
});
