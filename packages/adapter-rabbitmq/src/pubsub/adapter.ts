import { createHash } from 'node:crypto';
import {
  closedError,
  DEFAULT_MAX_PAYLOAD_BYTES,
  errorFields,
  invalidArgument,
  type PubSubAdapter,
  type PubSubCapabilities,
  type PubSubListener,
} from '@cluster/core';
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import { RabbitConnection, type RabbitConnectionOptions } from '../connection.js';
import { ConfirmPublisher, wirePart } from '../publisher.js';

export interface RabbitPubSubOptions extends RabbitConnectionOptions {
  /** A connection shared with other adapters (see `createRabbitAdapters`); retained and released here. */
  connections?: RabbitConnection;
  /** Deadline of one publish, waiting for a connection and the broker's confirm included, in ms. Default 5,000. */
  publishTimeout?: number;
}

/** What the adapter declared on the broker, for tooling and test cleanup. */
export interface RabbitTopology {
  readonly exchanges: readonly string[];
  readonly queues: readonly string[];
}

export interface RabbitPubSubAdapter extends PubSubAdapter {
  /** The exchanges this adapter declared (one per app). Its own queue is exclusive and goes with it. */
  topology(): RabbitTopology;
}

const MAX_ROUTING_KEY_BYTES = 200;

/** The subscriber side on one connection: its channel, its exclusive queue, the exchanges declared there. */
interface Subscriber {
  readonly channel: Channel;
  readonly queue: string;
  readonly exchanges: Map<string, Promise<unknown>>;
}
const CHANNEL_HEADER = 'x-cluster-channel';

/** The app part of a core channel (`app:channel`, each segment escaped by core, so `:` only separates). */
function appOf(channel: string): string {
  const colon = channel.indexOf(':');
  return colon < 0 ? channel : channel.slice(0, colon);
}

/** The routing key of a channel on its app's direct exchange: the channel itself, or a hash when too long. */
function routingKeyOf(channel: string): string {
  if (Buffer.byteLength(channel) <= MAX_ROUTING_KEY_BYTES) return channel;
  return `%H${createHash('sha256').update(channel).digest('base64url')}`;
}

/**
 * Broadcast on RabbitMQ: one direct exchange per app (`<prefix>.ps.<app>`), routing key = the exact
 * channel, so no name is ever a pattern. Each adapter has one exclusive, auto-delete, server-named
 * queue on its own channel, bound once per subscribed channel and consumed without acks. After a
 * reconnect the queue is new: the adapter declares it, binds every channel again, consumes, and then
 * tells its `onReconnect` listeners. Messages sent while it was away are lost (at-most-once).
 * Publishes go through a confirm channel: `await publish()` means the broker routed the message.
 */
class RabbitPubSub implements RabbitPubSubAdapter {
  readonly capabilities: PubSubCapabilities = {
    crossProcess: true,
    delivery: 'at-most-once',
    ordering: 'per-publisher',
    resubscribes: true,
    maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES,
  };

  readonly #connection: RabbitConnection;
  readonly #publisher: ConfirmPublisher;
  readonly #publishTimeout: number;
  /** Channel -> listener: the source of truth for what must be bound. */
  readonly #listeners = new Map<string, PubSubListener>();
  /** Routing key -> channel, for deliveries. */
  readonly #byRoutingKey = new Map<string, string>();
  readonly #reconnectListeners = new Set<() => void>();
  readonly #exchanges = new Set<string>();
  /** Channel -> where its messages are published (names computed once). */
  readonly #routes = new Map<
    string,
    { exchange: string; routingKey: string; options: { headers?: object } }
  >();
  /** Exchanges asserted on the publisher's current channel generation. */
  #publisherExchanges = new Map<string, Promise<unknown>>();
  #publisherGeneration = -1;
  /** Exchanges known declared on the publisher's channel: publishing to them needs no wait. */
  #publisherDeclared = new Set<string>();
  #subscriber: Subscriber | undefined;
  #subscriberReady: Promise<void> | undefined;
  #opened = 0;
  #settingUp = 0;
  #stopOpen: (() => void) | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: RabbitPubSubOptions) {
    const timeout = options.publishTimeout ?? 5_000;
    if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout <= 0)
      throw invalidArgument('publishTimeout must be a positive number of milliseconds');
    const given = options.connections;
    if (given !== undefined && !(given instanceof RabbitConnection))
      throw invalidArgument('connections must be a RabbitConnection');
    this.#connection = (given ?? new RabbitConnection(options)).retain();
    this.#publisher = new ConfirmPublisher(this.#connection, 'pubsub-publish');
    this.#publishTimeout = timeout;
  }

  #exchangeOf(channel: string): string {
    const name = `${this.#connection.prefix}.ps.${wirePart(appOf(channel))}`;
    this.#exchanges.add(name);
    return name;
  }

  async connect(): Promise<void> {
    this.#open();
    try {
      await this.#connection.connect();
    } catch (error) {
      throw this.#connection.error(error, 'pub/sub connect');
    }
    // Every new connection (the first included) gets a fresh subscriber queue with every binding.
    this.#stopOpen ??= this.#connection.onOpen((model) => {
      this.#subscriberReady = this.#setupSubscriber(model);
      this.#subscriberReady.catch(() => {});
    });
    await this.#subscriberReady?.catch(() => {});
  }

  async subscribe(channel: string, listener: PubSubListener): Promise<void> {
    this.#open();
    if (typeof listener !== 'function') throw invalidArgument('listener must be a function');
    const routingKey = routingKeyOf(channel);
    // Registered first: if the bind fails now, the next connection binds it.
    this.#listeners.set(channel, listener);
    this.#byRoutingKey.set(routingKey, channel);
    const subscriber = await this.#currentSubscriber();
    if (subscriber === undefined) return;
    try {
      await this.#bind(subscriber, channel);
    } catch (error) {
      throw this.#connection.error(error, 'pub/sub subscribe');
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    // Deliveries stop at once (messages for unknown channels are ignored), whatever the broker says.
    if (!this.#listeners.delete(channel)) return;
    const routingKey = routingKeyOf(channel);
    this.#byRoutingKey.delete(routingKey);
    const subscriber = this.#subscriber;
    if (this.#closed || subscriber === undefined) return;
    try {
      await subscriber.channel.unbindQueue(subscriber.queue, this.#exchangeOf(channel), routingKey);
    } catch (error) {
      this.#connection.logger.warn(
        { ...errorFields(this.#connection.error(error, 'pub/sub unsubscribe')) },
        'rabbitmq unbind failed; messages on the channel are ignored',
      );
    }
  }

  async publish(channel: string, payload: string): Promise<void> {
    this.#open();
    let route = this.#routes.get(channel);
    if (route === undefined) {
      const routingKey = routingKeyOf(channel);
      route = {
        exchange: this.#exchangeOf(channel),
        routingKey,
        options: routingKey !== channel ? { headers: { [CHANNEL_HEADER]: channel } } : {},
      };
      // Bounded: channels are few in practice; a flood of one-off channels just recomputes.
      if (this.#routes.size < 10_000) this.#routes.set(channel, route);
    }
    const { exchange, routingKey, options } = route;
    await this.#publisher.publish(
      exchange,
      routingKey,
      Buffer.from(payload),
      options,
      this.#publishTimeout,
      'pub/sub publish',
      (confirm, generation) => {
        if (generation !== this.#publisherGeneration) {
          this.#publisherGeneration = generation;
          this.#publisherExchanges = new Map();
          this.#publisherDeclared = new Set();
        }
        if (this.#publisherDeclared.has(exchange)) return undefined;
        let declared = this.#publisherExchanges.get(exchange);
        if (declared === undefined) {
          declared = confirm.assertExchange(exchange, 'direct', { durable: false, autoDelete: false });
          declared.catch(() => this.#publisherExchanges.delete(exchange));
          this.#publisherExchanges.set(exchange, declared);
        }
        return declared.then(
          () => {
            if (generation === this.#publisherGeneration) this.#publisherDeclared.add(exchange);
          },
          (error: unknown) => {
            throw this.#connection.error(error, 'declaring the pub/sub exchange');
          },
        );
      },
    );
  }

  onReconnect(listener: () => void): void {
    this.#reconnectListeners.add(listener);
  }

  topology(): RabbitTopology {
    return { exchanges: [...this.#exchanges], queues: [] };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#stopOpen?.();
      this.#listeners.clear();
      this.#byRoutingKey.clear();
      this.#reconnectListeners.clear();
      const subscriber = this.#subscriber;
      this.#subscriber = undefined;
      await this.#publisher.close();
      if (subscriber !== undefined) await this.#connection.closeChannel(subscriber.channel);
      await this.#connection.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Keeps connection options (and passwords) out of util.inspect and JSON.stringify. */
  toJSON(): Record<string, unknown> {
    return { adapter: 'rabbitmq pub/sub', channels: this.#listeners.size, closed: this.#closed };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `RabbitPubSub { channels: ${this.#listeners.size}, closed: ${this.#closed} }`;
  }

  #open(): void {
    if (this.#closed) throw closedError('rabbitmq pub/sub');
  }

  /** The subscriber of the current connection, once set up; undefined while disconnected. */
  async #currentSubscriber(): Promise<Subscriber | undefined> {
    if (this.#subscriber === undefined && this.#subscriberReady !== undefined) {
      await this.#subscriberReady.catch(() => {});
    }
    return this.#subscriber;
  }

  #bind(subscriber: Subscriber, channel: string): Promise<unknown> {
    const exchange = this.#exchangeOf(channel);
    let declared = subscriber.exchanges.get(exchange);
    if (declared === undefined) {
      declared = subscriber.channel.assertExchange(exchange, 'direct', { durable: false, autoDelete: false });
      declared.catch(() => subscriber.exchanges.delete(exchange));
      subscriber.exchanges.set(exchange, declared);
    }
    return declared.then(() =>
      subscriber.channel.bindQueue(subscriber.queue, exchange, routingKeyOf(channel)),
    );
  }

  async #setupSubscriber(model: ChannelModel): Promise<void> {
    if (this.#closed) return;
    this.#settingUp += 1;
    try {
      await this.#setupOn(model);
    } finally {
      this.#settingUp -= 1;
    }
  }

  async #setupOn(model: ChannelModel): Promise<void> {
    this.#opened += 1;
    const reconnected = this.#opened > 1;
    let channel: Channel | undefined;
    try {
      channel = await this.#connection.channel('pubsub-subscribe', false, 5_000, () => {
        if (this.#subscriber?.channel === channel) this.#subscriber = undefined;
        // A channel error (not a connection loss) is healed on the same connection.
        if (!this.#closed && this.#connection.isOpen) {
          setTimeout(() => {
            if (this.#closed || !this.#connection.isOpen || this.#subscriber !== undefined) return;
            if (this.#settingUp) return;
            this.#subscriberReady = this.#setupSubscriber(model);
            this.#subscriberReady.catch(() => {});
          }, 100).unref();
        }
      });
      const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
      const subscriber = { channel, queue, exchanges: new Map<string, Promise<unknown>>() };
      await channel.consume(queue, (message) => this.#deliver(message), { noAck: true });
      await Promise.all([...this.#listeners.keys()].map((name) => this.#bind(subscriber, name)));
      if (this.#closed) {
        await this.#connection.closeChannel(channel);
        return;
      }
      this.#subscriber = subscriber;
    } catch (error) {
      this.#connection.logger.warn(
        { ...errorFields(this.#connection.error(error, 'pub/sub resubscribe')) },
        'rabbitmq subscriber setup failed; retried on the next connection',
      );
      await this.#connection.closeChannel(channel);
      throw error;
    }
    if (!reconnected) return;
    this.#connection.logger.info({ channels: this.#listeners.size }, 'rabbitmq subscriber re-established');
    for (const listener of this.#reconnectListeners) {
      try {
        listener();
      } catch (error) {
        this.#connection.logger.error({ ...errorFields(error) }, 'pub/sub reconnect listener failed');
      }
    }
  }

  #deliver(message: ConsumeMessage | null): void {
    if (message === null || this.#closed) return;
    const routingKey = message.fields.routingKey;
    const channel =
      (message.properties.headers?.[CHANNEL_HEADER] as string | undefined) ??
      this.#byRoutingKey.get(routingKey);
    if (channel === undefined || routingKeyOf(channel) !== routingKey) return;
    const listener = this.#listeners.get(channel);
    if (listener === undefined) return;
    try {
      listener(message.content.toString());
    } catch (error) {
      this.#connection.logger.error({ ...errorFields(error) }, 'pub/sub listener failed');
    }
  }
}

/** RabbitMQ pub/sub for `createCluster({ pubSub: { adapter } })`. */
export function createRabbitPubSub(options: RabbitPubSubOptions = {}): RabbitPubSubAdapter {
  if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
  return new RabbitPubSub(options);
}
