import { ClusterError, closedError, invalidArgument } from '../errors.js';
import { assertName, assertOptionalMs, segment } from '../internal/names.js';
import type { Logger } from '../logger.js';
import { errorFields, noopLogger } from '../logger.js';
import type { Serializer } from '../serializer.js';
import { defaultSerializer } from '../serializer.js';
import { Cache, type FillLock } from './cache.js';
import { createMemoryCacheStore } from './memory.js';
import type { CacheStore } from './types.js';

export interface CacheManagerOptions {
  appName: string;
  /** Store used when `createCache` names none. Default `memory`. */
  defaultStore?: string;
  /** Named stores shared by the caches that use them. `memory` is built in. */
  stores?: Record<string, CacheStore>;
  /** Default ttl in ms for every cache; undefined = no expiry. */
  ttl?: number;
  /** Default LRU size of built-in memory caches. */
  max?: number;
  /** Default single-flight scope of `wrap` (see Cache). */
  singleFlight?: 'instance' | 'cluster';
  fillLock?: FillLock;
  fillTimeout?: number;
  serializer?: Serializer;
  logger?: Logger;
}

export interface CreateCacheOptions {
  name: string;
  /** Key segment after the app name; defaults to `name`. */
  prefix?: string;
  /** Named store; defaults to the manager's default store. */
  store?: string;
  ttl?: number;
  /** LRU size, for the built-in memory store. */
  max?: number;
  singleFlight?: 'instance' | 'cluster';
}

export const MEMORY_STORE = 'memory';

/**
 * Builds named caches over named stores. A built-in `memory` cache gets its own LRU (one process,
 * one node); other stores are shared instances whose keys are kept apart by `app:prefix:`.
 */
export class CacheManager {
  readonly appName: string;
  readonly defaultStore: string;
  readonly #stores = new Map<string, CacheStore>();
  readonly #privateStores = new Set<CacheStore>();
  readonly #caches = new Map<string, Cache>();
  readonly #prefixes = new Map<string, string>();
  readonly #o: CacheManagerOptions;
  readonly #serializer: Serializer;
  readonly #logger: Logger;
  #state: 'idle' | 'started' | 'closed' = 'idle';
  #starting: Promise<void> | undefined;

  constructor(options: CacheManagerOptions) {
    assertName(options.appName, 'app name');
    assertOptionalMs(options.ttl, 'cache ttl', true);
    this.#o = options;
    this.appName = options.appName;
    this.defaultStore = options.defaultStore ?? MEMORY_STORE;
    this.#serializer = options.serializer ?? defaultSerializer;
    this.#logger = (options.logger ?? noopLogger).child({ component: 'cache' });
    for (const [name, store] of Object.entries(options.stores ?? {})) this.registerStore(name, store);
    if (this.defaultStore !== MEMORY_STORE && !this.#stores.has(this.defaultStore)) {
      throw invalidArgument(`default cache store "${this.defaultStore}" is not registered`);
    }
  }

  registerStore(name: string, store: CacheStore): void {
    assertName(name, 'store name');
    if (name === MEMORY_STORE || this.#stores.has(name))
      throw invalidArgument(`cache store "${name}" already exists`);
    if (!store || typeof store.get !== 'function')
      throw invalidArgument(`cache store "${name}" is not a CacheStore`);
    this.#stores.set(name, store);
    if (this.#state === 'started') this.#starting = this.#starting?.then(() => store.connect());
  }

  /** Connects every registered store. Idempotent. */
  start(): Promise<void> {
    if (this.#state === 'closed') return Promise.reject(closedError('cache manager'));
    this.#starting ??= (async () => {
      for (const store of this.#stores.values()) await store.connect();
      this.#state = 'started';
    })();
    return this.#starting;
  }

  /** Creates (or returns the existing) cache `name`. Two caches may not share a prefix on one store. */
  async createCache(options: CreateCacheOptions): Promise<Cache> {
    return this.createCacheSync(options);
  }

  /** Synchronous form used for `app.cache`, which exists before the app starts. */
  createCacheSync(options: CreateCacheOptions): Cache {
    if (this.#state === 'closed') throw closedError('cache manager');
    if (!options || typeof options !== 'object') throw invalidArgument('createCache expects options');
    assertName(options.name, 'cache name');
    const prefix = options.prefix ?? options.name;
    assertName(prefix, 'cache prefix');
    assertOptionalMs(options.ttl, 'ttl', true);
    const storeName = options.store ?? this.defaultStore;
    const existing = this.#caches.get(options.name);
    if (existing) {
      if (existing.prefix !== prefix || existing.storeName !== storeName) {
        throw invalidArgument(`cache "${options.name}" already exists with another prefix or store`);
      }
      return existing;
    }
    let store: CacheStore;
    if (storeName === MEMORY_STORE) {
      store = createMemoryCacheStore({ max: options.max ?? this.#o.max ?? 10_000 });
      this.#privateStores.add(store);
    } else {
      const named = this.#stores.get(storeName);
      if (!named) throw invalidArgument(`cache store "${storeName}" is not registered`);
      store = named;
      const owner = this.#prefixes.get(`${storeName}\u0000${prefix}`);
      // A shared prefix would let one cache's reset() wipe the other's keys.
      if (owner)
        throw invalidArgument(
          `prefix "${prefix}" on store "${storeName}" is already used by cache "${owner}"`,
        );
      this.#prefixes.set(`${storeName}\u0000${prefix}`, options.name);
    }
    const cache = new Cache({
      name: options.name,
      prefix,
      storeName,
      store,
      namespace: `${segment(this.appName)}:${segment(prefix)}:`,
      serializer: this.#serializer,
      logger: this.#logger,
      ttl: options.ttl ?? this.#o.ttl,
      singleFlight: options.singleFlight ?? this.#o.singleFlight ?? 'instance',
      fillLock: this.#o.fillLock,
      fillTimeout: this.#o.fillTimeout ?? 30_000,
    });
    this.#caches.set(options.name, cache);
    return cache;
  }

  getCache(name: string): Cache {
    const cache = this.#caches.get(name);
    if (!cache) throw new ClusterError('NOT_FOUND', `cache "${name}" does not exist`);
    return cache;
  }

  /** reset() on every cache of this manager (their keys only). */
  async flushAll(): Promise<void> {
    for (const cache of this.#caches.values()) await cache.reset();
  }

  /** Closes every store. Idempotent. */
  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    const all = [...this.#privateStores, ...this.#stores.values()];
    for (const store of all) {
      try {
        await store.close();
      } catch (error) {
        this.#logger.error(errorFields(error), 'closing a cache store failed');
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
