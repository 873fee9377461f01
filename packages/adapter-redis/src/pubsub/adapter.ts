import {
  closedError,
  DEFAULT_MAX_PAYLOAD_BYTES,
  errorFields,
  invalidArgument,
  type PubSubAdapter,
  type PubSubCapabilities,
  type PubSubListener,
} from '@cluster/core';
import type { Cluster, Redis } from 'ioredis';
import { CommandBatcher } from '../command-batch.js';
import {
  commandTimeoutOf,
  type RedisClient,
  type RedisConnectionOptions,
  RedisConnections,
} from '../connection.js';

export interface RedisPubSubOptions extends RedisConnectionOptions {
  /**
   * Connections shared with other adapters (see `createRedisAdapters`). The adapter retains them and
   * releases them on `close()`; the last user really closes them.
   */
  connections?: RedisConnections;
  /**
   * Milliseconds between PINGs on the subscriber connection. A subscriber only ever reads, so without
   * them a silently dead connection (a partition, a dropped NAT entry) would go unnoticed; an
   * unanswered PING drops and reconnects it. Default 5,000; 0 turns the check off.
   */
  healthCheckInterval?: number;
}

const DEFAULT_HEALTH_CHECK_INTERVAL = 5_000;

/**
 * The wire channel of a core channel. `<keyPrefix>:{...}` is left to the queue's and lock's own
 * names: a core channel starting with `{` (an app named so) is sent with that brace as `%7B` (core
 * escapes `%` as `%25`, so no core channel starts with `%7B`).
 */
function wireChannel(prefix: string, channel: string): string {
  return prefix + (channel.charCodeAt(0) === 0x7b ? `%7B${channel.slice(1)}` : channel);
}

/**
 * Broadcast on Redis PUBLISH / SUBSCRIBE. Publishes go over the shared command connection (so one
 * publisher's messages keep their order); each adapter has ONE dedicated subscriber connection and
 * subscribes exact channels (`<keyPrefix>:<channel>`), never patterns. After the subscriber
 * reconnects, the adapter subscribes every channel again itself and then tells its `onReconnect`
 * listeners (messages sent meanwhile are lost: at-most-once).
 */
class RedisPubSub implements PubSubAdapter {
  readonly capabilities: PubSubCapabilities = {
    crossProcess: true,
    delivery: 'at-most-once',
    ordering: 'per-publisher',
    resubscribes: true,
    maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES,
  };

  readonly #connections: RedisConnections;
  readonly #prefix: string;
  readonly #commandTimeout: number | undefined;
  readonly #healthCheckInterval: number;
  /** Wire channel -> listener. The source of truth for what must be subscribed. */
  readonly #listeners = new Map<string, PubSubListener>();
  readonly #reconnectListeners = new Set<() => void>();
  #subscriber: RedisClient | undefined;
  #publishNode: Redis | undefined;
  readonly #batcher: CommandBatcher;
  #wasReady = false;
  #healthTimer: NodeJS.Timeout | undefined;
  #pinging = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: RedisPubSubOptions) {
    const interval = options.healthCheckInterval ?? DEFAULT_HEALTH_CHECK_INTERVAL;
    if (typeof interval !== 'number' || !Number.isFinite(interval) || interval < 0)
      throw invalidArgument('healthCheckInterval must be a non-negative number of milliseconds');
    this.#connections = (options.connections ?? new RedisConnections(options)).retain();
    this.#prefix = `${this.#connections.keyPrefix}:`;
    this.#commandTimeout = options.commandTimeout;
    this.#healthCheckInterval = interval;
    // Publishes of one turn go out in one write, in order, on the one publishing connection.
    this.#batcher = new CommandBatcher(() => this.#publisher(), (options.commandTimeout ?? 2_000) + 1_000);
  }

  async connect(): Promise<void> {
    this.#open();
    await this.#connections.ready(this.#connections.command);
    await this.#connections.ready(this.#ensureSubscriber());
  }

  async subscribe(channel: string, listener: PubSubListener): Promise<void> {
    this.#open();
    if (typeof listener !== 'function') throw invalidArgument('listener must be a function');
    const wire = wireChannel(this.#prefix, channel);
    // Registered first: if the SUBSCRIBE fails now, the next reconnect still subscribes it.
    this.#listeners.set(wire, listener);
    const subscriber = this.#ensureSubscriber();
    try {
      await subscriber.subscribe(wire);
    } catch (error) {
      throw this.#connections.error(error, 'pub/sub subscribe');
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    const wire = wireChannel(this.#prefix, channel);
    // Deliveries stop at once (messages of unknown channels are ignored), whatever the server says.
    if (!this.#listeners.delete(wire) || this.#closed || !this.#subscriber) return;
    try {
      await this.#subscriber.unsubscribe(wire);
    } catch (error) {
      // Not subscribed again after a reconnect either; a stray subscription only costs traffic.
      this.#connections.logger.warn(
        { ...errorFields(this.#connections.error(error, 'pub/sub unsubscribe')) },
        'redis unsubscribe failed; messages on the channel are ignored',
      );
    }
  }

  async publish(channel: string, payload: string): Promise<void> {
    this.#open();
    try {
      await this.#batcher.call(
        '',
        'publish',
        [wireChannel(this.#prefix, channel), payload],
        'pub/sub publish',
      );
    } catch (error) {
      throw this.#connections.error(error, 'pub/sub publish');
    }
  }

  onReconnect(listener: () => void): void {
    this.#reconnectListeners.add(listener);
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      clearInterval(this.#healthTimer);
      this.#listeners.clear();
      this.#reconnectListeners.clear();
      await this.#connections.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Keeps connection options (and passwords) out of util.inspect and JSON.stringify. */
  toJSON(): Record<string, unknown> {
    return { adapter: 'redis pub/sub', channels: this.#listeners.size, closed: this.#closed };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `RedisPubSub { channels: ${this.#listeners.size}, closed: ${this.#closed} }`;
  }

  /**
   * The connection PUBLISH goes out on. On a single server, the command connection. On a Redis
   * Cluster, ioredis sends a keyless PUBLISH to a random node, so two messages could overtake each
   * other on their way: the adapter sticks to one master (re-picked only when it leaves the topology).
   */
  #publisher(): RedisClient {
    const command = this.#connections.command;
    if ((command as { isCluster?: boolean }).isCluster !== true) return command;
    const masters = (command as Cluster).nodes('master');
    if (this.#publishNode === undefined || !masters.includes(this.#publishNode))
      this.#publishNode = masters[0];
    return this.#publishNode ?? command;
  }

  #open(): void {
    if (this.#closed) throw closedError('redis pub/sub');
  }

  #ensureSubscriber(): RedisClient {
    if (this.#subscriber) return this.#subscriber;
    // The shared command connection's deadline, so the subscriber gets the same.
    const timeout = commandTimeoutOf(this.#connections.command) ?? this.#commandTimeout ?? 2_000;
    const subscriber = this.#connections.dedicated('subscriber', {
      commandTimeout: timeout,
      // A PING (or SUBSCRIBE) without an answer drops the socket, so a partition heals by reconnecting.
      socketTimeout: timeout,
      // We resubscribe ourselves on `ready`, from #listeners, and then report the reconnect.
      autoResubscribe: false,
      connectionName: 'cluster-subscriber',
    });
    this.#subscriber = subscriber;
    subscriber.on('message', (channel: string, message: string) => this.#deliver(channel, message));
    subscriber.on('ready', () => this.#onReady(subscriber));
    if (this.#healthCheckInterval > 0) {
      this.#healthTimer = setInterval(() => this.#healthCheck(subscriber), this.#healthCheckInterval);
      this.#healthTimer.unref();
    }
    return subscriber;
  }

  #deliver(channel: string, message: string): void {
    const listener = this.#listeners.get(channel);
    if (!listener || this.#closed) return;
    try {
      listener(message);
    } catch (error) {
      this.#connections.logger.error({ ...errorFields(error) }, 'pub/sub listener failed');
    }
  }

  #onReady(subscriber: RedisClient): void {
    if (this.#closed) return;
    // Every ready (re)subscribes everything, also the first: a SUBSCRIBE that failed before the
    // connection ever became ready is retried here. Only a ready after a loss is a reconnect.
    const reconnected = this.#wasReady;
    this.#wasReady = true;
    const channels = [...this.#listeners.keys()];
    const resubscribed =
      channels.length > 0
        ? (subscriber as Redis).subscribe(...channels).then(
            () => true,
            (error: unknown) => {
              this.#connections.logger.warn(
                {
                  channels: channels.length,
                  ...errorFields(this.#connections.error(error, 'pub/sub resubscribe')),
                },
                'redis resubscribe failed; retried on the next reconnect',
              );
              // Drop the socket: the next `ready` tries again, instead of staying deaf.
              if (!this.#closed && subscriber.status === 'ready') subscriber.disconnect(true);
              return false;
            },
          )
        : Promise.resolve(true);
    void resubscribed.then((ok) => {
      if (!ok || !reconnected || this.#closed) return;
      this.#connections.logger.info({ channels: channels.length }, 'redis subscriber reconnected');
      for (const listener of this.#reconnectListeners) {
        try {
          listener();
        } catch (error) {
          this.#connections.logger.error({ ...errorFields(error) }, 'pub/sub reconnect listener failed');
        }
      }
    });
  }

  #healthCheck(subscriber: RedisClient): void {
    if (this.#closed || this.#pinging || subscriber.status !== 'ready') return;
    this.#pinging = true;
    (subscriber as Redis | Cluster)
      .ping()
      .catch(() => {
        // socketTimeout normally dropped the socket already; make sure it reconnects.
        if (!this.#closed && subscriber.status === 'ready') subscriber.disconnect(true);
      })
      .finally(() => {
        this.#pinging = false;
      });
  }
}

/** Redis pub/sub for `createCluster({ pubSub: { adapter } })`. */
export function createRedisPubSub(options: RedisPubSubOptions = {}): PubSubAdapter {
  return new RedisPubSub(options);
}
