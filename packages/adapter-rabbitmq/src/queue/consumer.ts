import { errorFields, type Logger, type QueueConsumerOptions, type QueueDelivery } from '@cluster/core';
import type { Channel, ConsumeMessage } from 'amqplib';
import type { RabbitConnection } from '../connection.js';
import { type ChannelNames, type TaskFields, taskFieldsOf } from './topology.js';

/** What a consumer needs from its adapter. */
export interface ConsumerContext {
  readonly connection: RabbitConnection;
  readonly logger: Logger;
  readonly visibilityTimeout: number;
  readonly operationTimeout: number;
  /** Declares the channel's queues on this connection (cached) and returns their names. */
  ensureTopology(channel: string): Promise<ChannelNames>;
  /** Drops the cached declaration of the channel's queues (they may have been deleted under us). */
  forgetTopology(channel: string): void;
  /** Publishes a copy of a task for its next attempt, after `delayMs`; resolves once confirmed. */
  publishRetry(channel: string, fields: TaskFields, payload: Buffer, delayMs: number): Promise<void>;
  /** Publishes the dead-letter record of a task; resolves once confirmed. */
  publishDeadLetter(channel: string, fields: TaskFields, payload: Buffer, error: string): Promise<void>;
}

type HeldState = 'buffered' | 'handed' | 'settling' | 'done';

/** One delivery from the broker, until it is settled or its claim expires. */
interface Held {
  readonly message: ConsumeMessage;
  readonly amqp: Channel;
  readonly fields: TaskFields;
  state: HeldState;
  /** Date.now() after which the claim expires (the delivery is handed back to the broker). */
  deadline: number;
  /** Its claim expired while the handler ran: nothing more is taken until the handler settles. */
  zombie: boolean;
  /** Acked by its handler; the ack goes out at the end of the turn (see #flushAcks). */
  acked: boolean;
}

/**
 * One consumer of one channel on its own AMQP channel, with prefetch = concurrency and manual acks.
 * A delivery's claim lasts `visibilityTimeout` without settlement or `touch()`; then it is nacked
 * back to the queue for another consumer and its late settlement returns false. Deliveries that
 * arrive while paused (or while a handler whose claim expired still runs) are held back unhanded
 * and given out on resume. After a channel or connection loss the broker requeues everything
 * unacked; the consumer opens a new channel and consumes again, and old deliveries settle to false.
 */
export class RabbitConsumer {
  readonly channel: string;
  readonly #ctx: ConsumerContext;
  readonly #concurrency: number;
  readonly #deliver: (delivery: QueueDelivery) => void;
  readonly #logger: Logger;
  readonly #held = new Set<Held>();
  readonly #buffered: Held[] = [];
  /** Deliveries of the current AMQP channel neither acked nor nacked yet, in delivery (tag) order. */
  readonly #unsettled = new Map<number, Held>();
  #acksScheduled = false;
  readonly #scheduleAcks = () => process.nextTick(this.#flushAcks);
  /**
   * Sends the acks of this turn: the settled deliveries from the oldest unsettled one on go as one
   * `multiple` ack (one frame, and one settle command in the quorum queue's log, instead of one
   * each); settled ones behind a delivery still running are acked one by one.
   */
  readonly #flushAcks = () => {
    this.#acksScheduled = false;
    const amqp = this.#amqp;
    if (amqp === undefined) return;
    let last: Held | undefined;
    let run = 0;
    let inRun = true;
    const singles: Held[] = [];
    for (const held of this.#unsettled.values()) {
      if (!held.acked) {
        inRun = false;
        continue;
      }
      if (inRun) {
        last = held;
        run += 1;
      } else singles.push(held);
    }
    if (last === undefined && singles.length === 0) return;
    try {
      if (last !== undefined) amqp.ack(last.message, run > 1);
      for (const held of singles) amqp.ack(held.message);
    } catch {
      // The channel is gone: the broker requeued these; their redeliveries run again (at least once).
    }
    for (const [tag, held] of this.#unsettled) if (held.acked) this.#unsettled.delete(tag);
  };
  #amqp: Channel | undefined;
  #names: ChannelNames | undefined;
  #consumerTag: string | undefined;
  #opening: Promise<void> | undefined;
  #ops: Promise<void> = Promise.resolve();
  #opsPending = 0;
  #userPaused = false;
  #zombies = 0;
  /** Deliveries handed to the handler and not settled yet (zombies not included). */
  #running = 0;
  #closed = false;
  #sweep: NodeJS.Timeout;
  #stopOpen: () => void;

  constructor(ctx: ConsumerContext, channel: string, options: QueueConsumerOptions) {
    this.#ctx = ctx;
    this.channel = channel;
    this.#concurrency = options.concurrency;
    this.#deliver = options.deliver;
    this.#logger = ctx.logger.child({ channel });
    this.#sweep = setInterval(
      () => this.#expire(),
      Math.max(20, Math.min(1_000, Math.floor(ctx.visibilityTimeout / 5))),
    );
    this.#sweep.unref();
    // Every new connection gets a new channel and a new consumer.
    this.#stopOpen = ctx.connection.onOpen(() => {
      if (this.#amqp === undefined) void this.#reopen();
    });
  }

  /** Unsettled deliveries of this consumer (held back or running). */
  get inFlight(): number {
    let count = 0;
    for (const held of this.#held) if (held.state !== 'done') count += 1;
    return count;
  }

  async start(): Promise<void> {
    await this.#open();
  }

  pause(): void {
    this.#userPaused = true;
    this.#reconcile();
  }

  resume(): void {
    this.#userPaused = false;
    this.#handOut();
    this.#reconcile();
  }

  /** Stops consuming. Held deliveries keep their claim until settled or expired; then the channel closes. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopOpen();
    // Held-back deliveries never reached a handler: hand them straight back.
    for (const held of this.#buffered.splice(0)) this.#release(held);
    this.#reconcile();
    await this.#ops;
    this.#closeIfIdle();
  }

  /**
   * Re-opens the channel (its unsettled deliveries go back to the queue): after the work queue was
   * deleted and declared again, a consumer registered just then may be left attached to nothing.
   */
  recycle(): void {
    if (this.#closed || this.#amqp === undefined) return;
    this.#flushAcks();
    void this.#ctx.connection.closeChannel(this.#amqp);
  }

  /** Closes the channel now: the broker requeues every unsettled delivery (the adapter is closing). */
  async destroy(): Promise<void> {
    this.#closed = true;
    this.#stopOpen();
    clearInterval(this.#sweep);
    this.#flushAcks();
    const amqp = this.#amqp;
    this.#amqp = undefined;
    this.#markLost();
    await this.#ctx.connection.closeChannel(amqp);
  }

  async #open(): Promise<void> {
    if (this.#opening) return this.#opening;
    this.#opening = (async () => {
      const names = await this.#ctx.ensureTopology(this.channel);
      const amqp = await this.#ctx.connection.channel(
        'queue-consume',
        false,
        this.#ctx.operationTimeout,
        () => this.#onChannelClosed(amqp),
      );
      try {
        await amqp.prefetch(this.#concurrency);
      } catch (error) {
        await this.#ctx.connection.closeChannel(amqp);
        throw this.#ctx.connection.error(error, 'queue prefetch');
      }
      if (this.#closed) {
        await this.#ctx.connection.closeChannel(amqp);
        return;
      }
      this.#names = names;
      this.#amqp = amqp;
      this.#consumerTag = undefined;
      this.#reconcile();
      await this.#ops;
    })();
    try {
      await this.#opening;
    } finally {
      this.#opening = undefined;
    }
  }

  async #reopen(): Promise<void> {
    if (this.#closed || this.#amqp !== undefined || this.#opening !== undefined) return;
    try {
      await this.#open();
    } catch (error) {
      this.#logger.warn({ ...errorFields(error) }, 'rabbitmq consumer could not reopen; retrying');
      if (!this.#closed && this.#ctx.connection.isOpen) setTimeout(() => void this.#reopen(), 500).unref();
    }
  }

  #onChannelClosed(amqp: Channel): void {
    if (this.#amqp !== amqp) return;
    this.#amqp = undefined;
    this.#consumerTag = undefined;
    this.#markLost();
    if (this.#closed) return;
    // A 404 (queue deleted under us) must declare it again, not consume a missing queue for ever.
    this.#ctx.forgetTopology(this.channel);
    // A channel error on a live connection (a deleted queue, a 406) is healed on that connection;
    // a lost connection is healed by the onOpen listener.
    setTimeout(() => {
      if (this.#ctx.connection.isOpen) void this.#reopen();
    }, 200).unref();
  }

  /** The broker requeued everything unacked on the dead channel: those deliveries are no longer ours. */
  #markLost(): void {
    for (const held of this.#held) {
      if (held.state === 'done') continue;
      if (held.zombie) continue;
      held.state = 'done';
    }
    this.#held.clear();
    this.#unsettled.clear();
    this.#buffered.length = 0;
    this.#zombies = 0;
    this.#running = 0;
  }

  /** Consumes or cancels so that the broker sends deliveries only while this consumer may take them. */
  #reconcile(): void {
    // Nothing to change (the common case, after every settlement): no promise work at all.
    const wanted = !this.#closed && !this.#userPaused && this.#zombies === 0;
    if (this.#opsPending === 0 && wanted === (this.#consumerTag !== undefined)) return;
    this.#opsPending += 1;
    this.#ops = this.#ops.then(async () => {
      const amqp = this.#amqp;
      const names = this.#names;
      const wanted = !this.#closed && !this.#userPaused && this.#zombies === 0;
      try {
        if (amqp === undefined || names === undefined) return;
        if (wanted && this.#consumerTag === undefined) {
          const { consumerTag } = await amqp.consume(
            names.work,
            (message) => this.#onMessage(amqp, message),
            {
              noAck: false,
            },
          );
          if (this.#amqp === amqp) this.#consumerTag = consumerTag;
        } else if (!wanted && this.#consumerTag !== undefined) {
          const tag = this.#consumerTag;
          this.#consumerTag = undefined;
          await amqp.cancel(tag);
        }
      } catch (error) {
        // The channel is closing; its close handler reopens.
        this.#logger.debug({ ...errorFields(error) }, 'rabbitmq consume/cancel failed');
      } finally {
        this.#opsPending -= 1;
      }
    });
  }

  #onMessage(amqp: Channel, message: ConsumeMessage | null): void {
    if (message === null) {
      // The broker cancelled the consumer (its queue was deleted): declare and consume again.
      if (this.#amqp === amqp) this.#consumerTag = undefined;
      this.#ctx.forgetTopology(this.channel);
      if (!this.#closed) {
        setTimeout(() => {
          this.#ctx.ensureTopology(this.channel).then(
            () => this.#reconcile(),
            () => this.#reconcile(),
          );
        }, 200).unref();
      }
      return;
    }
    if (this.#amqp !== amqp) return;
    const held: Held = {
      message,
      amqp,
      fields: taskFieldsOf(message),
      state: 'buffered',
      deadline: Date.now() + this.#ctx.visibilityTimeout,
      zombie: false,
      acked: false,
    };
    this.#held.add(held);
    this.#unsettled.set(message.fields.deliveryTag, held);
    if (this.#closed) {
      this.#release(held);
      return;
    }
    this.#buffered.push(held);
    this.#handOut();
  }

  #canHandOut(): boolean {
    return !this.#closed && !this.#userPaused && this.#running + this.#zombies < this.#concurrency;
  }

  #handOut(): void {
    while (this.#buffered.length > 0 && this.#canHandOut()) {
      const held = this.#buffered.shift()!;
      if (held.state !== 'buffered') continue;
      held.state = 'handed';
      this.#running += 1;
      held.deadline = Date.now() + this.#ctx.visibilityTimeout;
      try {
        this.#deliver(this.#delivery(held));
      } catch (error) {
        this.#logger.error({ ...errorFields(error) }, 'queue deliver callback threw');
      }
    }
  }

  #delivery(held: Held): QueueDelivery {
    const { fields } = held;
    const ours = () => held.state === 'handed' && this.#amqp === held.amqp;
    const finish = () => {
      this.#running -= 1;
      held.state = 'done';
      this.#held.delete(held);
      this.#afterSettle();
    };
    /** A stale delivery's first settlement ends its zombie hold (its handler is done). */
    const stale = (): false => {
      if (held.zombie) {
        held.zombie = false;
        this.#zombies = Math.max(0, this.#zombies - 1);
        this.#held.delete(held);
        this.#afterSettle();
      }
      return false;
    };
    const ack = (): boolean => {
      if (this.#amqp !== held.amqp) return false;
      held.acked = true;
      if (!this.#acksScheduled) {
        this.#acksScheduled = true;
        // Once the microtask queue drains: every handler that finished on this turn acks together.
        queueMicrotask(this.#scheduleAcks);
      }
      return true;
    };
    return {
      id: fields.id,
      payload: held.message.content.toString(),
      attempt: fields.attempt,
      maxRetries: fields.maxRetries,
      timeout: fields.timeout,
      publishedAt: fields.publishedAt,
      ack: async () => {
        if (!ours()) return stale();
        const done = ack();
        finish();
        return done;
      },
      retry: async (delayMs, _error) => {
        if (!ours()) return stale();
        held.state = 'settling';
        try {
          await this.#ctx.publishRetry(
            this.channel,
            { ...fields, attempt: fields.attempt + 1 },
            held.message.content,
            delayMs,
          );
        } catch (error) {
          // Not settled: the claim runs out and the broker hands the task out again.
          if (held.state === 'settling') held.state = 'handed';
          throw error;
        }
        if (held.state !== 'settling' || this.#amqp !== held.amqp) return stale();
        const done = ack();
        finish();
        return done;
      },
      deadLetter: async (error) => {
        if (!ours()) return stale();
        held.state = 'settling';
        try {
          await this.#ctx.publishDeadLetter(this.channel, fields, held.message.content, error);
        } catch (failure) {
          if (held.state === 'settling') held.state = 'handed';
          throw failure;
        }
        if (held.state !== 'settling' || this.#amqp !== held.amqp) return stale();
        const done = ack();
        finish();
        return done;
      },
      touch: async () => {
        if (!ours()) return false;
        held.deadline = Date.now() + this.#ctx.visibilityTimeout;
        return true;
      },
    };
  }

  #afterSettle(): void {
    if (this.#closed) {
      this.#closeIfIdle();
      return;
    }
    this.#handOut();
    if (this.#zombies === 0) this.#reconcile();
  }

  /** Hands a delivery back to the broker (requeued for any consumer). */
  #release(held: Held): void {
    held.state = 'done';
    this.#held.delete(held);
    if (this.#amqp === held.amqp) {
      this.#unsettled.delete(held.message.fields.deliveryTag);
      try {
        held.amqp.nack(held.message, false, true);
      } catch {
        // the channel is gone: the broker requeued it already
      }
    }
  }

  /** Claims past their deadline go back to the broker; a running one becomes a zombie until it settles. */
  #expire(): void {
    const now = Date.now();
    let expired = 0;
    for (const held of [...this.#held]) {
      if (held.zombie || held.deadline > now) continue;
      if (held.state === 'buffered') {
        const index = this.#buffered.indexOf(held);
        if (index >= 0) this.#buffered.splice(index, 1);
        this.#release(held);
        expired += 1;
      } else if (held.state === 'handed') {
        this.#running -= 1;
        this.#release(held);
        // Still counted against concurrency until its handler settles: a stuck consumer takes nothing more.
        held.zombie = true;
        this.#held.add(held);
        this.#zombies += 1;
        expired += 1;
      }
    }
    if (expired > 0) {
      this.#logger.warn({ expired }, 'task claims expired; handed back to the queue');
      this.#reconcile();
    }
    if (this.#closed) this.#closeIfIdle();
  }

  #closeIfIdle(): void {
    if (!this.#closed || this.#held.size > 0) return;
    clearInterval(this.#sweep);
    this.#flushAcks();
    const amqp = this.#amqp;
    this.#amqp = undefined;
    void this.#ctx.connection.closeChannel(amqp);
  }
}
