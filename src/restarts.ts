/**
 * Which kernels an operation may restart, in the person's words: kernel ids
 * mapped to the notebook and console paths that use them. No DOM here, so
 * that the texts are unit-tested.
 */
import type { Session } from '@jupyterlab/services';
import type { TranslationBundle } from '@jupyterlab/translation';

import type { StatusModel } from './model';

/** Names a kernel for the person: the notebook or console paths using it. */
export type KernelNamer = (kernelId: string) => string;

/**
 * The paths of the running sessions per kernel id (a kernel may serve a
 * notebook and a console at once).
 */
export function kernelPaths(sessions: Iterable<Session.IModel>): Map<string, string[]> {
  const paths = new Map<string, string[]>();
  for (const session of sessions) {
    const id = session.kernel?.id;
    if (!id) {
      continue;
    }
    const known = paths.get(id) ?? [];
    known.push(session.path || session.name || id);
    paths.set(id, known);
  }
  return paths;
}

/** A namer over the paths of `kernelPaths`, falling back to the kernel id. */
export function makeKernelNamer(paths: () => Map<string, string[]>): KernelNamer {
  return kernelId => {
    const known = paths().get(kernelId);
    return known && known.length ? known.join(', ') : kernelId;
  };
}

/**
 * The text of the reconfigure confirmation: strings are paragraphs, arrays
 * lists of kernels. Running kernels are named with the condition of their
 * restart; nothing is said about restarts when the cluster has no kernels.
 */
export function reconfigureText(
  model: StatusModel,
  trans: TranslationBundle,
  nameKernel: KernelNamer
): Array<string | string[]> {
  const parts: Array<string | string[]> = [
    trans.__(
      'Reconfigure sets up SSH to the driver again and installs the driver libraries it lacks.'
    )
  ];
  const live = model.liveKernels;
  if (live.length > 0) {
    parts.push(
      trans._n(
        'If a library must be installed, this kernel restarts and loses its variables:',
        'If a library must be installed, these kernels restart and lose their variables:',
        live.length
      ),
      live.map(nameKernel),
      trans._n(
        'If nothing needs installing, it keeps running.',
        'If nothing needs installing, they keep running.',
        live.length
      )
    );
  }
  const lost = (model.cluster?.kernels ?? [])
    .filter(k => k.kernel_state === 'disconnected' || k.kernel_state === 'dead')
    .map(k => k.kernel_id);
  if (lost.length > 0) {
    parts.push(
      trans.__('Kernels that lost their connection restart in any case:'),
      lost.map(nameKernel)
    );
  }
  return parts;
}
