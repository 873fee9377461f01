import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
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
  withDeadline,
} from '@cluster/core';
import { CommandBatcher } from '../command-batch.js';
import { type RedisClient, type RedisConnectionOptions, RedisConnections } from '../connection.js';
import { hashTag, keyNamesCache } from '../keys.js';
import { BLOCK_GRACE_MS, type QueueContext, type ScriptArgs, StreamConsumer } from './consumer.js';
import {
  channelKeys,
  GROUP,
  idKeyPrefix,
  keysFor,
  LIST_DEAD,
  PUBLISH,
  PURGE,
  type QueueScript,
  REPLAY,
  STATS,
} from './scripts.js';

const MAX_CACHED_CHANNELS = 1_000;

export interface RedisQueueOptions extends RedisConnectionOptions {
  /** Connections shared with the other Redis adapters (retained here, closed by their last user). */
  connections?: RedisConnections;
  /** ms a delivery stays claimed without being settled or touched before another consumer reclaims it. Default 30 000. */
  visibilityTimeout?: number;
  /** BLOCK of each XREADGROUP in ms: reads are short and repeated, never unbounded. Default 1 000. */
  blockMs?: number;
  /**
   * When set, a caller-given id dedupes for this many ms after its first publish (`dedupe: 'window'`)
   * instead of for as long as its task lives (`dedupe: 'pending'`, the default).
   */
  dedupeWindow?: number;
  /**
   * Declares that the server persists every acknowledged write (`appendonly yes` with `appendfsync
   * always`, or `everysec` if losing up to a second on a crash is acceptable). Redis cannot tell; the
   * adapter only reports it in `capabilities.durable`. Default false.
   */
  durable?: boolean;
}

const DEFAULT_VISIBILITY_TIMEOUT = 30_000;
const DEFAULT_BLOCK_MS = 1_000;
const MAX_TIMER_MS = 2_147_483_647;
/**
 * How long a generated id's marker lives: it makes a publish that ioredis resends after a reconnect (its
 * reply was lost) a no-op instead of a second task. Caller-given ids are covered by their dedupe marker.
 */
const RESEND_GUARD_MS = 60_000;
const REPLAY_BATCH = 100;
const MAX_IDLE_BLOCKING = 4;
const PURGE_BATCH = 500;
const MAX_NAME_LENGTH = 512;
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f]/;

function assertName(value: unknown, what: string): asserts value is string {
  if (typeof value !== 'string') throw invalidArgument(`${what} must be a string, got ${typeof value}`);
  if (value.length === 0) throw invalidArgument(`${what} must not be empty`);
  if (value.length > MAX_NAME_LENGTH)
    throw invalidArgument(`${what} is longer than ${MAX_NAME_LENGTH} characters`);
  if (CONTROL.test(value)) throw invalidArgument(`${what} must not contain control characters`);
}

function assertMs(value: unknown, what: string, allowZero = false): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    throw invalidArgument(
      `${what} must be a ${allowZero ? 'non-negative' : 'positive'} number of milliseconds`,
    );
  }
}

// A per-process random prefix plus a counter: unique like 12 random bytes, without a syscall per publish.
const NONCE_PREFIX = randomBytes(9).toString('base64url');
let nonceSeq = 0;
function nonce(): string {
  nonceSeq += 1;
  return NONCE_PREFIX + nonceSeq.toString(36);
}

function parseDeadLetter(text: unknown): DeadLetterRecord | undefined {
  if (typeof text !== 'string') return undefined;
  try {
    const v = JSON.parse(text) as unknown[];
    if (!Array.isArray(v)) return undefined;
    const str = (i: number) => (typeof v[i] === 'string' ? (v[i] as string) : String(v[i] ?? ''));
    return {
      id: str(0),
      payload: str(7),
      attempts: Number(str(1)) || 1,
      error: str(8),
      publishedAt: Number(str(4)) || 0,
      failedAt: Number(str(9)) || 0,
    };
  } catch {
    return undefined;
  }
}

let consumerSequence = 0;

class RedisQueueAdapter implements QueueAdapter {
  readonly capabilities: QueueCapabilities;
  readonly #connections: RedisConnections;
  readonly #logger: Logger;
  readonly #visibilityTimeout: number;
  readonly #blockMs: number;
  readonly #dedupeWindow: number | undefined;
  readonly #operationTimeout: number;
  readonly #connectTimeout: number;
  /** Names this adapter's consumers: host, pid and a random part, so restarts never reuse a name. */
  readonly #instance = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  readonly #consumers = new Set<StreamConsumer>();
  /** Consumers that stopped but may still hold unsettled deliveries, released at close(). */
  readonly #stopped = new Set<StreamConsumer>();
  readonly #idleBlocking: RedisClient[] = [];
  readonly #ctx: QueueContext;
  readonly #batcher: CommandBatcher;
  /** Key names per channel (the stream, the delayed set, and the prefix of its id keys). */
  readonly #channelKeys: (channel: string) => ReturnType<typeof channelKeys> & { idPrefix: string };
  #connected = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: RedisQueueOptions) {
    const visibilityTimeout = options.visibilityTimeout ?? DEFAULT_VISIBILITY_TIMEOUT;
    assertMs(visibilityTimeout, 'visibilityTimeout');
    if (visibilityTimeout > MAX_TIMER_MS)
      throw invalidArgument(`visibilityTimeout must be <= ${MAX_TIMER_MS}`);
    const blockMs = options.blockMs ?? DEFAULT_BLOCK_MS;
    if (!Number.isInteger(blockMs) || blockMs < 1 || blockMs > 60_000) {
      throw invalidArgument('blockMs must be an integer between 1 and 60000');
    }
    if (options.dedupeWindow !== undefined) assertMs(options.dedupeWindow, 'dedupeWindow');
    if (options.durable !== undefined && typeof options.durable !== 'boolean') {
      throw invalidArgument('durable must be a boolean');
    }
    const connections = options.connections;
    if (connections !== undefined && !(connections instanceof RedisConnections)) {
      throw invalidArgument('connections must be a RedisConnections');
    }
    this.#connections = (connections ?? new RedisConnections(options)).retain();
    this.#logger = this.#connections.logger.child({ part: 'queue' });
    this.#visibilityTimeout = visibilityTimeout;
    this.#blockMs = blockMs;
    this.#dedupeWindow = options.dedupeWindow === undefined ? undefined : Math.ceil(options.dedupeWindow);
    // ioredis' commandTimeout rejects first; this bounds calls on a given client that has none.
    this.#operationTimeout = (options.commandTimeout ?? 2_000) + 1_000;
    this.#connectTimeout = Math.max(this.#operationTimeout, options.redisOptions?.connectTimeout ?? 5_000);
    this.capabilities = Object.freeze({
      durable: options.durable ?? false,
      crossProcess: true,
      delivery: 'at-least-once',
      delayed: true,
      deadLetter: true,
      dedupe: this.#dedupeWindow === undefined ? 'pending' : 'window',
      ...(this.#dedupeWindow === undefined ? {} : { dedupeWindowMs: this.#dedupeWindow }),
      redelivery: true,
      visibilityTimeoutMs: visibilityTimeout,
      maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES,
    });
    this.#batcher = new CommandBatcher(() => this.#connections.command, this.#operationTimeout);
    this.#channelKeys = keyNamesCache(MAX_CACHED_CHANNELS, (channel) => ({
      ...channelKeys(this.#keyPrefix, channel),
      idPrefix: idKeyPrefix(this.#keyPrefix, channel),
    }));
    this.#ctx = {
      connections: this.#connections,
      keyPrefix: this.#connections.keyPrefix,
      logger: this.#logger,
      visibilityTimeout,
      blockMs,
      operationTimeout: this.#operationTimeout,
      run: (script, keys, args, what) => this.#run(script, keys, args, what),
      runEach: (script, fixed, item, what) => this.#runEach(script, fixed, item, what),
      command: (what, args) => this.#command(what, args),
      takeBlocking: () => this.#takeBlocking(),
      returnBlocking: (client, healthy) => this.#returnBlocking(client, healthy),
    };
  }

  get #keyPrefix(): string {
    return this.#connections.keyPrefix;
  }

  #assertOpen(): void {
    if (this.#closed) throw closedError('redis queue adapter');
    if (!this.#connected) {
      throw new ClusterError('NOT_STARTED', 'redis queue adapter is not connected; call connect() first');
    }
  }

  async #run(script: QueueScript, keys: string[], args: (string | number)[], what: string): Promise<unknown> {
    try {
      // Every key of one call shares the channel's hash tag: batches per tag stay in one Cluster slot.
      return await this.#batcher.evalScript(hashTag(keys[0] ?? ''), script, keys, args, what);
    } catch (error) {
      throw this.#connections.error(error, what);
    }
  }

  /**
   * One item of `script` on `channel`: merged with the other items of this turn that share the fixed
   * keys and args into one script call (see CommandBatcher.evalEach). Resolves with the item's reply.
   */
  async #runEach(script: QueueScript, fixed: ScriptArgs, item: ScriptArgs, what: string): Promise<unknown> {
    try {
      const tag = hashTag(fixed.keys[0] ?? '');
      return await this.#batcher.evalEach(tag, script, fixed.keys, fixed.args, item.keys, item.args, what);
    } catch (error) {
      throw this.#connections.error(error, what);
    }
  }

  async #command(what: string, [name, ...args]: [string, ...(string | number)[]]): Promise<unknown> {
    try {
      return await withDeadline(this.#connections.command.call(name, ...args), this.#operationTimeout, what);
    } catch (error) {
      throw this.#connections.error(error, what);
    }
  }

  #takeBlocking(): RedisClient {
    const pooled = this.#idleBlocking.pop();
    if (pooled !== undefined) return pooled;
    return this.#connections.dedicated('queue-blocking', {
      // Reads wait for `ready` instead of piling up offline, and a read cut mid-way is not resent
      // (its entries stay claimed and are reclaimed): the loop reissues reads itself.
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      // BLOCK bounds the reads; no per-command timeout, but a socket that stays silent past a read's
      // BLOCK is torn down and reconnected (a dropped or blackholed connection).
      commandTimeout: undefined,
      socketTimeout: this.#blockMs + BLOCK_GRACE_MS,
      maxRetriesPerRequest: null,
    });
  }

  #returnBlocking(client: RedisClient, healthy: boolean): void {
    // A few idle connections are kept for the next consume(); the rest close.
    if (
      healthy &&
      !this.#closed &&
      client.status === 'ready' &&
      this.#idleBlocking.length < MAX_IDLE_BLOCKING
    ) {
      this.#idleBlocking.push(client);
    } else {
      client.disconnect();
    }
  }

  async connect(): Promise<void> {
    if (this.#closed) throw closedError('redis queue adapter');
    if (this.#connected) return;
    try {
      await this.#connections.ready(this.#connections.command, this.#connectTimeout);
    } catch (error) {
      throw this.#connections.error(error, 'queue connect');
    }
    if (this.#closed) throw closedError('redis queue adapter');
    this.#connected = true;
  }

  async publish(channel: string, task: QueuePublishRequest): Promise<QueuePublishResult> {
    this.#assertOpen();
    assertName(channel, 'channel');
    assertQueuePublishRequest(task, this.capabilities.maxPayloadBytes);
    const mode = task.dedupe ? (this.#dedupeWindow === undefined ? 'p' : 'w') : 'n';
    const ttl = mode === 'w' ? (this.#dedupeWindow ?? 0) : mode === 'n' ? RESEND_GUARD_MS : 0;
    const { stream, delayed, idPrefix } = this.#channelKeys(channel);
    const reply = (await this.#runEach(
      PUBLISH,
      { keys: [stream, delayed], args: [GROUP] },
      {
        keys: [idPrefix + task.id],
        args: [
          task.id,
          task.payload,
          task.maxRetries,
          task.timeout,
          Math.ceil(task.delay),
          mode,
          ttl,
          nonce(),
        ],
      },
      'queue publish',
    )) as unknown;
    // One reply per task of the merged call; anything else means the script did not run as written.
    if (!Array.isArray(reply)) {
      throw new ClusterError('BACKEND_UNAVAILABLE', 'queue publish got an unexpected reply from the server');
    }
    const [duplicate = 0, due = 0, now = 0] = reply.map(Number);
    if (due > 0)
      for (const consumer of this.#consumers) if (consumer.channel === channel) consumer.noteDue(due, now);
    return { id: task.id, duplicate: duplicate === 1 };
  }

  async consume(channel: string, options: QueueConsumerOptions): Promise<QueueConsumer> {
    this.#assertOpen();
    assertName(channel, 'channel');
    if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
      throw invalidArgument('concurrency must be an integer >= 1');
    }
    if (typeof options.deliver !== 'function') throw invalidArgument('deliver must be a function');
    consumerSequence += 1;
    const consumer = new StreamConsumer(this.#ctx, channel, `${this.#instance}:${consumerSequence}`, options);
    await consumer.start();
    if (this.#closed) {
      await consumer.stop();
      throw closedError('redis queue adapter');
    }
    this.#consumers.add(consumer);
    const stop = async () => {
      if (!this.#consumers.delete(consumer)) return;
      this.#stopped.add(consumer);
      await consumer.stop();
    };
    return {
      pause: () => consumer.pause(),
      resume: () => consumer.resume(),
      close: stop,
    };
  }

  async listDeadLetters(channel: string, options: { limit?: number } = {}): Promise<DeadLetterRecord[]> {
    this.#assertOpen();
    assertName(channel, 'channel');
    const limit = options?.limit;
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
      throw invalidArgument('limit must be an integer >= 1');
    }
    const reply = (await this.#run(
      LIST_DEAD,
      keysFor(LIST_DEAD, this.#keyPrefix, channel),
      [limit === undefined ? -1 : limit - 1],
      'queue list dead letters',
    )) as unknown[];
    const out: DeadLetterRecord[] = [];
    for (const text of reply) {
      const record = parseDeadLetter(text);
      if (record !== undefined) out.push(record);
    }
    return out;
  }

  async replayDeadLetters(channel: string, ids?: readonly string[]): Promise<number> {
    this.#assertOpen();
    assertName(channel, 'channel');
    assertDeadLetterIds(ids);
    const targets = ids === undefined ? await this.#deadLetterIds(channel) : [...new Set(ids)];
    let replayed = 0;
    for (let i = 0; i < targets.length; i += REPLAY_BATCH) {
      const batch = targets.slice(i, i + REPLAY_BATCH);
      replayed += Number(
        await this.#run(
          REPLAY,
          keysFor(REPLAY, this.#keyPrefix, channel, batch),
          [GROUP, nonce(), ...batch],
          'queue replay dead letters',
        ),
      );
    }
    return replayed;
  }

  async #deadLetterIds(channel: string): Promise<string[]> {
    const index = channelKeys(this.#keyPrefix, channel).dlqIndex;
    const out: string[] = [];
    for (let start = 0; ; start += 1_000) {
      const page = (await this.#command('queue replay dead letters', [
        'ZRANGE',
        index,
        start,
        start + 999,
      ])) as string[];
      out.push(...page);
      if (page.length < 1_000) return out;
    }
  }

  async purgeDeadLetters(channel: string, ids?: readonly string[]): Promise<number> {
    this.#assertOpen();
    assertName(channel, 'channel');
    assertDeadLetterIds(ids);
    const keys = keysFor(PURGE, this.#keyPrefix, channel);
    if (ids === undefined) return Number(await this.#run(PURGE, keys, [], 'queue purge dead letters'));
    const unique = [...new Set(ids)];
    let purged = 0;
    for (let i = 0; i < unique.length; i += PURGE_BATCH) {
      const batch = unique.slice(i, i + PURGE_BATCH);
      purged += Number(await this.#run(PURGE, keys, batch, 'queue purge dead letters'));
    }
    return purged;
  }

  async stats(channel: string): Promise<QueueStats> {
    this.#assertOpen();
    assertName(channel, 'channel');
    const reply = (await this.#run(
      STATS,
      keysFor(STATS, this.#keyPrefix, channel),
      [GROUP],
      'queue stats',
    )) as unknown[];
    const [pending = 0, inFlight = 0, delayed = 0, deadLetters = 0] = reply.map(Number);
    return { pending, delayed, inFlight, deadLetters };
  }

  /**
   * Stops the consumers, hands their unsettled deliveries back to the stream (attempt + 1) for the other
   * instances, then closes the connections opened here. Tasks live in Redis and outlive the adapter.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#connected = false;
      const consumers = [...this.#consumers, ...this.#stopped];
      this.#consumers.clear();
      this.#stopped.clear();
      await Promise.allSettled(consumers.map((consumer) => consumer.stop()));
      await Promise.allSettled(consumers.map((consumer) => consumer.releaseAll()));
      // Closed here rather than by quit(): QUIT would wait behind a blocked read.
      for (const client of this.#idleBlocking.splice(0)) client.disconnect();
      try {
        await this.#connections.close();
      } catch (error) {
        this.#logger.warn(errorFields(error), 'closing redis connections failed');
      }
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Keeps connection options (and their passwords) out of logs and inspection. */
  toJSON(): Record<string, unknown> {
    return { kind: 'redis-queue', capabilities: this.capabilities };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `RedisQueueAdapter { closed: ${this.#closed} }`;
  }
}

/**
 * A durable, at-least-once queue on Redis Streams: a stream and a consumer group per channel, claims
 * that expire after `visibilityTimeout` and are reclaimed by other consumers, owner-checked settlements
 * (a reclaimed task is never completed twice), delayed tasks and retries in a sorted set, a dead-letter
 * hash, and dedupe by id. Needs Redis >= 6.2 (7 recommended) with `maxmemory-policy noeviction`.
 */
export function createRedisQueue(options: RedisQueueOptions = {}): QueueAdapter {
  if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
  return new RedisQueueAdapter(options);
}
