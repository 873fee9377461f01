import type { Cache } from './cache/cache.js';
import { CacheManager } from './cache/cache-manager.js';
import type { CacheStore } from './cache/types.js';
import { ClusterError, closedError, invalidArgument } from './errors.js';
import { createMemoryHub, type MemoryHub } from './hub.js';
import { randomId } from './internal/async.js';
import { assertName } from './internal/names.js';
import { LockManager } from './lock/lock-manager.js';
import type { LockAdapter } from './lock/types.js';
import type { Logger } from './logger.js';
import { errorFields, noopLogger } from './logger.js';
import type { Plugin } from './plugin.js';
import { createMemoryPubSub } from './pubsub/memory.js';
import { PubSubManager } from './pubsub/pubsub-manager.js';
import type { PubSubAdapter } from './pubsub/types.js';
import { EventQueue } from './queue/event-queue.js';
import { createMemoryQueue } from './queue/memory.js';
import type { QueueAdapter } from './queue/types.js';
import {
  createSerializer,
  defaultSerializer,
  type Serializer,
  type SerializerOptions,
} from './serializer.js';
import { SyncMessageManager } from './sync/sync-message-manager.js';

export interface ClusterOptions {
  /** App name: the first segment of every key, channel, queue and lock. Instances of one app share it. */
  name: string;
  /** Identifies this instance (node); random by default. */
  instanceId?: string;
  logger?: Logger;
  /**
   * Memory adapters created by default (pub/sub, queue, lock) live on this hub; clusters sharing a hub
   * act as nodes of one cluster in one process. Default: a private hub (a single-node app).
   */
  hub?: MemoryHub;
  /** One serializer (or its options) for every part. */
  serializer?: Serializer | SerializerOptions;
  cache?: {
    defaultStore?: string;
    stores?: Record<string, CacheStore>;
    ttl?: number;
    max?: number;
    /** `cluster` makes `wrap` single-flight across instances through the lock manager. */
    singleFlight?: 'instance' | 'cluster';
  };
  pubSub?: { adapter?: PubSubAdapter };
  sync?: { debounce?: number };
  queue?: {
    adapter?: QueueAdapter;
    defaultTimeout?: number;
    backoff?: { baseMs?: number; maxMs?: number; factor?: number };
    closeTimeout?: number;
  };
  lock?: {
    defaultAdapter?: string;
    adapters?: Record<string, LockAdapter>;
    defaultTtl?: number;
    defaultWaitTimeout?: number;
  };
  plugins?: Plugin[];
}

export type ClusterState = 'idle' | 'starting' | 'started' | 'stopping' | 'stopped';

interface Part {
  name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The application object the seed calls `app`. Parts start in the order lock, cache, pub/sub,
 * sync, queue, and close in reverse; plugins' hooks run after the parts are up and before they
 * close, so plugin code always sees working parts.
 */
export class Cluster implements AsyncDisposable {
  readonly name: string;
  readonly instanceId: string;
  readonly logger: Logger;
  readonly serializer: Serializer;
  readonly lockManager: LockManager;
  readonly cacheManager: CacheManager;
  /** The app's default cache (`app:default:` keys). */
  readonly cache: Cache;
  readonly pubSubManager: PubSubManager;
  readonly syncMessageManager: SyncMessageManager;
  readonly eventQueue: EventQueue;
  readonly #plugins: Plugin[] = [];
  readonly #parts: Part[];
  #state: ClusterState = 'idle';
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;

  constructor(options: ClusterOptions) {
    if (!options || typeof options !== 'object') throw invalidArgument('createCluster expects options');
    assertName(options.name, 'app name');
    this.name = options.name;
    this.instanceId = options.instanceId ?? randomId();
    this.logger = (options.logger ?? noopLogger).child({ app: this.name, instance: this.instanceId });
    this.serializer = isSerializer(options.serializer)
      ? options.serializer
      : options.serializer
        ? createSerializer(options.serializer)
        : defaultSerializer;
    const hub = options.hub ?? createMemoryHub();
    const common = { appName: this.name, logger: this.logger, serializer: this.serializer };

    this.lockManager = new LockManager({
      appName: this.name,
      logger: this.logger,
      hub,
      ...(options.lock?.defaultAdapter !== undefined && { defaultAdapter: options.lock.defaultAdapter }),
      ...(options.lock?.adapters !== undefined && { adapters: options.lock.adapters }),
      ...(options.lock?.defaultTtl !== undefined && { defaultTtl: options.lock.defaultTtl }),
      ...(options.lock?.defaultWaitTimeout !== undefined && {
        defaultWaitTimeout: options.lock.defaultWaitTimeout,
      }),
    });
    this.cacheManager = new CacheManager({
      ...common,
      ...options.cache,
      fillLock: this.lockManager,
    });
    this.cache = this.cacheManager.createCacheSync({ name: 'default' });
    this.pubSubManager = new PubSubManager({
      ...common,
      instanceId: this.instanceId,
      adapter: options.pubSub?.adapter ?? createMemoryPubSub({ hub }),
    });
    this.syncMessageManager = new SyncMessageManager({
      pubSub: this.pubSubManager,
      logger: this.logger,
      serializer: this.serializer,
      ...(options.sync?.debounce !== undefined && { debounce: options.sync.debounce }),
    });
    this.eventQueue = new EventQueue({
      ...common,
      adapter: options.queue?.adapter ?? createMemoryQueue({ hub }),
      ...(options.queue?.defaultTimeout !== undefined && { defaultTimeout: options.queue.defaultTimeout }),
      ...(options.queue?.backoff !== undefined && { backoff: options.queue.backoff }),
      ...(options.queue?.closeTimeout !== undefined && { closeTimeout: options.queue.closeTimeout }),
    });
    this.#parts = [
      { name: 'lock', start: () => this.lockManager.start(), stop: () => this.lockManager.close() },
      { name: 'cache', start: () => this.cacheManager.start(), stop: () => this.cacheManager.close() },
      { name: 'pubsub', start: () => this.pubSubManager.start(), stop: () => this.pubSubManager.close() },
      { name: 'sync', start: async () => {}, stop: () => this.syncMessageManager.stop() },
      { name: 'queue', start: () => this.eventQueue.start(), stop: () => this.eventQueue.close() },
    ];
    for (const plugin of options.plugins ?? []) this.plugin(plugin);
  }

  get state(): ClusterState {
    return this.#state;
  }

  get plugins(): readonly Plugin[] {
    return this.#plugins;
  }

  /** Registers a plugin; before start only. Returns the app for chaining. */
  plugin(plugin: Plugin): this {
    if (this.#state !== 'idle')
      throw new ClusterError('INVALID_ARGUMENT', 'plugins must be registered before start()');
    if (!plugin || typeof plugin.attach !== 'function') throw invalidArgument('plugin must extend Plugin');
    assertName(plugin.name, 'plugin name');
    if (this.#plugins.some((p) => p.name === plugin.name))
      throw invalidArgument(`plugin "${plugin.name}" is registered twice`);
    plugin.attach(this);
    this.#plugins.push(plugin);
    return this;
  }

  getPlugin<P extends Plugin = Plugin>(name: string): P | undefined {
    return this.#plugins.find((p) => p.name === name) as P | undefined;
  }

  /** Starts the parts, then runs the plugins' hooks. Idempotent; a failed start stops what started. */
  start(): Promise<void> {
    if (this.#state === 'stopping' || this.#state === 'stopped')
      return Promise.reject(closedError(`app "${this.name}"`));
    this.#starting ??= this.#start();
    return this.#starting;
  }

  async #start(): Promise<void> {
    this.#state = 'starting';
    const started: Part[] = [];
    try {
      for (const part of this.#parts) {
        await part.start();
        started.push(part);
      }
      for (const plugin of this.#plugins) {
        if (typeof plugin.handleSyncMessage === 'function') {
          await this.syncMessageManager.subscribe(
            plugin.name,
            (message, meta) => plugin.handleSyncMessage!(message, meta),
            {
              onGap: (gap) => plugin.onSyncGap?.(gap),
            },
          );
        }
        await plugin.beforeLoad?.();
      }
      for (const plugin of this.#plugins) await plugin.load?.();
      for (const plugin of this.#plugins) await plugin.afterStart?.();
      this.#state = 'started';
    } catch (error) {
      this.logger.error(errorFields(error), 'app start failed; stopping the parts that started');
      for (const part of started.reverse()) await this.#stopPart(part);
      this.#state = 'stopped';
      throw error;
    }
  }

  /** Runs the plugins' stop hooks, then closes the parts in reverse order. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    if (this.#starting) await this.#starting.catch(() => {});
    if (this.#state === 'stopped') return;
    const wasStarted = this.#state === 'started';
    this.#state = 'stopping';
    const plugins = [...this.#plugins].reverse();
    if (wasStarted) for (const plugin of plugins) await this.#hook(plugin, 'beforeStop');
    for (const part of [...this.#parts].reverse()) await this.#stopPart(part);
    if (wasStarted) for (const plugin of plugins) await this.#hook(plugin, 'afterStop');
    this.#state = 'stopped';
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #stopPart(part: Part): Promise<void> {
    try {
      await part.stop();
    } catch (error) {
      this.logger.error({ part: part.name, ...errorFields(error) }, 'closing a part failed');
    }
  }

  async #hook(plugin: Plugin, hook: 'beforeStop' | 'afterStop'): Promise<void> {
    try {
      await plugin[hook]?.();
    } catch (error) {
      this.logger.error({ plugin: plugin.name, hook, ...errorFields(error) }, 'plugin hook failed');
    }
  }
}

function isSerializer(value: unknown): value is Serializer {
  return typeof (value as Serializer | undefined)?.encode === 'function';
}

/** Builds the application object; see ClusterOptions. */
export function createCluster(options: ClusterOptions): Cluster {
  return new Cluster(options);
}
