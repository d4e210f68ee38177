/**
 * Unit tests of the reconnect policy on jest's fake clock.
 */
import type { IClusterStatus, KernelState } from '../api';
import {
  HANDSHAKE_GRACE,
  IReconnectSituation,
  LocalKernelStatus,
  RECONNECT_PAUSE,
  ReconnectPolicy,
  wantsReconnect
} from '../reconnect';
import { advance } from './fakeapi';

function cluster(extra: Partial<IClusterStatus> = {}): IClusterStatus {
  return {
    profile: 'demo',
    cluster_id: 'c1',
    cluster_name: 'c1',
    state: 'connected',
    cluster_state: 'RUNNING',
    message: '',
    operation: null,
    version: 1,
    events: [],
    ...extra
  };
}

describe('wantsReconnect', () => {
  const base: IReconnectSituation = {
    localStatus: 'disconnected',
    cluster: cluster(),
    kernelState: 'running'
  };

  it('asks for a reconnect when the browser lost a kernel the server runs', () => {
    for (const localStatus of ['disconnected', 'connecting', 'dead'] as LocalKernelStatus[]) {
      expect(wantsReconnect({ ...base, localStatus })).toBe(true);
    }
    expect(wantsReconnect({ ...base, kernelState: 'running-spark' })).toBe(true);
  });

  it('leaves a connected browser alone', () => {
    for (const localStatus of ['idle', 'busy', 'connected', 'starting'] as LocalKernelStatus[]) {
      expect(wantsReconnect({ ...base, localStatus })).toBe(false);
    }
  });

  it('waits while the server has not got the kernel back or an operation runs', () => {
    for (const kernelState of ['starting', 'disconnected', 'dead', undefined] as Array<
      KernelState | undefined
    >) {
      expect(wantsReconnect({ ...base, kernelState })).toBe(false);
    }
    expect(wantsReconnect({ ...base, cluster: null })).toBe(false);
    expect(wantsReconnect({ ...base, cluster: cluster({ state: 'starting' }) })).toBe(false);
    const restarting = cluster({
      operation: { kind: 'start', step: 'restarting-kernels', step_index: 4, step_count: 5 }
    });
    expect(wantsReconnect({ ...base, cluster: restarting })).toBe(false);
  });
});

describe('ReconnectPolicy', () => {
  let situation: IReconnectSituation;
  let reconnects: number;
  let handshake: boolean | undefined;
  let policy: ReconnectPolicy;

  /** Change the browser's side as the model does: note, then check. */
  const local = (status: LocalKernelStatus) => {
    situation = { ...situation, localStatus: status };
    policy.noteLocalStatus(status);
    policy.check();
  };

  beforeEach(() => {
    jest.useFakeTimers();
    situation = { localStatus: 'idle', cluster: cluster(), kernelState: 'running' };
    reconnects = 0;
    handshake = undefined;
    policy = new ReconnectPolicy({
      situation: () => situation,
      reconnect: () => reconnects++,
      handshaking: () => handshake
    });
  });

  afterEach(() => {
    policy.dispose();
    jest.useRealTimers();
  });

  it('reconnects a disconnected browser at once, then every pause while it stays so', async () => {
    local('disconnected');
    expect(reconnects).toBe(1);
    policy.check(); // a poll answer in between: no extra attempt
    await advance(RECONNECT_PAUSE - 10);
    expect(reconnects).toBe(1);
    await advance(20);
    expect(reconnects).toBe(2);
    local('connected');
    await advance(RECONNECT_PAUSE * 3);
    expect(reconnects).toBe(2);
  });

  it("leaves the browser's own connection attempt its time before reconnecting", async () => {
    local('connecting');
    await advance(RECONNECT_PAUSE / 2);
    local('connected');
    await advance(RECONNECT_PAUSE);
    expect(reconnects).toBe(0);
    // An attempt that goes on (the browser backs off) gets help after the pause.
    local('connecting');
    await advance(RECONNECT_PAUSE / 2);
    expect(reconnects).toBe(0);
    await advance(RECONNECT_PAUSE / 2 + 10);
    expect(reconnects).toBe(1);
  });

  it('does not interrupt a websocket handshake the server is still answering', async () => {
    handshake = true;
    local('connecting');
    await advance(RECONNECT_PAUSE * 2 + 500);
    expect(reconnects).toBe(0);
    // The handshake failed and the browser waits to try again: help within a pause.
    handshake = false;
    await advance(RECONNECT_PAUSE + 10);
    expect(reconnects).toBe(1);
  });

  it('gives up waiting for a handshake after the grace period', async () => {
    handshake = true;
    local('connecting');
    await advance(HANDSHAKE_GRACE - 100);
    expect(reconnects).toBe(0);
    await advance(200);
    expect(reconnects).toBe(1);
  });

  it('an unknown handshake state counts as no handshake', async () => {
    handshake = undefined;
    local('connecting');
    await advance(RECONNECT_PAUSE + 10);
    expect(reconnects).toBe(1);
  });

  it('does nothing while the server says the kernel is not back', async () => {
    situation = { ...situation, kernelState: 'starting' };
    local('disconnected');
    await advance(RECONNECT_PAUSE * 3);
    expect(reconnects).toBe(0);
    situation = { ...situation, kernelState: 'running' };
    policy.check();
    expect(reconnects).toBe(1);
  });

  it('survives a failing reconnect and stops when disposed', async () => {
    const errors = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    const failing = new ReconnectPolicy({
      situation: () => ({ ...situation, localStatus: 'dead' }),
      reconnect: () => {
        reconnects++;
        throw new Error('boom');
      }
    });
    failing.check();
    expect(reconnects).toBe(1);
    expect(errors).toHaveBeenCalledTimes(1);
    await advance(RECONNECT_PAUSE + 10);
    expect(reconnects).toBe(2);
    failing.dispose();
    await advance(RECONNECT_PAUSE * 3);
    expect(reconnects).toBe(2);
    errors.mockRestore();
  });
});
