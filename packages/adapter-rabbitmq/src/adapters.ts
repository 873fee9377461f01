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
  // Each part retains the connection; it closes with the last part (app.stop() closes the parts it
  // was given, so nothing keeps the process alive afterwards), as the Redis and NATS bundles do.
  const connection = new RabbitConnection(connectionOptions);
  const made: { close(): Promise<void> }[] = [];
  let pubSubPart: RabbitPubSubAdapter | undefined;
  let queuePart: RabbitQueueAdapter | undefined;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      await Promise.all(made.map((part) => part.close()));
      // No part was ever created: the connection was never retained nor opened; mark it closed.
      if (made.length === 0) await connection.close();
    })();
    return closing;
  };
  return {
    get pubSub() {
      if (pubSubPart === undefined) {
        pubSubPart = createRabbitPubSub({ ...pubSub, connections: connection });
        made.push(pubSubPart);
      }
      return pubSubPart;
    },
    get queue() {
      if (queuePart === undefined) {
        queuePart = createRabbitQueue({ ...queue, connections: connection });
        made.push(queuePart);
      }
      return queuePart;
    },
    connection,
    close,
    [Symbol.asyncDispose]: close,
    // Never walk the getters (that would create parts) nor show connection options.
    toJSON: () => ({ adapter: 'rabbitmq', parts: made.length }),
    [Symbol.for('nodejs.util.inspect.custom')]: () =>
      `RabbitAdapters { prefix: ${JSON.stringify(connection.prefix)} }`,
  } as RabbitAdapters;
}
