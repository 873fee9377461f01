import { createHash } from 'node:crypto';
import {
  type CacheStore,
  type CacheStoreCapabilities,
  closedError,
  DEFAULT_MAX_PAYLOAD_BYTES,
  invalidArgument,
} from '@cluster/core';
import type { Cluster, Redis } from 'ioredis';
import { CommandBatcher } from '../command-batch.js';
import { type RedisClient, type RedisConnectionOptions, RedisConnections } from '../connection.js';
import { escapeGlob } from '../keys.js';

export interface RedisCacheStoreOptions extends RedisConnectionOptions {
  /**
   * Connections shared with other adapters (see `createRedisAdapters`). The store retains them and
   * releases them on `close()`; the last user really closes them.
   */
  connections?: RedisConnections;
  /**
   * Declares that entries survive a restart. Redis keeps cache entries only as well as the server
   * persists them (AOF / RDB settings, replicas), which the adapter cannot see: set this to `true`
   * only when the server is configured for it. Default false.
   */
  durable?: boolean;
  /** Keys per SCAN page and per UNLINK batch in `keys()` / `clear()`. Default 1,000. */
  scanCount?: number;
}

/** A Redis Cluster client (ioredis' `Cluster`), told apart without `instanceof` (two ioredis copies). */
function isCluster(client: RedisClient): client is Cluster {
  return (client as { isCluster?: boolean }).isCluster === true;
}

/** SET with one PX for every key: KEYS the keys, ARGV the ttl then the values, in order. */
const SET_PX_SOURCE = `for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1]) end
return #KEYS`;
const SET_PX = { source: SET_PX_SOURCE, sha: createHash('sha1').update(SET_PX_SOURCE).digest('hex') };

/** PX wants a positive integer; core hands ms that may be fractional. */
function px(ttl: number): number {
  return Math.max(1, Math.ceil(ttl));
}

/**
 * `<keyPrefix>:{...}` belongs to the hash-tagged keys of the queue and lock. A core key that starts
 * with `{` (an app named so) is stored with that brace as `%7B`: core escapes `%` as `%25` inside
 * names, so no core key starts with `%7B` and the mapping is reversible.
 */
function storedCacheKey(base: string, key: string): string {
  return base + (key.charCodeAt(0) === 0x7b ? `%7B${key.slice(1)}` : key);
}

function coreCacheKey(base: string, stored: string): string {
  const key = stored.slice(base.length);
  return key.startsWith('%7B') ? `{${key.slice(3)}` : key;
}

/**
 * A cache store on Redis. Core hands it full keys (`app:prefix:key`); they are stored as
 * `<keyPrefix>:<full key>` with the encoded text as a plain string value and the ttl as PX.
 * `keys()` and `clear()` SCAN with an escaped MATCH pattern (glob characters in any segment are
 * literal) and check every result with `startsWith` again; `clear()` UNLINKs page by page. On a Redis
 * Cluster every master is scanned and multi-key calls become per-key commands (keys of one cache
 * spread over all slots).
 */
export function createRedisCacheStore(options: RedisCacheStoreOptions = {}): CacheStore {
  const connections = (options.connections ?? new RedisConnections(options)).retain();
  const base = `${connections.keyPrefix}:`;
  const stored = (key: string) => storedCacheKey(base, key);
  const scanCount = options.scanCount ?? 1_000;
  if (!Number.isInteger(scanCount) || scanCount < 1)
    throw invalidArgument('scanCount must be a positive integer');
  let closed = false;
  let closing: Promise<void> | undefined;

  const capabilities: CacheStoreCapabilities = {
    durable: options.durable ?? false,
    shared: true,
    ttlGranularityMs: 1,
    maxPayloadBytes: DEFAULT_MAX_PAYLOAD_BYTES,
  };

  const client = (): RedisClient => {
    if (closed) throw closedError('redis cache store');
    return connections.command;
  };
  {
    // ioredis' own keyPrefix is not applied to SCAN patterns nor stripped from results (ioredis #239).
    const c = connections.command;
    const prefixed = isCluster(c) ? c.options.redisOptions?.keyPrefix : (c as Redis).options.keyPrefix;
    if (prefixed) {
      void connections.close();
      throw invalidArgument(
        'the ioredis keyPrefix option is not supported; use the adapter keyPrefix option',
      );
    }
  }

  // On one server the gets, sets and deletes of a turn become one MGET, one SET script per ttl (or
  // one MSET) and one UNLINK: one command for ioredis to build and parse instead of one per key,
  // which was most of the client's CPU at 50 calls in flight. On a Cluster each key has its own
  // slot, so each call is its plain command.
  const batcher = new CommandBatcher(client, (options.commandTimeout ?? 2_000) + 1_000);
  const single = !isCluster(connections.command);
  type Plain = readonly [command: string, args: readonly (string | number)[]];
  /**
   * One call: `plain` on a Cluster, else `merged(plain, label)`, which sends `plain` itself when
   * the call has nothing to merge with. Lower-case names: ioredis lower-cases a name on every flag
   * lookup otherwise. A promise chain without async wrappers: this is every get's and set's path.
   */
  const send = (
    what: string,
    plain: Plain,
    merged: (alone: Plain, label: string) => Promise<unknown>,
  ): Promise<unknown> => {
    let c: RedisClient;
    try {
      c = client();
    } catch (error) {
      return Promise.reject(error);
    }
    const label = `cache ${what}`;
    return (single ? merged(plain, label) : c.call(plain[0], ...plain[1])).catch((error: unknown) => {
      throw connections.error(error, label);
    });
  };
  const toUndefined = (value: unknown) => (value ?? undefined) as string | undefined;
  const toVoid = () => undefined;

  /** Runs one store call; any failure becomes a credential-free ClusterError. */
  const run = async <T>(what: string, fn: (c: RedisClient) => Promise<T>): Promise<T> => {
    const c = client();
    try {
      return await fn(c);
    } catch (error) {
      throw connections.error(error, `cache ${what}`);
    }
  };

  /** Every stored key under `prefix` on one node, each page handed to `page` as it arrives. */
  const scanNode = async (
    node: Redis,
    prefix: string,
    page: (keys: string[]) => Promise<void> | void,
  ): Promise<void> => {
    const full = prefix === '' ? base : storedCacheKey(base, prefix);
    const pattern = `${escapeGlob(full)}*`;
    let cursor = '0';
    do {
      const [next, found] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', scanCount);
      cursor = next;
      // Second guard: the pattern is escaped, but only a literal prefix match may leave this function.
      const mine = found.filter((k) => k.startsWith(full) && coreCacheKey(base, k).startsWith(prefix));
      if (mine.length > 0) await page(mine);
    } while (cursor !== '0');
  };

  const scanAll = async (
    c: RedisClient,
    prefix: string,
    page: (node: Redis, keys: string[]) => Promise<void> | void,
  ): Promise<void> => {
    const nodes = isCluster(c) ? c.nodes('master') : [c as Redis];
    await Promise.all(nodes.map((node) => scanNode(node, prefix, (keys) => page(node, keys))));
  };

  const store: CacheStore = {
    capabilities,

    async connect() {
      if (closed) throw closedError('redis cache store');
      await connections.ready(client());
    },

    get(key) {
      const k = stored(key);
      return send('get', ['get', [k]], (alone, label) =>
        batcher.callEach('', 'mget', [], [k], label, alone),
      ).then(toUndefined);
    },

    set(key, value, ttl) {
      const k = stored(key);
      if (ttl === undefined) {
        return send('set', ['set', [k, value]], (alone, label) =>
          batcher.callEach('', 'mset', [], [k, value], label, alone),
        ).then(toVoid);
      }
      const ms = px(ttl);
      return send('set', ['set', [k, value, 'PX', ms]], (alone, label) =>
        batcher.evalEach('', SET_PX, [], [ms], [k], [value], label, alone),
      ).then(toVoid);
    },

    del(key) {
      const k = stored(key);
      return send('del', ['unlink', [k]], (alone, label) =>
        batcher.callEach('', 'unlink', [], [k], label, alone),
      ).then(toVoid);
    },

    mget(keys) {
      return run('mget', async (c) => {
        if (keys.length === 0) return [];
        const full = keys.map((k) => stored(k));
        const values = isCluster(c)
          ? await Promise.all(full.map((k) => c.get(k)))
          : await (c as Redis).mget(full);
        return values.map((v) => v ?? undefined);
      });
    },

    mset(entries, ttl) {
      return run('mset', async (c) => {
        if (entries.length === 0) return;
        if (isCluster(c)) {
          await Promise.all(
            entries.map(([k, v]) =>
              ttl === undefined ? c.set(stored(k), v) : c.set(stored(k), v, 'PX', px(ttl)),
            ),
          );
          return;
        }
        const single = c as Redis;
        if (ttl === undefined) {
          await single.mset(entries.flatMap(([k, v]) => [stored(k), v]));
          return;
        }
        // MULTI: every entry gets its value and its ttl, or none does.
        const tx = single.multi();
        for (const [k, v] of entries) tx.set(stored(k), v, 'PX', px(ttl));
        const results = await tx.exec();
        if (results === null) throw new Error('MSET transaction was aborted');
        for (const [error] of results) if (error) throw error;
      });
    },

    mdel(keys) {
      return run('mdel', async (c) => {
        if (keys.length === 0) return;
        const full = keys.map((k) => stored(k));
        if (isCluster(c)) await Promise.all(full.map((k) => c.unlink(k)));
        else await (c as Redis).unlink(full);
      });
    },

    keys(prefix) {
      return run('keys', async (c) => {
        const found = new Set<string>();
        await scanAll(c, prefix, (_node, keys) => {
          for (const k of keys) found.add(coreCacheKey(base, k));
        });
        return [...found];
      });
    },

    clear(prefix) {
      return run('clear', async (c) => {
        const cluster = isCluster(c);
        await scanAll(c, prefix, async (node, keys) => {
          if (!cluster) {
            await node.unlink(keys);
            return;
          }
          // Keys of one page may sit in different slots of this node: one UNLINK each.
          const pipeline = node.pipeline();
          for (const k of keys) pipeline.unlink(k);
          const results = await pipeline.exec();
          for (const [error] of results ?? []) if (error) throw error;
        });
      });
    },

    ttl(key) {
      return run('ttl', async (c) => {
        const ms = await c.pttl(stored(key));
        if (ms === -2) return undefined;
        if (ms === -1) return Number.POSITIVE_INFINITY;
        return ms;
      });
    },

    close() {
      closing ??= (async () => {
        closed = true;
        await connections.close();
      })();
      return closing;
    },

    async [Symbol.asyncDispose]() {
      await store.close();
    },
  };
  return store;
}
