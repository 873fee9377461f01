import { createAdapterBundle } from '@cluster/core';
import { RabbitConnection, type RabbitConnectionOptions } from './connection.js';
import { createRabbitPubSub, type RabbitPubSubAdapter, type RabbitPubSubOptions } from './pubsub/index.js';
import { createRabbitQueue, type RabbitQueueAdapter, type RabbitQueueOptions } from './queue/index.js';

/** A part's own options: everything but the shared connection settings. */
type Own<T> = Omit<T, keyof RabbitConnectionOptions | 'connections'>;

export interface RabbitAdaptersOptions extends RabbitConnectionOptions {
  pubSub?: Own<RabbitPubSubOptions>;
  queue?: Own<RabbitQueueOptions>;
}

/**
 * Pub/sub and queue over ONE AMQP connection (each on its own channels). A part is created the
 * first time it is read and retains the connection; the connection really closes when the last
 * created part closes. A part never read opens nothing.
 */
export interface RabbitAdapters extends AsyncDisposable {
  readonly pubSub: RabbitPubSubAdapter;
  readonly queue: RabbitQueueAdapter;
  readonly connection: RabbitConnection;
  /** Closes every part created so far, then the connection. Idempotent. */
  close(): Promise<void>;
}

/**
 * ```ts
 * const rabbit = createRabbitAdapters({ url: process.env.AMQP_URL });
 * const app = createCluster({ name: 'shop', pubSub: { adapter: rabbit.pubSub }, queue: { adapter: rabbit.queue } });
 * ```
 */
export function createRabbitAdapters(options: RabbitAdaptersOptions = {}): RabbitAdapters {
  const { pubSub, queue, ...connectionOptions } = options;
  const connection = new RabbitConnection(connectionOptions);
  return createAdapterBundle({
    parts: {
      pubSub: () => createRabbitPubSub({ ...pubSub, connections: connection }),
      queue: () => createRabbitQueue({ ...queue, connections: connection }),
    },
    closeShared: () => connection.close(),
    extra: { connection },
    kind: 'rabbitmq',
    label: `RabbitAdapters { prefix: ${JSON.stringify(connection.prefix)} }`,
  });
}
