import { createHash } from 'node:crypto';
import { ClusterError, invalidArgument } from '../errors.js';
import { assertKey, assertOptionalMs } from '../internal/names.js';
import type { Logger } from '../logger.js';
import { errorFields } from '../logger.js';
import { copyPlainJson, NOT_PLAIN, type Serializer } from '../serializer.js';
import type { CacheStore } from './types.js';

/** What a cluster-wide `wrap` needs from the lock manager (structural, to keep parts decoupled). */
export interface FillLock {
  runExclusive<T>(
    key: string,
    fn: () => Promise<T>,
    options: { ttl: number; waitTimeout: number },
  ): Promise<T>;
}

export interface WrapWithConditionOptions<T> {
  /** false: bypass the cache entirely (neither read nor written). Default true. */
  useCache?: boolean;
  /** Decides whether a computed value is stored. Default: anything but `undefined`. */
  isCacheable?: (value: T) => boolean | Promise<boolean>;
  ttl?: number;
}

export interface CacheOptions {
  name: string;
  prefix: string;
  storeName: string;
  store: CacheStore;
  /** Full key prefix, `app:prefix:` with escaped segments. */
  namespace: string;
  serializer: Serializer;
  logger: Logger;
  /** Default ttl in ms for set/wrap; undefined = no expiry. */
  ttl: number | undefined;
  /**
   * `instance`: concurrent `wrap`s of one key in this process share one computation.
   * `cluster`: additionally, a lock makes one instance compute while the others wait for its value
   * (useful only with a shared store).
   */
  singleFlight: 'instance' | 'cluster';
  fillLock: FillLock | undefined;
  /** Longest a cluster-wide fill may hold its lock, and others wait for it. */
  fillTimeout: number;
}

interface Fill {
  promise: Promise<unknown>;
  /** Set when the key is deleted, overwritten or reset while the fill runs: the result is then not stored. */
  invalidated: boolean;
}

/**
 * A named, prefixed view of a store. `undefined` is the only miss: `null`, `0`, `''` and `false`
 * are values like any other. Values go through the serializer, so every store returns the same
 * thing (Date, Map, Set, BigInt, Uint8Array survive).
 */
export class Cache {
  readonly name: string;
  readonly prefix: string;
  readonly storeName: string;
  readonly store: CacheStore;
  readonly #o: CacheOptions;
  readonly #fills = new Map<string, Fill>();

  constructor(options: CacheOptions) {
    this.#o = options;
    this.name = options.name;
    this.prefix = options.prefix;
    this.storeName = options.storeName;
    this.store = options.store;
  }

  /** The full key a store sees for `key`. */
  key(key: string): string {
    assertKey(key);
    return this.#o.namespace + key;
  }

  async get<T = unknown>(key: string): Promise<T | undefined> {
    // No await: a synchronous read must not pay a microtask (decoded values are never thenables).
    return this.#read(this.key(key)) as T | undefined;
  }

  async set(key: string, value: unknown, ttl?: number): Promise<void> {
    const full = this.key(key);
    const effective = this.#ttl(ttl);
    const pending = this.#write(full, value, effective, undefined);
    if (pending !== undefined) await pending;
  }

  /**
   * Reads and decodes one full key. In-process stores answer synchronously (no promise is made);
   * only the remote path returns a promise. Decoded values are never promises, so callers can tell.
   */
  #read(full: string): unknown {
    const store = this.store;
    if (store.getPlainNow !== undefined) {
      const found = store.getPlainNow(full);
      if (found === undefined) return undefined;
      // The stored copy is private to the store: hand out a copy of it, as decoding would.
      if (typeof found !== 'string') return copyPlainJson(found.plain, { bytes: 0 });
      return this.#o.serializer.decode(found);
    }
    if (store.getNow !== undefined) {
      const text = store.getNow(full);
      return text === undefined ? undefined : this.#o.serializer.decode(text);
    }
    return store.get(full).then((text) => (text === undefined ? undefined : this.#o.serializer.decode(text)));
  }

  /**
   * Validates and encodes, then writes — so bad values throw before anything changes. A plain
   * write first invalidates running fills of the key; a fill's own write (`fill` given) is skipped
   * when the key was invalidated meanwhile. An in-process store may keep a
   * deep copy instead of text when that is provably the same thing (plain JSON within the size
   * limit). Returns a promise only when the store is remote.
   */
  #write(
    full: string,
    value: unknown,
    ttl: number | undefined,
    fill: Fill | undefined,
  ): Promise<void> | undefined {
    const store = this.store;
    if (store.setPlainNow !== undefined) {
      const budget = { bytes: this.#o.serializer.maxPayloadBytes };
      const copy = copyPlainJson(value, budget);
      if (copy !== NOT_PLAIN && budget.bytes >= 0) {
        if (this.#mayWrite(full, fill)) store.setPlainNow(full, copy, ttl);
        return undefined;
      }
    }
    const text = this.#encode(value);
    if (!this.#mayWrite(full, fill)) return undefined;
    if (store.setNow !== undefined) {
      store.setNow(full, text, ttl);
      return undefined;
    }
    return store.set(full, text, ttl);
  }

  async del(key: string): Promise<void> {
    const full = this.key(key);
    this.#invalidate(full);
    await this.store.del(full);
  }

  /** Removes this cache's keys only: other caches and other apps on the same store are untouched. */
  async reset(): Promise<void> {
    for (const fill of this.#fills.values()) fill.invalidated = true;
    await this.store.clear(this.#o.namespace);
  }

  /** This cache's keys, without the prefix. */
  async keys(): Promise<string[]> {
    const cut = this.#o.namespace.length;
    return (await this.store.keys(this.#o.namespace)).map((k) => k.slice(cut));
  }

  /** Remaining ms; Infinity when the key never expires; undefined when it is missing. */
  async ttl(key: string): Promise<number | undefined> {
    return this.store.ttl(this.key(key));
  }

  /** `mget(a, b)` or `mget([a, b])`: values in key order, `undefined` for misses. */
  async mget<T = unknown>(...keys: (string | readonly string[])[]): Promise<(T | undefined)[]> {
    const full = flatten(keys).map((k) => this.key(k));
    const texts = await this.store.mget(full);
    return texts.map((t) => (t === undefined ? undefined : (this.#o.serializer.decode(t) as T)));
  }

  /** Validates and encodes every entry before writing any, so bad input writes nothing. */
  async mset(entries: readonly (readonly [string, unknown])[], ttl?: number): Promise<void> {
    if (!Array.isArray(entries)) throw invalidArgument('mset expects an array of [key, value] pairs');
    const encoded = entries.map((entry) => {
      if (!Array.isArray(entry) || entry.length !== 2)
        throw invalidArgument('mset entries must be [key, value] pairs');
      return [this.key(entry[0]), this.#encode(entry[1])] as const;
    });
    const effective = this.#ttl(ttl);
    for (const [full] of encoded) this.#invalidate(full);
    await this.store.mset(encoded, effective);
  }

  async mdel(...keys: (string | readonly string[])[]): Promise<void> {
    const full = flatten(keys).map((k) => this.key(k));
    for (const k of full) this.#invalidate(k);
    await this.store.mdel(full);
  }

  /**
   * Returns the cached value, or computes, stores and returns it. Concurrent callers of one key
   * share one computation; a thrown error is not cached and reaches every waiter. `undefined`
   * results are returned but not stored.
   */
  async wrap<T>(key: string, fn: () => T | Promise<T>, ttl?: number): Promise<T> {
    return this.#cached(key, fn, { ttl, isCacheable: (v) => v !== undefined });
  }

  /** NocoBase's conditional wrap, with falsy values treated as values and with single-flight. */
  async wrapWithCondition<T>(
    key: string,
    fn: () => T | Promise<T>,
    options: WrapWithConditionOptions<T> = {},
  ): Promise<T> {
    if (options.useCache === false) return fn();
    return this.#cached(key, fn, {
      ttl: options.ttl,
      isCacheable: options.isCacheable ?? ((v) => v !== undefined),
    });
  }

  async #cached<T>(
    key: string,
    fn: () => T | Promise<T>,
    options: { ttl: number | undefined; isCacheable: (value: T) => boolean | Promise<boolean> },
  ): Promise<T> {
    if (typeof fn !== 'function') throw invalidArgument('wrap expects a function');
    const full = this.key(key);
    const ttl = this.#ttl(options.ttl);
    const running = this.#fills.get(full);
    if (running) return running.promise as Promise<T>;
    const store = this.store;
    const synchronous = store.getPlainNow !== undefined || store.getNow !== undefined;
    if (synchronous) {
      // Nothing can interleave with a synchronous read, so a hit needs no fill record.
      const hit = this.#read(full);
      if (hit !== undefined) return hit as T;
    }
    // The fill is registered before a remote read, so a set/del/reset that lands between the read
    // and the write still invalidates it (a value computed from old data never overwrites new data).
    const fill: Fill = { promise: Promise.resolve(), invalidated: false };
    this.#fills.set(full, fill);
    const compute = async (): Promise<T> => {
      const value = await fn();
      if (!fill.invalidated && (await options.isCacheable(value))) {
        // A del/set/reset while the value was computed wins: the fill must not resurrect it.
        await this.#write(full, value, ttl, fill);
      }
      return value;
    };
    fill.promise = (async () => {
      try {
        if (!synchronous) {
          const hit = await this.#read(full);
          if (hit !== undefined) return hit as T;
        }
        if (this.#o.singleFlight !== 'cluster' || !this.#o.fillLock) return await compute();
        return await this.#clusterFill(full, compute);
      } finally {
        this.#fills.delete(full);
      }
    })();
    return fill.promise as Promise<T>;
  }

  /** One instance computes under a lock; the others, once they get the lock, find its value. */
  async #clusterFill<T>(full: string, compute: () => Promise<T>): Promise<T> {
    const lock = this.#o.fillLock!;
    try {
      return await lock.runExclusive(
        fillLockKey(full),
        async () => {
          const value = await this.#read(full);
          return value !== undefined ? (value as T) : compute();
        },
        { ttl: this.#o.fillTimeout, waitTimeout: this.#o.fillTimeout },
      );
    } catch (error) {
      if (!ClusterError.is(error, 'LOCK_NOT_ACQUIRED')) throw error;
      // The fill lock is a stampede guard, not a correctness one: past its wait, compute here.
      this.#o.logger.warn({ cache: this.name, ...errorFields(error) }, 'cache fill lock wait timed out');
      return compute();
    }
  }

  #mayWrite(full: string, fill: Fill | undefined): boolean {
    if (fill !== undefined) return !fill.invalidated;
    this.#invalidate(full);
    return true;
  }

  #invalidate(full: string): void {
    if (this.#fills.size === 0) return;
    const fill = this.#fills.get(full);
    if (fill) fill.invalidated = true;
  }

  #encode(value: unknown): string {
    if (value === undefined)
      throw invalidArgument('undefined is not a cacheable value (it means a miss); use null');
    return this.#o.serializer.encode(value);
  }

  #ttl(ttl: number | undefined): number | undefined {
    assertOptionalMs(ttl, 'ttl', true);
    const effective = ttl ?? this.#o.ttl;
    return effective === 0 ? undefined : effective;
  }
}

/** Lock names are shorter than cache keys may be: long keys are fenced by their hash. */
function fillLockKey(full: string): string {
  return full.length <= 400
    ? `cache-fill:${full}`
    : `cache-fill#${createHash('sha256').update(full).digest('hex')}`;
}

function flatten(keys: (string | readonly string[])[]): string[] {
  return keys.length === 1 && Array.isArray(keys[0])
    ? [...(keys[0] as readonly string[])]
    : (keys as string[]);
}
