import { ClusterError, closedError, invalidArgument } from '../errors.js';
import { randomId } from '../internal/async.js';
import { Debouncer } from '../internal/debounce.js';
import { assertName, assertOptionalMs, namespaced } from '../internal/names.js';
import type { Logger } from '../logger.js';
import { errorFields, noopLogger } from '../logger.js';
import type { Serializer } from '../serializer.js';
import { defaultSerializer } from '../serializer.js';
import type { PubSubAdapter } from './types.js';

const RESOLVED: Promise<void> = Promise.resolve();

export interface PubSubMessageMeta {
  readonly channel: string;
  /** The instance that published (its `instanceId`). */
  readonly publisherId: string;
  /** True when the message came from this instance (skipSelf: false or onlySelf). */
  readonly local: boolean;
}

export type PubSubHandler<T = any> = (message: T, meta: PubSubMessageMeta) => void | Promise<void>;

/** Ends a subscription when called; also works with `await using`. */
export type Unsubscribe = (() => Promise<void>) & AsyncDisposable;

export function unsubscriber(fn: () => Promise<void>): Unsubscribe {
  return Object.assign(fn, { [Symbol.asyncDispose]: fn });
}

export interface PubSubSubscribeOptions {
  /** Collapse identical payloads arriving within this many ms into one trailing call, per subscriber. */
  debounce?: number;
}

export interface PubSubPublishOptions {
  /** Do not deliver to this instance's own handlers. Default true (as the seed states). */
  skipSelf?: boolean;
  /** Deliver to this instance's handlers only; nothing leaves the process. Wins over skipSelf. */
  onlySelf?: boolean;
}

export interface PubSubManagerOptions {
  appName: string;
  adapter: PubSubAdapter;
  /** Identifies this instance in envelopes; defaults to a random id. */
  instanceId?: string;
  serializer?: Serializer;
  logger?: Logger;
}

interface Subscriber {
  handler: PubSubHandler;
  debouncer: Debouncer<{ message: unknown; meta: PubSubMessageMeta }> | undefined;
}

/**
 * Broadcast between instances of one app. Wire payload: `<publisherId>\n<encoded message>`. The
 * publisher id lets receivers drop their own echoes, so local delivery never depends on whether an
 * adapter echoes, and `onlySelf` never touches the network.
 */
export class PubSubManager {
  readonly appName: string;
  readonly instanceId: string;
  readonly adapter: PubSubAdapter;
  readonly #serializer: Serializer;
  readonly #logger: Logger;
  readonly #channels = new Map<string, Map<PubSubHandler, Subscriber>>();
  readonly #reconnectListeners = new Set<() => void>();
  readonly #wireNames = new Map<string, string>();
  #state: 'idle' | 'starting' | 'started' | 'closed' = 'idle';
  #starting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: PubSubManagerOptions) {
    assertName(options.appName, 'app name');
    this.appName = options.appName;
    this.adapter = options.adapter;
    this.instanceId = options.instanceId ?? randomId();
    if (this.instanceId.includes('\n')) throw invalidArgument('instanceId must not contain a newline');
    this.#serializer = options.serializer ?? defaultSerializer;
    this.#logger = (options.logger ?? noopLogger).child({ component: 'pubsub' });
    this.adapter.onReconnect?.(() => {
      this.#logger.warn({}, 'pub/sub reconnected: messages sent meanwhile were lost');
      for (const listener of this.#reconnectListeners) listener();
    });
  }

  get capabilities() {
    return this.adapter.capabilities;
  }

  isConnected(): boolean {
    return this.#state === 'started';
  }

  /** Runs `listener` whenever the adapter reports a reconnect (possible message loss). */
  onReconnect(listener: () => void): () => void {
    this.#reconnectListeners.add(listener);
    return () => this.#reconnectListeners.delete(listener);
  }

  /** Connects and subscribes every channel registered so far. Idempotent. */
  start(): Promise<void> {
    if (this.#state === 'closed') return Promise.reject(closedError('pub/sub manager'));
    this.#starting ??= (async () => {
      this.#state = 'starting';
      await this.adapter.connect();
      for (const channel of this.#channels.keys()) await this.#attach(channel);
      this.#state = 'started';
    })();
    return this.#starting;
  }

  /**
   * Subscribes `handler` to `channel`. The same handler twice is one subscription (its options are
   * updated). Allowed before start. Resolves to a function that unsubscribes.
   */
  async subscribe<T = any>(
    channel: string,
    handler: PubSubHandler<T>,
    options: PubSubSubscribeOptions = {},
  ): Promise<Unsubscribe> {
    this.#open();
    assertName(channel, 'channel');
    if (typeof handler !== 'function') throw invalidArgument('handler must be a function');
    assertOptionalMs(options.debounce, 'debounce', true);
    let subscribers = this.#channels.get(channel);
    const fresh = subscribers === undefined;
    if (!subscribers) this.#channels.set(channel, (subscribers = new Map()));
    subscribers.get(handler as PubSubHandler)?.debouncer?.cancel();
    const debounce = options.debounce ?? 0;
    subscribers.set(handler as PubSubHandler, {
      handler: handler as PubSubHandler,
      debouncer:
        debounce > 0
          ? new Debouncer(debounce, ({ message, meta }) =>
              this.#invoke(handler as PubSubHandler, message, meta),
            )
          : undefined,
    });
    if (fresh && this.#state !== 'idle') {
      await this.#starting;
      await this.#attach(channel);
    }
    return unsubscriber(() => this.unsubscribe(channel, handler));
  }

  async unsubscribe(channel: string, handler: PubSubHandler): Promise<void> {
    assertName(channel, 'channel');
    const subscribers = this.#channels.get(channel);
    const subscriber = subscribers?.get(handler);
    if (!subscribers || !subscriber) return;
    subscriber.debouncer?.cancel();
    subscribers.delete(handler);
    if (subscribers.size === 0) {
      this.#channels.delete(channel);
      if (this.#state === 'started') await this.adapter.unsubscribe(this.#wire(channel));
    }
  }

  /**
   * Broadcasts `message` to the app's instances. Encoding errors (functions, cycles, oversize) are
   * thrown here, before anything is sent.
   */
  publish(channel: string, message: unknown, options: PubSubPublishOptions = {}): Promise<void> {
    // Not async: the common case hands the adapter's promise straight back (one promise per message
    // instead of three); every failure still surfaces as a rejection, never as a throw.
    try {
      this.#open();
      assertName(channel, 'channel');
      const encoded = this.#serializer.encode(message);
      if (options.onlySelf) {
        this.#deliverLocal(channel, encoded);
        return RESOLVED;
      }
      const skipSelf = options.skipSelf ?? true;
      if (this.#state === 'started' && skipSelf) {
        return this.adapter.publish(this.#wire(channel), `${this.instanceId}\n${encoded}`);
      }
      return this.#publishSlowly(channel, encoded, skipSelf);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Before start() finished, or with skipSelf false (local delivery after the broker took it). */
  async #publishSlowly(channel: string, encoded: string, skipSelf: boolean): Promise<void> {
    if (this.#state !== 'started') {
      if (this.#state === 'starting') await this.#starting;
      else
        throw new ClusterError(
          'NOT_STARTED',
          'pub/sub is not started; only onlySelf messages can be sent before start',
        );
    }
    await this.adapter.publish(this.#wire(channel), `${this.instanceId}\n${encoded}`);
    if (!skipSelf) this.#deliverLocal(channel, encoded);
  }

  /** Stops delivery at once (pending debounced calls are dropped), then closes the adapter. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const wasStarted = this.#state !== 'idle';
      this.#state = 'closed';
      for (const subscribers of this.#channels.values()) {
        for (const subscriber of subscribers.values()) subscriber.debouncer?.cancel();
      }
      this.#channels.clear();
      if (wasStarted) await this.#starting?.catch(() => {});
      await this.adapter.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #open(): void {
    if (this.#state === 'closed') throw closedError('pub/sub manager');
  }

  /** Wire names are cached (bounded) because publish computes one per message. */
  #wire(channel: string): string {
    let wire = this.#wireNames.get(channel);
    if (wire === undefined) {
      if (this.#wireNames.size >= 1_000) this.#wireNames.clear();
      wire = namespaced(this.appName, channel);
      this.#wireNames.set(channel, wire);
    }
    return wire;
  }

  async #attach(channel: string): Promise<void> {
    await this.adapter.subscribe(this.#wire(channel), (payload) => this.#receive(channel, payload));
  }

  #receive(channel: string, payload: string): void {
    if (this.#state === 'closed') return;
    const cut = payload.indexOf('\n');
    if (cut < 0) {
      this.#logger.warn({ channel }, 'dropped a pub/sub message without envelope');
      return;
    }
    const publisherId = payload.slice(0, cut);
    if (publisherId === this.instanceId) return;
    this.#dispatch(channel, payload.slice(cut + 1), { channel, publisherId, local: false });
  }

  #deliverLocal(channel: string, encoded: string): void {
    // A microtask, like remote delivery: the publisher's own handlers never run inside publish().
    queueMicrotask(() => {
      if (this.#state !== 'closed')
        this.#dispatch(channel, encoded, { channel, publisherId: this.instanceId, local: true });
    });
  }

  #dispatch(channel: string, encoded: string, meta: PubSubMessageMeta): void {
    const subscribers = this.#channels.get(channel);
    if (!subscribers || subscribers.size === 0) return;
    let message: unknown;
    try {
      message = this.#serializer.decode(encoded);
    } catch (error) {
      this.#logger.warn({ channel, ...errorFields(error) }, 'dropped an undecodable pub/sub message');
      return;
    }
    if (subscribers.size === 1) {
      this.#deliverTo(subscribers.values().next().value!, message, encoded, meta);
      return;
    }
    // A snapshot (a handler may subscribe or unsubscribe others while they run), and each handler gets
    // its own copy, so one handler mutating the message cannot affect another: the first gets the
    // copy decoded above, the others one each.
    const snapshot = [...subscribers.values()];
    for (let i = 0; i < snapshot.length; i++) {
      this.#deliverTo(snapshot[i]!, i === 0 ? message : this.#serializer.decode(encoded), encoded, meta);
    }
  }

  #deliverTo(subscriber: Subscriber, message: unknown, encoded: string, meta: PubSubMessageMeta): void {
    if (subscriber.debouncer) subscriber.debouncer.push(encoded, { message, meta });
    else this.#invoke(subscriber.handler, message, meta);
  }

  #invoke(handler: PubSubHandler, message: unknown, meta: PubSubMessageMeta): void {
    if (this.#state === 'closed') return;
    const fail = (error: unknown) =>
      this.#logger.error({ channel: meta.channel, ...errorFields(error) }, 'pub/sub handler failed');
    try {
      const result = handler(message, meta);
      if (result && typeof (result as Promise<void>).then === 'function')
        (result as Promise<void>).catch(fail);
    } catch (error) {
      fail(error);
    }
  }
}
