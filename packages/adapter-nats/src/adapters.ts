import {
  type CacheStore,
  createAdapterBundle,
  type LockAdapter,
  type PubSubAdapter,
  type QueueAdapter,
} from '@cluster/core';
import { createNatsCacheStore, type NatsCacheStoreOptions } from './cache/index.js';
import { type NatsConnectionOptions, NatsConnections } from './connection.js';
import { createNatsLock, type NatsLockOptions } from './lock/index.js';
import { createNatsPubSub, type NatsPubSubOptions } from './pubsub/index.js';
import { createNatsQueue, type NatsQueueOptions } from './queue/index.js';

/** A part's own options: everything but the shared connection settings. */
type Own<T> = Omit<T, keyof NatsConnectionOptions | 'connections'>;

export interface NatsAdaptersOptions extends NatsConnectionOptions {
  cache?: Own<NatsCacheStoreOptions>;
  pubSub?: Own<NatsPubSubOptions>;
  queue?: Own<NatsQueueOptions>;
  lock?: Own<NatsLockOptions>;
}

/**
 * The four parts over ONE NATS connection. Each part is created the first time it is read and
 * retains the connection then; the connection really closes when the last created part closes
 * (`app.stop()` closes every adapter it was given). A part the app never reads opens nothing.
 */
export interface NatsAdapters extends AsyncDisposable {
  readonly cacheStore: CacheStore;
  readonly pubSub: PubSubAdapter;
  readonly queue: QueueAdapter;
  readonly lock: LockAdapter;
  readonly connections: NatsConnections;
  /** Closes every part created so far, then the connection (only if opened here). Idempotent. */
  close(): Promise<void>;
}

/**
 * Cache store, pub/sub, queue and lock on one NATS server with JetStream, for `createCluster`:
 *
 * ```ts
 * const nats = createNatsAdapters({ servers: process.env.NATS_URL });
 * const app = createCluster({
 *   name: 'shop',
 *   cache: { defaultStore: 'nats', stores: { nats: nats.cacheStore } },
 *   pubSub: { adapter: nats.pubSub },
 *   queue: { adapter: nats.queue },
 *   lock: { defaultAdapter: 'nats', adapters: { nats: nats.lock } },
 * });
 * ```
 */
export function createNatsAdapters(options: NatsAdaptersOptions = {}): NatsAdapters {
  const { cache, pubSub, queue, lock, ...connection } = options;
  const connections = new NatsConnections(connection);
  const shared = { ...connection, connections };
  return createAdapterBundle({
    parts: {
      cacheStore: () => createNatsCacheStore({ ...cache, ...shared }),
      pubSub: () => createNatsPubSub({ ...pubSub, ...shared }),
      queue: () => createNatsQueue({ ...queue, ...shared }),
      lock: () => createNatsLock({ ...lock, ...shared }),
    },
    closeShared: () => connections.close(),
    extra: { connections },
    kind: 'nats',
    label: `NatsAdapters { subjectPrefix: ${JSON.stringify(connections.subjectPrefix)} }`,
  });
}
