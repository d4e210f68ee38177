/**
 * The notebook or console in front of the person: its session context, its
 * kernel and the kernel's status, fed into the status model as they change.
 */
import type { JupyterFrontEnd } from '@jupyterlab/application';
import type { ISessionContext } from '@jupyterlab/apputils';
import type { Widget } from '@lumino/widgets';

import {
  ReattachResult,
  reattachKernel,
  websocketHandshaking
} from './jlprivate';
import type { LocalKernelStatus, StatusModel } from './model';

/** The session context of a notebook or console panel, if the widget has one. */
export function sessionContextOf(widget: Widget | null): ISessionContext | null {
  const context = (widget as { sessionContext?: ISessionContext } | null)
    ?.sessionContext;
  return context && typeof context.kernelChanged?.connect === 'function'
    ? context
    : null;
}

export class CurrentSession {
  /** The followed session context, or null (no notebook or console in front). */
  get context(): ISessionContext | null {
    return this._context;
  }

  /** Whether the current kernel's websocket is in its handshake (undefined: unknown). */
  handshaking(): boolean | undefined {
    return websocketHandshaking(this._context?.session?.kernel);
  }

  /** Connect the browser again to the current kernel (see jlprivate.ts). */
  reattach(): ReattachResult {
    return reattachKernel(this._context?.session);
  }

  /**
   * Follow the shell's current widget from now on and feed its kernel into
   * `model`.
   */
  follow(
    shell: JupyterFrontEnd.IShell,
    restored: Promise<unknown>,
    model: StatusModel
  ): void {
    this._model = model;
    if (shell.currentChanged) {
      shell.currentChanged.connect((_, args) => this._follow(args.newValue));
    }
    void restored.then(() => this._follow(shell.currentWidget ?? null));
  }

  private _follow(widget: Widget | null): void {
    const next = sessionContextOf(widget);
    if (next === this._context) {
      return;
    }
    const previous = this._context;
    if (previous) {
      previous.kernelChanged.disconnect(this._onKernelChanged, this);
      previous.statusChanged.disconnect(this._onStatus, this);
      previous.connectionStatusChanged.disconnect(this._onStatus, this);
    }
    this._context = next;
    if (next) {
      next.kernelChanged.connect(this._onKernelChanged, this);
      next.statusChanged.connect(this._onStatus, this);
      next.connectionStatusChanged.connect(this._onStatus, this);
    }
    this._onKernelChanged();
  }

  private _onKernelChanged(): void {
    this._model?.setKernel(this._context?.session?.kernel?.id ?? null);
    this._onStatus();
  }

  private _onStatus(): void {
    const kernel = this._context?.session?.kernel;
    if (!kernel || !this._model) {
      return;
    }
    const connection = kernel.connectionStatus;
    this._model.setLocalStatus(
      (connection === 'connected' ? kernel.status : connection) as LocalKernelStatus
    );
  }

  private _context: ISessionContext | null = null;
  private _model: StatusModel | null = null;
}
