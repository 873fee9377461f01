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
} from '@cluster/core';
import { JetStreamApiCodes, JetStreamApiError, StorageType } from '@nats-io/jetstream';
import { type KV, type KvEntry, type KvWatchEntry, KvWatchInclude } from '@nats-io/kv';
import type { QueuedIterator } from '@nats-io/nats-core';
import { type NatsConnectionOptions, NatsConnections } from '../connection.js';
import { assertEncodedLength, kvKey } from '../subjects.js';

export interface NatsLockOptions extends NatsConnectionOptions {
  /**
   * A connection shared with other adapters (see `createNatsAdapters`). The adapter retains it and
   * releases it on `close()`; the last user really closes it.
   */
  connections?: NatsConnections;
  /** KV bucket name (letters, digits, `-`, `_`). Default `<subjectPrefix>_locks`. */
  bucket?: string;
  /** Replicas of the bucket's stream (clustered servers). Default 1. */
  replicas?: number;
  /**
   * Fallback poll of a waiting acquisition in ms. Waiters are woken by a KV watch on the key; the
   * poll covers a watch that missed an event (reconnects). Default 1,000.
   */
  pollInterval?: number;
}

/** Leases are reported this much early (of the ttl), plus 1 ms, for clock drift between hosts. */
const CLOCK_DRIFT_FACTOR = 0.01;
/** A key's watch stays open this long after its last waiter left, so contention loops reuse it. */
const WATCH_LINGER_MS = 5_000;
const MAX_DURATION_MS = 2_147_483_647;
const BUCKET_PATTERN = /^[A-Za-z0-9_-]{1,200}$/;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The stored lease: owner, expiry on the writer's clock, and the token once it differs from the revision. */
interface Lease {
  o: string;
  e: number;
  t?: number;
}

function parseLease(entry: KvEntry | null): Lease | undefined {
  if (entry?.operation !== 'PUT') return undefined;
  try {
    const lease = JSON.parse(decoder.decode(entry.value)) as Lease;
    return typeof lease.o === 'string' && typeof lease.e === 'number' ? lease : undefined;
  } catch {
    return undefined;
  }
}

/** The fencing token of a stored lease: the revision that granted it. */
function tokenOf(entry: KvEntry, lease: Lease): number {
  return lease.t ?? entry.revision;
}

function isWrongSequence(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence ||
      error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

function grantOf(token: number, start: number, ttl: number): LockGrant {
  return { token, expiresAt: start + ttl - (Math.floor(ttl * CLOCK_DRIFT_FACTOR) + 1) };
}

type Attempt = { grant: LockGrant } | { heldUntil: number | undefined };

/** One watch per key with waiters, shared by this adapter's waiters of that key. */
interface KeyWatch {
  readonly listeners: Set<() => void>;
  iterator: Promise<QueuedIterator<KvWatchEntry> | undefined>;
  linger: NodeJS.Timeout | undefined;
}

/**
 * Locks on a JetStream KV bucket (file storage, history 1). Acquire is `create` (fails if the key
 * holds a live lease) or, when the stored lease has expired, `update` on its revision; the revision
 * that granted a lease is its fencing token (a bucket's revisions only grow, across keys, releases,
 * expiries and server restarts). Renewal is `update` on the last revision; release is an
 * owner-checked delete on the last revision. Server 2.9 has no per-key TTL: the expiry is stored in
 * the value and judged on the reader's clock (hosts need synchronised clocks, as with any lease).
 * Waiters are woken by a KV watch on the key, by a timer at the holder's expiry, and by a poll.
 */
class NatsKvLock implements LockAdapter {
  readonly capabilities: LockCapabilities = {
    crossProcess: true,
    durable: true,
    fencing: true,
    fairness: 'none',
    wakeOnRelease: true,
  };

  readonly #connections: NatsConnections;
  readonly #bucketName: string;
  readonly #replicas: number;
  readonly #pollInterval: number;
  readonly #watches = new Map<string, KeyWatch>();
  /** Waiters of this adapter per key, in arrival order. */
  readonly #lines = new Map<string, { wake(): void }[]>();
  /** Leases this adapter granted, by key: the last revision written, so release and renewal skip a read. */
  readonly #granted = new Map<
    string,
    { owner: string; token: number; revision: number; expiresAt: number }
  >();
  /** Rejects every pending acquire on close. */
  readonly #pending = new Set<(error: ClusterError) => void>();
  #kv: Promise<KV> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: NatsLockOptions) {
    const connections = options.connections ?? new NatsConnections(options);
    const bucket = options.bucket ?? `${connections.subjectPrefix}_locks`;
    if (typeof bucket !== 'string' || !BUCKET_PATTERN.test(bucket))
      throw invalidArgument('bucket must be 1 to 200 letters, digits, "-" or "_"');
    const replicas = options.replicas ?? 1;
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5)
      throw invalidArgument('replicas must be an integer from 1 to 5');
    const pollInterval = options.pollInterval ?? 1_000;
    if (typeof pollInterval !== 'number' || !Number.isFinite(pollInterval) || pollInterval < 10)
      throw invalidArgument('pollInterval must be at least 10 ms');
    this.#connections = connections.retain();
    this.#bucketName = bucket;
    this.#replicas = replicas;
    this.#pollInterval = pollInterval;
  }

  async connect(): Promise<void> {
    await this.#bucket();
  }

  async acquire(key: string, request: LockAcquireRequest): Promise<LockGrant | null> {
    this.#open();
    const stored = this.#key(key);
    const { owner, ttl, waitTimeout, signal } = request;
    if (typeof owner !== 'string' || owner.length === 0)
      throw invalidArgument('owner must be a non-empty string');
    if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0 || ttl > MAX_DURATION_MS)
      throw invalidArgument('ttl must be a positive number of milliseconds');
    if (typeof waitTimeout !== 'number' || Number.isNaN(waitTimeout) || waitTimeout < 0)
      throw invalidArgument('waitTimeout must be a non-negative number of milliseconds');
    if (signal?.aborted) throw abortError(signal, 'lock acquire');
    const kv = await this.#bucket();
    this.#open();
    if (signal?.aborted) throw abortError(signal, 'lock acquire');

    let wake: (() => void) | undefined;
    let fail: ((error: ClusterError) => void) | undefined;
    const failed = new Promise<never>((_, reject) => {
      fail = reject;
    });
    failed.catch(() => {});
    const onAbort = () => fail?.(abortError(signal!, 'lock acquire'));
    signal?.addEventListener('abort', onAbort, { once: true });
    this.#pending.add(fail!);
    const listener = () => wake?.();
    const waits = waitTimeout > 0;
    // Watch before the first attempt, so a release between that attempt and the wait still wakes us.
    if (waits) this.#listen(kv, stored, listener);
    const deadline = Date.now() + Math.min(waitTimeout, MAX_DURATION_MS);
    // This adapter's waiters of one key take turns: only the first of the line tries, so a release
    // costs one attempt here instead of a stampede of them (the line is local, not a global order).
    const place = waits ? this.#join(stored) : undefined;
    try {
      for (;;) {
        if (place && !place.first()) {
          const now = Date.now();
          if (now >= deadline) return null;
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([
            place.turn,
            new Promise<void>((resolve) => {
              timer = setTimeout(resolve, deadline - now);
            }),
            failed,
          ]).finally(() => clearTimeout(timer));
          continue;
        }
        const attempt = this.#attempt(kv, stored, owner, ttl);
        const outcome = await Promise.race([attempt, failed]).catch((error: unknown) => {
          // An attempt still in flight may land after the abort or close: undo it, so nothing is left.
          void attempt.then(
            (late) => {
              if ('grant' in late) void this.#undo(kv, stored, owner, late.grant.token);
            },
            () => {},
          );
          throw error;
        });
        if ('grant' in outcome) {
          if (signal?.aborted || this.#closed) {
            await this.#undo(kv, stored, owner, outcome.grant.token);
            throw signal?.aborted ? abortError(signal, 'lock acquire') : closedError('nats lock');
          }
          return outcome.grant;
        }
        const now = Date.now();
        if (!waits || now >= deadline) return null;
        let pause = Math.min(deadline - now, this.#pollInterval);
        if (outcome.heldUntil !== undefined)
          pause = Math.min(pause, Math.max(1, outcome.heldUntil - now + 1));
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          new Promise<void>((resolve) => {
            wake = resolve;
            timer = setTimeout(resolve, pause);
          }),
          failed,
        ]).finally(() => {
          clearTimeout(timer);
          wake = undefined;
        });
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.#pending.delete(fail!);
      if (waits) this.#unlisten(stored, listener);
      place?.leave();
    }
  }

  /** A place in this adapter's line for `stored`; `turn` resolves once it is first. */
  #join(stored: string): { first(): boolean; turn: Promise<void>; leave(): void } {
    let line = this.#lines.get(stored);
    if (!line) {
      line = [];
      this.#lines.set(stored, line);
    }
    let resolveTurn!: () => void;
    const turn = new Promise<void>((resolve) => {
      resolveTurn = resolve;
    });
    const entry = { wake: resolveTurn };
    line.push(entry);
    if (line.length === 1) resolveTurn();
    return {
      first: () => line[0] === entry,
      turn,
      leave: () => {
        const index = line.indexOf(entry);
        if (index < 0) return;
        line.splice(index, 1);
        if (line.length === 0) {
          if (this.#lines.get(stored) === line) this.#lines.delete(stored);
        } else if (index === 0) line[0]!.wake();
      },
    };
  }

  async release(key: string, owner: string, token: number): Promise<boolean> {
    this.#open();
    const stored = this.#key(key);
    const kv = await this.#bucket();
    const mine = this.#granted.get(stored);
    if (mine && mine.owner === owner && mine.token === token) {
      this.#granted.delete(stored);
      if (mine.expiresAt <= Date.now()) return false;
      try {
        // Nobody wrote the key since our last write: it is still our lease.
        await kv.delete(stored, { previousSeq: mine.revision });
        return true;
      } catch (error) {
        if (!isWrongSequence(error)) throw this.#connections.error(error, 'lock release');
      }
    }
    for (let round = 0; round < 5; round++) {
      const entry = await this.#call(() => kv.get(stored), 'lock release');
      const lease = parseLease(entry);
      if (!entry || !lease || lease.o !== owner || tokenOf(entry, lease) !== token || lease.e <= Date.now())
        return false;
      try {
        await kv.delete(stored, { previousSeq: entry.revision });
        return true;
      } catch (error) {
        // Renewed meanwhile (our own renewal racing the release): read again.
        if (!isWrongSequence(error)) throw this.#connections.error(error, 'lock release');
      }
    }
    return false;
  }

  async extend(key: string, owner: string, token: number, ttl: number): Promise<LockGrant | null> {
    this.#open();
    const stored = this.#key(key);
    if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0 || ttl > MAX_DURATION_MS)
      throw invalidArgument('ttl must be a positive number of milliseconds');
    const kv = await this.#bucket();
    const mine = this.#granted.get(stored);
    if (mine && mine.owner === owner && mine.token === token) {
      const start = Date.now();
      if (mine.expiresAt <= start) return null;
      const value: Lease = { o: owner, e: start + ttl, t: token };
      try {
        // Nobody wrote the key since our last write: renew on that revision without reading first.
        const revision = await kv.update(stored, encoder.encode(JSON.stringify(value)), mine.revision);
        this.#remember(stored, owner, token, revision, value.e);
        return grantOf(token, start, ttl);
      } catch (error) {
        if (!isWrongSequence(error)) throw this.#connections.error(error, 'lock extend');
      }
    }
    for (let round = 0; round < 5; round++) {
      const start = Date.now();
      const entry = await this.#call(() => kv.get(stored), 'lock extend');
      const lease = parseLease(entry);
      if (!entry || !lease || lease.o !== owner || tokenOf(entry, lease) !== token || lease.e <= start)
        return null;
      const value: Lease = { o: owner, e: start + ttl, t: token };
      try {
        const revision = await kv.update(stored, encoder.encode(JSON.stringify(value)), entry.revision);
        this.#remember(stored, owner, token, revision, value.e);
        return grantOf(token, start, ttl);
      } catch (error) {
        if (!isWrongSequence(error)) throw this.#connections.error(error, 'lock extend');
      }
    }
    return null;
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      const error = closedError('nats lock');
      for (const fail of [...this.#pending]) fail(error);
      this.#pending.clear();
      const watches = [...this.#watches.values()];
      this.#watches.clear();
      await Promise.all(
        watches.map(async (watch) => {
          clearTimeout(watch.linger);
          (await watch.iterator)?.stop();
        }),
      );
      await this.#connections.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  toJSON(): Record<string, unknown> {
    return { adapter: 'nats lock', bucket: this.#bucketName, closed: this.#closed };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `NatsKvLock { bucket: ${JSON.stringify(this.#bucketName)}, closed: ${this.#closed} }`;
  }

  /** One try: create the key, or take over an expired lease by compare-and-set on its revision. */
  async #attempt(kv: KV, stored: string, owner: string, ttl: number): Promise<Attempt> {
    const start = Date.now();
    const data = encoder.encode(JSON.stringify({ o: owner, e: start + ttl } satisfies Lease));
    try {
      // create() also takes a key whose last entry is a delete marker (a released lock).
      const revision = await kv.create(stored, data);
      this.#remember(stored, owner, revision, revision, start + ttl);
      return { grant: grantOf(revision, start, ttl) };
    } catch (error) {
      if (!isWrongSequence(error)) {
        // The create may have landed without its reply reaching us: take it back once we can.
        this.#undoLater(kv, stored, owner, start + ttl);
        throw this.#connections.error(error, 'lock acquire');
      }
    }
    const entry = await this.#call(() => kv.get(stored), 'lock acquire');
    const lease = parseLease(entry);
    if (entry && lease && lease.e > Date.now()) return { heldUntil: lease.e };
    if (!entry) return { heldUntil: undefined };
    try {
      const revision = await kv.update(stored, data, entry.revision);
      this.#remember(stored, owner, revision, revision, start + ttl);
      return { grant: grantOf(revision, start, ttl) };
    } catch (error) {
      if (isWrongSequence(error)) return { heldUntil: undefined };
      throw this.#connections.error(error, 'lock acquire');
    }
  }

  #remember(stored: string, owner: string, token: number, revision: number, expiresAt: number): void {
    // Leases that are never released (their holder let them expire) must not pile up.
    if (this.#granted.size >= 10_000 && !this.#granted.has(stored)) this.#granted.clear();
    this.#granted.set(stored, { owner, token, revision, expiresAt });
  }

  /** Releases a grant nobody will receive, even after close (the bucket handle still works then). */
  async #undo(kv: KV, stored: string, owner: string, token?: number): Promise<boolean> {
    try {
      const entry = await kv.get(stored);
      const lease = parseLease(entry);
      if (entry && lease && lease.o === owner && (token === undefined || tokenOf(entry, lease) === token))
        await kv.delete(stored, { previousSeq: entry.revision });
      return true;
    } catch {
      // Unreachable now: retried by #undoLater, or the lease runs out by itself.
      return false;
    }
  }

  /**
   * After an acquire whose outcome is unknown (a timeout, a lost connection): removes a lease this
   * owner may hold without knowing it, retrying with a backoff until the lease would have run out.
   * Owners are unique per acquisition, so nobody else's lease is touched.
   */
  #undoLater(kv: KV, stored: string, owner: string, expiresAt: number): void {
    let delay = 250;
    const retry = () => {
      if (Date.now() >= expiresAt || this.#connections.closed) return;
      void this.#undo(kv, stored, owner).then((done) => {
        if (done) return;
        delay = Math.min(delay * 2, 5_000);
        setTimeout(retry, delay).unref();
      });
    };
    setTimeout(retry, delay).unref();
  }

  #listen(kv: KV, stored: string, listener: () => void): void {
    let watch = this.#watches.get(stored);
    if (!watch) {
      const created: KeyWatch = {
        listeners: new Set(),
        iterator: Promise.resolve(undefined),
        linger: undefined,
      };
      created.iterator = kv
        .watch({ key: stored, include: KvWatchInclude.UpdatesOnly })
        .then((iterator) => {
          void (async () => {
            for await (const _entry of iterator) for (const wake of created.listeners) wake();
          })().catch(() => {});
          return iterator;
        })
        .catch((error: unknown) => {
          // Waiters still poll; the next wait on this key tries to watch again.
          this.#connections.logger.warn({ ...errorFields(error) }, 'nats lock watch failed; polling');
          if (this.#watches.get(stored) === created) this.#watches.delete(stored);
          return undefined;
        });
      watch = created;
      this.#watches.set(stored, watch);
    }
    clearTimeout(watch.linger);
    watch.linger = undefined;
    watch.listeners.add(listener);
  }

  #unlisten(stored: string, listener: () => void): void {
    const watch = this.#watches.get(stored);
    if (!watch) return;
    watch.listeners.delete(listener);
    if (watch.listeners.size > 0 || this.#closed) return;
    watch.linger = setTimeout(() => {
      if (watch.listeners.size > 0 || this.#watches.get(stored) !== watch) return;
      this.#watches.delete(stored);
      void watch.iterator.then((iterator) => iterator?.stop());
    }, WATCH_LINGER_MS);
    watch.linger.unref();
  }

  #key(key: string): string {
    if (typeof key !== 'string' || key.length === 0) throw invalidArgument('key must be a non-empty string');
    const stored = kvKey(key);
    assertEncodedLength(stored, 'lock key');
    return stored;
  }

  #open(): void {
    if (this.#closed) throw closedError('nats lock');
  }

  #bucket(): Promise<KV> {
    if (this.#closed) return Promise.reject(closedError('nats lock'));
    this.#kv ??= (async () => {
      const kvm = await this.#connections.kvm();
      return kvm.create(this.#bucketName, {
        history: 1,
        storage: StorageType.File,
        replicas: this.#replicas,
      });
    })().catch((error: unknown) => {
      this.#kv = undefined;
      throw this.#connections.error(error, 'lock bucket');
    });
    return this.#kv;
  }

  async #call<T>(run: () => Promise<T>, what: string): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw this.#connections.error(error, what);
    }
  }
}

/** Locks on NATS JetStream KV for `createCluster({ lock: { adapters: { nats: lock } } })`. */
export function createNatsLock(options: NatsLockOptions = {}): LockAdapter {
  return new NatsKvLock(options);
}
