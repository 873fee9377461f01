import {
  type CacheStore,
  type CacheStoreCapabilities,
  ClusterError,
  closedError,
  DEFAULT_MAX_PAYLOAD_BYTES,
  invalidArgument,
} from '@cluster/core';
import { StorageType } from '@nats-io/jetstream';
import type { KV, KvEntry } from '@nats-io/kv';
import { headers } from '@nats-io/nats-core';
import { type NatsConnectionOptions, NatsConnections } from '../connection.js';
import { assertEncodedLength, decodeKvKey, kvKey } from '../subjects.js';

export interface NatsCacheStoreOptions extends NatsConnectionOptions {
  /**
   * A connection shared with other adapters (see `createNatsAdapters`). The store retains it and
   * releases it on `close()`; the last user really closes it.
   */
  connections?: NatsConnections;
  /**
   * KV bucket name (letters, digits, `-`, `_`). Default `<subjectPrefix>_cache`. Several caches and
   * apps may share a bucket: keys are full `app:prefix:key` names and `clear()` removes only its own.
   */
  bucket?: string;
  /**
   * Safety net: the bucket's max age in ms. The server removes EVERY entry older than this, ttl or
   * not, so set it above your longest ttl and only when no entry needs to live for ever. Applied
   * when the bucket is created. Default 0 (off).
   */
  bucketMaxAge?: number;
  /** Replicas of the bucket's stream (clustered servers). Default 1. */
  replicas?: number;
  /**
   * `auto`: on servers with per-message TTL (2.11+) entries with a ttl also carry `Nats-TTL`, so the
   * server removes them itself; expiry is still checked on every read. `off`: never. Default `auto`.
   */
  perKeyTtl?: 'auto' | 'off';
}

const BUCKET_PATTERN = /^[A-Za-z0-9_-]{1,200}$/;
/** Parallel KV requests in mget / mset / mdel / clear. */
const BATCH = 256;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Entries are stored as `<expiresAt>|<value>`, expiresAt in epoch ms or 0 for no expiry: server
 * 2.9 has no per-key TTL, so every read checks it. An expired entry read is deleted with
 * compare-and-set on its revision, so a fresh value written meanwhile is never removed.
 */
function encodeEntry(value: string, ttl: number | undefined): Uint8Array {
  const expiresAt = ttl === undefined ? 0 : Date.now() + ttl;
  return encoder.encode(`${expiresAt}|${value}`);
}

interface Decoded {
  value: string;
  expiresAt: number;
}

function decodeEntry(entry: KvEntry | null): Decoded | undefined {
  if (entry?.operation !== 'PUT') return undefined;
  const text = decoder.decode(entry.value);
  const bar = text.indexOf('|');
  if (bar < 0) return undefined;
  const expiresAt = Number(text.slice(0, bar));
  if (!Number.isFinite(expiresAt)) return undefined;
  return { value: text.slice(bar + 1), expiresAt };
}

function live(decoded: Decoded | undefined, now = Date.now()): decoded is Decoded {
  return decoded !== undefined && (decoded.expiresAt === 0 || decoded.expiresAt > now);
}

function assertTtl(ttl: number | undefined): void {
  if (ttl === undefined) return;
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0)
    throw invalidArgument('ttl must be a positive number of milliseconds');
}

async function inBatches<T, R>(items: readonly T[], run: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += BATCH)
    out.push(...(await Promise.all(items.slice(i, i + BATCH).map(run))));
  return out;
}

/**
 * A cache store on a JetStream KV bucket (file storage, history 1). Core keys are encoded into the
 * KV key alphabet (`kvKey`), one subject token each. `keys(prefix)` and `clear(prefix)` list the
 * bucket's keys and match the decoded key literally, so a cache's reset touches only its own keys.
 */
class NatsCacheStore implements CacheStore {
  readonly capabilities: CacheStoreCapabilities;
  readonly #connections: NatsConnections;
  readonly #bucketName: string;
  readonly #maxAge: number;
  readonly #replicas: number;
  readonly #perKeyTtl: 'auto' | 'off';
  #kv: Promise<KV> | undefined;
  /** The open bucket, once `#kv` resolved. */
  #ready: KV | undefined;
  /** Stream subject prefix for direct publishes with `Nats-TTL` (servers 2.11+); undefined otherwise. */
  #ttlSubject: string | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: NatsCacheStoreOptions) {
    const connections = options.connections ?? new NatsConnections(options);
    const bucket = options.bucket ?? `${connections.subjectPrefix}_cache`;
    if (typeof bucket !== 'string' || !BUCKET_PATTERN.test(bucket))
      throw invalidArgument('bucket must be 1 to 200 letters, digits, "-" or "_"');
    const maxAge = options.bucketMaxAge ?? 0;
    if (typeof maxAge !== 'number' || !Number.isFinite(maxAge) || maxAge < 0)
      throw invalidArgument('bucketMaxAge must be a non-negative number of milliseconds');
    const replicas = options.replicas ?? 1;
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5)
      throw invalidArgument('replicas must be an integer from 1 to 5');
    const perKeyTtl = options.perKeyTtl ?? 'auto';
    if (perKeyTtl !== 'auto' && perKeyTtl !== 'off')
      throw invalidArgument("perKeyTtl must be 'auto' or 'off'");
    this.#connections = connections.retain();
    this.#bucketName = bucket;
    this.#maxAge = maxAge;
    this.#replicas = replicas;
    this.#perKeyTtl = perKeyTtl;
    this.capabilities = {
      durable: true,
      shared: true,
      ttlGranularityMs: 1,
      // The server's default max_payload, less room for the key and the expiry prefix.
      maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES - 8 * 1024,
    };
  }

  async connect(): Promise<void> {
    await this.#bucket();
  }

  get(key: string): Promise<string | undefined> {
    // The hot path avoids async layers: the bucket is open after the first call.
    const kv = this.#ready;
    if (kv === undefined || this.#closed) return this.#bucket().then(() => this.get(key));
    let stored: string;
    try {
      stored = this.#key(key);
    } catch (error) {
      return Promise.reject(error);
    }
    return kv.get(stored).then(
      (entry) => this.#checked(kv, stored, entry),
      (error: unknown) => {
        throw this.#connections.error(error, 'cache get');
      },
    );
  }

  set(key: string, value: string, ttl?: number): Promise<void> {
    const kv = this.#ready;
    if (kv === undefined || this.#closed) return this.#bucket().then(() => this.set(key, value, ttl));
    let stored: string;
    let data: Uint8Array;
    try {
      assertTtl(ttl);
      stored = this.#key(key);
      this.#assertSize(value);
      data = encodeEntry(value, ttl);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#put(kv, stored, data, ttl).then(
      () => undefined,
      (error: unknown) => {
        throw this.#connections.error(error, 'cache set');
      },
    );
  }

  async del(key: string): Promise<void> {
    const kv = await this.#bucket();
    const stored = this.#key(key);
    await this.#call(() => kv.delete(stored), 'cache del');
  }

  async mget(keys: readonly string[]): Promise<(string | undefined)[]> {
    const kv = await this.#bucket();
    const stored = keys.map((key) => this.#key(key));
    return inBatches(stored, async (k) =>
      this.#checked(kv, k, await this.#call(() => kv.get(k), 'cache mget')),
    );
  }

  async mset(entries: readonly (readonly [string, string])[], ttl?: number): Promise<void> {
    assertTtl(ttl);
    const kv = await this.#bucket();
    const prepared = entries.map(([key, value]) => {
      this.#assertSize(value);
      const data = encodeEntry(value, ttl);
      return [this.#key(key), data] as const;
    });
    await inBatches(prepared, ([k, data]) => this.#call(() => this.#put(kv, k, data, ttl), 'cache mset'));
  }

  async mdel(keys: readonly string[]): Promise<void> {
    const kv = await this.#bucket();
    const stored = keys.map((key) => this.#key(key));
    await inBatches(stored, (k) => this.#call(() => kv.delete(k), 'cache mdel'));
  }

  async keys(prefix: string): Promise<string[]> {
    const kv = await this.#bucket();
    const matching = await this.#list(kv, prefix);
    const values = await inBatches(matching, async ([stored]) =>
      this.#checked(kv, stored, await this.#call(() => kv.get(stored), 'cache keys')),
    );
    return matching.filter((_, i) => values[i] !== undefined).map(([, key]) => key);
  }

  async clear(prefix: string): Promise<void> {
    const kv = await this.#bucket();
    const matching = await this.#list(kv, prefix);
    await inBatches(matching, ([stored]) => this.#call(() => kv.delete(stored), 'cache clear'));
  }

  async ttl(key: string): Promise<number | undefined> {
    const kv = await this.#bucket();
    const stored = this.#key(key);
    const entry = await this.#call(() => kv.get(stored), 'cache ttl');
    const decoded = decodeEntry(entry);
    const now = Date.now();
    if (!live(decoded, now)) {
      if (decoded && entry) this.#expire(kv, stored, entry.revision);
      return undefined;
    }
    return decoded.expiresAt === 0 ? Number.POSITIVE_INFINITY : decoded.expiresAt - now;
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      await this.#connections.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  toJSON(): Record<string, unknown> {
    return { adapter: 'nats cache store', bucket: this.#bucketName, closed: this.#closed };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `NatsCacheStore { bucket: ${JSON.stringify(this.#bucketName)}, closed: ${this.#closed} }`;
  }

  #key(key: string): string {
    if (typeof key !== 'string' || key.length === 0) throw invalidArgument('key must be a non-empty string');
    const stored = kvKey(key);
    assertEncodedLength(stored, 'cache key');
    return stored;
  }

  #assertSize(value: string): void {
    const max = this.capabilities.maxPayloadBytes;
    if (value.length * 3 <= max) return;
    const bytes = Buffer.byteLength(value);
    if (bytes > max)
      throw new ClusterError('PAYLOAD_TOO_LARGE', `value is ${bytes} bytes, the limit is ${max}`, {
        details: { bytes, max },
      });
  }

  /** Every stored key of the bucket whose decoded key starts with the literal prefix. */
  async #list(kv: KV, prefix: string): Promise<[stored: string, key: string][]> {
    const out: [string, string][] = [];
    await this.#call(async () => {
      const iterator = await kv.keys();
      for await (const stored of iterator) {
        const key = decodeKvKey(stored);
        if (key?.startsWith(prefix)) out.push([stored, key]);
      }
    }, 'cache keys');
    return out;
  }

  #checked(kv: KV, stored: string, entry: KvEntry | null): string | undefined {
    const decoded = decodeEntry(entry);
    if (live(decoded)) return decoded.value;
    if (decoded && entry) this.#expire(kv, stored, entry.revision);
    return undefined;
  }

  /** Removes an expired entry only if nobody wrote it since (compare-and-set on the revision). */
  #expire(kv: KV, stored: string, revision: number): void {
    if (this.#closed) return;
    kv.delete(stored, { previousSeq: revision }).catch(() => {
      // Rewritten meanwhile (wrong last sequence) or unreachable: either way nothing to do.
    });
  }

  async #put(kv: KV, stored: string, data: Uint8Array, ttl: number | undefined): Promise<unknown> {
    if (this.#closed) throw closedError('nats cache store');
    if (ttl === undefined || this.#ttlSubject === undefined) return kv.put(stored, data);
    const js = await this.#connections.jetstream();
    const h = headers();
    // Whole seconds, rounded up: the server must never remove an entry before our own expiry.
    h.set('Nats-TTL', `${Math.max(1, Math.ceil(ttl / 1_000))}s`);
    return js.publish(`${this.#ttlSubject}${stored}`, data, { headers: h });
  }

  #bucket(): Promise<KV> {
    if (this.#closed) return Promise.reject(closedError('nats cache store'));
    this.#kv ??= (async () => {
      const kvm = await this.#connections.kvm();
      const [major, minor] = this.#connections.serverVersion;
      const perKeyTtl = this.#perKeyTtl === 'auto' && (major > 2 || (major === 2 && minor >= 11));
      const kv = await kvm.create(this.#bucketName, {
        history: 1,
        storage: StorageType.File,
        replicas: this.#replicas,
        ...(this.#maxAge > 0 && { ttl: Math.ceil(this.#maxAge) }),
        // markerTTL turns on the stream's allow_msg_ttl (2.11+), which Nats-TTL needs.
        ...(perKeyTtl && { markerTTL: 60_000 }),
      });
      if (perKeyTtl) {
        const status = await kv.status();
        const config = status.streamInfo.config as { allow_msg_ttl?: boolean };
        if (config.allow_msg_ttl === true) this.#ttlSubject = `$KV.${this.#bucketName}.`;
      }
      this.#ready = kv;
      return kv;
    })().catch((error: unknown) => {
      this.#kv = undefined;
      throw this.#connections.error(error, 'cache bucket');
    });
    return this.#kv;
  }

  async #call<T>(run: () => Promise<T>, what: string): Promise<T> {
    if (this.#closed) throw closedError('nats cache store');
    try {
      return await run();
    } catch (error) {
      throw this.#connections.error(error, what);
    }
  }
}

/**
 * A cache store on NATS JetStream KV for `createCluster({ cache: { stores: { nats: store } } })`.
 * Needs a server with JetStream enabled.
 */
export function createNatsCacheStore(options: NatsCacheStoreOptions = {}): CacheStore {
  return new NatsCacheStore(options);
}
