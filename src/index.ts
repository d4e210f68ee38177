/**
 * Wiring of the status plugin: the model follows the current notebook or
 * console, the item sits in the status bar, commands go to the palette,
 * settings are followed live, the server's version is checked once.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { DatabricksApi } from './api';
import { CurrentSession } from './current';
import {
  makeRestartPrompt,
  reconfigureCommand,
  restartCluster,
  showDetails
} from './dialogs';
import { IStatusSettings, StatusModel } from './model';
import { addPanel } from './panel';
import { PanelModel } from './panelmodel';
import { kernelPaths, makeKernelNamer } from './restarts';
import { StatusItem } from './statusbar';
import { checkServerVersion } from './version';

const PLUGIN_ID = 'databrickslabs-jupyterlab:status';

export namespace CommandIDs {
  export const restart = 'databrickslabs-jupyterlab:restart-cluster';
  export const reconfigure = 'databrickslabs-jupyterlab:reconfigure-cluster';
  export const details = 'databrickslabs-jupyterlab:show-details';
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
    const current = new CurrentSession();
    let reattachWarned = false;
    const model = new StatusModel({
      api,
      prompt: makeRestartPrompt(trans),
      reconnect: () => {
        if (current.reattach() === 'unsupported' && !reattachWarned) {
          reattachWarned = true;
          Notification.warning(
            trans.__(
              'The kernel runs again on the cluster, but this JupyterLab version cannot reconnect the page to it. Reload the page.'
            ),
            { autoClose: false }
          );
        }
      },
      handshaking: () => current.handshaking()
    });
    current.follow(labShell ?? app.shell, app.restored, model);

    const nameKernel = makeKernelNamer(() =>
      kernelPaths(app.serviceManager.sessions.running())
    );
    const openDetails = () => void showDetails(model, trans, nameKernel);
    const item = new StatusItem(model, trans, openDetails);
    statusBar.registerStatusItem(PLUGIN_ID, {
      item,
      align: 'left',
      rank: 2,
      isActive: () => model.visible,
      activeStateChanged: model.changed
    });

    // The Databricks panel; the status model's answers update its rows.
    const panelModel = new PanelModel({ api });
    model.changed.connect(() => panelModel.noteStatus(model.cluster));
    addPanel(app, panelModel, trans, message =>
      Notification.error(message, { autoClose: false })
    );

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
      execute: () => reconfigureCommand(model, trans, nameKernel)
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

    void checkServerVersion(
      api,
      message => Notification.warning(message, { autoClose: false }),
      (text, ...args) => trans.__(text, ...args)
    );
  }
};

export default plugin;
