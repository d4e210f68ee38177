/**
 * The words of the reconfigure confirmation: which kernels may restart,
 * named by their notebooks.
 */
import type { TranslationBundle } from '@jupyterlab/translation';

import type { IClusterStatus } from '../api';
import type { StatusModel } from '../model';
import { kernelPaths, makeKernelNamer, reconfigureText } from '../restarts';

const format = (text: string, args: unknown[]) =>
  args.reduce<string>((out, arg, i) => out.replace(`%${i + 1}`, String(arg)), text);

const trans = {
  __: (text: string, ...args: unknown[]) => format(text, args),
  _n: (one: string, many: string, n: number, ...args: unknown[]) =>
    format(n === 1 ? one : many, [n, ...args])
} as unknown as TranslationBundle;

function model(kernels: IClusterStatus['kernels']): StatusModel {
  const live = (kernels ?? [])
    .filter(k => ['starting', 'running', 'running-spark'].includes(k.kernel_state))
    .map(k => k.kernel_id);
  return { cluster: { kernels }, liveKernels: live } as unknown as StatusModel;
}

const sessions = [
  { id: 's1', name: 'a.ipynb', path: 'work/a.ipynb', type: 'notebook', kernel: { id: 'k1', name: 'x' } },
  { id: 's2', name: 'Console 1', path: 'console-1', type: 'console', kernel: { id: 'k1', name: 'x' } },
  { id: 's3', name: 'b.ipynb', path: 'work/b.ipynb', type: 'notebook', kernel: { id: 'k2', name: 'x' } },
  { id: 's4', name: 'c.ipynb', path: 'work/c.ipynb', type: 'notebook', kernel: null }
] as any[];

describe('kernel names', () => {
  it('maps kernel ids to the paths of their sessions, else the id', () => {
    const paths = kernelPaths(sessions);
    expect(paths.get('k1')).toEqual(['work/a.ipynb', 'console-1']);
    const name = makeKernelNamer(() => paths);
    expect(name('k2')).toBe('work/b.ipynb');
    expect(name('k1')).toBe('work/a.ipynb, console-1');
    expect(name('k9')).toBe('k9');
  });
});

describe('reconfigureText', () => {
  const name = makeKernelNamer(() => kernelPaths(sessions));

  it('lists the running kernels and says they restart only if a library is installed', () => {
    const parts = reconfigureText(
      model([
        { kernel_id: 'k1', kernel_state: 'running' },
        { kernel_id: 'k2', kernel_state: 'running-spark' }
      ]),
      trans,
      name
    );
    expect(parts[1]).toMatch(/^If a library must be installed, these kernels restart/);
    expect(parts[2]).toEqual(['work/a.ipynb, console-1', 'work/b.ipynb']);
    expect(parts[3]).toMatch(/nothing needs installing, they keep running/);
    expect(parts).toHaveLength(4);
  });

  it('says nothing about restarts without kernels', () => {
    const parts = reconfigureText(model([]), trans, name);
    expect(parts).toHaveLength(1);
    expect(JSON.stringify(parts)).not.toMatch(/restart/);
    expect(reconfigureText(model(undefined), trans, name)).toHaveLength(1);
  });

  it('names lost kernels apart: they restart in any case', () => {
    const parts = reconfigureText(
      model([
        { kernel_id: 'k1', kernel_state: 'running' },
        { kernel_id: 'k7', kernel_state: 'disconnected' }
      ]),
      trans,
      name
    );
    expect(parts[1]).toMatch(/this kernel restarts/);
    expect(parts[2]).toEqual(['work/a.ipynb, console-1']);
    expect(parts[3]).toMatch(/nothing needs installing, it keeps running/);
    expect(parts[4]).toMatch(/lost their connection restart in any case/);
    expect(parts[5]).toEqual(['k7']);
  });
});
