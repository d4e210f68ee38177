/**
 * The user settings of the status item (schema/status.json): defaults and
 * the accepted ranges, in one place.
 */

/** User settings (schema/status.json). */
export interface IStatusSettings {
  /** Offer a restart when the cluster becomes terminated or unreachable. */
  autoPrompt: boolean;
  /** Milliseconds between two status requests (the pause after a long poll answers). */
  refreshInterval: number;
}

export const DEFAULT_SETTINGS: IStatusSettings = {
  autoPrompt: true,
  refreshInterval: 1000
};

/** Smallest accepted refresh interval, so a bad setting cannot flood the server. */
export const MIN_REFRESH_INTERVAL = 250;

/** Clamp user settings into the accepted ranges. */
export function normalizeSettings(settings: Partial<IStatusSettings>): IStatusSettings {
  const interval = Number(settings.refreshInterval ?? DEFAULT_SETTINGS.refreshInterval);
  return {
    autoPrompt: settings.autoPrompt ?? DEFAULT_SETTINGS.autoPrompt,
    refreshInterval: Number.isFinite(interval)
      ? Math.max(MIN_REFRESH_INTERVAL, Math.round(interval))
      : DEFAULT_SETTINGS.refreshInterval
  };
}
