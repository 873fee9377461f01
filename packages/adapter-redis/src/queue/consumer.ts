import {
  ClusterError,
  errorFields,
  invalidArgument,
  type Logger,
  type QueueConsumerOptions,
  type QueueDelivery,
} from '@cluster/core';
import { Cluster } from 'ioredis';
import type { RedisClient, RedisConnections } from '../connection.js';
import {
  ACK,
  CLAIM,
  channelKeys,
  DEAD_LETTER,
  FORGET_CONSUMER,
  GROUP,
  idKeyPrefix,
  keysFor,
  PROMOTE,
  type QueueScript,
  REAP_CONSUMERS,
  RECOVER,
  RELEASE,
  RETRY,
  TOUCH,
} from './scripts.js';

/** KEYS and ARGV of a script call, or of one item of a merged one. */
export interface ScriptArgs {
  readonly keys: readonly string[];
  readonly args: readonly (string | number)[];
}

/** What a consumer needs from its adapter. */
export interface QueueContext {
  readonly connections: RedisConnections;
  readonly keyPrefix: string;
  readonly logger: Logger;
  readonly visibilityTimeout: number;
  readonly blockMs: number;
  /** Deadline of one command on the command connection, in ms. */
  readonly operationTimeout: number;
  run(script: QueueScript, keys: string[], args: (string | number)[], what: string): Promise<unknown>;
  /** One item of a script that takes many (PUBLISH, ACK), merged with the turn's others sharing `fixed`. */
  runEach(script: QueueScript, fixed: ScriptArgs, item: ScriptArgs, what: string): Promise<unknown>;
  /** Runs a plain command on the command connection with the same deadline and error mapping. */
  command(what: string, args: [string, ...(string | number)[]]): Promise<unknown>;
  /** A blocking connection for this consumer alone (reused from a pool when one is idle). */
  takeBlocking(): RedisClient;
  /** Gives back a blocking connection that is idle (no command pending). */
  returnBlocking(client: RedisClient, healthy: boolean): void;
}

/** How many delayed tasks one promote call moves; more are moved by calling again at once. */
const PROMOTE_BATCH = 100;
/** Added to a blocking read's BLOCK before the watchdog gives up on it. */
export const BLOCK_GRACE_MS = 1_500;
const REAP_INTERVAL_MS = 60_000;
/** Settled deliveries remembered, so a late copy of one (a reply that arrived after all) is not run again. */
const RECENT_SETTLED = 1_024;
const MIN_REAP_IDLE_MS = 10 * 60_000;

/** One delivery as the consumer tracks it until settled. */
interface Held {
  readonly key: string;
  readonly entry: string;
  readonly count: number;
  readonly taskId: string;
  /** The entry's id mode and publish nonce (fields u and n), which the ack needs. */
  readonly mode: string;
  readonly nonce: string;
  settled: boolean;
}

/** A stream entry as read: id, delivery count, and the flat field list. */
type RawEntry = readonly [entry: string, count: number, fields: readonly string[]];

interface Read {
  readonly promise: Promise<unknown>;
}

class WatchdogError extends Error {}

function sleepUnref(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function fieldsOf(raw: readonly string[]): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  for (let i = 0; i + 1 < raw.length; i += 2) out[raw[i]!] = raw[i + 1]!;
  const meta = out.m;
  if (meta !== undefined) {
    // `a|r|t|p|u|n`; the nonce is last and may itself hold `|`.
    let from = 0;
    for (const name of ['a', 'r', 't', 'p', 'u']) {
      const bar = meta.indexOf('|', from);
      if (bar < 0) break;
      out[name] = meta.slice(from, bar);
      from = bar + 1;
    }
    out.n = meta.slice(from);
  }
  return out;
}

function toNumber(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return value !== undefined && value !== '' && Number.isFinite(n) ? n : fallback;
}

function isNoGroup(error: unknown): boolean {
  const message = error instanceof Error ? error.message : String(error);
  return message.includes('NOGROUP');
}

/**
 * Entries from an XREADGROUP reply (null on timeout). RESP2 gives [[stream, entries]]; RESP3 (the
 * ioredis 6 default) a map: a flat [stream, entries, ...] array, or an object with `replyMapping: 'resp3'`.
 */
function readEntries(reply: unknown): RawEntry[] {
  let streams: unknown[] = [];
  if (Array.isArray(reply)) {
    if (typeof reply[0] === 'string') {
      for (let i = 1; i < reply.length; i += 2) streams.push(reply[i]);
    } else {
      streams = reply.map((pair) => (Array.isArray(pair) ? pair[1] : undefined));
    }
  } else if (typeof reply === 'object' && reply !== null) {
    streams = Object.values(reply);
  }
  const out: RawEntry[] = [];
  for (const entries of streams) {
    if (!Array.isArray(entries)) continue;
    for (const entry of entries) {
      if (Array.isArray(entry) && typeof entry[0] === 'string' && Array.isArray(entry[1])) {
        out.push([entry[0], 1, entry[1] as string[]]);
      }
    }
  }
  return out;
}

/** Entries from the claim script: {cursor, {{id, count, fields}, ...}}. */
function claimedEntries(reply: unknown): { cursor: string; entries: RawEntry[] } {
  const cursor = Array.isArray(reply) && typeof reply[0] === 'string' ? reply[0] : '0-0';
  const list = Array.isArray(reply) && Array.isArray(reply[1]) ? reply[1] : [];
  const entries: RawEntry[] = [];
  for (const item of list) {
    if (Array.isArray(item) && typeof item[0] === 'string' && Array.isArray(item[2])) {
      entries.push([item[0], Number(item[1]) || 1, item[2] as string[]]);
    }
  }
  return { cursor, entries };
}

/**
 * One consumer of one channel: a loop of short blocking XREADGROUP calls on its own connection, which
 * also reclaims expired deliveries (XAUTOCLAIM) between reads, plus a timer that moves due delayed
 * tasks into the stream exactly when the earliest is due and every `blockMs` to notice ones published
 * elsewhere. It never holds more than `concurrency` unsettled deliveries and takes none while paused.
 */
export class StreamConsumer {
  readonly name: string;
  readonly channel: string;
  readonly #ctx: QueueContext;
  readonly #streamKey: string;
  readonly #idKeyPrefix: string;
  readonly #concurrency: number;
  readonly #deliver: (delivery: QueueDelivery) => void;
  readonly #logger: Logger;
  readonly #claimInterval: number;
  /** Unsettled deliveries handed out, by `entry:count`. */
  readonly #held = new Map<string, Held>();
  /** Deliveries whose settlement is on its way to Redis. */
  readonly #settling = new Set<string>();
  readonly #recent = new Set<string>();
  /** Releases and other work started in the background, awaited by stop(). */
  readonly #background = new Set<Promise<unknown>>();
  #blocking: RedisClient | undefined;
  #blockingHealthy = true;
  #clientId: string | undefined;
  #onBlockingClose: (() => void) | undefined;
  #reading: Read | undefined;
  #paused = false;
  #closed = false;
  #loop: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #wakeLoop: (() => void) | undefined;
  #nextClaimAt = 0;
  #nextReapAt: number;
  #claimCursor = '0-0';
  #promoteTimer: NodeJS.Timeout | undefined;
  #promoteAt = Number.POSITIVE_INFINITY;
  #promoteInterval: NodeJS.Timeout | undefined;
  #promoting = false;
  #promoteAgain = false;
  #failing = false;
  /** Set after a fault: entries may sit in this consumer's PEL whose delivering reply was lost. */
  #recoverNeeded = false;

  constructor(ctx: QueueContext, channel: string, name: string, options: QueueConsumerOptions) {
    this.#ctx = ctx;
    this.channel = channel;
    this.name = name;
    this.#streamKey = channelKeys(ctx.keyPrefix, channel).stream;
    this.#idKeyPrefix = idKeyPrefix(ctx.keyPrefix, channel);
    this.#concurrency = options.concurrency;
    this.#deliver = options.deliver;
    this.#logger = ctx.logger.child({ channel, consumer: name });
    // A dead consumer's task comes back within visibilityTimeout + claimInterval (+ one read).
    this.#claimInterval = Math.max(25, Math.min(5_000, Math.round(ctx.visibilityTimeout / 4)));
    // Spread the reapers of many consumers over the interval.
    this.#nextReapAt = Date.now() + Math.round(Math.random() * REAP_INTERVAL_MS);
  }

  /** Creates the group if needed, connects the blocking connection and starts the loop. */
  async start(): Promise<void> {
    await this.ensureGroup();
    const blocking = this.#ctx.takeBlocking();
    this.#blocking = blocking;
    // A new connection has a new client id (used to interrupt its blocking read on close).
    const onReady = () => {
      this.#clientId = undefined;
    };
    const onClose = () => {
      this.#clientId = undefined;
      this.#recoverNeeded = true;
    };
    blocking.on('ready', onReady);
    blocking.on('close', onClose);
    this.#onBlockingClose = () => {
      blocking.off('ready', onReady);
      blocking.off('close', onClose);
    };
    try {
      await this.#ensureReady(blocking, Math.max(this.#ctx.operationTimeout, 5_000));
    } catch (error) {
      this.#closed = true;
      this.#onBlockingClose();
      this.#ctx.returnBlocking(blocking, false);
      throw this.#ctx.connections.error(error, 'queue consume');
    }
    this.#loop = this.#run();
    this.#promoteInterval = setInterval(() => void this.#promote(), this.#ctx.blockMs);
    this.#promoteInterval.unref();
    void this.#promote();
  }

  async ensureGroup(): Promise<void> {
    try {
      await this.#ctx.command('queue consume', ['XGROUP', 'CREATE', this.#streamKey, GROUP, '0', 'MKSTREAM']);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.includes('BUSYGROUP')) throw error;
    }
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (this.#closed || !this.#paused) return;
    this.#paused = false;
    this.#wake();
  }

  /** A delayed task of this channel is due at `due` (server clock, `now` being the server's time then). */
  noteDue(due: number, serverNow: number): void {
    if (this.#closed || due <= 0) return;
    this.#schedulePromote(Date.now() + (due - serverNow));
  }

  /** Stops the loop. Unsettled deliveries stay claimed (and settleable) until settled or expired. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#closed = true;
      clearInterval(this.#promoteInterval);
      clearTimeout(this.#promoteTimer);
      this.#wake();
      await this.#interruptRead();
      await this.#loop;
      await Promise.allSettled([...this.#background]);
      const blocking = this.#blocking;
      this.#blocking = undefined;
      this.#onBlockingClose?.();
      if (blocking !== undefined) this.#ctx.returnBlocking(blocking, this.#blockingHealthy);
      if (this.#held.size === 0) await this.#forget();
    })();
    return this.#stopping;
  }

  /**
   * Hands every unsettled delivery back to the stream with attempt + 1 (its handler may have run), for
   * the other consumers, as a broker does when a connection drops. Their late settlements resolve false.
   */
  async releaseAll(): Promise<void> {
    const held = [...this.#held.values()];
    this.#held.clear();
    await Promise.allSettled(
      held.map((item) => {
        item.settled = true;
        return this.#release(item.entry, item.count, 1);
      }),
    );
    await this.#forget();
  }

  async #forget(): Promise<void> {
    try {
      await this.#ctx.run(FORGET_CONSUMER, [this.#streamKey], [GROUP, this.name], 'queue close');
    } catch (error) {
      this.#logger.debug(errorFields(error), 'could not remove the consumer from its group');
    }
  }

  #wake(): void {
    const wake = this.#wakeLoop;
    this.#wakeLoop = undefined;
    wake?.();
  }

  /** Sleeps up to `ms`, or until woken by a settlement, resume() or stop(). */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref();
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wakeLoop = done;
    });
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#closed) {
      try {
        if (this.#paused || this.#held.size >= this.#concurrency) {
          await this.#sleep(this.#ctx.blockMs);
          continue;
        }
        if (this.#recoverNeeded) {
          this.#recoverNeeded = false;
          await this.#recover();
          continue;
        }
        const now = Date.now();
        if (now >= this.#nextClaimAt) {
          this.#nextClaimAt = now + this.#claimInterval;
          if ((await this.#claim()) > 0) continue;
        }
        if (now >= this.#nextReapAt) {
          this.#nextReapAt = now + REAP_INTERVAL_MS;
          await this.#reap();
        }
        const free = this.#concurrency - this.#held.size;
        if (free <= 0 || this.#paused || this.#closed) continue;
        // Short blocks: the loop comes back to reclaim expired deliveries and to notice faults.
        const block = Math.max(1, Math.min(this.#ctx.blockMs, this.#nextClaimAt - Date.now()));
        this.#accept(await this.#read(free, block));
        failures = 0;
        if (this.#failing) {
          this.#failing = false;
          this.#logger.info({}, 'queue consumer recovered');
        }
      } catch (error) {
        if (this.#closed) break;
        failures += 1;
        this.#recoverNeeded = true;
        if (isNoGroup(error)) {
          // The stream or its group vanished (a server restart without persistence, a manual delete).
          await this.ensureGroup().catch(() => {});
        }
        const fields = { ...errorFields(error), failures };
        if (!this.#failing) this.#logger.warn(fields, 'queue consumer read failed; retrying');
        else this.#logger.debug(fields, 'queue consumer read failed; retrying');
        this.#failing = true;
        await this.#sleep(Math.min(2_000, 25 * 2 ** Math.min(failures, 7)));
      }
    }
  }

  async #ensureReady(client: RedisClient, timeout: number): Promise<void> {
    if (client.status === 'ready') return;
    // 'end' means closed by a watchdog or given up: start connecting again.
    if (client.status === 'end') client.connect().catch(() => {});
    await this.#ctx.connections.ready(client, timeout);
  }

  async #read(count: number, block: number): Promise<RawEntry[]> {
    const client = this.#blocking;
    if (client === undefined) return [];
    await this.#ensureReady(client, this.#ctx.blockMs);
    if (this.#clientId === undefined && !(client instanceof Cluster)) {
      this.#clientId = String(await this.#withWatchdog(client, client.call('CLIENT', 'ID'), block));
    }
    if (this.#closed || this.#paused) return [];
    const promise = client.call(
      'XREADGROUP',
      'GROUP',
      GROUP,
      this.name,
      'COUNT',
      count,
      'BLOCK',
      block,
      'STREAMS',
      this.#streamKey,
      '>',
    );
    const read: Read = { promise };
    this.#reading = read;
    try {
      return readEntries(await this.#withWatchdog(client, promise, block));
    } catch (error) {
      // A reply that still arrives is not lost: its entries are taken or handed back.
      promise.then(
        (reply) => this.#accept(readEntries(reply)),
        () => {},
      );
      if (error instanceof WatchdogError) {
        // The connection is suspect (ioredis blocking calls can hang across reconnects): start afresh.
        this.#logger.warn({ blockMs: block }, 'blocking read did not return in time; reconnecting');
        client.disconnect(true);
      }
      throw error;
    } finally {
      if (this.#reading === read) this.#reading = undefined;
    }
  }

  /** Rejects when `promise` outlives block + grace or the connection closes under it. */
  #withWatchdog<T>(client: RedisClient, promise: Promise<T>, block: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () => {
          cleanup();
          reject(new WatchdogError(`blocking read still pending after ${block + BLOCK_GRACE_MS + 500} ms`));
        },
        block + BLOCK_GRACE_MS + 500,
      );
      const onClose = () => {
        cleanup();
        reject(new ClusterError('BACKEND_UNAVAILABLE', 'the blocking connection closed during a read'));
      };
      const cleanup = () => {
        clearTimeout(timer);
        client.off('close', onClose);
      };
      client.on('close', onClose);
      promise.then(
        (value) => {
          cleanup();
          resolve(value);
        },
        (error: unknown) => {
          cleanup();
          reject(error);
        },
      );
    });
  }

  /**
   * Ends a read in flight so that nothing published after stop() is delivered to this consumer:
   * CLIENT UNBLOCK (it returns 0 while the read has not reached the server yet, so it is repeated),
   * or, failing that, dropping the connection.
   */
  async #interruptRead(): Promise<void> {
    const read = this.#reading;
    const client = this.#blocking;
    if (read === undefined || client === undefined) return;
    let finished = false;
    const settled = read.promise.then(
      () => {
        finished = true;
      },
      () => {
        finished = true;
      },
    );
    const deadline = Date.now() + this.#ctx.operationTimeout;
    const id = this.#clientId;
    if (id !== undefined) {
      while (!finished && this.#reading === read && Date.now() < deadline) {
        try {
          const unblocked = await this.#ctx.command('queue consumer close', ['CLIENT', 'UNBLOCK', id]);
          if (unblocked === 1) {
            await Promise.race([settled, sleepUnref(this.#ctx.operationTimeout)]);
            break;
          }
        } catch {
          break;
        }
        await Promise.race([settled, sleepUnref(5)]);
      }
    }
    if (!finished && this.#reading === read) {
      this.#blockingHealthy = false;
      client.disconnect();
    }
  }

  async #claim(): Promise<number> {
    const free = this.#concurrency - this.#held.size;
    if (free <= 0 || this.#paused || this.#closed) return 0;
    const reply = await this.#ctx.run(
      CLAIM,
      [this.#streamKey],
      [GROUP, this.name, this.#ctx.visibilityTimeout, free, this.#claimCursor],
      'queue claim',
    );
    const { cursor, entries } = claimedEntries(reply);
    this.#claimCursor = cursor;
    if (entries.length > 0) {
      this.#logger.debug({ count: entries.length }, 'reclaimed expired deliveries');
    }
    this.#accept(entries);
    return entries.length;
  }

  async #recover(): Promise<void> {
    const free = this.#concurrency - this.#held.size;
    if (free <= 0 || this.#paused || this.#closed) return;
    const reply = await this.#ctx.run(
      RECOVER,
      [this.#streamKey],
      [GROUP, this.name, free, ...this.#held.keys(), ...this.#settling],
      'queue recover',
    );
    const { entries } = claimedEntries(['0-0', reply]);
    if (entries.length > 0)
      this.#logger.info({ count: entries.length }, 'took back deliveries whose reply was lost');
    this.#accept(entries);
  }

  async #reap(): Promise<void> {
    const minIdle = Math.max(MIN_REAP_IDLE_MS, this.#ctx.visibilityTimeout * 10);
    try {
      await this.#ctx.run(REAP_CONSUMERS, [this.#streamKey], [GROUP, minIdle], 'queue reap');
    } catch (error) {
      this.#logger.debug(errorFields(error), 'could not remove dead consumers');
    }
  }

  #schedulePromote(at: number): void {
    if (this.#closed) return;
    if (this.#promoteTimer !== undefined && at >= this.#promoteAt) return;
    clearTimeout(this.#promoteTimer);
    this.#promoteAt = at;
    this.#promoteTimer = setTimeout(
      () => {
        this.#promoteTimer = undefined;
        this.#promoteAt = Number.POSITIVE_INFINITY;
        void this.#promote();
      },
      Math.max(0, Math.min(at - Date.now(), 2_147_483_647)),
    );
    this.#promoteTimer.unref();
  }

  /** Moves due delayed tasks into the stream, then sets a timer for the earliest one left. */
  async #promote(): Promise<void> {
    if (this.#closed) return;
    if (this.#promoting) {
      this.#promoteAgain = true;
      return;
    }
    this.#promoting = true;
    try {
      const keys = keysFor(PROMOTE, this.#ctx.keyPrefix, this.channel);
      for (;;) {
        const reply = (await this.#ctx.run(
          PROMOTE,
          keys,
          [GROUP, PROMOTE_BATCH],
          'queue promote',
        )) as number[];
        const [moved = 0, next = -1, now = 0] = reply.map(Number);
        if (moved >= PROMOTE_BATCH && !this.#closed) continue;
        if (next >= 0) this.#schedulePromote(Date.now() + (next - now));
        break;
      }
    } catch (error) {
      this.#logger.debug(errorFields(error), 'moving due delayed tasks failed; retried at the next tick');
    } finally {
      this.#promoting = false;
      if (this.#promoteAgain) {
        this.#promoteAgain = false;
        void this.#promote();
      }
    }
  }

  /** Hands entries to the handler while there is room; hands the rest back to the stream. */
  #accept(entries: readonly RawEntry[]): void {
    for (const [entry, count, raw] of entries) {
      const key = `${entry}:${count}`;
      // Already here: a late reply carrying a delivery that was recovered meanwhile.
      if (this.#held.has(key) || this.#settling.has(key) || this.#recent.has(key)) continue;
      if (this.#closed || this.#paused || this.#held.size >= this.#concurrency) {
        this.#track(this.#release(entry, count, 0));
        continue;
      }
      this.#handOut(key, entry, count, fieldsOf(raw));
    }
  }

  #track(work: Promise<unknown>): void {
    this.#background.add(work);
    void work.finally(() => this.#background.delete(work));
  }

  async #release(entry: string, count: number, bump: number): Promise<void> {
    try {
      await this.#ctx.run(
        RELEASE,
        [this.#streamKey],
        [GROUP, this.name, entry, count, bump],
        'queue release',
      );
    } catch (error) {
      // Still claimed by this consumer: the claim expires and another consumer takes the task.
      this.#logger.warn(
        { entry, ...errorFields(error) },
        'handing a task back failed; it is redelivered later',
      );
    }
  }

  #handOut(key: string, entry: string, count: number, fields: Record<string, string>): void {
    const held: Held = {
      key,
      entry,
      count,
      taskId: fields.i ?? entry,
      mode: fields.u ?? 'n',
      nonce: fields.n ?? '',
      settled: false,
    };
    this.#held.set(key, held);
    const base = Math.max(1, Math.trunc(toNumber(fields.a, 1)));
    const delivery: QueueDelivery = {
      id: held.taskId,
      payload: fields.d ?? '',
      attempt: base + count - 1,
      maxRetries: Math.max(0, Math.trunc(toNumber(fields.r, 0))),
      timeout: toNumber(fields.t, 0),
      // Empty for a first publish: the entry id starts with its publish time (server ms).
      publishedAt: fields.p ? toNumber(fields.p, 0) : toNumber(entry.slice(0, entry.indexOf('-')), 0),
      ack: () => this.#settle(held, ACK, [], 'queue ack'),
      retry: async (delayMs: number, _error: string) => {
        if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
          throw invalidArgument('retry delay must be a non-negative number of milliseconds');
        }
        return this.#settle(held, RETRY, [Math.ceil(delayMs)], 'queue retry');
      },
      deadLetter: (error: string) => this.#settle(held, DEAD_LETTER, [String(error)], 'queue dead-letter'),
      touch: async () => {
        if (held.settled) return false;
        const reply = await this.#ctx.run(
          TOUCH,
          [this.#streamKey],
          [GROUP, this.name, entry, count],
          'queue touch',
        );
        return reply === 1;
      },
    };
    try {
      this.#deliver(delivery);
    } catch (error) {
      // deliver() must not throw; if it does, the claim expires and the task is redelivered.
      this.#logger.error({ id: held.taskId, ...errorFields(error) }, 'deliver() threw');
    }
  }

  /** Settles once: the slot frees at once; the script checks the delivery is still this consumer's. */
  async #settle(held: Held, script: QueueScript, extra: (string | number)[], what: string): Promise<boolean> {
    if (held.settled) return false;
    held.settled = true;
    this.#held.delete(held.key);
    this.#settling.add(held.key);
    this.#wake();
    let reply: unknown;
    try {
      if (script === ACK) {
        // The acks of one turn (handlers that ended on one reply) go in one script call.
        reply = await this.#ctx.runEach(
          ACK,
          { keys: [this.#streamKey], args: [GROUP, this.name] },
          { keys: [this.#idKeyPrefix + held.taskId], args: [held.entry, held.count, held.mode, held.nonce] },
          what,
        );
      } else {
        const keys = keysFor(script, this.#ctx.keyPrefix, this.channel, [held.taskId]);
        reply = await this.#ctx.run(script, keys, [GROUP, this.name, held.entry, held.count, ...extra], what);
      }
    } finally {
      this.#settling.delete(held.key);
      this.#recent.add(held.key);
      if (this.#recent.size > RECENT_SETTLED) this.#recent.delete(this.#recent.values().next().value!);
    }
    if (Array.isArray(reply)) {
      const [ok = 0, due = 0, now = 0] = reply.map(Number);
      if (ok === 1 && due > 0) this.noteDue(due, now);
      return ok === 1;
    }
    return reply === 1;
  }
}
