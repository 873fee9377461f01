import {
  ClusterError,
  closedError,
  DEFAULT_MAX_PAYLOAD_BYTES,
  errorFields,
  invalidArgument,
  type PubSubAdapter,
  type PubSubCapabilities,
  type PubSubListener,
} from '@cluster/core';
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { type NatsConnectionOptions, NatsConnections } from '../connection.js';
import { pubSubSubject } from '../subjects.js';

export interface NatsPubSubOptions extends NatsConnectionOptions {
  /**
   * A connection shared with other adapters (see `createNatsAdapters`). The adapter retains it and
   * releases it on `close()`; the last user really closes it.
   */
  connections?: NatsConnections;
}

/**
 * What the manager may hand over: the server's default max_payload (1 MiB) less room for the core
 * envelope around it.
 */
export const MAX_PAYLOAD_BYTES: number = DEFAULT_MAX_PAYLOAD_BYTES - 8 * 1024;

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/**
 * Broadcast on core NATS subjects (`<prefix>.ps.<encoded channel>`): exact subjects only, never
 * wildcards, so a subscription cannot widen. nats.js resubscribes every subscription by itself after
 * a reconnect; the adapter then tells its `onReconnect` listeners, because messages sent meanwhile
 * are lost (at-most-once). Publishes are buffered by the client and flushed in order.
 */
class NatsPubSub implements PubSubAdapter {
  readonly #connections: NatsConnections;
  readonly #subscriptions = new Map<string, Subscription>();
  /** Channel -> subject, so a hot channel is encoded once. */
  readonly #subjects = new Map<string, string>();
  readonly #reconnectListeners = new Set<() => void>();
  readonly #unwatch: () => void;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: NatsPubSubOptions) {
    this.#connections = (options.connections ?? new NatsConnections(options)).retain();
    this.#unwatch = this.#connections.onReconnect(() => {
      if (this.#closed) return;
      for (const listener of this.#reconnectListeners) {
        try {
          listener();
        } catch (error) {
          this.#connections.logger.error({ ...errorFields(error) }, 'pub/sub reconnect listener failed');
        }
      }
    });
  }

  readonly capabilities: PubSubCapabilities = {
    crossProcess: true,
    delivery: 'at-most-once',
    // One connection writes one publisher's messages in order and the server keeps that order.
    ordering: 'per-publisher',
    resubscribes: true,
    maxPayloadBytes: MAX_PAYLOAD_BYTES,
  };

  async connect(): Promise<void> {
    this.#open();
    await this.#connections.connection();
  }

  async subscribe(channel: string, listener: PubSubListener): Promise<void> {
    this.#open();
    if (typeof listener !== 'function') throw invalidArgument('listener must be a function');
    const subject = pubSubSubject(this.#connections.subjectPrefix, channel);
    const nc = await this.#connections.connection();
    this.#open();
    this.#subscriptions.get(subject)?.unsubscribe();
    const subscription = nc.subscribe(subject, {
      callback: (error, msg) => {
        if (error || this.#closed || this.#subscriptions.get(subject) !== subscription) return;
        try {
          listener(decoder.decode(msg.data));
        } catch (thrown) {
          this.#connections.logger.error({ ...errorFields(thrown) }, 'pub/sub listener failed');
        }
      },
    });
    this.#subscriptions.set(subject, subscription);
    // The SUB must reach the server before subscribe() resolves, or an immediate publish elsewhere is
    // missed. A flush waits for the server's PONG, so during an outage it is bounded by requestTimeout.
    // Either way the subscription stays registered: nats.js sends it again once connected.
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        nc.flush(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(new ClusterError('TIMEOUT', 'pub/sub subscribe: the server did not confirm in time')),
            this.#connections.requestTimeout,
          );
        }),
      ]);
    } catch (error) {
      throw this.#connections.error(error, 'pub/sub subscribe');
    } finally {
      clearTimeout(timer);
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    const subject = pubSubSubject(this.#connections.subjectPrefix, channel);
    const subscription = this.#subscriptions.get(subject);
    if (!subscription) return;
    this.#subscriptions.delete(subject);
    subscription.unsubscribe();
  }

  publish(channel: string, payload: string): Promise<void> {
    try {
      this.#open();
      const subject = this.#subject(channel);
      const nc = this.#connections.current;
      // The common case stays synchronous: no promise chain per message on a hot channel.
      if (nc) {
        this.#send(nc, subject, payload);
        return Promise.resolve();
      }
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#connections.connection().then((nc) => this.#send(nc, this.#subject(channel), payload));
  }

  #subject(channel: string): string {
    let subject = this.#subjects.get(channel);
    if (subject === undefined) {
      subject = pubSubSubject(this.#connections.subjectPrefix, channel);
      if (this.#subjects.size >= 10_000) this.#subjects.clear();
      this.#subjects.set(channel, subject);
    }
    return subject;
  }

  #send(nc: NatsConnection, subject: string, payload: string): void {
    this.#open();
    const data = encoder.encode(payload);
    // The declared limit, or less when the server is configured below its 1 MiB default.
    const max = Math.min(MAX_PAYLOAD_BYTES, nc.info?.max_payload ?? MAX_PAYLOAD_BYTES);
    if (data.length > max)
      throw new ClusterError('PAYLOAD_TOO_LARGE', `payload is ${data.length} bytes, the limit is ${max}`, {
        details: { bytes: data.length, max },
      });
    try {
      nc.publish(subject, data);
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
      this.#unwatch();
      this.#reconnectListeners.clear();
      const nc = this.#connections.current;
      for (const subscription of this.#subscriptions.values()) subscription.unsubscribe();
      this.#subscriptions.clear();
      // Publishes still in the client's buffer go out before a shared connection closes.
      if (nc && !nc.isClosed()) await withDeadline(nc.flush(), 1_000).catch(() => {});
      await this.#connections.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  toJSON(): Record<string, unknown> {
    return { adapter: 'nats pub/sub', channels: this.#subscriptions.size, closed: this.#closed };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `NatsPubSub { channels: ${this.#subscriptions.size}, closed: ${this.#closed} }`;
  }

  #open(): void {
    if (this.#closed) throw closedError('nats pub/sub');
  }
}

function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** NATS pub/sub for `createCluster({ pubSub: { adapter } })`. */
export function createNatsPubSub(options: NatsPubSubOptions = {}): PubSubAdapter {
  return new NatsPubSub(options);
}
