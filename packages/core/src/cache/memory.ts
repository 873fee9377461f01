import { closedError } from '../errors.js';
import type { MemoryHub } from '../hub.js';
import { DEFAULT_MAX_PAYLOAD_BYTES } from '../serializer.js';
import type { CacheStore, CacheStoreCapabilities } from './types.js';

export interface MemoryCacheStoreOptions {
  /** Most entries kept; the least recently used go first. Default 10,000. */
  max?: number;
  /** Share entries with every store created on this hub (several nodes in one process). */
  hub?: MemoryHub;
}

interface Entry {
  /** Encoded text; a plain-JSON entry stored by `setPlainNow` keeps its copy in `plain` until text is asked for. */
  value: string | undefined;
  plain?: unknown;
  /** Date.now() ms, or Infinity. */
  expiresAt: number;
  /** Read since it was last examined for eviction. */
  used: boolean;
}

/**
 * An approximate LRU ("second chance"): a read only marks its entry, so reads never mutate the Map.
 * When the table is full, the oldest entries are examined in insertion order: a marked one is
 * unmarked and moved to the end, the first unmarked one is evicted.
 */
class LruTable {
  readonly entries = new Map<string, Entry>();
  constructor(readonly max: number) {}

  get(key: string, now: number): Entry | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= now) {
      this.entries.delete(key);
      return undefined;
    }
    entry.used = true;
    return entry;
  }

  set(key: string, entry: Entry): void {
    // Overwriting keeps the Map slot (no delete + insert churn) and counts as a use.
    if (this.entries.has(key)) {
      entry.used = true;
      this.entries.set(key, entry);
      return;
    }
    this.entries.set(key, entry);
    if (this.entries.size > this.max) this.#evict();
  }

  #evict(): void {
    for (const [key, entry] of this.entries) {
      if (!entry.used) {
        this.entries.delete(key);
        return;
      }
      entry.used = false;
      this.entries.delete(key);
      this.entries.set(key, entry);
    }
  }
}

/** An LRU store with per-entry ttl. Expired entries are dropped on access and by `keys`/`clear`. */
export function createMemoryCacheStore(options: MemoryCacheStoreOptions = {}): CacheStore {
  const max = options.max ?? 10_000;
  const table = options.hub ? options.hub.part('cache', () => new LruTable(max)) : new LruTable(max);
  let closed = false;
  const capabilities: CacheStoreCapabilities = {
    durable: false,
    shared: options.hub !== undefined,
    ttlGranularityMs: 1,
    maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES,
  };
  const open = () => {
    if (closed) throw closedError('memory cache store');
  };
  const expiry = (ttl?: number) =>
    ttl === undefined || ttl === 0 ? Number.POSITIVE_INFINITY : Date.now() + ttl;
  const scan = (prefix: string): string[] => {
    const now = Date.now();
    const found: string[] = [];
    for (const [key, entry] of table.entries) {
      if (entry.expiresAt <= now) table.entries.delete(key);
      else if (key.startsWith(prefix)) found.push(key);
    }
    return found;
  };

  const store: CacheStore = {
    capabilities,
    async connect() {
      open();
    },
    async get(key) {
      return store.getNow!(key);
    },
    async set(key, value, ttl) {
      store.setNow!(key, value, ttl);
    },
    getNow(key) {
      open();
      const entry = table.get(key, Date.now());
      if (entry === undefined) return undefined;
      // Plain entries are equal to their JSON text by construction, so text is made on demand.
      entry.value ??= JSON.stringify(entry.plain);
      return entry.value;
    },
    setPlainNow(key, plain, ttl) {
      open();
      table.set(key, { value: undefined, plain, expiresAt: expiry(ttl), used: false });
    },
    getPlainNow(key) {
      open();
      const entry = table.get(key, Date.now());
      if (entry === undefined) return undefined;
      return entry.value === undefined ? { plain: entry.plain } : entry.value;
    },
    setNow(key, value, ttl) {
      open();
      table.set(key, { value, expiresAt: expiry(ttl), used: false });
    },
    async del(key) {
      open();
      table.entries.delete(key);
    },
    async mget(keys) {
      open();
      return keys.map((key) => store.getNow!(key));
    },
    async mset(entries, ttl) {
      open();
      const expiresAt = expiry(ttl);
      for (const [key, value] of entries) table.set(key, { value, expiresAt, used: false });
    },
    async mdel(keys) {
      open();
      for (const key of keys) table.entries.delete(key);
    },
    async keys(prefix) {
      open();
      return scan(prefix);
    },
    async clear(prefix) {
      open();
      for (const key of scan(prefix)) table.entries.delete(key);
    },
    async ttl(key) {
      open();
      const entry = table.get(key, Date.now());
      if (entry === undefined) return undefined;
      return entry.expiresAt === Number.POSITIVE_INFINITY
        ? Number.POSITIVE_INFINITY
        : entry.expiresAt - Date.now();
    },
    async close() {
      // A hub-shared table outlives one store; a private one is released with it.
      if (!options.hub) table.entries.clear();
      closed = true;
    },
    async [Symbol.asyncDispose]() {
      await store.close();
    },
  };
  return store;
}
