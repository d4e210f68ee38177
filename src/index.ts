/**
 * Wiring of the status plugin: the model follows the current notebook or
 * console, the item sits in the status bar, commands go to the palette,
 * settings are followed live.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, ISessionContext } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { DatabricksApi } from './api';
import {
  makeRestartPrompt,
  reconfigureCluster,
  restartCluster,
  showDetails
} from './dialogs';
import { IStatusSettings, LocalKernelStatus, StatusModel } from './model';
import { StatusItem } from './statusbar';

const PLUGIN_ID = 'databrickslabs-jupyterlab:status';

export namespace CommandIDs {
  export const restart = 'databrickslabs-jupyterlab:restart-cluster';
  export const reconfigure = 'databrickslabs-jupyterlab:reconfigure-cluster';
  export const details = 'databrickslabs-jupyterlab:show-details';
}

/** The session context of a notebook or console panel, if the widget has one. */
function sessionContextOf(widget: Widget | null): ISessionContext | null {
  const context = (widget as { sessionContext?: ISessionContext } | null)
    ?.sessionContext;
  return context && typeof context.kernelChanged?.connect === 'function'
    ? context
    : null;
}

/**
 * Whether the session's kernel connection has a websocket still opening.
 * `KernelConnection` keeps its socket in a private field; where it is not
 * found (another JupyterLab version) the answer is unknown.
 */
function handshaking(context: ISessionContext | null): boolean | undefined {
  const kernel = context?.session?.kernel as unknown as { _ws?: unknown } | null | undefined;
  if (!kernel || !('_ws' in kernel)) {
    return undefined;
  }
  const ws = kernel._ws as { readyState?: number } | null;
  return ws !== null && ws?.readyState === WebSocket.CONNECTING;
}

/**
 * Connect the browser again to the kernel of a session after the server
 * restarted it on a restarted cluster. A connection the browser gave up as
 * dead cannot reconnect, so the session gets a new one for the same kernel.
 */
function reattach(context: ISessionContext | null): void {
  const session = context?.session;
  const kernel = session?.kernel;
  if (!session || !kernel) {
    return;
  }
  if (!kernel.isDisposed && kernel.status !== 'dead') {
    void kernel.reconnect().catch(reason => {
      console.warn('databrickslabs-jupyterlab: kernel reconnect failed', reason);
    });
    return;
  }
  // No public API does this: `changeKernel({ id })` with the same id gets the
  // same session model back, and a model naming the current kernel keeps the
  // disposed connection. `update` (public on the `SessionConnection` class,
  // not on the `ISessionConnection` interface) is how the session manager
  // applies server models; a kernel model with another id (here: none, then
  // the same) sets up a new connection.
  const update = (session as unknown as { update?: (model: unknown) => void }).update;
  if (typeof update !== 'function') {
    return;
  }
  const model = session.model;
  update.call(session, { ...model, kernel: null });
  update.call(session, { ...model, kernel: { id: kernel.id, name: kernel.name } });
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Status bar item, restart dialog and commands for kernels on Databricks clusters.',
  autoStart: true,
  requires: [IStatusBar],
  optional: [ILabShell, ICommandPalette, ISettingRegistry, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar,
    labShell: ILabShell | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load('databrickslabs_jupyterlab');
    const api = new DatabricksApi(app.serviceManager.serverSettings);
    // Follow the current notebook or console, its kernel and its restarts.
    let context: ISessionContext | null = null;
    const model = new StatusModel({
      api,
      prompt: makeRestartPrompt(trans),
      reconnect: () => reattach(context),
      handshaking: () => handshaking(context)
    });

    const onKernelChanged = () => {
      model.setKernel(context?.session?.kernel?.id ?? null);
      onStatus();
    };
    const onStatus = () => {
      const kernel = context?.session?.kernel;
      if (!kernel) {
        return;
      }
      const connection = kernel.connectionStatus;
      model.setLocalStatus(
        (connection === 'connected' ? kernel.status : connection) as LocalKernelStatus
      );
    };
    const follow = (widget: Widget | null) => {
      const next = sessionContextOf(widget);
      if (next === context) {
        return;
      }
      if (context) {
        context.kernelChanged.disconnect(onKernelChanged);
        context.statusChanged.disconnect(onStatus);
        context.connectionStatusChanged.disconnect(onStatus);
      }
      context = next;
      if (context) {
        context.kernelChanged.connect(onKernelChanged);
        context.statusChanged.connect(onStatus);
        context.connectionStatusChanged.connect(onStatus);
      }
      onKernelChanged();
    };
    const shell = labShell ?? app.shell;
    if (shell.currentChanged) {
      shell.currentChanged.connect((_, args) => follow(args.newValue));
    }
    void app.restored.then(() => follow(shell.currentWidget ?? null));

    const openDetails = () => void showDetails(model, trans);
    const item = new StatusItem(model, trans, openDetails);
    statusBar.registerStatusItem(PLUGIN_ID, {
      item,
      align: 'left',
      rank: 2,
      isActive: () => model.visible,
      activeStateChanged: model.changed
    });

    app.commands.addCommand(CommandIDs.restart, {
      label: trans.__('Restart Databricks Cluster'),
      caption: trans.__('Start the cluster of the current kernel and reconnect'),
      isEnabled: () => model.canRestart,
      execute: () => restartCluster(model, trans)
    });
    app.commands.addCommand(CommandIDs.reconfigure, {
      label: trans.__('Reconfigure Databricks Cluster'),
      caption: trans.__('Set up SSH and the driver libraries again'),
      isEnabled: () => model.canReconfigure,
      execute: () => reconfigureCluster(model, trans)
    });
    app.commands.addCommand(CommandIDs.details, {
      label: trans.__('Show Databricks Cluster Details'),
      isEnabled: () => model.visible,
      execute: openDetails
    });
    model.changed.connect(() => app.commands.notifyCommandChanged());
    if (palette) {
      const category = trans.__('Databricks');
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category });
      }
    }

    if (settingRegistry) {
      const apply = (settings: ISettingRegistry.ISettings) => {
        model.updateSettings(settings.composite as Partial<IStatusSettings>);
      };
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          apply(settings);
          settings.changed.connect(apply);
        })
        .catch(reason => {
          console.error('databrickslabs-jupyterlab: cannot load settings', reason);
        });
    }
  }
};

export default plugin;
