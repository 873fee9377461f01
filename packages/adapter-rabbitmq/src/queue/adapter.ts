import {
  assertDeadLetterIds,
  assertQueuePublishRequest,
  ClusterError,
  closedError,
  DEFAULT_MAX_PAYLOAD_BYTES,
  type DeadLetterRecord,
  errorFields,
  invalidArgument,
  type Logger,
  type QueueAdapter,
  type QueueCapabilities,
  type QueueConsumer,
  type QueueConsumerOptions,
  type QueuePublishRequest,
  type QueuePublishResult,
  type QueueStats,
} from '@cluster/core';
import type { Channel, GetMessage, Options } from 'amqplib';
import { RabbitConnection, type RabbitConnectionOptions } from '../connection.js';
import { ConfirmPublisher, UnroutableError, withDeadline } from '../publisher.js';
import type { RabbitTopology } from '../pubsub/adapter.js';
import { type ConsumerContext, RabbitConsumer } from './consumer.js';
import {
  type ChannelNames,
  channelNames,
  deadLetterOf,
  delayBucket,
  HEADER,
  storedFieldsOf,
  type TaskFields,
  taskHeaders,
} from './topology.js';

export interface RabbitQueueOptions extends RabbitConnectionOptions {
  /** A connection shared with other adapters (see `createRabbitAdapters`); retained and released here. */
  connections?: RabbitConnection;
  /**
   * ms a delivery stays claimed without being settled or touched before it is handed back to the
   * queue for another consumer. Default 30,000. Must stay below the broker's `consumer_timeout`.
   */
  visibilityTimeout?: number;
  /**
   * The broker's `consumer_timeout` in ms (RabbitMQ closes a channel holding a delivery unacked that
   * long). Publishes with a longer task `timeout`, and a longer `visibilityTimeout`, are refused.
   * Default 1,800,000 (RabbitMQ's default, 30 min).
   */
  consumerTimeout?: number;
  /**
   * `x-delivery-limit` of the work queues: the broker dead-letters a message redelivered this many
   * times (its consumers kept dying). A poison guard behind the EventQueue's own one. Default 20.
   * It is part of the queue's declaration: changing it for an existing queue fails (406).
   */
  deliveryLimit?: number;
  /** Deadline of one publish (waiting for a connection and the confirm included), in ms. Default 10,000. */
  publishTimeout?: number;
}

export interface RabbitQueueAdapter extends QueueAdapter {
  /** The queues this adapter declared (work, dead-letter and delay queues), for tooling and test cleanup. */
  topology(): RabbitTopology;
}

const DEFAULT_VISIBILITY_TIMEOUT = 30_000;
const DEFAULT_CONSUMER_TIMEOUT = 1_800_000;
const DEFAULT_DELIVERY_LIMIT = 20;
const MAX_TIMER_MS = 2_147_483_647;
/** Dead letters read at most by one list / replay / purge without ids. */
const MAX_DEAD_LETTER_SCAN = 100_000;
/** A cached declare is renewed after this long, so a delay queue's x-expires never runs out while in use. */
const REDECLARE_MS = 60_000;
/** Idle delay queues are deleted by the broker this long after their last declare (past their TTL). */
const DELAY_QUEUE_IDLE_MS = 10 * 60_000;

function assertMs(value: unknown, what: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_TIMER_MS)
    throw invalidArgument(`${what} must be a positive number of milliseconds up to ${MAX_TIMER_MS}`);
}

function assertChannel(value: unknown): asserts value is string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 512)
    throw invalidArgument('channel must be a non-empty string of at most 512 characters');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(value))
    throw invalidArgument('channel must not contain control characters');
}

function isNotFound(error: unknown): boolean {
  return (error as { code?: unknown } | undefined)?.code === 404;
}

const QUORUM = { 'x-queue-type': 'quorum' } as const;
const SAFE_DEAD_LETTERING = {
  'x-dead-letter-strategy': 'at-least-once',
  'x-overflow': 'reject-publish',
} as const;

/**
 * A durable, at-least-once queue on RabbitMQ quorum queues. Per channel: a work queue consumed with
 * manual acks and prefetch = concurrency, a dead-letter queue (also the broker's target past
 * `x-delivery-limit`), and delay queues whose fixed TTL dead-letters messages back to the work
 * queue (for `delay` and retry backoff). Every publish waits for the broker's confirm.
 */
class RabbitQueue implements RabbitQueueAdapter {
  readonly capabilities: QueueCapabilities;
  readonly #connection: RabbitConnection;
  readonly #logger: Logger;
  readonly #publisher: ConfirmPublisher;
  readonly #visibilityTimeout: number;
  readonly #consumerTimeout: number;
  readonly #deliveryLimit: number;
  readonly #publishTimeout: number;
  readonly #operationTimeout: number;
  readonly #consumers = new Set<RabbitConsumer>();
  /** Declares done on the current connection: queue name -> when (for renewal) and the pending promise. */
  #declared = new Map<string, { at: number; done: Promise<void> }>();
  readonly #queues = new Set<string>();
  /** Channels whose work and dead-letter queues are declared on this connection: the publish fast path. */
  #ready = new Map<string, ChannelNames>();
  #topologyChannel: Channel | undefined;
  #deadLetterLock: Promise<void> = Promise.resolve();
  #topologyOpening: Promise<Channel> | undefined;
  #stopLost: (() => void) | undefined;
  #connected = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #ctx: ConsumerContext;

  constructor(options: RabbitQueueOptions) {
    const visibilityTimeout = options.visibilityTimeout ?? DEFAULT_VISIBILITY_TIMEOUT;
    assertMs(visibilityTimeout, 'visibilityTimeout');
    const consumerTimeout = options.consumerTimeout ?? DEFAULT_CONSUMER_TIMEOUT;
    assertMs(consumerTimeout, 'consumerTimeout');
    if (visibilityTimeout >= consumerTimeout)
      throw invalidArgument("visibilityTimeout must be below the broker's consumerTimeout");
    const deliveryLimit = options.deliveryLimit ?? DEFAULT_DELIVERY_LIMIT;
    if (!Number.isInteger(deliveryLimit) || deliveryLimit < 1)
      throw invalidArgument('deliveryLimit must be an integer >= 1');
    const publishTimeout = options.publishTimeout ?? 10_000;
    assertMs(publishTimeout, 'publishTimeout');
    const given = options.connections;
    if (given !== undefined && !(given instanceof RabbitConnection))
      throw invalidArgument('connections must be a RabbitConnection');
    this.#connection = (given ?? new RabbitConnection(options)).retain();
    this.#logger = this.#connection.logger.child({ part: 'queue' });
    this.#publisher = new ConfirmPublisher(this.#connection, 'queue-publish');
    this.#visibilityTimeout = visibilityTimeout;
    this.#consumerTimeout = consumerTimeout;
    this.#deliveryLimit = deliveryLimit;
    this.#publishTimeout = publishTimeout;
    this.#operationTimeout = Math.min(publishTimeout, 10_000);
    this.capabilities = Object.freeze({
      durable: true,
      crossProcess: true,
      delivery: 'at-least-once',
      delayed: true,
      deadLetter: true,
      // RabbitMQ has no broker-side dedupe without a plugin; ids travel as messageId (see README).
      dedupe: 'none',
      redelivery: true,
      visibilityTimeoutMs: visibilityTimeout,
      maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES,
    });
    this.#ctx = {
      connection: this.#connection,
      logger: this.#logger,
      visibilityTimeout,
      operationTimeout: this.#operationTimeout,
      ensureTopology: (channel) => this.#ensureTopology(channel),
      forgetTopology: (channel) => {
        this.#ready.delete(channel);
        const names = this.#names(channel);
        this.#declared.delete(names.work);
        this.#declared.delete(names.dead);
      },
      publishRetry: (channel, fields, payload, delayMs) =>
        this.#publishTask(channel, fields, payload, delayMs, 'queue retry'),
      publishDeadLetter: (channel, fields, payload, error) =>
        this.#publishDeadLetter(channel, fields, payload, error),
    };
  }

  async connect(): Promise<void> {
    if (this.#closed) throw closedError('rabbitmq queue adapter');
    if (this.#connected) return;
    try {
      await this.#connection.connect();
    } catch (error) {
      throw this.#connection.error(error, 'queue connect');
    }
    if (this.#closed) throw closedError('rabbitmq queue adapter');
    // Queues are declared again on a new connection (the broker may have restarted without them).
    this.#stopLost ??= this.#connection.onLost(() => {
      this.#declared = new Map();
      this.#ready = new Map();
      this.#topologyChannel = undefined;
    });
    this.#connected = true;
  }

  async publish(channel: string, task: QueuePublishRequest): Promise<QueuePublishResult> {
    this.#assertOpen();
    assertChannel(channel);
    assertQueuePublishRequest(task, this.capabilities.maxPayloadBytes);
    if (task.timeout >= this.#consumerTimeout) {
      throw invalidArgument(
        `timeout must be below the broker's consumer timeout (${this.#consumerTimeout} ms): RabbitMQ would close the channel of a task running that long`,
      );
    }
    const fields: TaskFields = {
      id: task.id,
      attempt: 1,
      maxRetries: task.maxRetries,
      timeout: task.timeout,
      publishedAt: Date.now(),
    };
    await this.#publishTask(channel, fields, Buffer.from(task.payload), task.delay, 'queue publish');
    return { id: task.id, duplicate: false };
  }

  async consume(channel: string, options: QueueConsumerOptions): Promise<QueueConsumer> {
    this.#assertOpen();
    assertChannel(channel);
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1)
      throw invalidArgument('concurrency must be an integer >= 1');
    if (typeof options.deliver !== 'function') throw invalidArgument('deliver must be a function');
    const consumer = new RabbitConsumer(this.#ctx, channel, options);
    this.#consumers.add(consumer);
    try {
      await consumer.start();
    } catch (error) {
      this.#consumers.delete(consumer);
      await consumer.destroy();
      throw this.#connection.error(error, 'queue consume');
    }
    if (this.#closed) {
      await consumer.destroy();
      throw closedError('rabbitmq queue adapter');
    }
    return {
      pause: () => consumer.pause(),
      resume: () => consumer.resume(),
      // Stays in #consumers until the adapter closes: its held deliveries count as in flight.
      close: () => consumer.close(),
    };
  }

  async listDeadLetters(channel: string, options: { limit?: number } = {}): Promise<DeadLetterRecord[]> {
    this.#assertOpen();
    assertChannel(channel);
    const limit = options?.limit;
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1))
      throw invalidArgument('limit must be an integer >= 1');
    const out: DeadLetterRecord[] = [];
    await this.#scanDeadLetters(
      channel,
      limit ?? MAX_DEAD_LETTER_SCAN,
      'queue list dead letters',
      (message) => {
        out.push(deadLetterOf(message, this.#deliveryLimit));
        return 'keep';
      },
    );
    return out;
  }

  async replayDeadLetters(channel: string, ids?: readonly string[]): Promise<number> {
    this.#assertOpen();
    assertChannel(channel);
    assertDeadLetterIds(ids);
    const wanted = ids === undefined ? undefined : new Set(ids);
    let replayed = 0;
    await this.#scanDeadLetters(
      channel,
      MAX_DEAD_LETTER_SCAN,
      'queue replay dead letters',
      async (message) => {
        const record = deadLetterOf(message, this.#deliveryLimit);
        if (wanted !== undefined && !wanted.has(record.id)) return 'keep';
        const stored = storedFieldsOf(message);
        const fields: TaskFields = { ...stored, id: record.id, attempt: 1, publishedAt: Date.now() };
        // Confirmed on the work queue before the dead letter goes: a failure keeps it in the DLQ.
        await this.#publishTask(channel, fields, message.content, 0, 'queue replay dead letters');
        replayed += 1;
        return 'remove';
      },
    );
    return replayed;
  }

  async purgeDeadLetters(channel: string, ids?: readonly string[]): Promise<number> {
    this.#assertOpen();
    assertChannel(channel);
    assertDeadLetterIds(ids);
    const names = await this.#ensureTopology(channel);
    if (ids === undefined) {
      return this.#underDeadLetterLock(async () => {
        const topology = await this.#topology();
        try {
          const { messageCount } = await withDeadline(
            topology.purgeQueue(names.dead),
            this.#operationTimeout,
            'queue purge dead letters',
          );
          return messageCount;
        } catch (error) {
          throw this.#connection.error(error, 'queue purge dead letters');
        }
      });
    }
    const wanted = new Set(ids);
    let purged = 0;
    await this.#scanDeadLetters(channel, MAX_DEAD_LETTER_SCAN, 'queue purge dead letters', (message) => {
      if (!wanted.has(String(message.properties.messageId ?? ''))) return 'keep';
      purged += 1;
      return 'remove';
    });
    return purged;
  }

  async stats(channel: string): Promise<QueueStats> {
    this.#assertOpen();
    assertChannel(channel);
    const names = await this.#ensureTopology(channel);
    const [pending, deadLetters] = await Promise.all([this.#count(names.work), this.#count(names.dead)]);
    let delayed = 0;
    const delayPrefix = names.delay(0).slice(0, -1);
    for (const queue of this.#queues) if (queue.startsWith(delayPrefix)) delayed += await this.#count(queue);
    let inFlight = 0;
    for (const consumer of this.#consumers) if (consumer.channel === channel) inFlight += consumer.inFlight;
    return { pending, delayed, inFlight, deadLetters };
  }

  topology(): RabbitTopology {
    return { exchanges: [], queues: [...this.#queues] };
  }

  /**
   * Closes every consumer's channel (the broker requeues unsettled deliveries for the other
   * instances), then the connection if it was opened here. Tasks live in RabbitMQ.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#connected = false;
      this.#stopLost?.();
      const consumers = [...this.#consumers];
      this.#consumers.clear();
      await Promise.allSettled(consumers.map((consumer) => consumer.destroy()));
      await this.#publisher.close();
      await this.#connection.closeChannel(this.#topologyChannel);
      try {
        await this.#connection.close();
      } catch (error) {
        this.#logger.warn(errorFields(error), 'closing the rabbitmq connection failed');
      }
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Keeps connection options (and their passwords) out of logs and inspection. */
  toJSON(): Record<string, unknown> {
    return { kind: 'rabbitmq-queue', capabilities: this.capabilities };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `RabbitQueue { closed: ${this.#closed} }`;
  }

  #assertOpen(): void {
    if (this.#closed) throw closedError('rabbitmq queue adapter');
    if (!this.#connected)
      throw new ClusterError('NOT_STARTED', 'rabbitmq queue adapter is not connected; call connect() first');
  }

  #names(channel: string): ChannelNames {
    return channelNames(this.#connection.prefix, channel);
  }

  /** A plain channel for declares and counts; a failed declare closes only it. */
  async #topology(): Promise<Channel> {
    if (this.#topologyChannel !== undefined) return this.#topologyChannel;
    this.#topologyOpening ??= (async () => {
      try {
        const channel = await this.#connection.channel(
          'queue-topology',
          false,
          this.#operationTimeout,
          () => {
            if (this.#topologyChannel === channel) this.#topologyChannel = undefined;
          },
        );
        this.#topologyChannel = channel;
        return channel;
      } finally {
        this.#topologyOpening = undefined;
      }
    })();
    return this.#topologyOpening;
  }

  #declare(queue: string, options: Options.AssertQueue): Promise<void> {
    const cached = this.#declared.get(queue);
    if (cached !== undefined && Date.now() - cached.at < REDECLARE_MS) return cached.done;
    this.#queues.add(queue);
    const done = (async () => {
      const channel = await this.#topology();
      try {
        await withDeadline(channel.assertQueue(queue, options), this.#operationTimeout, `declaring ${queue}`);
      } catch (error) {
        throw this.#connection.error(error, `declaring queue ${JSON.stringify(queue)}`);
      }
    })();
    const entry = { at: Date.now(), done };
    this.#declared.set(queue, entry);
    done.catch(() => {
      if (this.#declared.get(queue) === entry) this.#declared.delete(queue);
    });
    return done;
  }

  async #ensureTopology(channel: string): Promise<ChannelNames> {
    const ready = this.#ready.get(channel);
    if (ready !== undefined) return ready;
    const names = this.#names(channel);
    await Promise.all([
      this.#declare(names.dead, { durable: true, arguments: { ...QUORUM } }),
      this.#declare(names.work, {
        durable: true,
        arguments: {
          ...QUORUM,
          'x-delivery-limit': this.#deliveryLimit,
          'x-dead-letter-exchange': '',
          'x-dead-letter-routing-key': names.dead,
          ...SAFE_DEAD_LETTERING,
        },
      }),
    ]);
    this.#ready.set(channel, names);
    return names;
  }

  async #delayQueue(names: ChannelNames, ms: number): Promise<string> {
    const queue = names.delay(ms);
    await this.#declare(queue, {
      durable: true,
      arguments: {
        ...QUORUM,
        'x-message-ttl': ms,
        'x-expires': ms + DELAY_QUEUE_IDLE_MS,
        'x-dead-letter-exchange': '',
        'x-dead-letter-routing-key': names.work,
        ...SAFE_DEAD_LETTERING,
      },
    });
    return queue;
  }

  async #publishTask(
    channel: string,
    fields: TaskFields,
    payload: Buffer,
    delayMs: number,
    what: string,
  ): Promise<void> {
    // One deadline for everything: declaring the queues (after a reconnect) and the confirm.
    const deadline = Date.now() + this.#publishTimeout;
    const bucket = delayMs > 0 ? delayBucket(delayMs) : 0;
    for (;;) {
      const names =
        this.#ready.get(channel) ??
        (await this.#beforeDeadline(() => this.#ensureTopology(channel), deadline, what));
      const queue =
        bucket > 0
          ? await this.#beforeDeadline(() => this.#delayQueue(names, bucket), deadline, what)
          : names.work;
      try {
        // mandatory: a queue deleted under us returns the message instead of dropping it after a confirm.
        await this.#publisher.publish(
          '',
          queue,
          payload,
          { persistent: true, mandatory: true, messageId: fields.id, headers: taskHeaders(fields) },
          Math.max(1, deadline - Date.now()),
          what,
        );
        return;
      } catch (error) {
        if (!(error instanceof UnroutableError) || Date.now() >= deadline) throw error;
        this.#logger.warn({ queue }, 'a queue of the channel is gone; declaring it again');
        this.#ctx.forgetTopology(channel);
        this.#declared.delete(queue);
        for (const consumer of this.#consumers) if (consumer.channel === channel) consumer.recycle();
      }
    }
  }

  async #publishDeadLetter(
    channel: string,
    fields: TaskFields,
    payload: Buffer,
    error: string,
  ): Promise<void> {
    const deadline = Date.now() + this.#publishTimeout;
    const what = 'queue dead-letter';
    for (;;) {
      const names = await this.#beforeDeadline(() => this.#ensureTopology(channel), deadline, what);
      try {
        await this.#publisher.publish(
          '',
          names.dead,
          payload,
          {
            persistent: true,
            mandatory: true,
            messageId: fields.id,
            headers: { ...taskHeaders(fields), [HEADER.error]: error, [HEADER.failedAt]: Date.now() },
          },
          Math.max(1, deadline - Date.now()),
          what,
        );
        return;
      } catch (failure) {
        if (!(failure instanceof UnroutableError) || Date.now() >= deadline) throw failure;
        this.#ctx.forgetTopology(channel);
      }
    }
  }

  /**
   * Declares retry until `deadline`: while the connection is down the first declare fails fast,
   * and waiting for the reconnect is part of a publish's budget.
   */
  async #beforeDeadline<T>(attempt: () => Promise<T>, deadline: number, what: string): Promise<T> {
    for (;;) {
      try {
        return await withDeadline(attempt(), deadline - Date.now(), what);
      } catch (error) {
        if (ClusterError.is(error, 'CLOSED') || ClusterError.is(error, 'INVALID_ARGUMENT')) throw error;
        const message = error instanceof Error ? error.message : String(error);
        // A declare the broker refused (406 inequivalent arguments, 403) will not heal by waiting.
        if (/PRECONDITION_FAILED|ACCESS_REFUSED|406|403/.test(message) || Date.now() >= deadline - 50) {
          throw this.#connection.error(error, what);
        }
        await new Promise((resolve) => setTimeout(resolve, 50).unref());
      }
    }
  }

  async #count(queue: string): Promise<number> {
    try {
      const channel = await this.#topology();
      const { messageCount } = await withDeadline(
        channel.checkQueue(queue),
        this.#operationTimeout,
        'queue stats',
      );
      return messageCount;
    } catch (error) {
      // A delay queue the broker expired (x-expires) holds nothing.
      if (isNotFound(error)) {
        this.#declared.delete(queue);
        return 0;
      }
      throw this.#connection.error(error, 'queue stats');
    }
  }

  /**
   * Reads dead letters one by one on a channel of its own (each stays unacked, so no other reader
   * sees it twice), up to `limit`. `visit` decides: 'remove' acks it, 'keep' leaves it; closing
   * the channel at the end puts every kept one back.
   */
  async #scanDeadLetters(
    channel: string,
    limit: number,
    what: string,
    visit: (message: GetMessage) => 'keep' | 'remove' | Promise<'keep' | 'remove'>,
  ): Promise<void> {
    const names = await this.#ensureTopology(channel);
    await this.#underDeadLetterLock(async () => {
      let reader: Channel | undefined;
      try {
        reader = await this.#connection.channel('queue-dead-letters', false, this.#operationTimeout);
        let kept = 0;
        for (let seen = 0; seen < limit; seen++) {
          const message = await withDeadline(
            reader.get(names.dead, { noAck: false }),
            this.#operationTimeout,
            what,
          );
          if (message === false) break;
          if ((await visit(message)) === 'remove') reader.ack(message);
          else kept += 1;
        }
        if (kept > 0) {
          // Put the kept ones back and wait until the queue counts them again: a quorum queue
          // applies returns asynchronously, and a list, replay or stats right after must see them.
          reader.nackAll(true);
          const until = Date.now() + 2_000;
          while (Date.now() < until) {
            const { messageCount } = await withDeadline(
              reader.checkQueue(names.dead),
              this.#operationTimeout,
              what,
            );
            if (messageCount >= kept) break;
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
        }
      } catch (error) {
        throw this.#connection.error(error, what);
      } finally {
        await this.#connection.closeChannel(reader);
      }
    });
  }

  /** List, replay and purge of dead letters run one at a time in this adapter (each holds what it reads). */
  #underDeadLetterLock<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#deadLetterLock.then(work, work);
    this.#deadLetterLock = run.then(
      () => {},
      () => {},
    );
    return run;
  }
}

/**
 * A durable, at-least-once RabbitMQ queue for `createCluster({ queue: { adapter } })`:
 * `createRabbitQueue({ url: process.env.AMQP_URL })`. Needs RabbitMQ >= 3.10 (quorum queues with
 * message TTL and at-least-once dead-lettering).
 */
export function createRabbitQueue(options: RabbitQueueOptions = {}): RabbitQueueAdapter {
  if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
  return new RabbitQueue(options);
}
