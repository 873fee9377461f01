/**
 * The cache store contract. Stores hold already-encoded strings under full keys
 * (`app:prefix:key`, built by the Cache); they know nothing of values or prefixes' meaning.
 * `keys` and `clear` take a LITERAL prefix: a store must never interpret glob characters in it.
 */
export interface CacheStoreCapabilities {
  /** Values survive a restart of the process (memory: false; Redis: depends on the server's persistence). */
  readonly durable: boolean;
  /** Several cache instances (nodes) see the same entries. */
  readonly shared: boolean;
  /** Smallest ttl step the store honours, in ms. */
  readonly ttlGranularityMs: number;
  readonly maxPayloadBytes: number;
}

export interface CacheStore extends AsyncDisposable {
  readonly capabilities: CacheStoreCapabilities;
  connect(): Promise<void>;
  get(key: string): Promise<string | undefined>;
  /** `ttl` in ms; undefined means no expiry. */
  set(key: string, value: string, ttl?: number): Promise<void>;
  del(key: string): Promise<void>;
  mget(keys: readonly string[]): Promise<(string | undefined)[]>;
  mset(entries: readonly (readonly [string, string])[], ttl?: number): Promise<void>;
  mdel(keys: readonly string[]): Promise<void>;
  /** Every key that starts with the literal `prefix`. */
  keys(prefix: string): Promise<string[]>;
  /** Deletes every key that starts with the literal `prefix`, and nothing else. */
  clear(prefix: string): Promise<void>;
  /** Remaining lifetime in ms; `Infinity` when the key never expires; `undefined` when it is missing. */
  ttl(key: string): Promise<number | undefined>;
  close(): Promise<void>;
  /**
   * Optional synchronous fast paths for in-process stores, with the same results as `get` / `set`.
   * The Cache uses them to skip promise round trips; remote stores leave them out.
   */
  getNow?(key: string): string | undefined;
  setNow?(key: string, value: string, ttl?: number): void;
  /**
   * Optional, in-process stores only: keep a plain-JSON value as a private deep copy instead of
   * text (the Cache guarantees it equals `decode(encode(value))` and fits the size limit).
   * `getPlainNow` returns that stored copy (the Cache copies it again before handing it out),
   * or the text for entries stored as text, or undefined for a miss. `get` must still return text.
   */
  setPlainNow?(key: string, value: unknown, ttl?: number): void;
  getPlainNow?(key: string): { plain: unknown } | string | undefined;
}
