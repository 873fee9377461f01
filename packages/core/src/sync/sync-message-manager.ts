import { closedError, invalidArgument } from '../errors.js';
import { Debouncer } from '../internal/debounce.js';
import { assertName, assertOptionalMs } from '../internal/names.js';
import type { Logger } from '../logger.js';
import { errorFields, noopLogger } from '../logger.js';
import {
  type PubSubManager,
  type PubSubMessageMeta,
  type Unsubscribe,
  unsubscriber,
} from '../pubsub/pubsub-manager.js';
import type { Serializer } from '../serializer.js';
import { defaultSerializer } from '../serializer.js';

/** Anything with `afterCommit(cb)`: a Sequelize transaction, a Knex wrapper, your own. */
export interface TransactionLike {
  afterCommit(callback: () => unknown): unknown;
  /** Optional; when present it lets the manager forget a message at once on rollback. */
  afterRollback?(callback: () => unknown): unknown;
}

export interface SyncPublishOptions {
  /** Send only after this transaction commits; never on rollback. */
  transaction?: TransactionLike | null;
}

export interface SyncMessageMeta extends PubSubMessageMeta {
  /** Per (publisher, channel) sequence number, 1 for a publisher's first message. */
  readonly seq: number;
}

/** What a receiver learns when it sees a jump in a publisher's sequence. */
export interface SyncGap {
  readonly channel: string;
  readonly publisherId: string;
  /** The sequence number it expected next; 0 when the cause is a reconnect (unknown loss). */
  readonly expected: number;
  readonly received: number;
  readonly reason: 'sequence' | 'reconnect';
}

export type SyncHandler<T = any> = (message: T, meta: SyncMessageMeta) => void | Promise<void>;

export interface SyncSubscribeOptions {
  /** Runs when messages were missed, so the receiver can reload its state from the source of truth. */
  onGap?: (gap: SyncGap) => void | Promise<void>;
  /** Collapse identical messages within this many ms (default: the manager's, 0 = none). */
  debounce?: number;
}

export interface SyncMessageManagerOptions {
  pubSub: PubSubManager;
  /** Default debounce in ms for subscribers. 0 (the default) delivers at once. */
  debounce?: number;
  serializer?: Serializer;
  logger?: Logger;
}

interface Envelope {
  s: number;
  d: unknown;
}

interface SyncSubscription {
  channel: string;
  handler: SyncHandler;
  options: SyncSubscribeOptions;
  /** Last sequence seen per publisher. */
  lastSeq: Map<string, number>;
  debouncer: Debouncer<{ message: unknown; meta: SyncMessageMeta }> | undefined;
  pubSubHandler: (message: Envelope, meta: PubSubMessageMeta) => void;
}

const CHANNEL_PREFIX = '__sync.';

/**
 * State-sync signals between instances, on top of pub/sub. Messages are sent to the OTHER
 * instances (skipSelf), after the caller's transaction commits, with a per-channel sequence so a
 * receiver can tell it missed some and resync.
 */
export class SyncMessageManager {
  readonly pubSub: PubSubManager;
  readonly #debounce: number;
  readonly #serializer: Serializer;
  readonly #logger: Logger;
  readonly #nextSeq = new Map<string, number>();
  readonly #subscriptions = new Map<string, Map<SyncHandler, SyncSubscription>>();
  #stopped = false;

  constructor(options: SyncMessageManagerOptions) {
    assertOptionalMs(options.debounce, 'sync debounce', true);
    this.pubSub = options.pubSub;
    this.#debounce = options.debounce ?? 0;
    this.#serializer = options.serializer ?? defaultSerializer;
    this.#logger = (options.logger ?? noopLogger).child({ component: 'sync' });
    this.pubSub.onReconnect(() => this.#reconnected());
  }

  /**
   * Publishes `message` on `channel` to the other instances. With a transaction, the promise
   * settles at once and the message goes out after commit (never on rollback); a failure to send
   * after commit is logged. Bad messages throw here, before anything is scheduled.
   */
  async publish(channel: string, message: unknown, options: SyncPublishOptions = {}): Promise<void> {
    if (this.#stopped) throw closedError('sync message manager');
    assertName(channel, 'sync channel');
    // Encode now so an unserialisable message fails at the call site, not after commit.
    this.#serializer.encode(message);
    const transaction = options.transaction;
    if (transaction) {
      if (typeof transaction.afterCommit !== 'function')
        throw invalidArgument('transaction must have afterCommit()');
      transaction.afterCommit(() => {
        this.#send(channel, message).catch((error) =>
          this.#logger.error({ channel, ...errorFields(error) }, 'sync message after commit failed'),
        );
      });
      return;
    }
    await this.#send(channel, message);
  }

  /** Handles messages from the other instances on `channel`. Resolves to an unsubscribe function. */
  async subscribe<T = any>(
    channel: string,
    handler: SyncHandler<T>,
    options: SyncSubscribeOptions = {},
  ): Promise<Unsubscribe> {
    if (this.#stopped) throw closedError('sync message manager');
    assertName(channel, 'sync channel');
    if (typeof handler !== 'function') throw invalidArgument('handler must be a function');
    assertOptionalMs(options.debounce, 'debounce', true);
    let byHandler = this.#subscriptions.get(channel);
    if (!byHandler) this.#subscriptions.set(channel, (byHandler = new Map()));
    const existing = byHandler.get(handler as SyncHandler);
    if (existing) await this.unsubscribe(channel, handler);
    const debounce = options.debounce ?? this.#debounce;
    const subscription: SyncSubscription = {
      channel,
      handler: handler as SyncHandler,
      options,
      lastSeq: new Map(),
      debouncer:
        debounce > 0
          ? new Debouncer(debounce, ({ message, meta }) => this.#invoke(subscription, message, meta))
          : undefined,
      pubSubHandler: (envelope, meta) => this.#receive(subscription, envelope, meta),
    };
    byHandler.set(handler as SyncHandler, subscription);
    this.#subscriptions.set(channel, byHandler);
    await this.pubSub.subscribe(CHANNEL_PREFIX + channel, subscription.pubSubHandler);
    return unsubscriber(() => this.unsubscribe(channel, handler));
  }

  async unsubscribe(channel: string, handler: SyncHandler): Promise<void> {
    const byHandler = this.#subscriptions.get(channel);
    const subscription = byHandler?.get(handler);
    if (!byHandler || !subscription) return;
    subscription.debouncer?.cancel();
    byHandler.delete(handler);
    if (byHandler.size === 0) this.#subscriptions.delete(channel);
    await this.pubSub.unsubscribe(CHANNEL_PREFIX + channel, subscription.pubSubHandler as never);
  }

  /** After stop nothing is handled, pending debounced calls included. Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const byHandler of this.#subscriptions.values()) {
      for (const subscription of byHandler.values()) subscription.debouncer?.cancel();
    }
  }

  async #send(channel: string, message: unknown): Promise<void> {
    if (this.#stopped) return;
    // The sequence is taken when the message really leaves, so rolled-back messages leave no gap.
    const seq = (this.#nextSeq.get(channel) ?? 0) + 1;
    this.#nextSeq.set(channel, seq);
    const envelope: Envelope = { s: seq, d: message };
    await this.pubSub.publish(CHANNEL_PREFIX + channel, envelope, { skipSelf: true });
  }

  #receive(subscription: SyncSubscription, envelope: Envelope, meta: PubSubMessageMeta): void {
    if (this.#stopped) return;
    if (!envelope || typeof envelope !== 'object' || typeof envelope.s !== 'number') {
      this.#logger.warn({ channel: subscription.channel }, 'dropped a sync message without sequence');
      return;
    }
    const last = subscription.lastSeq.get(meta.publisherId);
    if (last !== undefined && envelope.s <= last) return; // duplicate or stale
    subscription.lastSeq.set(meta.publisherId, envelope.s);
    if (last !== undefined && envelope.s !== last + 1) {
      this.#gap(subscription, {
        channel: subscription.channel,
        publisherId: meta.publisherId,
        expected: last + 1,
        received: envelope.s,
        reason: 'sequence',
      });
    }
    const syncMeta: SyncMessageMeta = { ...meta, channel: subscription.channel, seq: envelope.s };
    if (subscription.debouncer) {
      subscription.debouncer.push(this.#serializer.encode(envelope.d), {
        message: envelope.d,
        meta: syncMeta,
      });
    } else {
      this.#invoke(subscription, envelope.d, syncMeta);
    }
  }

  #reconnected(): void {
    for (const byHandler of this.#subscriptions.values()) {
      for (const subscription of byHandler.values()) {
        this.#gap(subscription, {
          channel: subscription.channel,
          publisherId: '',
          expected: 0,
          received: 0,
          reason: 'reconnect',
        });
      }
    }
  }

  #gap(subscription: SyncSubscription, gap: SyncGap): void {
    this.#logger.warn({ ...gap }, 'sync messages were missed');
    const onGap = subscription.options.onGap;
    if (!onGap || this.#stopped) return;
    this.#call(() => onGap(gap), subscription.channel, 'sync resync hook failed');
  }

  #invoke(subscription: SyncSubscription, message: unknown, meta: SyncMessageMeta): void {
    if (this.#stopped) return;
    this.#call(
      () => subscription.handler(message, meta),
      subscription.channel,
      'sync message handler failed',
    );
  }

  #call(fn: () => void | Promise<void>, channel: string, what: string): void {
    const fail = (error: unknown) => this.#logger.error({ channel, ...errorFields(error) }, what);
    try {
      const result = fn();
      if (result && typeof (result as Promise<void>).then === 'function')
        (result as Promise<void>).catch(fail);
    } catch (error) {
      fail(error);
    }
  }
}
