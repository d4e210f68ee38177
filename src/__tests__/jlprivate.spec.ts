/**
 * The private JupyterLab APIs we use, with fakes shaped like JupyterLab 4's
 * classes (present) and like a release without them (absent).
 */
import type { Session } from '@jupyterlab/services';

import { canReattach, reattachKernel, websocketHandshaking } from '../jlprivate';

interface IFakeKernel {
  id: string;
  name: string;
  status: string;
  isDisposed: boolean;
  reconnect: jest.Mock;
  _ws?: { readyState: number } | null;
}

function kernel(extra: Partial<IFakeKernel> = {}): IFakeKernel {
  return {
    id: 'k1',
    name: 'ssh-k',
    status: 'idle',
    isDisposed: false,
    reconnect: jest.fn(() => Promise.resolve()),
    ...extra
  };
}

/** A session connection with (or without) `SessionConnection.update`. */
function session(k: IFakeKernel | null, withUpdate: boolean) {
  const models: unknown[] = [];
  const fake: any = {
    kernel: k,
    model: { id: 's1', name: 'n.ipynb', path: 'n.ipynb', type: 'notebook', kernel: k && { id: k.id, name: k.name } }
  };
  if (withUpdate) {
    fake.update = function (this: unknown, model: unknown) {
      expect(this).toBe(fake);
      models.push(model);
    };
  }
  return { session: fake as Session.ISessionConnection, models };
}

describe('websocketHandshaking', () => {
  it('reads the socket state where KernelConnection keeps it', () => {
    expect(websocketHandshaking(kernel({ _ws: { readyState: 0 } }) as any)).toBe(true);
    expect(websocketHandshaking(kernel({ _ws: { readyState: 1 } }) as any)).toBe(false);
    expect(websocketHandshaking(kernel({ _ws: null }) as any)).toBe(false);
  });

  it('answers unknown when the private field is missing', () => {
    expect(websocketHandshaking(kernel() as any)).toBeUndefined();
    expect(websocketHandshaking(kernel({ _ws: {} as any }) as any)).toBeUndefined();
    expect(websocketHandshaking(null)).toBeUndefined();
  });
});

describe('reattachKernel', () => {
  it('reconnects a live connection through the public API', () => {
    const k = kernel({ status: 'unknown' });
    const { session: s, models } = session(k, true);
    expect(reattachKernel(s)).toBe('reconnecting');
    expect(k.reconnect).toHaveBeenCalledTimes(1);
    expect(models).toHaveLength(0);
  });

  it('gives a dead connection a new one for the same kernel when update exists', () => {
    const k = kernel({ status: 'dead' });
    const { session: s, models } = session(k, true);
    expect(canReattach(s)).toBe(true);
    expect(reattachKernel(s)).toBe('reattached');
    expect(models).toEqual([
      expect.objectContaining({ id: 's1', kernel: null }),
      expect.objectContaining({ id: 's1', kernel: { id: 'k1', name: 'ssh-k' } })
    ]);
    expect(k.reconnect).not.toHaveBeenCalled();
  });

  it('says unsupported for a dead connection when update is missing', () => {
    const k = kernel({ isDisposed: true });
    const { session: s } = session(k, false);
    expect(canReattach(s)).toBe(false);
    expect(reattachKernel(s)).toBe('unsupported');
    expect(k.reconnect).not.toHaveBeenCalled();
  });

  it('does nothing without a session or a kernel', () => {
    expect(reattachKernel(null)).toBe('nothing');
    expect(reattachKernel(session(null, true).session)).toBe('nothing');
  });
});
