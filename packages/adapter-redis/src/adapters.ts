import type { CacheStore, LockAdapter, PubSubAdapter, QueueAdapter } from '@cluster/core';
import { createRedisCacheStore, type RedisCacheStoreOptions } from './cache/index.js';
import { type RedisConnectionOptions, RedisConnections } from './connection.js';
import { createRedisLock, type RedisLockOptions } from './lock/index.js';
import { createRedisPubSub, type RedisPubSubOptions } from './pubsub/index.js';
import { createRedisQueue, type RedisQueueOptions } from './queue/index.js';

/** A part's own options: everything but the shared connection settings. */
type Own<T> = Omit<T, keyof RedisConnectionOptions | 'connections'>;

export interface RedisAdaptersOptions extends RedisConnectionOptions {
  cache?: Own<RedisCacheStoreOptions>;
  pubSub?: Own<RedisPubSubOptions>;
  queue?: Own<RedisQueueOptions>;
  lock?: Own<RedisLockOptions>;
}

/**
 * The four parts over ONE set of connections. Each part is created the first time it is read, and
 * retains the connections then; the connections really close when the last created part closes
 * (`app.stop()` closes every adapter it was given). A part the app never reads opens nothing and
 * holds nothing open.
 */
export interface RedisAdapters extends AsyncDisposable {
  readonly cacheStore: CacheStore;
  readonly pubSub: PubSubAdapter;
  readonly queue: QueueAdapter;
  readonly lock: LockAdapter;
  readonly connections: RedisConnections;
  /** Closes every part created so far, then the connections (only those opened here). Idempotent. */
  close(): Promise<void>;
}

/**
 * Cache store, pub/sub, queue and lock on one Redis, for `createCluster`:
 *
 * ```ts
 * const redis = createRedisAdapters({ url: process.env.REDIS_URL });
 * const app = createCluster({
 *   name: 'shop',
 *   cache: { defaultStore: 'redis', stores: { redis: redis.cacheStore } },
 *   pubSub: { adapter: redis.pubSub },
 *   queue: { adapter: redis.queue },
 *   lock: { defaultAdapter: 'redis', adapters: { redis: redis.lock } },
 * });
 * ```
 */
export function createRedisAdapters(options: RedisAdaptersOptions = {}): RedisAdapters {
  const { cache, pubSub, queue, lock, ...connection } = options;
  const connections = new RedisConnections(connection);
  const shared = { ...connection, connections };
  const made: { close(): Promise<void> }[] = [];
  const once = <T extends { close(): Promise<void> }>(make: () => T): (() => T) => {
    let part: T | undefined;
    return () => {
      if (part === undefined) {
        part = make();
        made.push(part);
      }
      return part;
    };
  };
  const parts = {
    cacheStore: once(() => createRedisCacheStore({ ...cache, ...shared })),
    pubSub: once(() => createRedisPubSub({ ...pubSub, ...shared })),
    queue: once(() => createRedisQueue({ ...queue, ...shared })),
    lock: once(() => createRedisLock({ ...lock, ...shared })),
  };
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      await Promise.all(made.map((part) => part.close()));
      await connections.close();
    })();
    return closing;
  };

  return {
    get cacheStore() {
      return parts.cacheStore();
    },
    get pubSub() {
      return parts.pubSub();
    },
    get queue() {
      return parts.queue();
    },
    get lock() {
      return parts.lock();
    },
    connections,
    close,
    [Symbol.asyncDispose]: close,
    // Never walk the getters (that would create parts) nor show connection options.
    toJSON: () => ({ adapter: 'redis', parts: made.length }),
    [Symbol.for('nodejs.util.inspect.custom')]: () =>
      `RedisAdapters { keyPrefix: ${JSON.stringify(connections.keyPrefix)} }`,
  } as RedisAdapters;
}
