import {
  assertDeadLetterIds,
  assertQueuePublishRequest,
  closedError,
  DEFAULT_MAX_PAYLOAD_BYTES,
  type DeadLetterRecord,
  invalidArgument,
  type QueueAdapter,
  type QueueCapabilities,
  type QueueConsumer,
  type QueueConsumerOptions,
  type QueuePublishRequest,
  type QueuePublishResult,
  type QueueStats,
} from '@cluster/core';
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import { headers, nanos } from '@nats-io/nats-core';
import { type NatsConnectionOptions, NatsConnections } from '../connection.js';
import { ChannelConsumer, type DeadLetterBody } from './consumer.js';
import { type ChannelNames, channelNames, DELAYER, encodeTaskMeta, TASK_HEADER, WORKERS } from './names.js';

export interface NatsQueueOptions extends NatsConnectionOptions {
  /**
   * A connection shared with other adapters (see `createNatsAdapters`). The adapter retains it and
   * releases it on `close()`; the last user really closes it.
   */
  connections?: NatsConnections;
  /**
   * The consumer's ack_wait in ms: a delivery neither settled nor touched (`working()`) within it is
   * redelivered to another instance. The manager touches running tasks at a third of it. Default
   * 30,000. Applied when the channel's consumer is created.
   */
  visibilityTimeout?: number;
  /** The stream's duplicate window in ms: a caller-given id dedupes this long. Default 120,000. */
  dedupeWindow?: number;
  /** Replicas of the streams (clustered servers). Default 1. */
  replicas?: number;
  /**
   * Unsettled deliveries (running, held, or waiting for a retry backoff) the server allows per
   * channel across all instances (max_ack_pending). Default 20,000.
   */
  maxAckPending?: number;
  /**
   * Safety net for a poison task whose consumers keep dying: the server stops delivering a task after
   * this many deliveries (max_deliver). The manager dead-letters a task itself once it used
   * maxRetries + 1 attempts (each task carries its own maxRetries), so this only needs to be larger
   * than any maxRetries + 1 plus lost deliveries. Default 100; -1 for unlimited.
   */
  maxDeliver?: number;
  /** Seconds-scale wait of one pull request in ms (at least 1,000). Default 5,000. */
  fetchExpires?: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function positive(value: unknown, what: string, min = 1): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min)
    throw invalidArgument(`${what} must be a number of at least ${min}`);
  return value;
}

function isNotFound(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamNotFound || error.code === JetStreamApiCodes.ConsumerNotFound)
  );
}

interface StoredLetter extends DeadLetterRecord {
  readonly maxRetries: number;
  readonly timeout: number;
}

/**
 * The queue on JetStream. Each channel has a work stream (work-queue retention, file storage, a
 * duplicate window for ids) with ONE durable pull consumer with explicit acks that every instance
 * pulls from, so instances compete for tasks; and a dead-letter stream. Retries are `nak(delay)`,
 * long tasks are kept with `working()`, a dead letter is published to the dead-letter stream and then
 * `term()`ed. Delayed tasks carry a not-before header; a delivery that arrives early is nak'ed for
 * the remaining time (JetStream 2.9 has no scheduled messages).
 */
class NatsQueue implements QueueAdapter {
  readonly capabilities: QueueCapabilities;
  readonly #connections: NatsConnections;
  readonly #visibilityTimeout: number;
  readonly #dedupeWindow: number;
  readonly #replicas: number;
  readonly #maxAckPending: number;
  readonly #maxDeliver: number;
  readonly #fetchExpires: number;
  /** Channel -> its streams and consumer, ensured once (again after a failure). */
  readonly #ensured = new Map<string, Promise<ChannelNames>>();
  readonly #consumers = new Set<ChannelConsumer>();
  /** Channels whose setup finished, for the synchronous publish path. */
  readonly #ready = new Map<string, ChannelNames>();
  #js: Awaited<ReturnType<NatsConnections['jetstream']>> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: NatsQueueOptions) {
    const visibilityTimeout = positive(options.visibilityTimeout ?? 30_000, 'visibilityTimeout', 100);
    const dedupeWindow = positive(options.dedupeWindow ?? 120_000, 'dedupeWindow', 100);
    const replicas = options.replicas ?? 1;
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5)
      throw invalidArgument('replicas must be an integer from 1 to 5');
    const maxAckPending = positive(options.maxAckPending ?? 20_000, 'maxAckPending');
    const maxDeliver = options.maxDeliver ?? 100;
    if (!Number.isInteger(maxDeliver) || (maxDeliver < 2 && maxDeliver !== -1))
      throw invalidArgument('maxDeliver must be an integer of at least 2, or -1');
    this.#fetchExpires = positive(options.fetchExpires ?? 5_000, 'fetchExpires', 1_000);
    this.#connections = (options.connections ?? new NatsConnections(options)).retain();
    this.#visibilityTimeout = visibilityTimeout;
    this.#dedupeWindow = dedupeWindow;
    this.#replicas = replicas;
    this.#maxAckPending = Math.floor(maxAckPending);
    this.#maxDeliver = maxDeliver;
    this.capabilities = {
      durable: true,
      crossProcess: true,
      delivery: 'at-least-once',
      delayed: true,
      deadLetter: true,
      dedupe: 'window',
      dedupeWindowMs: dedupeWindow,
      redelivery: true,
      visibilityTimeoutMs: visibilityTimeout,
      // The server's default max_payload less room for headers.
      maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES - 8 * 1024,
    };
  }

  async connect(): Promise<void> {
    this.#open();
    await this.#connections.jetstreamManager();
  }

  async publish(channel: string, task: QueuePublishRequest): Promise<QueuePublishResult> {
    this.#open();
    // The same boundary check as every other queue adapter: bad fields or size, nothing sent.
    assertQueuePublishRequest(task, this.capabilities.maxPayloadBytes);
    const data = encoder.encode(task.payload);
    // After the first publish of a channel its names and the client are at hand: no awaits before the send.
    const names = this.#ready.get(channel) ?? (await this.#ensure(channel));
    const publishedAt = Date.now();
    const h = headers();
    h.set(
      TASK_HEADER,
      encodeTaskMeta({
        id: task.id,
        maxRetries: task.maxRetries,
        timeout: task.timeout,
        publishedAt,
        notBefore: task.delay > 0 ? publishedAt + task.delay : 0,
      }),
    );
    this.#js ??= await this.#connections.jetstream();
    try {
      const ack = await this.#js.publish(task.delay > 0 ? names.delayedSubject : names.subject, data, {
        headers: h,
        // The server drops a second message with the same id within the duplicate window.
        ...(task.dedupe && { msgID: task.id }),
      });
      return { id: task.id, duplicate: ack.duplicate };
    } catch (error) {
      // The stream may have been removed behind our back: ensure it again next time.
      if (isNotFound(error) || /no responders/i.test(String(error))) {
        this.#ensured.delete(channel);
        this.#ready.delete(channel);
      }
      throw this.#connections.error(error, 'queue publish');
    }
  }

  async consume(channel: string, options: QueueConsumerOptions): Promise<QueueConsumer> {
    this.#open();
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1)
      throw invalidArgument('concurrency must be a positive integer');
    if (typeof options.deliver !== 'function') throw invalidArgument('deliver must be a function');
    const names = await this.#ensure(channel);
    const consumer = new ChannelConsumer({
      connections: this.#connections,
      names,
      concurrency: options.concurrency,
      deliver: options.deliver,
      visibilityTimeout: this.#visibilityTimeout,
      fetchExpires: this.#fetchExpires,
      ensure: async () => {
        this.#ensured.delete(channel);
        await this.#ensure(channel);
      },
      deadLetter: (body) => this.#publishDeadLetter(names, body),
      onClose: (closed) => this.#consumers.delete(closed),
    });
    this.#consumers.add(consumer);
    consumer.start();
    return consumer;
  }

  async listDeadLetters(channel: string, options: { limit?: number } = {}): Promise<DeadLetterRecord[]> {
    const limit = options.limit ?? Number.POSITIVE_INFINITY;
    if (!(limit >= 0)) throw invalidArgument('limit must be a non-negative number');
    const letters = await this.#letters(channel, limit);
    return letters.map(({ record }) => publicRecord(record));
  }

  async replayDeadLetters(channel: string, ids?: readonly string[]): Promise<number> {
    assertDeadLetterIds(ids);
    const names = await this.#ensure(channel);
    const wanted = ids ? new Set(ids) : undefined;
    const letters = (await this.#letters(channel)).filter(({ record }) => !wanted || wanted.has(record.id));
    const js = await this.#connections.jetstream();
    const jsm = await this.#connections.jetstreamManager();
    let replayed = 0;
    for (const { seq, record } of letters) {
      const h = headers();
      h.set(
        TASK_HEADER,
        encodeTaskMeta({
          id: record.id,
          maxRetries: record.maxRetries,
          timeout: record.timeout,
          publishedAt: Date.now(),
          notBefore: 0,
        }),
      );
      try {
        // A replay repeated after a failure between publish and delete stays one task.
        await js.publish(names.subject, encoder.encode(record.payload), {
          headers: h,
          msgID: `replay:${names.deadLetterStream}:${seq}`,
        });
        await jsm.streams.deleteMessage(names.deadLetterStream, seq, false);
      } catch (error) {
        throw this.#connections.error(error, 'queue replay');
      }
      replayed += 1;
    }
    return replayed;
  }

  async purgeDeadLetters(channel: string, ids?: readonly string[]): Promise<number> {
    assertDeadLetterIds(ids);
    const names = await this.#ensure(channel);
    const jsm = await this.#connections.jetstreamManager();
    try {
      if (!ids) return (await jsm.streams.purge(names.deadLetterStream)).purged;
      const wanted = new Set(ids);
      let purged = 0;
      for (const { seq, record } of await this.#letters(channel)) {
        if (!wanted.has(record.id)) continue;
        await jsm.streams.deleteMessage(names.deadLetterStream, seq, false);
        purged += 1;
      }
      return purged;
    } catch (error) {
      throw this.#connections.error(error, 'queue purge');
    }
  }

  async stats(channel: string): Promise<QueueStats> {
    const names = await this.#ensure(channel);
    const jsm = await this.#connections.jetstreamManager();
    try {
      const [consumer, delayer, letters] = await Promise.all([
        jsm.consumers.info(names.stream, WORKERS),
        jsm.consumers.info(names.stream, DELAYER),
        jsm.streams.info(names.deadLetterStream),
      ]);
      return {
        pending: consumer.num_pending,
        // Waiting for their time, and (briefly) being moved into the work subject.
        delayed: delayer.num_pending + delayer.num_ack_pending,
        // Running, held, or waiting for a retry (nak'ed with a delay).
        inFlight: consumer.num_ack_pending,
        deadLetters: letters.state.messages,
      };
    } catch (error) {
      if (isNotFound(error)) this.#ensured.delete(channel);
      throw this.#connections.error(error, 'queue stats');
    }
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      await Promise.all([...this.#consumers].map((consumer) => consumer.close()));
      await this.#connections.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  toJSON(): Record<string, unknown> {
    return { adapter: 'nats queue', consumers: this.#consumers.size, closed: this.#closed };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `NatsQueue { consumers: ${this.#consumers.size}, closed: ${this.#closed} }`;
  }

  #open(): void {
    if (this.#closed) throw closedError('nats queue');
  }

  /** Creates the channel's streams and consumer if missing (idempotent across instances). */
  #ensure(channel: string): Promise<ChannelNames> {
    this.#open();
    let ensured = this.#ensured.get(channel);
    if (!ensured) {
      const names = channelNames(this.#connections.subjectPrefix, channel);
      ensured = (async () => {
        const jsm = await this.#connections.jetstreamManager();
        await this.#ensureStream(jsm, names.stream, {
          subjects: [names.subject, names.delayedSubject],
          retention: RetentionPolicy.Workqueue,
          duplicate_window: nanos(this.#dedupeWindow),
        });
        await this.#ensureStream(jsm, names.deadLetterStream, {
          subjects: [names.deadLetterSubject],
          retention: RetentionPolicy.Limits,
          duplicate_window: nanos(60_000),
        });
        await this.#ensureConsumer(jsm, names.stream, {
          durable_name: WORKERS,
          filter_subject: names.subject,
          ack_wait: nanos(this.#visibilityTimeout),
          max_deliver: this.#maxDeliver,
        });
        // Its deliveries are nak'ed until due, so it needs no delivery limit.
        await this.#ensureConsumer(jsm, names.stream, {
          durable_name: DELAYER,
          filter_subject: names.delayedSubject,
          ack_wait: nanos(30_000),
          max_deliver: -1,
        });
        this.#ready.set(channel, names);
        return names;
      })().catch((error: unknown) => {
        if (this.#ensured.get(channel) === ensured) this.#ensured.delete(channel);
        throw this.#connections.error(error, 'queue setup');
      });
      this.#ensured.set(channel, ensured);
    }
    return ensured;
  }

  async #ensureStream(
    jsm: Awaited<ReturnType<NatsConnections['jetstreamManager']>>,
    name: string,
    config: {
      subjects: string[];
      retention: RetentionPolicy;
      duplicate_window: number;
    },
  ): Promise<void> {
    try {
      await jsm.streams.info(name);
      return;
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    await jsm.streams.add({
      name,
      ...config,
      storage: StorageType.File,
      num_replicas: this.#replicas,
      discard: DiscardPolicy.Old,
    });
  }

  async #ensureConsumer(
    jsm: Awaited<ReturnType<NatsConnections['jetstreamManager']>>,
    stream: string,
    config: { durable_name: string; filter_subject: string; ack_wait: number; max_deliver: number },
  ): Promise<void> {
    try {
      await jsm.consumers.info(stream, config.durable_name);
      return;
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    await jsm.consumers.add(stream, {
      ...config,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      max_ack_pending: this.#maxAckPending,
      // Pull requests from many instances at once.
      max_waiting: 4_096,
    });
  }

  async #publishDeadLetter(names: ChannelNames, body: DeadLetterBody): Promise<void> {
    const js = await this.#connections.jetstream();
    const record: StoredLetter = {
      id: body.id,
      payload: body.payload,
      attempts: body.attempts,
      error: body.error,
      publishedAt: body.publishedAt,
      failedAt: Date.now(),
      maxRetries: body.maxRetries,
      timeout: body.timeout,
    };
    try {
      // Keyed by the task's stream sequence: a dead-lettering repeated after a lost reply is stored once.
      await js.publish(names.deadLetterSubject, encoder.encode(JSON.stringify(record)), {
        msgID: `dl:${names.stream}:${body.streamSequence}`,
      });
    } catch (error) {
      throw this.#connections.error(error, 'queue dead-letter');
    }
  }

  /** Dead letters oldest first, with their sequence in the dead-letter stream. */
  async #letters(
    channel: string,
    limit = Number.POSITIVE_INFINITY,
  ): Promise<{ seq: number; record: StoredLetter }[]> {
    const names = await this.#ensure(channel);
    const jsm = await this.#connections.jetstreamManager();
    const out: { seq: number; record: StoredLetter }[] = [];
    try {
      let seq = 1;
      while (out.length < limit) {
        // next_by_subj skips the gaps left by replayed and purged letters.
        // The server's MSG.GET takes next_by_subj with seq; the client types only name it for direct get.
        const query = { seq, next_by_subj: names.deadLetterSubject } as unknown as { seq: number };
        const message = await jsm.streams.getMessage(names.deadLetterStream, query);
        if (!message) break;
        try {
          out.push({ seq: message.seq, record: JSON.parse(decoder.decode(message.data)) as StoredLetter });
        } catch {
          // Not ours (written by other software): skipped.
        }
        seq = message.seq + 1;
      }
    } catch (error) {
      if (!isNotFound(error)) throw this.#connections.error(error, 'queue dead letters');
    }
    return out;
  }
}

function publicRecord(record: StoredLetter): DeadLetterRecord {
  return {
    id: record.id,
    payload: record.payload,
    attempts: record.attempts,
    error: record.error,
    publishedAt: record.publishedAt,
    failedAt: record.failedAt,
  };
}

/** A queue on NATS JetStream for `createCluster({ queue: { adapter } })`. Needs JetStream enabled. */
export function createNatsQueue(options: NatsQueueOptions = {}): QueueAdapter {
  return new NatsQueue(options);
}
