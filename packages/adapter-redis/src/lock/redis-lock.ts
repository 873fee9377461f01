import { randomUUID } from 'node:crypto';
import {
  abortError,
  type ClusterError,
  closedError,
  errorFields,
  invalidArgument,
  type LockAcquireRequest,
  type LockAdapter,
  type LockCapabilities,
  type LockGrant,
  type Logger,
} from '@cluster/core';
import {
  commandTimeoutOf,
  type RedisClient,
  type RedisConnectionOptions,
  RedisConnections,
} from '../connection.js';
import { keyNamesCache } from '../keys.js';
import { type LockKeys, lockKeys, runScript, SCRIPTS, wakeChannelPrefix } from './scripts.js';

export interface RedisLockOptions extends RedisConnectionOptions {
  /**
   * Connections shared with other parts (e.g. from `createRedisAdapters`). The adapter retains them
   * and releases its share on close; without them it opens its own from the connection options.
   */
  connections?: RedisConnections;
  /**
   * Declare `capabilities.durable`. Say true only when the server persists every write before
   * acknowledging it or within a second (`appendonly yes` with `appendfsync always` or
   * `everysec`): then leases and fencing counters survive a Redis restart. Default false.
   */
  durable?: boolean;
  /**
   * Fallback poll of a waiting acquisition in ms (waiters are woken by a message on release; the
   * poll covers lost messages and holders that died). It also keeps the waiter's place in line
   * alive. Default 250.
   */
  pollInterval?: number;
  /**
   * How long a waiter's place in line lasts without a poll, in ms: a waiter whose process died
   * blocks the line at most this long. At least 4 × `pollInterval`. Default max(2,000, 4 × pollInterval).
   */
  waiterTtl?: number;
}

/** Leases are reported this much early (of the ttl), plus 1 ms, for clock drift between hosts (as Redlock). */
const CLOCK_DRIFT_FACTOR = 0.01;
/** Highest fencing token seen per key, kept for this many keys (least recently granted dropped first). */
const MAX_FLOORS = 10_000;
/** Key names computed per lock name, cached for this many names. */
const MAX_CACHED_KEYS = 1_000;
/** Timers cannot wait longer than this (about 24.8 days). */
const MAX_DURATION_MS = 2_147_483_647;

const NO_WAIT = Promise.resolve();

type AcquireReply = [granted: number, tokenOrPttl: number, flag: number, serverNow: number, fence?: number];

/**
 * One acquisition in progress: its attempts (the first, polls, retries after a reconnect), the
 * hand-over that ends most waits, its deadline, abort and clean-up.
 */
class Waiter {
  settled = false;
  /** The attempt in flight; its handlers never reject. */
  inFlight: Promise<void> | undefined;
  /** Another attempt was asked for while one was in flight: run it when that one settles. */
  again = false;
  /** In line at the server, or maybe: an attempt's outcome is unknown. Leaving then needs a clean-up. */
  joined = false;
  /** `<adapter id>/<ttl>/<owner>`: the waiter's entry in the line. */
  readonly member: string;
  /**
   * Bounds on when a hand-over happened, on the local clock (for an `expiresAt` that errs early): it
   * came after the first attempt was sent and after every attempt that found the key held; and
   * the server clock is at most `maxOffset` ahead of ours (server ms − send time, over attempts).
   */
  #notBefore = 0;
  #maxOffset = Number.POSITIVE_INFINITY;
  /**
   * The fence counter as seen by the latest attempt that found the key not ours. A hand-over with a
   * token at most that happened before that attempt, which would have found the key ours had its
   * lease not ended: a stale message, ignored.
   */
  #refusedFence = 0;
  /** Grants whose reply came after their lease had ended. */
  #late = 0;
  /** Token of the hand-over this waiter was settled with (0: none). */
  #handedOverToken = 0;
  #poll: NodeJS.Timeout | undefined;
  #deadline: NodeJS.Timeout | undefined;
  #startedAt = 0;
  readonly #onAbort = () => this.fail(abortError(this.request.signal!, 'lock acquire'));

  constructor(
    readonly adapter: RedisLockAdapter,
    readonly key: string,
    readonly keys: LockKeys,
    readonly request: LockAcquireRequest,
    readonly resolve: (grant: LockGrant | null) => void,
    readonly reject: (error: unknown) => void,
  ) {
    this.member = `${adapter.id}/${request.ttl}/${request.owner}`;
  }

  get owner(): string {
    return this.request.owner;
  }

  start(): void {
    const { waitTimeout, signal } = this.request;
    this.#startedAt = Date.now();
    // Most acquisitions are granted by their first attempt. When that attempt is sure to settle
    // before the wait ends (its commands have a shorter deadline), the wait's timer is armed only
    // if the key turns out to be held: a timer per acquisition was a measurable share of its cost.
    const firstAttemptBound = this.adapter.attemptBound;
    if (waitTimeout > 0 && (firstAttemptBound === undefined || firstAttemptBound >= waitTimeout)) {
      this.#armDeadline();
    }
    signal?.addEventListener('abort', this.#onAbort, { once: true });
    this.attempt();
  }

  /** Arms the wait's deadline for what is left of it; false (and settled) when nothing is left. */
  #armDeadline(): boolean {
    const { waitTimeout } = this.request;
    if (this.#deadline !== undefined || waitTimeout <= 0) return true;
    const left = waitTimeout - (Date.now() - this.#startedAt);
    if (left <= 0) {
      this.finish(null);
      return false;
    }
    this.#deadline = setTimeout(() => this.finish(null), left);
    this.#deadline.unref?.();
    return true;
  }

  /** Runs an attempt now, or right after the one in flight. */
  attempt(): void {
    if (this.settled) return;
    if (this.inFlight) {
      this.again = true;
      return;
    }
    clearTimeout(this.#poll);
    this.#poll = undefined;
    this.again = false;
    const join = this.request.waitTimeout > 0;
    const sentAt = Date.now();
    if (this.#notBefore === 0) this.#notBefore = sentAt;
    this.inFlight = this.adapter.attempt(this, join).then(
      (reply) => this.#onReply(reply, sentAt, join),
      (error) => this.#onError(error),
    );
  }

  /** The key was handed to this waiter by a release (or a give-back) at server time `serverAt`. */
  handedOver(token: number, serverAt: number): void {
    if (this.settled) return; // the clean-up behind it gives the key back
    // A message that took longer than a later attempt's reply: that attempt saw the key not ours.
    if (token <= this.#refusedFence) return;
    const expiresAt = leaseEnd(Math.max(this.#notBefore, serverAt - this.#maxOffset), this.request.ttl);
    if (expiresAt <= Date.now()) {
      // Too late to rely on: an attempt finds the key still ours (and restarts the lease) or not.
      this.attempt();
      return;
    }
    this.#handedOverToken = token;
    this.joined = false;
    this.adapter.granted(this.key, token, false);
    this.finish({ token, expiresAt });
  }

  #onReply(reply: AcquireReply, sentAt: number, join: boolean): void {
    this.inFlight = undefined;
    const [granted, value, flag, serverNow] = reply;
    if (this.settled) {
      // Settled meanwhile (deadline, abort, close): the clean-up queued behind this attempt gives
      // back a grant, so nothing is held for a caller who left. Settled by a hand-over: an attempt
      // that ran after it (the counter had reached its token) found the key not ours, so its lease
      // had ended, and put us back in line, which nobody would ever leave.
      if (this.#handedOverToken > 0 && granted === 0 && join && (reply[4] ?? 0) >= this.#handedOverToken) {
        this.adapter.cancel(this, NO_WAIT);
      }
      return;
    }
    if (granted === 1) {
      this.adapter.granted(this.key, value, flag === 1);
      const expiresAt = leaseEnd(sentAt, this.request.ttl);
      if (expiresAt <= Date.now()) {
        // The reply took longer than the lease: useless as it is. Held maybe, so leaving needs a
        // clean-up; one more attempt restarts the lease if it is still ours (a single attempt gets one).
        this.joined = true;
        if (!join && this.#late++ > 0) this.finish(null);
        else if (this.#armDeadline()) this.attempt();
        return;
      }
      this.joined = false;
      this.finish({ token: value, expiresAt });
      return;
    }
    if (!join) {
      this.finish(null);
      return;
    }
    this.joined = true;
    if (!this.#armDeadline()) return;
    this.#notBefore = Math.max(this.#notBefore, sentAt);
    this.#maxOffset = Math.min(this.#maxOffset, serverNow - sentAt);
    this.#refusedFence = Math.max(this.#refusedFence, reply[4] ?? 0);
    if (this.again) {
      this.attempt();
      return;
    }
    // Poll: the head waits for the holder's lease to end (it may have died); everyone refreshes its place.
    let delay = this.adapter.pollInterval * (0.8 + Math.random() * 0.2);
    if (flag === 1 && value > 0) delay = Math.min(delay, value + 1);
    this.#poll = setTimeout(() => this.attempt(), delay);
    this.#poll.unref?.();
  }

  #onError(error: unknown): void {
    this.inFlight = undefined;
    if (this.settled) return;
    // The outcome is unknown (the script may have run): never report it as held; clean up behind it.
    this.joined = true;
    this.fail(this.adapter.wrap(error, 'lock acquire'));
  }

  finish(grant: LockGrant | null): void {
    if (this.#settle(grant !== null)) this.resolve(grant);
  }

  fail(error: unknown): void {
    if (this.#settle(false)) this.reject(error);
  }

  /** Marks the acquisition over; true for the first call. Leaves the line (in the background) if needed. */
  #settle(granted: boolean): boolean {
    if (this.settled) return false;
    this.settled = true;
    clearTimeout(this.#poll);
    clearTimeout(this.#deadline);
    this.request.signal?.removeEventListener('abort', this.#onAbort);
    this.adapter.ended(this);
    // An attempt in flight has an unknown outcome until it settles: the clean-up runs behind it.
    if (!granted && (this.joined || this.inFlight)) this.adapter.cancel(this, this.inFlight ?? NO_WAIT);
    return true;
  }
}

class RedisLockAdapter implements LockAdapter {
  readonly capabilities: LockCapabilities;
  readonly pollInterval: number;
  /** Names this adapter's wake channel and its waiters' entries in the lines. */
  readonly id = randomUUID();
  readonly #connections: RedisConnections;
  readonly #logger: Logger;
  readonly #keyPrefix: string;
  readonly #wakePrefix: string;
  readonly #waiterTtl: number;
  /** commandTimeout as configured here, when these options opened the connections. */
  readonly #ownCommandTimeout: number | undefined;
  /** Acquisitions in progress, by owner. */
  readonly #waiters = new Map<string, Waiter>();
  readonly #cleanups = new Set<Promise<void>>();
  readonly #floors = new Map<string, number>();
  readonly #keys: (key: string) => LockKeys;
  #subscriber: RedisClient | undefined;
  #connecting: Promise<void> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  #attemptBound: number | undefined | null = null;
  /** Aborted by close(): wakes clean-ups sleeping between retries for a last attempt. */
  readonly #closeController = new AbortController();

  constructor(options: RedisLockOptions) {
    const pollInterval = options.pollInterval ?? 250;
    assertMs(pollInterval, 'pollInterval');
    const waiterTtl = options.waiterTtl ?? Math.max(2_000, 4 * pollInterval);
    assertMs(waiterTtl, 'waiterTtl');
    if (waiterTtl < 4 * pollInterval) throw invalidArgument('waiterTtl must be at least 4 × pollInterval');
    if (options.durable !== undefined && typeof options.durable !== 'boolean') {
      throw invalidArgument('durable must be a boolean');
    }
    this.pollInterval = Math.ceil(pollInterval);
    this.#waiterTtl = Math.ceil(waiterTtl);
    this.#ownCommandTimeout = options.commandTimeout;
    this.capabilities = Object.freeze({
      crossProcess: true,
      durable: options.durable ?? false,
      fencing: true,
      fairness: 'fifo',
      wakeOnRelease: true,
    });
    this.#connections = (options.connections ?? new RedisConnections(options)).retain();
    this.#logger = this.#connections.logger.child({ part: 'lock' });
    this.#keyPrefix = this.#connections.keyPrefix;
    this.#wakePrefix = wakeChannelPrefix(this.#keyPrefix);
    const keyPrefix = this.#keyPrefix;
    this.#keys = keyNamesCache(MAX_CACHED_KEYS, (key) => lockKeys(keyPrefix, key));
  }

  connect(): Promise<void> {
    if (this.#closed) return Promise.reject(closedError('redis lock adapter'));
    this.#connecting ??= (async () => {
      try {
        await this.#connections.ready(this.#connections.command);
      } catch (error) {
        this.#connecting = undefined;
        throw this.wrap(error, 'lock connect');
      }
      // Not awaited: waits work without it (they poll); it only makes them event-driven.
      this.#listen();
    })();
    return this.#connecting;
  }

  acquire(key: string, request: LockAcquireRequest): Promise<LockGrant | null> {
    try {
      if (this.#closed) throw closedError('redis lock adapter');
      assertRequest(key, request);
    } catch (error) {
      return Promise.reject(error);
    }
    if (request.signal?.aborted) return Promise.reject(abortError(request.signal, 'lock acquire'));
    if (this.#waiters.has(request.owner)) {
      return Promise.reject(invalidArgument('an acquisition with this owner is already in progress'));
    }
    const normalized: LockAcquireRequest = {
      owner: request.owner,
      ttl: Math.ceil(request.ttl),
      waitTimeout: Math.ceil(request.waitTimeout),
      signal: request.signal,
    };
    if (normalized.waitTimeout > 0) this.#listen();
    return new Promise<LockGrant | null>((resolve, reject) => {
      const waiter = new Waiter(this, key, this.#keys(key), normalized, resolve, reject);
      this.#waiters.set(normalized.owner, waiter);
      waiter.start();
    });
  }

  async release(key: string, owner: string, token: number): Promise<boolean> {
    this.#assertOpen();
    assertHolder(key, owner, token);
    const keys = this.#keys(key);
    const run = async () => {
      // 0: not ours; 1: released; 2: released, and the hand-over lifted the fence counter.
      const reply = (await runScript(this.#command(), SCRIPTS.release, keys, [
        `${token}:${owner}`,
        this.#floors.get(key) ?? 0,
        this.#wakePrefix,
      ])) as 0 | 1 | 2;
      if (reply === 2) this.#warnRaised(key);
      return reply !== 0;
    };
    try {
      return await run();
    } catch (error) {
      // Unknown outcome: the lease may still be held. Retry in the background (the release is
      // owner-checked, so a late one never frees a later holder); the lease expires anyway.
      this.#track(this.#retry(run).then(() => undefined));
      throw this.wrap(error, 'lock release');
    }
  }

  async extend(key: string, owner: string, token: number, ttl: number): Promise<LockGrant | null> {
    this.#assertOpen();
    assertHolder(key, owner, token);
    assertMs(ttl, 'ttl');
    const ms = Math.ceil(ttl);
    const keys = this.#keys(key);
    const sentAt = Date.now();
    let reply: unknown;
    try {
      reply = await runScript(this.#command(), SCRIPTS.extend, keys, [`${token}:${owner}`, ms]);
    } catch (error) {
      throw this.wrap(error, 'lock extend');
    }
    return reply === 1 ? { token, expiresAt: leaseEnd(sentAt, ms) } : null;
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Credential-free, so logs and inspection never show connection options. */
  toJSON(): Record<string, unknown> {
    return { adapter: 'redis-lock', keyPrefix: this.#keyPrefix, closed: this.#closed };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `RedisLockAdapter { keyPrefix: ${JSON.stringify(this.#keyPrefix)} }`;
  }

  // --- used by Waiter ------------------------------------------------------------------------

  /** One acquire attempt; joins (or stays in) the line when `join`. */
  async attempt(waiter: Waiter, join: boolean): Promise<AcquireReply> {
    const { owner, ttl } = waiter.request;
    const reply = await runScript(this.#command(), SCRIPTS.acquire, waiter.keys, [
      owner,
      ttl,
      join ? '1' : '0',
      this.#waiterTtl,
      this.#floors.get(waiter.key) ?? 0,
      waiter.member,
    ]);
    // A plain grant comes as the bare token.
    return typeof reply === 'number' ? [1, reply, 0, 0] : (reply as AcquireReply);
  }

  /**
   * The longest an acquire attempt can take before it settles (its two commands' deadlines, the
   * second being the script's load after NOSCRIPT), or undefined when the client has no deadline.
   */
  get attemptBound(): number | undefined {
    if (this.#attemptBound === null) {
      const timeout = this.#configuredTimeout();
      this.#attemptBound = timeout === undefined ? undefined : 2 * timeout + 50;
    }
    return this.#attemptBound;
  }

  /** Records a grant's token; warns when the server's fence counter had gone backwards. */
  granted(key: string, token: number, raised: boolean): void {
    if (raised) this.#warnRaised(key);
    this.#floors.delete(key);
    this.#floors.set(key, token);
    if (this.#floors.size > MAX_FLOORS) {
      const oldest = this.#floors.keys().next();
      if (!oldest.done) this.#floors.delete(oldest.value);
    }
  }

  wrap(error: unknown, what: string): ClusterError {
    return this.#connections.error(error, what);
  }

  /** The acquisition is over: hand-overs to it are no longer expected. */
  ended(waiter: Waiter): void {
    if (this.#waiters.get(waiter.owner) === waiter) this.#waiters.delete(waiter.owner);
  }

  /**
   * Leaves the line and gives back any grant the caller never saw (handing the key to the next
   * waiter), after the attempt in flight settles, so a late grant is seen. Runs in the background,
   * retried; close() waits for it, bounded.
   */
  cancel(waiter: Waiter, after: Promise<void>): void {
    const { keys, key, owner, member } = waiter;
    const run = async () => {
      const reply = (await runScript(this.#command(), SCRIPTS.cancel, keys, [
        owner,
        member,
        this.#floors.get(key) ?? 0,
        this.#wakePrefix,
      ])) as [result: number, raised: number];
      if (reply[1] === 1) this.#warnRaised(key);
      if (reply[0] === 2) this.#logger.debug({ key }, 'gave back a lock grant nobody waited for');
    };
    this.#track(after.then(() => this.#retry(run)).then(() => undefined));
  }

  // --- internals -------------------------------------------------------------------------------

  #command(): RedisClient {
    return this.#connections.command;
  }

  #assertOpen(): void {
    if (this.#closed) throw closedError('redis lock adapter');
  }

  #warnRaised(key: string): void {
    this.#logger.warn(
      { key },
      'lock fencing counter had gone backwards (Redis lost it: a restart without AOF persistence?); ' +
        'raised it above the highest token this process had seen',
    );
  }

  #track(work: Promise<void>): void {
    const tracked = work.catch((error) =>
      this.#logger.warn(
        errorFields(this.wrap(error, 'lock clean-up')),
        'lock clean-up failed; the lease expires by itself',
      ),
    );
    this.#cleanups.add(tracked);
    void tracked.finally(() => this.#cleanups.delete(tracked));
  }

  /**
   * Retries an idempotent clean-up a few times while what it cleans may still exist. On close a
   * sleeping retry wakes for one last attempt (the connections are still open then).
   */
  async #retry<T>(run: () => Promise<T>): Promise<T> {
    const delays = [50, 200, 500, 1_000, 2_000];
    const closing = this.#closeController.signal;
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await run();
      } catch (error) {
        const delay = delays[attempt];
        if (delay === undefined || closing.aborted) throw error;
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            closing.removeEventListener('abort', done);
            resolve();
          };
          const timer = setTimeout(done, delay);
          timer.unref?.();
          closing.addEventListener('abort', done, { once: true });
        });
      }
    }
  }

  /**
   * Opens this adapter's subscriber (once) and subscribes to its wake channel on every `ready`, where
   * hand-overs to its waiters arrive. It has the command deadline and a socket timeout, so a
   * subscription lost in a partition resets the socket and is made again on reconnect.
   */
  #listen(): void {
    if (this.#subscriber || this.#closed) return;
    const timeout = this.#commandTimeout();
    let subscriber: RedisClient;
    try {
      subscriber = this.#connections.dedicated('lock-subscriber', {
        commandTimeout: timeout,
        socketTimeout: timeout,
        autoResubscribe: false,
        connectionName: 'cluster-lock-subscriber',
      });
    } catch (error) {
      this.#logger.debug(errorFields(error), 'lock wake subscriber unavailable; waiters poll');
      return;
    }
    this.#subscriber = subscriber;
    const channel = this.#wakePrefix + this.id;
    subscriber.on('message', (_channel: string, message: string) => this.#onWake(message));
    subscriber.on('ready', () => {
      subscriber.subscribe(channel).then(
        // Hand-overs published before the subscription took effect (or during an outage) were
        // missed: every waiter checks now.
        () => {
          for (const waiter of this.#waiters.values()) waiter.attempt();
        },
        (error: unknown) =>
          this.#logger.debug(errorFields(error), 'lock wake subscription failed; waiters poll'),
      );
    });
    if (subscriber.status === 'wait') subscriber.connect().catch(() => {});
  }

  #commandTimeout(): number {
    return this.#configuredTimeout() ?? this.#ownCommandTimeout ?? 2_000;
  }

  /** The command connection's own deadline per command, if it has one. */
  #configuredTimeout(): number | undefined {
    try {
      return commandTimeoutOf(this.#connections.command);
    } catch {
      return undefined; // closed connections
    }
  }

  /** `<token>:<server ms>:<owner>` from a release that handed a key to one of our waiters. */
  #onWake(message: string): void {
    const first = message.indexOf(':');
    const second = message.indexOf(':', first + 1);
    if (first < 0 || second < 0) return;
    const waiter = this.#waiters.get(message.slice(second + 1));
    if (!waiter) return;
    const token = Number(message.slice(0, first));
    const serverAt = Number(message.slice(first + 1, second));
    if (Number.isSafeInteger(token) && Number.isFinite(serverAt)) waiter.handedOver(token, serverAt);
  }

  async #close(): Promise<void> {
    this.#closed = true;
    const closed = closedError('redis lock adapter');
    for (const waiter of [...this.#waiters.values()]) waiter.fail(closed);
    this.#closeController.abort(closed);
    // Clean-ups (leaving lines, giving back late grants) get a bounded time before connections go.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.#cleanups]),
      new Promise((resolve) => {
        timer = setTimeout(resolve, this.#commandTimeout() + 500);
      }),
    ]);
    clearTimeout(timer);
    const subscriber = this.#subscriber;
    this.#subscriber = undefined;
    if (subscriber) {
      // QUIT waits for a reply a dead connection never sends: bounded, then dropped.
      let quitTimer: NodeJS.Timeout | undefined;
      const quit = subscriber.quit().then(
        () => true,
        () => false,
      );
      const quitted = await Promise.race([
        quit,
        new Promise<boolean>((resolve) => {
          quitTimer = setTimeout(() => resolve(false), 1_000);
        }),
      ]);
      clearTimeout(quitTimer);
      if (!quitted) subscriber.disconnect();
    }
    await this.#connections.close();
  }
}

/** When a lease that the server started at or after `sentAt` ends, erring early. */
function leaseEnd(sentAt: number, ttl: number): number {
  return sentAt + ttl - Math.ceil(ttl * CLOCK_DRIFT_FACTOR) - 1;
}

function assertMs(value: unknown, what: string): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_DURATION_MS) {
    throw invalidArgument(`${what} must be a positive number of ms up to ${MAX_DURATION_MS}`);
  }
}

function assertKey(key: unknown): void {
  if (typeof key !== 'string' || key.length === 0)
    throw invalidArgument('lock key must be a non-empty string');
}

function assertOwner(owner: unknown): void {
  if (typeof owner !== 'string' || owner.length === 0) {
    throw invalidArgument('lock owner must be a non-empty string');
  }
}

function assertRequest(key: unknown, request: LockAcquireRequest): void {
  assertKey(key);
  if (typeof request !== 'object' || request === null)
    throw invalidArgument('lock request must be an object');
  assertOwner(request.owner);
  assertMs(request.ttl, 'ttl');
  const { waitTimeout } = request;
  if (
    typeof waitTimeout !== 'number' ||
    !Number.isFinite(waitTimeout) ||
    waitTimeout < 0 ||
    waitTimeout > MAX_DURATION_MS
  ) {
    throw invalidArgument(`waitTimeout must be a non-negative number of ms up to ${MAX_DURATION_MS}`);
  }
}

function assertHolder(key: unknown, owner: unknown, token: unknown): void {
  assertKey(key);
  assertOwner(owner);
  if (typeof token !== 'number' || !Number.isSafeInteger(token)) {
    throw invalidArgument('lock token must be an integer');
  }
}

/**
 * Fenced, fair locks (leases) on Redis, for `LockManager`.
 *
 * - Grant: one Lua script. The key must be free and the caller first in line (or the line empty);
 *   it INCRs the key's fence counter and sets `<token>:<owner>` with PX ttl. Release and extend are
 *   owner-and-token-checked scripts. All keys of one lock share a `{name}` hash tag (one Cluster slot).
 * - Waiting: a waiter joins a per-key FIFO line in its first attempt. A release hands the key
 *   straight to the first live waiter (same script) and publishes the grant on that waiter's adapter
 *   channel (one subscriber connection per adapter). Waiters also poll (`pollInterval`, and at the
 *   holder's PTTL for the head, which takes over when a holder died); polls keep their place alive,
 *   so a waiter whose process died drops out after `waiterTtl`. A hand-over to a waiter that died
 *   just before costs at most that waiter's ttl, like a holder that died.
 * - Leases err early: `expiresAt` counts from before the request was sent (for a hand-over: from
 *   the latest moment provably before it), minus 1 % of the ttl + 1 ms for clock drift.
 * - An unknown outcome (timeout, lost connection, a reply after the lease or after the caller gave
 *   up) is never reported as held: the attempt counts as failed, and a clean-up script (retried)
 *   removes the waiter from the line and gives back a grant it never saw.
 * - Fencing tokens strictly increase per key. Across a Redis restart they survive only with AOF
 *   persistence; without it the counter restarts, and an adapter that saw higher tokens lifts it
 *   back above them on its next grant and logs a warning (other processes are protected only once
 *   such an adapter has acquired). Tokens are for the protected resource to check (reject any token
 *   lower than one it has seen): a lease alone cannot exclude a paused holder.
 * - Redis: ≥ 5 (scripts read TIME before writing); `maxmemory-policy noeviction` (an evicted lock or
 *   counter breaks exclusion or fencing); one fence counter per lock name is kept for ever.
 */
export function createRedisLock(options: RedisLockOptions = {}): LockAdapter {
  if (typeof options !== 'object' || options === null) throw invalidArgument('options must be an object');
  return new RedisLockAdapter(options);
}
