import {
  type CacheStore,
  createAdapterBundle,
  type LockAdapter,
  type PubSubAdapter,
  type QueueAdapter,
} from '@cluster/core';
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
  return createAdapterBundle({
    parts: {
      cacheStore: () => createRedisCacheStore({ ...cache, ...shared }),
      pubSub: () => createRedisPubSub({ ...pubSub, ...shared }),
      queue: () => createRedisQueue({ ...queue, ...shared }),
      lock: () => createRedisLock({ ...lock, ...shared }),
    },
    closeShared: () => connections.close(),
    extra: { connections },
    kind: 'redis',
    label: `RedisAdapters { keyPrefix: ${JSON.stringify(connections.keyPrefix)} }`,
  });
}
