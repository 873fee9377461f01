import { type CacheStore, createMemoryHub, type LockAdapter } from '@cluster/core';
import { REDIS, requireServer, serverUrl, startInstances, uniqueName } from '@cluster/testkit';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createRedisCacheStore } from '../src/cache/index.js';
import * as lockModule from '../src/lock/index.js';
import { deleteKeysUnder } from './helpers/redis-server.js';

const url = serverUrl(REDIS);
const available = await requireServer(REDIS);
const raw = new Redis(url, { lazyConnect: true });
afterAll(() => raw.disconnect());

// The Redis lock is written alongside this store; use it once it is exported, else the memory lock
// on one shared hub (the 4 instances live in this process, so it still excludes them).
type LockFactory = (options: { url: string; keyPrefix: string }) => LockAdapter;
const createRedisLock = (lockModule as Record<string, unknown>).createRedisLock as LockFactory | undefined;

describe.skipIf(!available)('redis cache: cluster-wide single-flight wrap over 4 instances', () => {
  const keyPrefix = uniqueName('t');
  afterEach(() => deleteKeysUnder(raw, keyPrefix));

  async function fourInstances() {
    const hub = createMemoryHub();
    const name = uniqueName('app');
    const stores: CacheStore[] = [];
    const instances = await startInstances(4, () => {
      const store = createRedisCacheStore({ url, keyPrefix });
      stores.push(store);
      return {
        name,
        hub,
        cache: { stores: { redis: store }, defaultStore: 'redis', singleFlight: 'cluster' },
        ...(createRedisLock && {
          lock: { defaultAdapter: 'redis', adapters: { redis: createRedisLock({ url, keyPrefix }) } },
        }),
      };
    });
    return { instances, stores };
  }

  it(`computes once for one cold key (lock: ${createRedisLock ? 'redis' : 'memory hub'})`, async () => {
    const { instances } = await fourInstances();
    try {
      let computes = 0;
      const results = await Promise.all(
        instances.apps.flatMap((app) =>
          Array.from({ length: 5 }, () =>
            app.cache.wrap('cold', async () => {
              computes += 1;
              await new Promise((r) => setTimeout(r, 30));
              return { v: 42, at: new Date(0) };
            }),
          ),
        ),
      );
      expect(computes).toBe(1);
      for (const r of results) expect(r).toEqual({ v: 42, at: new Date(0) });
      for (const app of instances.apps)
        expect(await app.cache.get('cold')).toEqual({ v: 42, at: new Date(0) });
    } finally {
      await instances.stop();
    }
  });

  it('computes exactly once per key for 20 cold keys', async () => {
    const { instances } = await fourInstances();
    try {
      const computes = new Map<string, number>();
      const keys = Array.from({ length: 20 }, (_, i) => `k${i}`);
      await Promise.all(
        instances.apps.flatMap((app) =>
          keys.map((key) =>
            app.cache.wrap(key, async () => {
              computes.set(key, (computes.get(key) ?? 0) + 1);
              await new Promise((r) => setTimeout(r, 10));
              return key.toUpperCase();
            }),
          ),
        ),
      );
      expect([...computes.values()].reduce((a, b) => a + b, 0)).toBe(20);
      expect([...computes.keys()].sort()).toEqual([...keys].sort());
      expect(await instances.apps[3]!.cache.mget(keys)).toEqual(keys.map((k) => k.toUpperCase()));
    } finally {
      await instances.stop();
    }
  });
});
