import type { Cluster } from './cluster.js';
import { ClusterError } from './errors.js';
import type { Logger } from './logger.js';
import type { SyncGap, SyncMessageMeta, SyncPublishOptions } from './sync/sync-message-manager.js';

export interface PluginOptions {
  /** Defaults to the class name. Sync messages travel on a channel named after the plugin. */
  name?: string;
}

/**
 * Base class of an application plugin. Hooks run in this order on start: every plugin's
 * `beforeLoad`, then every plugin's `load`, then every plugin's `afterStart`; on stop, in reverse
 * plugin order, `beforeStop` then (after the parts closed) `afterStop`.
 *
 * Define `handleSyncMessage` to receive the sync messages other instances send on this plugin's
 * channel: it is subscribed during `beforeLoad`, and only for plugins that define it.
 */
export abstract class Plugin {
  name: string;
  #app: Cluster | undefined;

  constructor(options: PluginOptions = {}) {
    this.name = options.name ?? this.constructor.name;
  }

  get app(): Cluster {
    if (!this.#app)
      throw new ClusterError('NOT_STARTED', `plugin "${this.name}" is not registered with an app`);
    return this.#app;
  }

  /** @internal called by Cluster.plugin() */
  attach(app: Cluster): void {
    if (this.#app && this.#app !== app) {
      throw new ClusterError('INVALID_ARGUMENT', `plugin "${this.name}" already belongs to another app`);
    }
    this.#app = app;
  }

  get logger(): Logger {
    return this.app.logger.child({ plugin: this.name });
  }

  beforeLoad?(): void | Promise<void>;
  load?(): void | Promise<void>;
  afterStart?(): void | Promise<void>;
  beforeStop?(): void | Promise<void>;
  afterStop?(): void | Promise<void>;

  /** Messages other instances sent with `sendSyncMessage` on this plugin's channel. */
  handleSyncMessage?(message: any, meta: SyncMessageMeta): void | Promise<void>;
  /** Runs when sync messages were missed; reload state from the source of truth here. */
  onSyncGap?(gap: SyncGap): void | Promise<void>;

  /**
   * Sends `message` to this plugin on the other instances; with `{ transaction }` only after it
   * commits (the promise settles at once). Bad messages throw at the call site.
   */
  sendSyncMessage(message: unknown, options?: SyncPublishOptions): Promise<void> {
    return this.app.syncMessageManager.publish(this.name, message, options);
  }
}
